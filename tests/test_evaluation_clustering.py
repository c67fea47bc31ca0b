"""Silhouette score against a hand-computed case, and the normalisations."""

import numpy as np
import pytest

from ssl_jax.evaluation import clustering


def test_silhouette_hand_case():
  # 1-D points 0, 1 (class 0) and 4, 5 (class 1): s = 1 - a / b with a = 1 and b = 4.5, 3.5, 3.5, 4.5.
  x = np.array([[0.0], [1.0], [4.0], [5.0]])
  labels = np.array([0, 0, 1, 1])
  expected = np.mean([1 - 1 / 4.5, 1 - 1 / 3.5, 1 - 1 / 3.5, 1 - 1 / 4.5])
  assert clustering.silhouette(x, labels, normalize='none') == pytest.approx(expected)
  # Standardising a single feature only rescales distances: same score.
  assert clustering.silhouette(x, labels) == pytest.approx(expected)


def test_standardize_removes_feature_scale():
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(3), 20)
  x = rng.normal(size=(60, 4)) + labels[:, None]
  scaled = x * np.array([1.0, 100.0, 0.01, 5.0])
  assert clustering.silhouette(scaled, labels) == pytest.approx(clustering.silhouette(x, labels))
  assert clustering.silhouette(scaled, labels, normalize='none') != pytest.approx(
      clustering.silhouette(x, labels, normalize='none'))


def test_l2_rows_are_unit_norm_and_constant_features_survive():
  x = np.array([[3.0, 4.0, 1.0], [0.0, 0.0, 1.0]])
  np.testing.assert_allclose(np.linalg.norm(clustering.normalize_embeddings(x, 'l2'), axis=1), 1.0)
  assert np.all(np.isfinite(clustering.normalize_embeddings(x, 'standardize')))


def test_bad_input():
  with pytest.raises(ValueError, match='normalize'):
    clustering.silhouette(np.zeros((4, 2)), np.array([0, 0, 1, 1]), normalize='cosine')
  with pytest.raises(ValueError, match='distinct labels'):
    clustering.silhouette(np.zeros((4, 2)), np.zeros(4, np.int32))
  with pytest.raises(ValueError, match='labels must have shape'):
    clustering.silhouette(np.zeros((4, 2)), np.zeros(3, np.int32))
