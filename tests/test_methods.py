"""SimCLR, MoCo (v2) and MoCo v3 train steps on one device: what each step must change, MoCo's EMA and queue."""

import jax
import numpy as np
import pytest

from configs import smoke
from ssl_jax import augment, optim
from ssl_jax.methods import common, moco, moco_v3, simclr


def _batch(config, seed=0):
  rng = np.random.default_rng(seed)
  return {'iq': rng.normal(size=(config.batch_size, config.data.length, 8)).astype(np.float32)}


def _setup(config, method):
  lr = optim.learning_rate_schedule(config.optim, batch_size=config.batch_size, steps_per_epoch=10,
                                    total_steps=10)
  momentum = moco.momentum_schedule(config.moco.momentum, 10) if 'moco' in config else None
  tx = optim.create_optimizer(config.optim, lr)
  networks = method.create_networks(config, bn_axis_name=None)
  state = method.init_state(config, networks, tx, jax.random.PRNGKey(0))
  per_device = method.make_train_step(config, networks, tx, common.Schedules(lr, momentum), axis_name=None)
  jitted = jax.jit(per_device, static_argnames='crop_lengths')
  policy = augment.AugmentPolicy.from_config(config.augment)

  def step(state, batch):  # As the train loop: this step's crop lengths, drawn on the host.
    lengths = common.crop_lengths_for_step(state.rng, int(state.step), policy, config.data.length)
    return jitted(state, batch, crop_lengths=lengths)

  return state, step


def _changed(a, b):
  return any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_simclr_step_updates_params_and_batch_stats():
  config = smoke.get_config('simclr')
  state, step = _setup(config, simclr)
  new_state, metrics = step(state, _batch(config))
  assert int(new_state.step) == 1
  assert np.isfinite(float(metrics['loss']))
  # With 2N = 32 views the loss starts near log(2N - 1) for an untrained encoder.
  assert 0.5 * np.log(31) < float(metrics['loss']) < 3 * np.log(31)
  assert _changed(state.params, new_state.params)
  assert _changed(state.batch_stats, new_state.batch_stats)
  assert float(metrics['grad_norm']) > 0
  for key in ('learning_rate', 'positive_similarity', 'negative_similarity', 'embedding_std'):
    assert np.isfinite(float(metrics[key])), key


def test_simclr_no_augmentation_views_are_identical():
  """With augmentation off, both views are the example: positives have cosine similarity exactly 1."""
  config = smoke.get_config('simclr')
  config.augment.enabled = False
  state, step = _setup(config, simclr)
  _, metrics = step(state, _batch(config))
  # cos(u, u) of a float32 unit vector of d = 256: the normalisation (<= (d / 2 + 3) u, u = 6e-8) and the
  # dot product (<= d u) round by <= 1.5 d u + 3 u = 2.3e-5 in the worst case, ~0.4 sqrt(d) u = 4e-7
  # typically, and the batch mean averages 16 of them: 1e-5 is 25x the typical error of one.
  assert float(metrics['positive_similarity']) == pytest.approx(1.0, abs=1e-5)


def test_simclr_step_is_deterministic():
  # The same compiled program on the same inputs, on one machine: XLA:CPU's reductions have a fixed order,
  # so bit-for-bit equality is the contract (not a float tolerance).
  config = smoke.get_config('simclr')
  state, step = _setup(config, simclr)
  a, ma = step(state, _batch(config))
  b, mb = step(state, _batch(config))
  assert float(ma['loss']) == float(mb['loss'])
  assert not _changed(a.params, b.params)


