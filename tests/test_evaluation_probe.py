"""Probe heads on frozen embeddings: separable data is learned, random labels stay at chance."""

import numpy as np
import pytest

from ssl_jax.evaluation import probe

SETTINGS = probe.ProbeSettings(hidden_dim=0, num_steps=150, batch_size=64, learning_rate=1e-2)


def _separable(rng, n, num_classes=5, dim=16):
  centers = rng.normal(size=(num_classes, dim)) * 3.0
  y = rng.integers(0, num_classes, n)
  return (centers[y] + rng.normal(size=(n, dim))).astype(np.float32), y.astype(np.int32), centers


@pytest.mark.parametrize('hidden_dim', [0, 32])
def test_separable_embeddings_reach_full_accuracy(hidden_dim):
  rng = np.random.default_rng(0)
  x, y, centers = _separable(rng, 3 * 200)
  test_y = rng.integers(0, 5, 500)
  test_x = (centers[test_y] + rng.normal(size=(500, 16))).astype(np.float32)
  settings = probe.ProbeSettings(**{**SETTINGS.__dict__, 'hidden_dim': hidden_dim})
  predictions, losses = probe.train_and_predict(x.reshape(3, 200, 16), y.reshape(3, 200), test_x,
                                                num_classes=5, settings=settings, seed=0)
  assert predictions.shape == (3, 500)
  assert np.all((predictions == test_y).mean(axis=1) > 0.98)
  assert np.all(losses < 0.1)


def test_random_labels_give_chance_on_test():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 256, 16)).astype(np.float32)
  y = rng.integers(0, 4, (2, 256)).astype(np.int32)
  test_x = rng.normal(size=(4000, 16)).astype(np.float32)
  test_y = rng.integers(0, 4, 4000)
  predictions, _ = probe.train_and_predict(x, y, test_x, num_classes=4, settings=SETTINGS, seed=0)
  assert np.all(np.abs((predictions == test_y).mean(axis=1) - 0.25) < 0.04)


def test_one_seed_form_and_determinism():
  rng = np.random.default_rng(2)
  x, y, _ = _separable(rng, 40)
  test_x = rng.normal(size=(30, 16)).astype(np.float32)
  a, loss = probe.train_and_predict(x, y, test_x, num_classes=5, settings=SETTINGS, seed=3)
  b, _ = probe.train_and_predict(x, y, test_x, num_classes=5, settings=SETTINGS, seed=3)
  assert a.shape == (30,) and np.ndim(loss) == 0
  np.testing.assert_array_equal(a, b)


def test_standardisation_makes_the_probe_scale_invariant():
  rng = np.random.default_rng(3)
  x, y, _ = _separable(rng, 100)
  test_x = rng.normal(size=(200, 16)).astype(np.float32) * 3
  a, _ = probe.train_and_predict(x, y, test_x, num_classes=5, settings=SETTINGS, seed=0)
  b, _ = probe.train_and_predict(x * 1000 + 7, y, test_x * 1000 + 7, num_classes=5, settings=SETTINGS,
                                 seed=0)
  assert (a == b).mean() > 0.97


def test_from_config_and_bad_input():
  import ml_collections
  settings = probe.ProbeSettings.from_config(ml_collections.ConfigDict({'hidden_dim': 8, 'num_steps': 5}))
  assert settings.hidden_dim == 8 and settings.num_steps == 5
  with pytest.raises(ValueError, match='unknown probe settings'):
    probe.ProbeSettings.from_config(ml_collections.ConfigDict({'hiden_dim': 8}))
  with pytest.raises(ValueError, match='num_steps'):
    probe.ProbeSettings(num_steps=0)
  with pytest.raises(ValueError, match='train_y must lie'):
    probe.train_and_predict(np.zeros((4, 3)), np.array([0, 1, 2, 5]), np.zeros((2, 3)), num_classes=3,
                            settings=SETTINGS, seed=0)
  with pytest.raises(ValueError, match='test_x must be'):
    probe.train_and_predict(np.zeros((4, 3)), np.zeros(4, np.int32), np.zeros((2, 4)), num_classes=3,
                            settings=SETTINGS, seed=0)
