"""Helpers shared by the method tests (not a test module): a method's step on one device, random batches, and
one step on 1 and 2 emulated devices in float64 (`device_count_report`)."""

import json
import os
import textwrap
from typing import Any, Callable

import jax
import numpy as np

from ssl_jax import augment, methods, optim
from ssl_jax.methods import common



def batch(config, seed: int = 0) -> dict:
  """A random batch as the pipeline yields it: 'iq' and each example's row in the split ('index')."""
  rng = np.random.default_rng(seed)
  return {'iq': rng.normal(size=(config.batch_size, config.data.length, 8)).astype(np.float32),
          'index': np.arange(seed * config.batch_size, (seed + 1) * config.batch_size, dtype=np.int32)}


def schedules(config, total_steps: int = 10) -> common.Schedules:
  """The schedules `ssl_jax.train.build` makes, for a run of `total_steps` steps of 10 per epoch."""
  method = methods.get_method(config.method)
  lr = optim.learning_rate_schedule(config.optim, batch_size=config.batch_size, steps_per_epoch=10,
                                    total_steps=total_steps)
  momentum = None
  if hasattr(method, 'momentum_schedule'):
    momentum = method.momentum_schedule(config.moco.momentum, total_steps, config.moco.momentum_cosine)
  return common.Schedules(lr, momentum)


def one_device(config, total_steps: int = 10) -> tuple[Any, Callable]:
  """(initial state, `step(state, batch) -> (state, metrics)`) of `config.method` on one device, jitted;
  `step` draws the crop lengths of the state's step on the host, as the train loop does."""
  method = methods.get_method(config.method)
  sched = schedules(config, total_steps)
  tx = optim.create_optimizer(config.optim, sched.learning_rate)
  networks = method.create_networks(config, bn_axis_name=None)
  state = jax.jit(lambda key: method.init_state(config, networks, tx, key))(jax.random.PRNGKey(config.seed))
  jitted = jax.jit(method.make_train_step(config, networks, tx, sched, axis_name=None),
                   static_argnames='crop_lengths')
  policy = augment.AugmentPolicy.from_config(config.augment)

  def step(state, batch):
    lengths = common.crop_lengths_for_step(state.rng, int(state.step), policy, config.data.length)
    return jitted(state, batch, crop_lengths=lengths)

  return state, step


_DEVICE_SCRIPT = textwrap.dedent('''
    import dataclasses, json, sys
    import jax
    jax.config.update('jax_enable_x64', True)
    import jax.numpy as jnp, numpy as np
    from configs import smoke
    from ssl_jax import augment, methods, optim, parallel
    from ssl_jax.methods import common
    from tests import method_harness

    method_name, overrides, start_step = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    config = smoke.get_config(method_name)
    for dotted, value in overrides.items():
      node = config
      *path, last = dotted.split('.')
      for part in path:
        node = node[part]
      node[last] = tuple(value) if isinstance(value, list) else value
    method = methods.get_method(method_name)
    sched = method_harness.schedules(config)
    tx = optim.create_optimizer(config.optim, sched.learning_rate)

    def float64_networks(networks):
      """The method's networks computing in float64 (the encoders carry a compute dtype, the heads promote)."""
      return dataclasses.replace(networks, **{
          f.name: getattr(networks, f.name).clone(dtype=jnp.float64) for f in dataclasses.fields(networks)
          if getattr(getattr(networks, f.name), 'dtype', None) == jnp.float32})

    def to_float64(tree):
      return jax.tree.map(lambda x: np.asarray(x, np.float64) if np.issubdtype(np.asarray(x).dtype, np.floating)
                          else np.asarray(x), tree)

    state0 = jax.device_get(method.init_state(config, float64_networks(method.create_networks(config, None)), tx,
                                              jax.random.PRNGKey(0)))
    state0 = to_float64(state0).replace(step=np.int32(start_step))
    if hasattr(state0, 'queue'):  # a queue filled with past unit-norm rows, as after start_step steps
      queue = np.random.default_rng(2).normal(size=state0.queue.shape)
      state0 = state0.replace(queue=queue / np.linalg.norm(queue, axis=-1, keepdims=True))
    step = method.make_train_step(config, float64_networks(method.create_networks(config, parallel.AXIS)), tx,
                                  sched, axis_name=parallel.AXIS)
    iq = np.random.default_rng(1).normal(size=(config.batch_size, config.data.length, 8))
    policy = augment.AugmentPolicy.from_config(config.augment)
    lengths = common.crop_lengths_for_step(state0.rng, start_step, policy, config.data.length)

    runs = {}
    for n in (1, 2):
      mesh = parallel.create_mesh(jax.devices()[:n])
      fn = parallel.data_parallel(step, mesh, donate_state=False)
      state, metrics = fn(parallel.replicate(state0, mesh), parallel.shard_batch({'iq': iq}, mesh), lengths)
      runs[n] = jax.device_get((state, metrics))

    def relative_distance(a, b):
      leaves = [(np.asarray(x, np.float64), np.asarray(y, np.float64))
                for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
      num = sum(float(np.sum((x - y) ** 2)) for x, y in leaves)
      den = sum(float(np.sum(y ** 2)) for _, y in leaves)
      return (num / max(den, 1e-300)) ** 0.5

    (state1, metrics1), (state2, metrics2) = runs[1], runs[2]
    parts = {f.name for f in dataclasses.fields(state1)} - {'rng', 'step'}
    report = {
        'dtypes': sorted({str(np.asarray(x).dtype) for x in jax.tree.leaves(state1.params)}),
        'metrics': {k: [float(metrics1[k]), float(metrics2[k])] for k in metrics1},
        'distance': {p: relative_distance(getattr(state2, p), getattr(state1, p)) for p in sorted(parts)},
        'moved': relative_distance(state1.params, state0.params),
        'step': [int(state1.step), int(state2.step)],
    }
    print('RESULT' + json.dumps(report))
''')


