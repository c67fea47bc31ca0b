"""The new methods and loss options on 1 and 2 emulated CPU devices: one step gives the same result.

What a device count may change is the order of float32 sums (BatchNorm moments over the global batch, the
loss's psum, the gradient's pmean); what it must not change is which rows are negatives, positives, bank
rows and draws (all made for the global batch, each device taking its rows). One step is compared, in
float32 (the encoder has no float64 mode), with tolerances from that error model (see `_TOLERANCE`).
Each case runs in a subprocess with `XLA_FLAGS=--xla_force_host_platform_device_count=2`.
"""

import json
import textwrap

import pytest

import emulated_devices  # tests/emulated_devices.py


_SCRIPT = textwrap.dedent('''
    import json, sys
    import jax, numpy as np
    from configs import smoke
    from ssl_jax import methods, optim, parallel
    from ssl_jax.methods import common

    name, overrides = sys.argv[1], json.loads(sys.argv[2])
    config = smoke.get_config(name)
    for key, value in overrides.items():
      node = config
      *path, last = key.split('.')
      for part in path:
        node = node[part]
      node[last] = value
    config.batch_size = 8
    # Antenna dropout off, as tests/test_parallel.py: an all-zero example ties its max-pool windows, and a
    # 1-ulp change of summation order could move that gradient between inputs. Crops stay on.
    config.augment.antenna_dropout = 0.0
    method = methods.get_method(config.method)
    lr = optim.learning_rate_schedule(config.optim, batch_size=8, steps_per_epoch=5, total_steps=5)
    momentum = method.momentum_schedule(config.moco.momentum, 5) if 'moco' in config else None
    tx = optim.create_optimizer(config.optim, lr)
    state0 = jax.device_get(method.init_state(config, method.create_networks(config, None), tx,
                                              jax.random.PRNGKey(0)))
    step = method.make_train_step(config, method.create_networks(config, parallel.AXIS), tx,
                                  common.Schedules(lr, momentum), axis_name=parallel.AXIS)
    rng = np.random.default_rng(1)
    # Bank rows: example 3 on both devices (and twice on the first), 7 on both: duplicates across devices.
    batch = {'iq': rng.normal(size=(8, config.data.length, 8)).astype(np.float32),
             'index': np.array([3, 7, 3, 9, 11, 3, 20, 7], np.int32)}
    lengths = (32, 64)  # unequal views: each crop length is drawn per example on the global batch

    def run(n):
      mesh = parallel.create_mesh(jax.devices()[:n])
      state, metrics = parallel.data_parallel(step, mesh)(parallel.replicate(state0, mesh),
                                                          parallel.shard_batch(batch, mesh), lengths)
      return jax.device_get(state), {k: float(v) for k, v in jax.device_get(metrics).items()}

    (one, one_metrics), (two, two_metrics) = run(1), run(2)

    def relative_distance(a, b):
      num = sum(float(np.sum((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2))
                for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
      den = sum(float(np.sum(np.asarray(y, np.float64) ** 2)) for y in jax.tree.leaves(b))
      return (num / max(den, 1e-300)) ** 0.5

    parts = [p for p in ('params', 'batch_stats', 'opt_state', 'ema_params', 'ema_batch_stats', 'queue', 'bank')
             if hasattr(one, p)]
    pointers = {p: [int(getattr(s, p)) for s in (one, two)] for p in ('queue_ptr', 'bank_ptr') if hasattr(one, p)}
    print('RESULT' + json.dumps({'metrics': [one_metrics, two_metrics], 'pointers': pointers,
                                 'distance': {p: relative_distance(getattr(two, p), getattr(one, p)) for p in parts}}))
''')

# One float32 step. Reassociating a sum of m <= 512 terms (BatchNorm moments over batch x time, the
# loss's sums) moves it by ~sqrt(m) ε <= 3e-6 relative; ~20 normalisation layers in sequence add theirs,
# so the projections, the loss and the bank / queue rows written agree to 1e-4. The gradient (the optimiser's
# trace) inherits that, with 10x for the backward pass's reassociation: 1e-3. The weights, statistics and
# EMA weights move by lr x gradient from identical values: 1e-5. A wiring fault (local BatchNorm moments,
# local negatives, per-device draws or bank rows) moves them by percents.
_TOLERANCE = {'loss_metrics': 1e-4, 'queue': 1e-4, 'bank': 1e-4, 'opt_state': 1e-3, 'weights': 1e-5}


def _run(name: str, overrides: dict) -> dict:
  return emulated_devices.run(_SCRIPT, [name, json.dumps(overrides)], 2, timeout=1200)


@pytest.mark.slow
@pytest.mark.xdist_group('multidevice')
@pytest.mark.parametrize('name, overrides', [
    ('memory_bank', {}), ('fifo_bank', {}), ('mochi', {}), ('hard_negative', {'loss.tau_plus': 0.1}),
    ('dclw', {}), ('moco', {'loss.name': 'debiased', 'loss.tau_plus': 0.1, 'loss.beta': 0.5}),
])
def test_one_and_two_devices_take_the_same_step(name, overrides):
  report = _run(name, overrides)
  one, two = report['metrics']
  assert one.keys() == two.keys()
  for key in ('loss', 'positive_similarity', 'negative_similarity', 'embedding_std'):
    assert two[key] == pytest.approx(one[key], rel=_TOLERANCE['loss_metrics'], abs=1e-6), (key, report)
  for part, distance in report['distance'].items():
    assert distance < _TOLERANCE.get(part, _TOLERANCE['weights']), (part, report)
  for a, b in report['pointers'].values():
    assert a == b, report