def test_moco_step_ema_queue_and_pointer():
  config = smoke.get_config('moco')
  state, step = _setup(config, moco)
  m = float(moco.momentum_schedule(config.moco.momentum, 10)(0))
  new_state, metrics = step(state, _batch(config))
  # EMA of the key encoder uses the query params from before the update (MoCo's order).
  expected = jax.tree.map(lambda t, o: m * t + (1 - m) * o, state.ema_params,
                          {k: v for k, v in state.params.items() if k != 'predictor'})
  # One multiply-add per entry on each side (1 - m is exact for m in [0.5, 1]): each rounds by <= 2u of
  # |m t| + |(1 - m) o| (u = 6e-8), the two sides differ by <= 4u = 2.4e-7 of it; 1e-6 relative, plus 1e-7
  # for entries near 0 (BN biases start at 0).
  for x, y in zip(jax.tree.leaves(expected), jax.tree.leaves(new_state.ema_params)):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
  # The key encoder is not trained by the gradient: only by EMA.
  assert _changed(state.params, new_state.params)
  assert int(new_state.queue_ptr) == config.batch_size
  written = np.asarray(new_state.queue[:config.batch_size])
  # Measured in float64, so only the step's float32 normalisation x * rsqrt(sum x^2) rounds: the sum of
  # d = 256 squares by <= d u relative (worst case, u = 6e-8), the rsqrt by half that plus u, the product by
  # u: norms within (d / 2 + 3) u = 7.9e-6 < 1e-5 (typically ~0.2 * sqrt(d) u = 2e-7).
  np.testing.assert_allclose(np.linalg.norm(written.astype(np.float64), axis=1), 1.0, rtol=1e-5)
  assert not np.allclose(written, np.asarray(state.queue[:config.batch_size]))
  np.testing.assert_array_equal(new_state.queue[config.batch_size:], state.queue[config.batch_size:])
  assert float(metrics['queue_fill']) == pytest.approx(config.batch_size / config.moco.queue_size)
  assert float(metrics['momentum']) == pytest.approx(m)
  assert np.isfinite(float(metrics['loss']))


def test_moco_queue_wraps_fifo():
  config = smoke.get_config('moco')
  config.moco.queue_size = 2 * config.batch_size
  state, step = _setup(config, moco)
  ptrs = []
  for i in range(3):
    state, _ = step(state, _batch(config, seed=i))
    ptrs.append(int(state.queue_ptr))
  assert ptrs == [config.batch_size, 0, config.batch_size]


def test_moco_v3_step_trains_the_predictor_and_moves_the_key_encoder_by_ema():
  config = smoke.get_config('moco_v3')
  state, step = _setup(config, moco_v3)
  assert 'predictor' in state.params and 'predictor' not in state.ema_params
  assert not hasattr(state, 'queue') and 'queue_size' not in config.moco  # negatives: the batch's keys
  m = float(moco_v3.momentum_schedule(config.moco.momentum, 10)(0))
  new_state, metrics = step(state, _batch(config))
  expected = jax.tree.map(lambda t, o: m * t + (1 - m) * o, state.ema_params,
                          {k: v for k, v in state.params.items() if k != 'predictor'})
  for x, y in zip(jax.tree.leaves(expected), jax.tree.leaves(new_state.ema_params)):  # as for MoCo above
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
  assert _changed(state.ema_batch_stats, new_state.ema_batch_stats)
  assert _changed(state.params['predictor'], new_state.params['predictor'])
  # Symmetric InfoNCE over 2 x 16 keys: each half starts near log(16) for an untrained network.
  assert 0.5 * 2 * np.log(16) < float(metrics['loss']) < 3 * 2 * np.log(16)
  assert 'queue_fill' not in metrics and float(metrics['momentum']) == pytest.approx(m)


