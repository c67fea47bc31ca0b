"""The supervised baseline learns an easy task end to end, with train-mode BatchNorm, on the budget."""

import jax
import ml_collections
import numpy as np
import pytest

from ssl_jax.evaluation import supervised
from ssl_jax.models.shufflenet import ShuffleNetV2Encoder

LENGTH = 32


def _signals(rng, labels):
  """Class k: noise plus a class-specific constant offset pattern over the 8 channels."""
  pattern = np.random.default_rng(123).normal(size=(8, 8))
  x = rng.normal(size=(labels.size, LENGTH, 8)) + pattern[labels][:, None, :]
  return x.astype(np.float32)


def test_step_count_scales_with_budget_and_is_capped():
  settings = supervised.SupervisedSettings(batch_size=10, epochs=2, min_steps=5, max_steps=50)
  assert settings.num_steps(10) == 5
  assert settings.num_steps(100) == 20
  assert settings.num_steps(10_000) == 50
  with pytest.raises(ValueError, match='min_steps'):
    supervised.SupervisedSettings(min_steps=10, max_steps=5)
  with pytest.raises(ValueError, match='unknown supervised settings'):
    supervised.SupervisedSettings.from_config(ml_collections.ConfigDict({'lr': 1.0}))


@pytest.mark.slow
def test_learns_an_easy_task_end_to_end():
  rng = np.random.default_rng(0)
  num_classes = 4
  train_y = np.repeat(np.arange(num_classes), 8).astype(np.int32)
  test_y = np.repeat(np.arange(num_classes), 25).astype(np.int32)
  train_x, test_x = _signals(rng, train_y), _signals(rng, test_y)
  encoder = ShuffleNetV2Encoder(stage_repeats=(1, 1, 1))
  settings = supervised.SupervisedSettings(learning_rate=3e-3, batch_size=16, epochs=1, min_steps=60,
                                           max_steps=60, warmup_steps=5)
  model, variables, info = supervised.train_supervised(
      encoder, train_x, train_y, num_classes=num_classes, hidden_dim=0, settings=settings, seed=0)
  assert info['num_steps'] == 60 and np.isfinite(info['final_loss'])
  # Train-mode BatchNorm moved the running statistics away from their initial (0, 1).
  means = jax.tree.leaves(jax.tree.map(np.asarray, variables['batch_stats']))
  assert any(np.abs(m).max() > 1e-3 for m in means)
  predictions = supervised.predict(model, variables, [test_x[:60], test_x[60:]], batch_size=32)
  assert predictions.shape == (100,)
  assert (predictions == test_y).mean() > 0.6  # chance: 0.25


def test_bad_input():
  encoder = ShuffleNetV2Encoder(stage_repeats=(1, 1, 1))
  with pytest.raises(ValueError, match='train_iq must be'):
    supervised.train_supervised(encoder, np.zeros((4, LENGTH)), np.zeros(4, np.int32), num_classes=2,
                                hidden_dim=0, settings=supervised.SupervisedSettings(), seed=0)
