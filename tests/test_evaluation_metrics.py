"""Accuracy, the AoA class -> angle grid, and the AoA MAE against hand-computed values."""

import numpy as np
import pytest

from ssl_jax.evaluation import metrics


def test_accuracy():
  assert metrics.accuracy(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4])) == 0.75
  with pytest.raises(ValueError, match='shape'):
    metrics.accuracy(np.array([1, 2]), np.array([1, 2, 3]))


def test_class_to_angles_matches_the_label_contract():
  # class = az_index * 15 + el_index, index = (angle + 70) / 10.
  angles = metrics.aoa_class_to_angles_deg(np.array([0, 14, 15, 112, 224]))
  np.testing.assert_array_equal(angles, [[-70, -70], [-70, 70], [-60, -70], [0, 0], [70, 70]])
  az, el = np.meshgrid(np.arange(-70, 71, 10), np.arange(-70, 71, 10), indexing='ij')
  classes = ((az.ravel() + 70) // 10) * 15 + (el.ravel() + 70) // 10
  np.testing.assert_array_equal(metrics.aoa_class_to_angles_deg(classes),
                                np.stack([az.ravel(), el.ravel()], 1))


def test_aoa_mae_hand_case():
  predicted = np.array([0, 224, 112])  # (-70, -70), (70, 70), (0, 0)
  true = np.array([[-65.0, -70.0], [70.0, 50.0], [10.0, -10.0]])
  # Per example mean |err| over (az, el): 2.5, 10, 10 -> 7.5.
  assert metrics.aoa_mae_deg(predicted, true) == pytest.approx(7.5)


def test_great_circle():
  np.testing.assert_allclose(metrics.great_circle_deg([[0, 0], [10, 0], [0, 0]], [[0, 0], [50, 0], [0, 30]]),
                             [0, 40, 30], atol=1e-9)


def test_bad_input():
  with pytest.raises(ValueError, match=r'classes must lie in \[0, 225\)'):
    metrics.aoa_class_to_angles_deg(np.array([225]))
  with pytest.raises(ValueError, match='angles_deg'):
    metrics.aoa_mae_deg(np.array([0, 1]), np.zeros((2, 3)))


def test_mean_std():
  assert metrics.mean_std([1.0, 3.0]) == {'mean': 2.0, 'std': 1.0, 'values': [1.0, 3.0]}
