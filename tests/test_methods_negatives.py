"""The methods and loss options that treat negatives otherwise (memory bank, FIFO bank, MoCHi; debiased,
hard-negative, DCL, DCLW): each trains, and each step does what its method says, on one device.

"Trains": a contrastive loss need not fall from step to step when its negatives change (a queue or bank
fills with harder ones), so the test is that every step descends its own objective: the step's loss,
evaluated again at the updated parameters with everything else the same (views, draws, bank or queue),
is lower, for most steps and on average, and every metric stays finite.
"""

import jax
import numpy as np
import pytest

from configs import smoke
from ssl_jax import methods, optim
from ssl_jax.methods import common, memory_bank, moco

EPS32 = float(np.finfo(np.float32).eps)
NUM_EXAMPLES = 450  # the smoke config's train split: 2 per AoA class


def _config(name, **overrides):
  config = smoke.get_config(name)
  config.augment.crop_lengths = (config.data.length,)  # one step program per config (crops: test_methods)
  for key, value in overrides.items():
    node = config
    *path, last = key.split('.')
    for part in path:
      node = node[part]
    node[last] = value
  return config


def _setup(config, total_steps=16):
  """(initial state, jitted step(state, batch) -> (state, metrics)) as the train loop builds them."""
  method = methods.get_method(config.method)
  lr = optim.learning_rate_schedule(config.optim, batch_size=config.batch_size, steps_per_epoch=total_steps,
                                    total_steps=total_steps)
  momentum = method.momentum_schedule(config.moco.momentum, total_steps) if 'moco' in config else None
  tx = optim.create_optimizer(config.optim, lr)
  networks = method.create_networks(config, bn_axis_name=None)
  state = method.init_state(config, networks, tx, jax.random.PRNGKey(0))
  step = jax.jit(method.make_train_step(config, networks, tx, common.Schedules(lr, momentum), axis_name=None),
                 static_argnames='crop_lengths')
  lengths = (config.data.length, config.data.length)
  return state, lambda state, batch: step(state, batch, crop_lengths=lengths)


def _batches(config, count, seed=0):
  """`count` batches of distinct examples (random IQ), each with its examples' bank rows as 'index'."""
  rng = np.random.default_rng(seed)
  rows = rng.permutation(NUM_EXAMPLES)[:count * config.batch_size].reshape(count, config.batch_size)
  iq = rng.normal(size=(count, config.batch_size, config.data.length, 8)).astype(np.float32)
  return [{'iq': iq[i], 'index': rows[i].astype(np.int32)} for i in range(count)]


def _leaves(tree):
  return [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]


def _relative_distance(a, b):
  """||a - b|| / ||b|| over all leaves of two pytrees."""
  num = sum(float(np.sum((x - y) ** 2)) for x, y in zip(_leaves(a), _leaves(b)))
  return (num / max(sum(float(np.sum(y ** 2)) for y in _leaves(b)), 1e-300)) ** 0.5


@pytest.mark.slow
@pytest.mark.parametrize('name, overrides', [
    ('memory_bank', {}), ('fifo_bank', {}), ('mochi', {}), ('debiased', {}), ('hard_negative', {}),
    ('dcl', {}), ('dclw', {}),
    ('moco', {'loss.name': 'debiased', 'loss.tau_plus': 0.1, 'loss.beta': 0.5}),
])
def test_every_step_descends_its_own_objective(name, overrides):
  config = _config(name, **overrides)
  state, step = _setup(config)
  batches = _batches(config, 6)
  descents = []
  for i in range(12):
    batch = batches[i % len(batches)]
    new_state, metrics = step(state, batch)
    for key, value in metrics.items():
      assert np.isfinite(float(value)), (i, key)
    _, again = step(state.replace(params=new_state.params), batch)
    descents.append(float(again['loss']) - float(metrics['loss']))
    state = new_state
  descents = np.asarray(descents)
  assert np.mean(descents) < 0 and np.sum(descents < 0) >= 10, descents
