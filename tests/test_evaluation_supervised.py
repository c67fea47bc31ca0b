"""The supervised baseline learns an easy task end to end, with train-mode BatchNorm, on the budget."""

import jax
import ml_collections
import numpy as np
import pytest

from ssl_jax.data import aoam
from ssl_jax.data import simulate
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
  with pytest.raises(ValueError, match="optimizer must be one of .*'adam'"):
    supervised.SupervisedSettings(optimizer='adam')


def test_sgd_is_torch_sgd_with_coupled_weight_decay():
  """Two steps of the default optimiser against torch.optim.SGD's rule, with a changing learning rate."""
  settings = supervised.SupervisedSettings()
  assert settings.optimizer == 'sgd'
  tx = supervised._optimizer('sgd', 0.1, 0.9)
  param = np.array([1.0, -2.0, 0.5])
  state = tx.init(param)
  expected, buf = param.copy(), np.zeros(3)
  for lr, grad in ((0.5, np.array([0.3, 0.1, -0.2])), (0.25, np.array([-0.1, 0.4, 0.2]))):
    state.hyperparams['learning_rate'] = lr
    updates, state = tx.update(grad, state, param)
    param = param + np.asarray(updates)
    buf = 0.9 * buf + (grad + 0.1 * expected)  # torch: d_p = g + wd * p; buf = m * buf + d_p
    expected = expected - lr * buf
  np.testing.assert_allclose(param, expected, rtol=1e-6)


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


def _carrier_or_am(rng, labels, length):
  """Simulated AoAM examples, label 0: cw (a bare carrier), 1: sine (the carrier with 30-90% AM)."""
  modulation = np.where(labels == 0, simulate.MODULATIONS.index('cw'), simulate.MODULATIONS.index('sine'))
  aoa = rng.integers(0, simulate.NUM_AOA_CLASSES, labels.size)
  iq = simulate.simulate_examples(rng, aoa, modulation, simulate.SimConfig(length=length))
  return aoam.to_model_layout(iq)


@pytest.mark.slow
def test_default_recipe_generalises_on_simulated_modulation():
  """The default recipe must learn what tells AM from a bare carrier, not memorise the training set.

  The envelope's spread alone separates the two classes here (~0.99 with one threshold). The previous
  recipe (AdamW, lr 1e-3) fitted the 512 training examples and scored 0.53-0.56 on held-out ones, near
  chance; SGD scored 0.72-0.90 over three seeds (experiments/results/amc_investigation.md).
  """
  length = 64
  rng = np.random.default_rng(0)
  train_y = (np.arange(512) % 2).astype(np.int32)
  test_y = (np.arange(400) % 2).astype(np.int32)
  train_x, test_x = _carrier_or_am(rng, train_y, length), _carrier_or_am(rng, test_y, length)
  settings = supervised.SupervisedSettings()  # 30 epochs of 512: 240 steps
  accuracies = []
  for seed in (0, 1):
    model, variables, _ = supervised.train_supervised(ShuffleNetV2Encoder(), train_x, train_y, num_classes=2,
                                                      hidden_dim=0, settings=settings, seed=seed)
    accuracies.append(np.mean(supervised.predict(model, variables, [test_x], batch_size=200) == test_y))
  assert np.mean(accuracies) > 0.65, accuracies


def test_bad_input():
  encoder = ShuffleNetV2Encoder(stage_repeats=(1, 1, 1))
  with pytest.raises(ValueError, match='train_iq must be'):
    supervised.train_supervised(encoder, np.zeros((4, LENGTH)), np.zeros(4, np.int32), num_classes=2,
                                hidden_dim=0, settings=supervised.SupervisedSettings(), seed=0)