@pytest.mark.parametrize('name', ['moco', 'moco_v3'])  # SimCLR's state is a part of MoCo's
def test_float64_model_gives_a_float64_state(name):
  """config.model.dtype='float64' (64-bit JAX on): parameters, statistics (the predictor's too), optimiser
  state, EMA, queue and the step's loss are float64, and a step keeps every dtype (traced, not compiled)."""
  method = {'moco': moco, 'moco_v3': moco_v3}[name]
  config = smoke.get_config(name)
  config.model.dtype = 'float64'
  with jax.enable_x64(True):
    lr = optim.learning_rate_schedule(config.optim, batch_size=config.batch_size, steps_per_epoch=10,
                                      total_steps=10)
    tx = optim.create_optimizer(config.optim, lr)
    networks = method.create_networks(config, bn_axis_name=None)
    state = jax.eval_shape(lambda: method.init_state(config, networks, tx, jax.random.PRNGKey(0)))
    floating = [a for a in jax.tree.leaves(state) if jax.numpy.issubdtype(a.dtype, jax.numpy.floating)]
    assert floating and all(a.dtype == np.float64 for a in floating)
    step = method.make_train_step(config, networks, tx,
                                  common.Schedules(lr, moco.momentum_schedule(config.moco.momentum, 10)), None)
    new_state, metrics = jax.eval_shape(lambda s, b: step(s, b, (32, 64)), state, _batch(config))
    assert jax.tree.map(lambda a: a.dtype, new_state) == jax.tree.map(lambda a: a.dtype, state)
    assert metrics['loss'].dtype == np.float64


def test_momentum_schedule_rises_from_base_to_one():
  schedule = moco.momentum_schedule(0.996, 100)
  assert float(schedule(0)) == pytest.approx(0.996)
  assert float(schedule(50)) == pytest.approx(0.998)
  assert float(schedule(100)) == pytest.approx(1.0)
  assert float(moco.momentum_schedule(0.99, 100, cosine=False)(70)) == pytest.approx(0.99)


def test_queue_must_hold_whole_batches():
  config = smoke.get_config('moco')
  config.moco.queue_size = config.batch_size + 1
  with pytest.raises(ValueError, match='queue_size'):
    _setup(config, moco)


def test_crop_lengths_are_drawn_per_step_from_the_run_key():
  config = smoke.get_config('simclr')
  config.augment.crop_lengths = (32, 64)
  policy = augment.AugmentPolicy.from_config(config.augment)
  rng = jax.random.PRNGKey(0)
  drawn = [common.crop_lengths_for_step(rng, step, policy, config.data.length) for step in range(40)]
  assert drawn == [common.crop_lengths_for_step(rng, step, policy, config.data.length) for step in range(40)]
  assert set(drawn) == {(32, 32), (32, 64), (64, 32), (64, 64)}  # every pair of the crop set
  assert drawn != [common.crop_lengths_for_step(jax.random.PRNGKey(1), step, policy, config.data.length)
                   for step in range(40)]
  config.augment.enabled = False
  off = augment.AugmentPolicy.from_config(config.augment)
  assert common.crop_lengths_for_step(rng, 3, off, config.data.length) == (64, 64)  # one program


def test_host_step_passes_each_steps_crop_lengths_and_reads_the_run_key_once(monkeypatch):
  """`HostStep` gives the launched step the lengths `crop_lengths_for_step` draws, across its table's ends."""
  monkeypatch.setattr(common, 'CROP_TABLE_STEPS', 7)
  config = smoke.get_config('simclr')
  config.augment.crop_lengths = (16, 32, 64)
  policy = augment.AugmentPolicy.from_config(config.augment)
  rng = jax.random.PRNGKey(3)
  calls = []

  def launched(state, batch, crop_lengths):
    calls.append(crop_lengths)
    return state, {}

  class State:  # Counts reads of the run key.
    reads = 0

    @property
    def rng(self):
      State.reads += 1
      return rng

  step_fn = common.host_step(config, launched)
  start = 5  # A resumed run: the first table starts at the restored step.
  for step in range(start, start + 20):
    step_fn(State(), None, step)
  expected = [common.crop_lengths_for_step(rng, step, policy, config.data.length) for step in range(start, start + 20)]
  assert calls == expected and len(set(calls)) > 3
  assert State.reads == 1
  config.augment.enabled = False
  calls.clear()
  common.host_step(config, launched)(State(), None, 0)
  assert calls == [(64, 64)]
