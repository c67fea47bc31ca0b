"""Member runs against single runs, step by step, without the data pipeline (tests/test_members.py).

`member_run(config, batches, mesh)` trains a member config (K >= 2) through `train.build_members`;
`single_run(config, batches)` trains a plain config through `train.build` on one device. Both feed the
same host batches and return (losses per step, final state on the host). `distance` is the relative
distance ||a - b|| / ||b|| over whole parts of a state (as tests/test_parallel.py).

Run as a script (`python tests/member_harness.py METHOD DTYPE N_DEVICES MEMBER_DEVICES`), it prints
`RESULT{json}`: each member's distance to its single run, for the multi-device subprocess tests.
"""

import json
import os
import sys

import jax
import numpy as np

if __name__ == '__main__':
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import smoke  # noqa: E402
from ssl_jax import members, parallel, train  # noqa: E402

STEPS_PER_EPOCH = 10
PARTS = ('params', 'batch_stats', 'opt_state', 'ema_params', 'ema_batch_stats', 'queue', 'bank', 'prototypes')


def member_config(method: str, dtype: str = 'float64', count: int = 3, *, antenna_dropout: bool = False):
  """A smoke config of `count` members differing in seed, temperature, lr, weight decay (and MoCo's momentum
  base; with `antenna_dropout` also AD's probability), one crop set of two lengths, 4 steps."""
  config = smoke.get_config(method)
  config.model.dtype = dtype
  config.batch_size = 8
  if 'moco' in config and 'queue_size' in config.moco:
    config.moco.queue_size = 32
  config.members.count = count
  config.members.seed = tuple(3 + 5 * k for k in range(count))
  config.members.temperature = tuple(0.07 + 0.04 * k for k in range(count))
  config.members.learning_rate = tuple(0.02 + 0.01 * k for k in range(count))
  config.members.weight_decay = tuple(1e-4 * (k + 1) for k in range(count))
  if 'moco' in config:
    config.members.momentum = tuple(0.9 + 0.03 * k for k in range(count))
  # Antenna dropout off unless asked: an example with all four antennas dropped is exactly zero, its
  # max-pool windows tie, and a 1-ulp change of summation order breaks the tie one way or the other.
  config.augment.antenna_dropout = 0.0
  if antenna_dropout:
    config.members.antenna_dropout = tuple(0.05 * k for k in range(count))
  return config


def batches(config, num_steps: int, seed: int = 1) -> list[dict]:
  rng = np.random.default_rng(seed)
  return [{'iq': rng.normal(size=(config.batch_size, config.data.length, 8)).astype(np.float32)}
          for _ in range(num_steps)]


def member_run(config, host_batches, mesh):
  built = train.build_members(config, mesh, STEPS_PER_EPOCH)
  state, losses = built['state'], []
  for step, batch in enumerate(host_batches):
    state, metrics = built['step_fn'](state, parallel.shard_batch(batch, mesh), step)
    losses.append(np.asarray(jax.device_get(metrics['loss']), np.float64))
  return np.stack(losses, axis=1), jax.device_get(state)  # losses (K, steps)


def single_run(config, host_batches, devices=None):
  mesh = parallel.create_mesh(devices or jax.devices()[:1])
  built = train.build(config, mesh, STEPS_PER_EPOCH)
  state, losses = built['state'], []
  for step, batch in enumerate(host_batches):
    state, metrics = built['step_fn'](state, parallel.shard_batch(batch, mesh), step)
    losses.append(float(metrics['loss']))
  return np.asarray(losses), jax.device_get(state)


def distance(a, b) -> float:
  num = sum(float(np.sum((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2))
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  den = sum(float(np.sum(np.asarray(y, np.float64) ** 2)) for y in jax.tree.leaves(b))
  return (num / max(den, 1e-300)) ** 0.5


def state_distance(member_state, single_state) -> float:
  """The largest relative distance over the state's parts (`PARTS` the method has)."""
  return max(distance(getattr(member_state, p), getattr(single_state, p)) for p in PARTS
             if hasattr(single_state, p))


def compare(config, num_steps: int, mesh) -> dict:
  """Each member of `config` against the single run of its plain config: loss and state distances."""
  host_batches = batches(config, num_steps)
  member_losses, state = member_run(config, host_batches, mesh)
  report = {'members': []}
  for k, plain in enumerate(members.member_configs(config)):
    losses, single = single_run(plain, host_batches)
    report['members'].append({
        'loss': float(np.max(np.abs(member_losses[k] - losses) / np.abs(losses))),
        'state': state_distance(members.select(state, k), single),
        'losses': losses.tolist()})
  return report


if __name__ == '__main__':
  method, dtype, n_devices, member_devices = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
  cfg = member_config(method, dtype, count=4)
  cfg.augment.crop_lengths = (32,)  # one compiled step per run
  cfg.members.devices = member_devices
  print('RESULT' + json.dumps(compare(cfg, 4, parallel.create_member_mesh(member_devices,
                                                                          jax.devices()[:n_devices]))))
