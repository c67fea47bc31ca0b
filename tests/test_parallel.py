"""Data parallelism: 2 and 4 emulated CPU devices give the run of one device.

Each case runs in a subprocess with `XLA_FLAGS=--xla_force_host_platform_device_count=4` so the device count
is fixed before JAX starts, whatever else the test process imported. The runs are different programs (global
BN statistics, loss sums and gradient means are reduced in another order on each device count), so they
train in float64 (`JAX_ENABLE_X64=1`, `config.model.dtype='float64'`). After 5 steps the states agree to
<1e-14 and the losses to <1e-14 (<1e-11 with `projection_norm='batch'`, whose one-pass variance cancels).
In float32 they differ by ~1e-7..1e-6, and by up to ~1e-2 in the optimiser's momentum when a 1-ulp change
moves a gradient entry at a ReLU kink or a max-pool near-tie by O(1): how often depends on the CPU.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

import emulated_devices  # tests/emulated_devices.py

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RTOL = 1e-9  # float64 runs: see the module docstring

_SCRIPT = textwrap.dedent('''
    import json, sys
    import jax, numpy as np
    from configs import smoke
    from ssl_jax import augment, optim, parallel
    from ssl_jax import methods
    from ssl_jax.methods import common

    method_name, projection_norm = sys.argv[1], sys.argv[2]
    config = smoke.get_config(method_name)
    config.model.dtype = 'float64'
    config.batch_size = 8
    # Antenna dropout off: an example with all four antennas dropped is exactly zero, its max-pool windows
    # tie, and whether a 1-ulp difference in summation order breaks a tie moves O(1) of that gradient
    # between inputs (in any precision). Crops stay on (device-invariant draws of the starts); AD's draws
    # are tested in test_augment. One crop length: one compiled step per device count instead of up to 4.
    config.augment.antenna_dropout = 0.0
    config.augment.crop_lengths = (32,)
    config.model.projection_norm = projection_norm  # 'batch': the head's standardisation, global statistics too
    if method_name == 'moco':
      config.moco.queue_size = 32
    method = methods.get_method(method_name)
    lr = optim.learning_rate_schedule(config.optim, batch_size=config.batch_size, steps_per_epoch=5,
                                      total_steps=5)
    mom = method.momentum_schedule(config.moco.momentum, 5) if 'moco' in config else None
    tx = optim.create_optimizer(config.optim, lr)
    init_nets = method.create_networks(config, bn_axis_name=None)
    state0 = jax.device_get(method.init_state(config, init_nets, tx, jax.random.PRNGKey(0)))
    nets = method.create_networks(config, bn_axis_name=parallel.AXIS)
    step = method.make_train_step(config, nets, tx, common.Schedules(lr, mom), axis_name=parallel.AXIS)
    rng = np.random.default_rng(1)
    batches = [{'iq': rng.normal(size=(8, config.data.length, 8)).astype(np.float32)} for _ in range(5)]

    policy = augment.AugmentPolicy.from_config(config.augment)
    crop_lengths = [common.crop_lengths_for_step(state0.rng, i, policy, config.data.length) for i in range(5)]

    def run_shard_map(n):
      mesh = parallel.create_mesh(jax.devices()[:n])
      fn = parallel.data_parallel(step, mesh)
      state, losses = parallel.replicate(state0, mesh), []
      for b, lengths in zip(batches, crop_lengths):
        state, metrics = fn(state, parallel.shard_batch(b, mesh), lengths)
        losses.append(float(metrics['loss']))
      return losses, jax.device_get(state)

    runs = {n: run_shard_map(n) for n in (1, 2, 4)}
    ref_losses, ref_state = runs[1]
    assert all(a.dtype == np.float64 for a in jax.tree.leaves(ref_state.params))

    def relative_distance(a, b):
      # ||a - b|| / ||b|| over a whole part of the state: summation order moves single tiny leaves (BN
      # biases right before a conv + BN, whose gradient is exactly zero in exact arithmetic) by more than
      # their size, but the state as a whole by ~1e-15.
      num = sum(float(np.sum((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2))
                for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
      den = sum(float(np.sum(np.asarray(y, np.float64) ** 2)) for y in jax.tree.leaves(b))
      return (num / max(den, 1e-30)) ** 0.5

    parts = [p for p in ('params', 'batch_stats', 'opt_state', 'ema_params', 'ema_batch_stats', 'queue')
             if hasattr(ref_state, p)]
    report = {}
    for name, (losses, state) in runs.items():
      report[str(name)] = {'losses': losses, 'distance': {
          p: relative_distance(getattr(state, p), getattr(ref_state, p)) for p in parts}}
    print('RESULT' + json.dumps(report))
''')


def _run(method: str, projection_norm: str = 'none') -> dict:
  return emulated_devices.run(_SCRIPT, [method, projection_norm], 4, x64=True)


@pytest.mark.slow
@pytest.mark.xdist_group('multidevice')
@pytest.mark.parametrize('method,projection_norm', [('simclr', 'none'), ('moco', 'none'), ('moco_v3', 'none'),
                                                    ('moco', 'batch')])
def test_device_count_does_not_change_the_run(method, projection_norm):
  report = _run(method, projection_norm)
  reference = report['1']['losses']
  for name in ('2', '4'):
    # float64 reductions in another order differ by ~1e-16 per operation and 5 steps leave <1e-11 (module
    # docstring). A wrong collective (local BN statistics, local negatives) moves the loss by percents.
    assert report[name]['losses'] == pytest.approx(reference, rel=RTOL, abs=0), name
    # The whole state, the optimiser's momentum (raw gradients) included.
    assert max(report[name]['distance'].values()) < RTOL, (name, report[name])


def test_batch_must_divide_by_device_count():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4', JAX_PLATFORMS='cpu',
             PYTHONPATH=REPO)
  code = ('from ssl_jax import parallel\n'
          'try:\n  parallel.check_batch_divides(6, parallel.create_mesh())\n'
          'except ValueError as e:\n  print("ERR", e)\n')
  proc = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=300)
  assert 'ERR config.batch_size=6 does not divide by the device count 4' in proc.stdout, proc.stderr[-2000:]
