"""SwAV (ssl_jax/methods/swav.py): training on the smoke config, the prototypes (unit norm, frozen at first),
the queue in Sinkhorn's sums, exact resume, one step on 1 and 2 devices, and its config checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import smoke
from ssl_jax import augment, config_checks, methods
from ssl_jax.losses import common as loss_common, swav as swav_losses
from ssl_jax.methods import common, swav
import method_harness  # tests/method_harness.py


def _trajectory(config, steps):
  state, step = method_harness.one_device(config)
  states, metrics = [state], []
  for i in range(steps):
    state, m = step(state, method_harness.batch(config, seed=i))
    states.append(state)
    metrics.append({k: float(v) for k, v in m.items()})
  return states, metrics


def test_swav_trains_with_frozen_then_unit_norm_prototypes_and_a_queue():
  config = smoke.get_config('swav')
  assert (config.swav.freeze_prototypes_steps, config.swav.queue_size, config.swav.queue_start_step) == (2, 32, 3)
  states, metrics = _trajectory(config, 6)
  assert all(np.isfinite(m['loss']) for m in metrics)
  # Swapped prediction over 24 prototypes starts near log(24) (near-uniform predictions and codes).
  assert 0.5 * np.log(24) < metrics[0]['loss'] < 2 * np.log(24)
  kernels = [np.asarray(s.params['prototypes']['kernel']) for s in states]
  assert kernels[0].shape == (config.model.output_dim, 24)
  for kernel in kernels:  # every stored state: unit prototypes (the columns)
    np.testing.assert_allclose(np.linalg.norm(kernel, axis=0), 1.0, rtol=1e-6)
  # Frozen for steps 0 and 1: bit-identical prototypes and optimiser state of them, while the rest trains.
  for before, after in ((states[0], states[1]), (states[1], states[2])):
    np.testing.assert_array_equal(np.asarray(after.params['prototypes']['kernel']),
                                  np.asarray(before.params['prototypes']['kernel']))
    assert not np.array_equal(np.asarray(after.params['head']['fc2']['kernel']),
                              np.asarray(before.params['head']['fc2']['kernel']))
  trace = lambda state: [np.asarray(l) for p, l in jax.tree_util.tree_leaves_with_path(state.opt_state)
                         if swav._under_prototypes(p)]
  assert trace(states[2]) and all(not np.any(t) for t in trace(states[2]))  # no momentum gathered while frozen
  assert [m['prototypes_frozen'] for m in metrics] == [1, 1, 0, 0, 0, 0]
  assert not np.allclose(kernels[3], kernels[2])  # from step 2 on they train
  assert any(np.any(t) for t in trace(states[3]))
  # The queue: in use from step max(queue_start_step = 3, 32 / 16 = 2); rows written FIFO, unit norm.
  assert [m['queue_in_use'] for m in metrics] == [0, 0, 0, 1, 1, 1]
  assert not np.any(np.asarray(states[0].queue))
  np.testing.assert_array_equal(np.asarray(states[1].queue)[:, 16:], 0.0)  # step 0 wrote rows 0..15
  for i in range(2, 6):  # full after 2 steps, unit rows
    np.testing.assert_allclose(np.linalg.norm(np.asarray(states[i].queue), axis=-1), 1.0, rtol=1e-5)
  # Step 3 overwrote rows 16..31 of both views' queues (3 * 16 mod 32), the older rows 0..15 stay.
  before, after = np.asarray(states[3].queue), np.asarray(states[4].queue)
  np.testing.assert_array_equal(after[:, :16], before[:, :16])
  assert not np.any(np.all(after[:, 16:] == before[:, 16:], axis=-1))


def test_keep_prototypes_selects_every_leaf_under_the_prototypes_key_only():
  new = {'prototypes': {'kernel': jnp.ones(3)}, 'head': {'kernel': jnp.ones(2)}}
  old = {'prototypes': {'kernel': jnp.zeros(3)}, 'head': {'kernel': jnp.zeros(2)}}
  kept = swav.keep_prototypes(new, old, jnp.asarray(True))
  assert not np.any(kept['prototypes']['kernel']) and np.all(kept['head']['kernel'] == 1)
  moved = swav.keep_prototypes(new, old, jnp.asarray(False))
  assert np.all(moved['prototypes']['kernel'] == 1)


def _step_loss_by_hand(config, state, batch, with_queue):
  """SwAV's loss of `state`'s step on `batch`, written out from the pieces (views, networks, swav_loss)."""
  networks = swav.create_networks(config, bn_axis_name=None)
  policy = augment.AugmentPolicy.from_config(config.augment)
  lengths = common.crop_lengths_for_step(state.rng, int(state.step), policy, config.data.length)

  @jax.jit
  def loss(state, iq):
    encode_as = common.view_encoder(iq, common.view_keys(state.rng, state.step), lengths, policy, None)
    encode = common.make_encode(networks, state.params)
    z_a, stats = encode_as(encode, state.batch_stats, 'a')
    z_b, _ = encode_as(encode, stats, 'b')
    kernel = state.params['prototypes']['kernel']
    scores = [loss_common.l2_normalize(z) @ kernel for z in (z_a, z_b)]
    queue_scores = [state.queue[0] @ kernel, state.queue[1] @ kernel] if with_queue else None
    return swav_losses.swav_loss(scores, queue_scores=queue_scores, temperature=config.temperature,
                                 epsilon=config.swav.epsilon, sinkhorn_iterations=config.swav.sinkhorn_iterations)

  return float(loss(state, batch['iq']))


def test_each_view_s_queue_enters_its_sinkhorn_sums_once_in_use():
  config = smoke.get_config('swav')
  states, metrics = _trajectory(config, 4)
  for i in (2, 3):  # step 2: queue full but before queue_start_step; step 3: in use
    batch = method_harness.batch(config, seed=i)
    with_queue = _step_loss_by_hand(config, states[i], batch, with_queue=True)
    without = _step_loss_by_hand(config, states[i], batch, with_queue=False)
    assert abs(with_queue - without) > 1e-4
    assert metrics[i]['loss'] == pytest.approx(with_queue if i == 3 else without, rel=1e-5)


@pytest.mark.slow
def test_resumed_run_is_bit_identical(tmp_path):
  config = smoke.get_config('swav')
  config.data.data_dir = str(tmp_path / 'tfds')
  state = method_harness.assert_resume_is_bit_identical(config, tmp_path)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(state.params['prototypes']['kernel']), axis=0), 1.0,
                             rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize('start_step, what', [(0, 'frozen prototypes, no queue'),
                                              (3, 'moving prototypes, the queue in use')])
def test_one_step_on_two_devices_is_the_step_on_one(start_step, what):
  # Antenna dropout off, as tests/test_parallel.py (an all-zero example's max-pool ties).
  report = method_harness.device_count_report('swav', {'augment.antenna_dropout': 0.0}, start_step)
  assert report['metrics']['prototypes_frozen'] == [float(start_step < 2)] * 2, what
  assert report['metrics']['queue_in_use'] == [float(start_step >= 3)] * 2, what
  method_harness.assert_device_count_invariant(report)


@pytest.mark.parametrize('overrides, expected', [
    ({'swav.queue_size': 40}, 'config.swav.queue_size = 40: must be 0 or a multiple of config.batch_size = 16'),
    ({'swav.queue_size': -16}, 'config.swav.queue_size = -16: must be an integer >= 0'),
    ({'swav.num_prototypes': 1}, 'config.swav.num_prototypes = 1: must be an integer >= 2'),
    ({'swav.epsilon': 0.0}, 'config.swav.epsilon = 0.0: must be a finite number > 0'),
    ({'swav.sinkhorn_iterations': 0}, 'config.swav.sinkhorn_iterations = 0: must be an integer >= 1'),
    ({'swav.freeze_prototypes_steps': -1}, 'config.swav.freeze_prototypes_steps = -1'),
    ({'swav.queue_start_step': -1}, 'config.swav.queue_start_step = -1'),
    ({'batch_size': 1, 'swav.queue_size': 0}, 'config.batch_size = 1: must be an integer >= 2'),
])
def test_bad_swav_values_are_named(overrides, expected):
  config = smoke.get_config('swav')
  for dotted, value in overrides.items():
    section, _, key = dotted.rpartition('.')
    (config[section] if section else config)[key] = value
  problems = config_checks.pretrain_config_problems(config)
  assert any(p.startswith(expected) for p in problems), problems


def test_the_step_refuses_a_queue_of_partial_batches():
  config = smoke.get_config('swav')
  config.swav.queue_size = 24
  with pytest.raises(ValueError, match='config.swav.queue_size=24 must be 0'):
    method_harness.one_device(config)
  assert 'swav' in methods.METHODS
