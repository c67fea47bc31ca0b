"""experiments/amc_investigation.py: the random-init floor of the calibration scores what it is given."""

import numpy as np

from experiments import amc_investigation
from ssl_jax.data import simulate
from ssl_jax.models.shufflenet import ShuffleNetV2Encoder


def _two_amplitudes(rng: np.random.Generator, labels: np.ndarray, length: int) -> np.ndarray:
  """(n, length, 8) Gaussian noise, std 0.1 for label 0 and 10 for label 1: separable by energy alone."""
  scale = np.where(labels == 1, 10.0, 0.1)[:, None, None]
  return (scale * rng.standard_normal((labels.size, length, 8))).astype(np.float32)


def test_random_init_probe_separates_what_the_frozen_encoder_separates():
  """A frozen random encoder's pooled ReLU features grow with the input's scale, so the probe must score
  ~1.0 on two classes 40 dB apart; labels misaligned with embeddings would give ~0.5."""
  rng = np.random.default_rng(0)
  train_y, test_y = np.arange(64) % 2, np.arange(100) % 2
  config = simulate.SimConfig(length=64)
  accuracy = amc_investigation.random_init_probe_accuracy(
      ShuffleNetV2Encoder(), _two_amplitudes(rng, train_y, 64), train_y, _two_amplitudes(rng, test_y, 64),
      test_y, 'amc', config, seed=0)
  assert accuracy > 0.9, accuracy
