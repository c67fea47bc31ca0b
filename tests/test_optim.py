"""Learning-rate schedule, scaling rule and the SGD update (PyTorch's SGD semantics)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import moco as moco_config
from configs import simclr as simclr_config
from ssl_jax import optim


def test_linear_scaling_rule_for_moco():
  config = moco_config.get_config()
  assert optim.peak_learning_rate(config.optim, 256) == pytest.approx(0.03)
  assert optim.peak_learning_rate(config.optim, 512) == pytest.approx(0.06)
  assert optim.peak_learning_rate(simclr_config.get_config().optim, 512) == pytest.approx(0.01)


def test_warmup_then_cosine():
  config = simclr_config.get_config().optim
  config.warmup_epochs = 2.0
  schedule = optim.learning_rate_schedule(config, batch_size=256, steps_per_epoch=10, total_steps=100)
  values = np.array([float(schedule(s)) for s in range(100)])
  assert values[0] == pytest.approx(0.01 / 20)
  assert values[19] == pytest.approx(0.01)
  assert np.all(np.diff(values[:20]) > 0)
  assert np.all(np.diff(values[20:]) <= 1e-12)
  assert values[-1] < 0.01 * 0.01


def test_sgd_matches_torch_semantics():
  """buf = m*buf + (g + wd*p); p -= lr*buf — checked against the formula in NumPy float64."""
  config = simclr_config.get_config().optim
  tx = optim.create_optimizer(config, lambda step: 0.1)
  params = {'w': jnp.array([[1.0, -2.0]]), 'b': jnp.array([0.5])}
  state = tx.init(params)
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  buf = {k: np.zeros_like(v) for k, v in p.items()}
  rng = np.random.default_rng(0)
  for _ in range(3):
    grads = {k: rng.normal(size=v.shape) for k, v in p.items()}
    updates, state = tx.update(jax.tree.map(jnp.float32, grads), state, params)
    params = jax.tree.map(lambda a, u: a + u, params, updates)
    for k in p:
      buf[k] = 0.9 * buf[k] + grads[k] + 1e-4 * p[k]
      p[k] = p[k] - 0.1 * buf[k]
  for k in p:
    np.testing.assert_allclose(params[k], p[k], rtol=1e-5)


@pytest.mark.parametrize('key,value', [('schedule', 'step'), ('lr_scaling', 'sqrt')])
def test_bad_optimiser_values_are_named(key, value):
  config = simclr_config.get_config().optim
  config[key] = value
  with pytest.raises(ValueError, match=key):
    optim.create_optimizer(config, lambda s: 0.1)
    optim.learning_rate_schedule(config, batch_size=256, steps_per_epoch=1, total_steps=10)
    optim.peak_learning_rate(config, 256)