def device_count_report(method: str, overrides: dict | None = None, start_step: int = 0) -> dict:
  """One step of `method`'s smoke config from one float64 state on 1 and on 2 emulated CPU devices.

  `overrides`: dotted config keys -> values (JSON-able). The state starts at `start_step`; a queue in it
  is filled with random unit rows. Returns {'metrics': {name: [1 device, 2 devices]}, 'distance': {state
  part: ||2 devices - 1 device|| / ||1 device||}, 'moved': how far the step moved the parameters, ...}.
  Everything computes in float64 (the encoders' compute dtype, every array of the state and the batch).
  """
  import emulated_devices  # pylint: disable=g-import-not-at-top  (tests/; not on the device script's path)
  return emulated_devices.run(_DEVICE_SCRIPT, [method, json.dumps(overrides or {}), str(start_step)], 2)


# The float64 tolerance of `device_count_report`: two device counts run the same float64 arithmetic except
# the order of the sums over the batch (BatchNorm statistics, loss and gradient sums, Sinkhorn's sums). A
# sum of n terms reordered moves by at most (n - 1) u sum|x_i| (u = 2^-53 ~ 1.1e-16); the longest sums
# here have n ~ 10^3 (batch x time), and a training step's result depends on them with a condition number
# far below 10^4 at a generic state, so every part of the state agrees to ~1e-9 relative (measured here:
# ~1e-15). A wrong collective (local statistics or sums, a queue counted on every device) changes the
# step's result by a share of the step itself: the smoke step moves the parameters by ~1e-4 of their norm
# and the loss, gradient and optimiser state by O(1) relative (SwAV's queue counted twice: 7e-2 in the
# loss, 3e-1 in the momentum, 1e-4 in the parameters).
FLOAT64_TOLERANCE = 1e-9


def assert_device_count_invariant(report: dict) -> None:
  assert report['dtypes'] == ['float64'], report['dtypes']
  assert report['step'] == [report['step'][0]] * 2
  assert report['moved'] > 1e-6, report  # the step changed the parameters: there was something to compare
  for name, (one, two) in report['metrics'].items():
    assert abs(one - two) <= FLOAT64_TOLERANCE * max(abs(one), 1.0), (name, one, two)
  for part, distance in report['distance'].items():
    assert distance <= FLOAT64_TOLERANCE, (part, report)


def restore(workdir: str, config) -> Any:
  """The newest checkpoint of `workdir`, restored into `config.method`'s state."""
  from ssl_jax.workdir import checkpoints  # pylint: disable=g-import-not-at-top
  method = methods.get_method(config.method)
  networks = method.create_networks(config, bn_axis_name=None)
  tx = optim.create_optimizer(config.optim, lambda s: 0.0)
  like = jax.eval_shape(lambda: method.init_state(config, networks, tx, jax.random.PRNGKey(0)))
  checkpointer = checkpoints.Checkpointer(workdir)
  try:
    return checkpointer.restore(like)
  finally:
    checkpointer.close()


def assert_resume_is_bit_identical(config, tmp_path) -> Any:
  """Trains `config` (checkpoints every 4 steps, 6 steps) straight, and again interrupted after its step-4
  checkpoint and resumed; asserts the two final states are bit-identical. Returns the final state."""
  import shutil  # pylint: disable=g-import-not-at-top
  from ssl_jax import train  # pylint: disable=g-import-not-at-top
  assert config.num_train_steps == 6 and config.checkpoint_every_steps == 4
  straight, resumed = str(tmp_path / 'straight'), str(tmp_path / 'resumed')
  summary = train.pretrain(config, straight)
  assert summary['stop_reason'] == 'completed' and np.isfinite(summary['final_loss'])
  train.pretrain(config, resumed)
  shutil.rmtree(os.path.join(resumed, 'checkpoints', '6'))
  summary = train.pretrain(config, resumed)
  assert summary['start_step'] == 4 and summary['final_step'] == 6
  a, b = restore(straight, config), restore(resumed, config)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  return a
