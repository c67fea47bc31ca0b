"""Shuffle-BN for MoCo v2 (`config.moco.key_bn='shuffle'`, ssl_jax/methods/shuffle_bn.py): ghost BatchNorm
groups against a numpy reference, the key permutation and its inverse, the batch signature it removes, the
step on 2 devices, and a run."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import smoke
from ssl_jax import train
from ssl_jax.losses import discrimination
from ssl_jax.methods import common, moco, shuffle_bn
from ssl_jax.models import layers

import method_harness  # tests/method_harness.py

EPS = 1e-5


def _numpy_batch_norm(x, scale, bias):
  """Training-mode BatchNorm of `(n, time, C)` over its rows and time (biased variance), and its moments."""
  mean = x.mean(axis=(0, 1))
  var = ((x - mean) ** 2).mean(axis=(0, 1))
  return (x - mean) / np.sqrt(var + EPS) * scale + bias, mean, var


def _batch_norm_encode(bn, params):
  """`encode(batch_stats, view)` of a lone BatchNorm layer, as `common.make_encode` gives for a network."""

  def encode(stats, view):
    y, updates = bn.apply({'params': params, 'batch_stats': stats}, view, mutable=['batch_stats'])
    return y, updates['batch_stats']

  return encode


def _float64_setup(groups=3, n=12, time=5, channels=4):
  rng = np.random.default_rng(0)
  # Groups with unlike moments: the global statistics are none of the groups' statistics.
  x = rng.normal(size=(n, time, channels)) * rng.uniform(0.5, 3.0, size=(n, 1, 1)) + rng.normal(size=(n, 1, 1))
  params = {'scale': rng.uniform(0.5, 2.0, channels), 'bias': rng.normal(size=channels)}
  stats = {'mean': rng.normal(size=channels), 'var': rng.uniform(0.5, 2.0, channels)}
  bn = layers.BatchNorm(momentum=0.9, epsilon=EPS, dtype=jnp.float64, param_dtype=jnp.float64)
  return x, params, stats, bn


def test_grouped_batch_norm_is_each_groups_own_batch_norm_float64():
  """Each group is normalised with its own statistics; the running averages move by the mean over groups;
  the gradient is that of the per-group BatchNorm (the hand-written backward pass, once per group)."""
  groups = 3
  with jax.enable_x64(True):
    x, params, stats, bn = _float64_setup(groups)
    encode = shuffle_bn.grouped(_batch_norm_encode(bn, params), groups, None)
    y, new_stats = encode(stats, jnp.asarray(x))
    parts = [_numpy_batch_norm(part, params['scale'], params['bias']) for part in np.split(x, groups)]
    # Float64 against float64: each value is a handful of operations on O(1) numbers, the moments sums of
    # 20 terms, so both sides agree to a few ulps (~1e-15); 1e-12 leaves room and still catches any
    # statistic of another group or of the whole batch (they differ by O(1) here).
    np.testing.assert_allclose(np.asarray(y), np.concatenate([p[0] for p in parts]), rtol=1e-12, atol=1e-12)
    for name, index in (('mean', 1), ('var', 2)):
      expected = 0.9 * stats[name] + 0.1 * np.mean([p[index] for p in parts], axis=0)
      np.testing.assert_allclose(np.asarray(new_stats[name]), expected, rtol=1e-12, atol=1e-12)

    def reference(x):  # per-group BatchNorm in plain jnp, differentiated by autodiff
      parts = []
      for part in jnp.split(x, groups):
        mean = part.mean(axis=(0, 1))
        var = ((part - mean) ** 2).mean(axis=(0, 1))
        parts.append((part - mean) / jnp.sqrt(var + EPS) * params['scale'] + params['bias'])
      return jnp.concatenate(parts)

    weights = jnp.asarray(np.random.default_rng(1).normal(size=x.shape))
    grad = jax.grad(lambda x: jnp.sum(encode(stats, x)[0] * weights))(jnp.asarray(x))
    expected = jax.grad(lambda x: jnp.sum(reference(x) * weights))(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(grad), np.asarray(expected), rtol=1e-10, atol=1e-12)


def test_grouped_encoder_is_the_encoder_run_on_each_group_float64():
  """Every batch-coupled layer of MoCo's networks sees its group alone: the grouped encoder's output is the
  concatenation of the encoder run on each group as a batch, its statistics the mean of theirs."""
  groups = 4
  with jax.enable_x64(True):
    config = smoke.get_config('moco')
    config.model.dtype, config.moco.key_bn, config.moco.bn_groups = 'float64', 'shuffle', groups
    networks = moco.create_networks(config, bn_axis_name='batch')  # 'shuffle' drops the cross-device axis
    assert networks.encoder.bn_axis_name is None
    params, stats = jax.jit(lambda key: common.init_variables(networks, key, 32))(jax.random.PRNGKey(0))
    encode = common.make_encode(networks, params)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 32, 8)))
    z, new_stats = jax.jit(shuffle_bn.grouped(encode, groups, None))(stats, x)
    apart = [jax.jit(encode)(stats, part) for part in jnp.split(x, groups)]
    # The same float64 operations on the same rows (vmap batches them): agreement to rounding, ~1e-15.
    np.testing.assert_allclose(np.asarray(z), np.concatenate([a[0] for a in apart]), rtol=1e-10, atol=1e-12)
    mean_stats = jax.tree.map(lambda *s: np.mean(s, axis=0), *[a[1] for a in apart])
    for a, b in zip(jax.tree.leaves(new_stats), jax.tree.leaves(mean_stats)):
      np.testing.assert_allclose(np.asarray(a), b, rtol=1e-10, atol=1e-12)


def _standardize(stats, view):
  """A batch-coupled `encode`: each row minus its batch's mean, over its batch's std (no parameters)."""
  mean = view.mean(axis=0)
  return (view - mean) / jnp.sqrt(((view - mean) ** 2).mean(axis=0) + EPS), {'mean': mean}


def _emulated(encode_on, devices: int):
  """`encode_on(axis_name)` run on `devices` emulated devices (a vmap with a named axis): each takes its
  rows of the batch; the result is put back together in device order."""

  def run(stats, view):
    z, new = jax.vmap(encode_on('devices'), in_axes=(None, 0), axis_name='devices')(
        stats, view.reshape((devices, -1) + view.shape[1:]))
    return z.reshape((-1,) + z.shape[2:]), jax.tree.map(lambda s: s[0], new)  # pmean'd: equal on every device

  return run


@pytest.mark.parametrize('devices', [1, 2, 4])
def test_shuffled_keys_come_back_in_the_original_order(devices):
  """The un-shuffle is the inverse of the shuffle: a row-wise `encode` comes back unchanged, in order; a
  batch-coupled one normalises row i with the group of the permuted batch that holds it, on any device count."""
  groups, n = 4, 16
  key = jax.random.PRNGKey(7)
  with jax.enable_x64(True):
    x = np.random.default_rng(0).normal(size=(n, 3)) * np.arange(1, n + 1)[:, None]  # rows tell apart
    order = np.asarray(shuffle_bn.permutation(key, n))
    assert sorted(order) == list(range(n)) and not np.array_equal(order, np.arange(n))

    def rowwise(stats, view):
      return 2.0 * view + 1.0, stats

    one = _emulated(lambda axis: shuffle_bn.shuffled(rowwise, groups, key, axis), devices)({}, jnp.asarray(x))[0]
    np.testing.assert_array_equal(np.asarray(one), 2.0 * x + 1.0)

    z, stats = _emulated(lambda axis: shuffle_bn.shuffled(_standardize, groups, key, axis), devices)(
        {}, jnp.asarray(x))
    expected, means = np.empty_like(x), []
    for members in np.split(order, groups):  # group g: the examples at positions g n/G ... of the shuffle
      rows = x[members]
      means.append(rows.mean(axis=0))
      expected[members] = (rows - means[-1]) / np.sqrt(((rows - means[-1]) ** 2).mean(axis=0) + EPS)
    np.testing.assert_allclose(np.asarray(z), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(stats['mean']), np.mean(means, axis=0), rtol=1e-12, atol=1e-12)

    # The queries' groups are the batch's own contiguous blocks, not the keys' permuted ones.
    q = _emulated(lambda axis: shuffle_bn.grouped(_standardize, groups, axis), devices)({}, jnp.asarray(x))[0]
    blocks = [(b - b.mean(0)) / np.sqrt(((b - b.mean(0)) ** 2).mean(0) + EPS) for b in np.split(x, groups)]
    np.testing.assert_allclose(np.asarray(q), np.concatenate(blocks), rtol=1e-12, atol=1e-12)


def test_a_group_count_that_devices_do_not_share_is_refused():
  with pytest.raises(ValueError, match=r'config.moco.bn_groups=3 must be a positive multiple of the device '
                     r'count 2'):
    _emulated(lambda axis: shuffle_bn.shuffled(_standardize, 3, jax.random.PRNGKey(0), axis), 2)(
        {}, jnp.zeros((12, 3)))


# The batch signature. A query and its positive key normalised with the statistics of one batch share that
# batch's sampling fluctuation of the statistics; the queue's keys, normalised in other batches, do not.
# To see the statistics alone, every candidate is the query's own example: the positive is example i's
# view-b key in this step's batch, each of the K "queue" keys the same view of the same example normalised
# in another batch (fresh examples, row i replaced by it). The candidates differ only in the statistics
# they were normalised with, so an encoder blind to the statistics ties them all (a miss, chance 0) and one
# that sees them at random finds the positive with probability 1 / (K + 1).
_N, _GROUPS, _K, _TRIALS, _TIME = 16, 4, 7, 32, 32
_VIEW_NOISE = 0.1  # view = example + independent N(0, 0.1^2) noise per sample: two views of one example


def _signature_accuracy(key_bn: str) -> np.ndarray:
  """Per trial (a step's batch of `_N` queries), the fraction of queries whose positive beats all `_K`
  candidates (ties miss), with a random-init smoke encoder in mode `key_bn`."""
  config = smoke.get_config('moco')
  config.moco.key_bn, config.moco.bn_groups, config.batch_size = key_bn, _GROUPS, _N
  networks = moco.create_networks(config, None)
  params, stats = jax.jit(lambda key: common.init_variables(networks, key, _TIME))(jax.random.PRNGKey(0))
  encode = common.make_encode(networks, params)
  run_key = jax.random.PRNGKey(1)

  def view(x, key):
    return x + _VIEW_NOISE * jax.random.normal(key, x.shape)

  def trial(index):
    key = jax.random.fold_in(jax.random.PRNGKey(2), index)
    x_key, a_key, b_key, other_key = jax.random.split(key, 4)
    x = jax.random.normal(x_key, (_N, _TIME, 8))
    step = index * (_K + 1)  # each batch its own step, so its own permutation under 'shuffle'
    query_wrap, key_wrap = moco.batch_norm_wraps(config, run_key, step, None)
    q, _ = query_wrap(encode)(stats, view(x, a_key))
    x_b = view(x, b_key)
    k, _ = key_wrap(encode)(stats, x_b)

    def in_other_batch(t):  # example i's key (all i) in batch t: fresh examples, row i replaced by x_b[i]
      t_key = jax.random.fold_in(other_key, t)
      y = view(jax.random.normal(t_key, (_N, _TIME, 8)), jax.random.fold_in(t_key, 1))
      _, wrap_t = moco.batch_norm_wraps(config, run_key, step + t, None)
      return jax.vmap(lambda i: wrap_t(encode)(stats, y.at[i].set(x_b[i]))[0][i])(jnp.arange(_N))

    queue = jax.vmap(in_other_batch, out_axes=1)(jnp.arange(1, _K + 1))  # (N, K, dim)
    unit = lambda v: v / jnp.linalg.norm(v, axis=-1, keepdims=True)
    positive = jnp.sum(unit(q) * unit(k), axis=-1)
    negatives = jnp.einsum('nd,nkd->nk', unit(q), unit(queue))
    return jax.vmap(lambda p, n: discrimination.positive_top1(p[None], n[None]))(positive, negatives).mean()

  return np.asarray(jax.jit(jax.vmap(trial))(jnp.arange(_TRIALS)), np.float64)


@pytest.mark.slow
def test_global_statistics_let_a_query_find_its_positive_and_shuffle_bn_does_not():
  """'global': the positive shares the query's batch statistics, and is found far above chance.
  'shuffle': the query's group shares on average only (s - 1) / (N - 1) = 1/5 of its other members with the
  positive's group (s = N / G = 4), as a queue key's group shares none: the cue mostly goes.

  Margins from the trials alone: a trial's accuracy is a mean of 0/1 outcomes, so its variance is at most
  p (1 - p) <= 1/4 whatever the dependence between the queries of a batch, and the mean of `_TRIALS`
  independent trials has a standard error <= sqrt(p (1 - p) / _TRIALS). Each claim must hold by 4 such
  standard errors (one-sided, p < 4e-5 each under a normal approximation)."""
  chance = 1 / (_K + 1)
  globals_, shuffles = _signature_accuracy('global'), _signature_accuracy('shuffle')
  p_global, p_shuffle = globals_.mean(), shuffles.mean()
  print(f'signature: global {p_global:.3f}, shuffle {p_shuffle:.3f}, chance {chance:.3f} '
        f'({_TRIALS} x {_N} queries)')
  se = lambda p: math.sqrt(p * (1 - p) / _TRIALS)
  # 'global' beats chance: a statistics-blind encoder at chance has SE <= sqrt(chance (1 - chance) / T).
  assert p_global > chance + 4 * se(chance), (p_global, chance)
  # 'shuffle' is below 'global', by 4 of the difference's worst-case standard errors (p = 1/2 on each side).
  assert p_global - p_shuffle > 4 * math.sqrt(2 * 0.25 / _TRIALS), (p_global, p_shuffle)
  # ... and keeps at most half of global's lead over chance: it shares a fifth of the statistics' members.
  assert p_shuffle - chance < 0.5 * (p_global - chance) + 4 * se(0.5), (p_global, p_shuffle)


@pytest.mark.slow
def test_shuffled_step_on_two_devices_is_the_one_device_step():
  """The whole step in float64 on 1 and 2 emulated devices: the permutation is drawn for the global batch
  and each device encodes whole groups, so the keys written to the queue (in example order), the query
  network's update and the key encoder's statistics agree to float64 rounding (`FLOAT64_TOLERANCE`). On 2
  devices each key crosses devices twice (gathered, encoded in another device's group, gathered back): a
  wrong un-permutation writes other examples' keys and moves the queue by O(1)."""
  # Antenna dropout off, as tests/test_parallel.py (an all-zero example's max-pool ties).
  report = method_harness.device_count_report('moco', {'moco.key_bn': 'shuffle', 'moco.bn_groups': 4,
                                                       'augment.antenna_dropout': 0.0})
  method_harness.assert_device_count_invariant(report)


@pytest.mark.slow
def test_a_shuffle_bn_moco_run_trains(tmp_path):
  """A smoke MoCo run with Shuffle-BN through the train loop (the data-parallel program): finite losses, and
  a step other than the 'global' step on the same state and batch."""
  config = smoke.get_config('moco')
  config.data.data_dir = str(tmp_path / 'tfds')
  config.moco.key_bn, config.moco.bn_groups = 'shuffle', 4
  summary = train.pretrain(config, str(tmp_path / 'run'))
  assert summary['stop_reason'] == 'completed' and summary['final_step'] == config.num_train_steps
  assert np.isfinite(summary['final_loss'])

  losses = {}
  for mode in ('global', 'shuffle'):
    config.moco.key_bn = mode
    state, step = method_harness.one_device(config)
    _, metrics = step(state, method_harness.batch(config))
    losses[mode] = float(metrics['loss'])
  assert all(np.isfinite(v) for v in losses.values()) and losses['global'] != losses['shuffle'], losses
