"""Augmentation statistics and semantics: MTC lengths and starts, AD rate and shape, independence,
identity, bad policies, and make_view under shard_map, independent of the device count (subprocess)."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ssl_jax import augment


def _ramp(batch: int, time: int) -> jnp.ndarray:
  """x[:, t, c] = t: a view's first sample is its crop start."""
  return jnp.broadcast_to(jnp.arange(time, dtype=jnp.float32)[None, :, None], (batch, time, 8))


def _within(count, total, prob, sigmas=5.0):
  std = np.sqrt(total * prob * (1 - prob))
  return abs(count - total * prob) <= sigmas * std


def _drawn_lengths(policy, time, length_keys):
  """The crop length `draw_crop_length` gives for each key."""
  return np.asarray(jax.jit(jax.vmap(lambda k: augment.draw_crop_length(k, policy, time)))(length_keys))


def test_crop_lengths_only_from_set_and_uniform():
  # time 16: 32 maps to the identity crop (16) and keeps its share.
  policy = augment.AugmentPolicy(crop_lengths=(2, 4, 8, 32), antenna_dropout=0.0)
  draws = 4000
  lengths = _drawn_lengths(policy, 16, jax.random.split(jax.random.key(0), draws))
  values, counts = np.unique(lengths, return_counts=True)
  assert set(values.tolist()) == {2, 4, 8, 16}
  assert all(_within(c, draws, 0.25) for c in counts), counts


def test_lengths_at_least_time_keep_their_mass():
  policy = augment.AugmentPolicy(crop_lengths=(4, 16, 32), antenna_dropout=0.0)
  draws = 3000
  lengths = _drawn_lengths(policy, 16, jax.random.split(jax.random.key(2), draws))
  assert set(lengths.tolist()) == {4, 16}
  assert _within(np.sum(lengths == 16), draws, 2 / 3)


def test_crop_starts_in_range_and_uniform():
  batch, time, length = 13_000, 16, 4
  view = augment.random_crop(jax.random.key(4), _ramp(batch, time), length)
  assert view.shape == (batch, length, 8)
  starts = np.asarray(view[:, 0, 0]).astype(int)
  # Contiguous crops: view[:, i] = start + i on every channel.
  np.testing.assert_array_equal(np.asarray(view), (starts[:, None, None] + np.arange(length)[None, :, None])
                                * np.ones((1, 1, 8)))
  values, counts = np.unique(starts, return_counts=True)
  assert values.tolist() == list(range(time - length + 1))
  assert all(_within(c, batch, 1 / (time - length + 1)) for c in counts), counts


def test_view_starts_fit_the_drawn_length():
  policy = augment.AugmentPolicy(crop_lengths=(4, 8, 16), antenna_dropout=0.0)
  x = _ramp(64, 16)
  lengths = _drawn_lengths(policy, 16, jax.random.split(jax.random.key(5), 60))
  view = jax.jit(augment.make_view, static_argnames=('policy', 'length'))
  starts = np.stack([np.asarray(view(x, policy=policy, length=int(length), example_key=key)[:, 0, 0])
                     for length, key in zip(lengths, jax.random.split(jax.random.key(6), 60))])
  assert set(lengths.tolist()) == {4, 8, 16}
  assert np.all(starts >= 0) and np.all(starts <= 16 - lengths[:, None])
  assert np.all(starts[lengths == 16] == 0)
  assert np.any(starts[lengths == 4] > 8), 'short crops should reach late starts'


def test_antenna_dropout_rate_and_shape():
  batch, p = 20_000, 0.2
  x = jnp.ones((batch, 3, 8))
  view = np.asarray(augment.antenna_dropout(jax.random.key(7), x, p))
  assert set(np.unique(view).tolist()) <= {0.0, 1.0}
  np.testing.assert_array_equal(view, np.broadcast_to(view[:, :1], view.shape))  # constant in time
  np.testing.assert_array_equal(view[..., 0::2], view[..., 1::2])  # I and Q together
  dropped = view[:, 0, 0::2] == 0  # (batch, 4)
  for antenna in range(4):
    assert _within(dropped[:, antenna].sum(), batch, p), dropped.mean(0)
  assert _within(np.sum(dropped[:, 0] & dropped[:, 3]), batch, p * p), 'antennas not independent'


def test_antenna_dropout_does_not_rescale():
  x = jax.random.normal(jax.random.key(8), (50, 5, 8))
  view = augment.antenna_dropout(jax.random.key(9), x, 0.5)
  kept = np.asarray(view != 0)
  np.testing.assert_array_equal(np.asarray(view)[kept], np.asarray(x)[kept])


def test_two_views_independent():
  batch = 4000
  policy = augment.AugmentPolicy(crop_lengths=(4,), antenna_dropout=0.5)
  x = _ramp(batch, 16) + 1.0  # nonzero everywhere: zeros mark dropped antennas
  (_, key_a), (_, key_b) = augment.view_keys(jax.random.key(10))
  view_a = augment.make_view(x, policy=policy, length=4, example_key=key_a)
  view_b = augment.make_view(x, policy=policy, length=4, example_key=key_b)
  bound = 5 / np.sqrt(batch)
  start_a, start_b = np.asarray(view_a[:, 0, 1:8:2]).max(1), np.asarray(view_b[:, 0, 1:8:2]).max(1)
  kept = start_a > 0
  assert kept.mean() > 0.9
  assert abs(np.corrcoef(start_a[kept & (start_b > 0)], start_b[kept & (start_b > 0)])[0, 1]) < bound
  mask_a, mask_b = np.asarray(view_a[:, 0, ::2] != 0), np.asarray(view_b[:, 0, ::2] != 0)
  assert abs(np.corrcoef(mask_a.ravel(), mask_b.ravel())[0, 1]) < bound
  assert not np.array_equal(mask_a, mask_b)

  # Crop lengths of the two views are drawn independently across steps.
  policy = augment.AugmentPolicy(crop_lengths=(2, 4, 8, 16), antenna_dropout=0.0)

  def lengths(step_key):
    (len_a, _), (len_b, _) = augment.view_keys(step_key)
    return augment.draw_crop_length(len_a, policy, 16), augment.draw_crop_length(len_b, policy, 16)

  steps = 3000
  len_a, len_b = jax.jit(jax.vmap(lengths))(jax.random.split(jax.random.key(11), steps))
  assert _within(np.sum(np.asarray(len_a) == np.asarray(len_b)), steps, 1 / 4)


def test_identity_is_exact():
  x = jax.random.normal(jax.random.key(12), (3, 16, 8))
  off = augment.AugmentPolicy(crop_lengths=(4, 8), antenna_dropout=0.5, enabled=False)
  assert augment.make_view(x, policy=off, length=4, example_key=jax.random.key(1)) is x
  trivial = augment.AugmentPolicy(crop_lengths=(16, 64), antenna_dropout=0.0)
  length = int(augment.draw_crop_length(jax.random.key(0), trivial, 16))
  got = augment.make_view(x, policy=trivial, length=length, example_key=jax.random.key(1))
  np.testing.assert_array_equal(np.asarray(got), np.asarray(x))


def test_policy_from_config():
  config = ml_collections.ConfigDict({'crop_lengths': [32, 64], 'antenna_dropout': 0.2,
                                      'enabled': True, 'iq': {'cyclic_shift': False, 'rotate_90': False,
                                                              'common_phase': False, 'max_frequency_shift': 0.0,
                                                              'snr_db': ()}})
  policy = augment.AugmentPolicy.from_config(config)
  assert policy == augment.AugmentPolicy((32, 64), 0.2, True)
  hash(policy)


@pytest.mark.parametrize('kwargs, match', [
    (dict(crop_lengths=()), r'crop_lengths.*\(\)'),
    (dict(crop_lengths=(32, 0)), r'crop_lengths.*0'),
    (dict(crop_lengths=(32, -4)), r'crop_lengths.*-4'),
    (dict(crop_lengths=(32, 2.5)), r'crop_lengths.*2\.5'),
    (dict(crop_lengths=(True,)), r'crop_lengths.*True'),
    (dict(crop_lengths=[32]), r'crop_lengths.*\[32\]'),
    (dict(antenna_dropout=1.0), r'antenna_dropout.*1\.0'),
    (dict(antenna_dropout=-0.1), r'antenna_dropout.*-0\.1'),
    (dict(enabled='yes'), r'enabled.*yes'),
])
def test_bad_policy_raises(kwargs, match):
  args = dict(crop_lengths=(32,), antenna_dropout=0.2, enabled=True) | kwargs
  with pytest.raises(ValueError, match=match):
    augment.AugmentPolicy(**args)


def test_bad_input_raises():
  key = jax.random.key(0)
  with pytest.raises(ValueError, match=r'x.*\(4, 16\)'):
    augment.random_crop(key, jnp.zeros((4, 16)), 8)
  with pytest.raises(ValueError, match=r'x.*\(4, 16, 3\)'):
    augment.antenna_dropout(key, jnp.zeros((4, 16, 3)), 0.2)
  with pytest.raises(ValueError, match=r'length.*0'):
    augment.random_crop(key, jnp.zeros((4, 16, 8)), 0)
  with pytest.raises(ValueError, match=r'p.*1\.5'):
    augment.antenna_dropout(key, jnp.zeros((4, 16, 8)), 1.5)
  policy = augment.AugmentPolicy((8,), 0.2)
  with pytest.raises(ValueError, match=r'x.*\(16, 8\)'):
    augment.make_view(jnp.zeros((16, 8)), policy=policy, length=8, example_key=key)


def test_make_view_under_shard_map_does_not_depend_on_the_device_count():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4', JAX_PLATFORMS='cpu')
  result = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
  assert result.returncode == 0, result.stdout + result.stderr
  assert 'ALL CHECKS PASSED' in result.stdout, result.stdout


def _shard_map_main() -> None:
  """4 devices, same keys on each: every device crops its rows differently, and together the rows are
  exactly the view one device makes of the whole batch (with and without shard_map's vma checks)."""
  from jax.sharding import Mesh, PartitionSpec as P  # pylint: disable=g-import-not-at-top
  assert jax.device_count() == 4
  mesh = Mesh(np.array(jax.devices()), ('batch',))
  policy = augment.AugmentPolicy(crop_lengths=(4, 8, 16), antenna_dropout=0.2)
  x = _ramp(8, 16) + 1.0  # nonzero everywhere: zeros mark dropped antennas
  for check_vma in (True, False):
    for length in (4, 8, 16):
      sharded = jax.jit(jax.shard_map(
          lambda x, key, length=length: augment.make_view(x, policy=policy, length=length, example_key=key,
                                                          axis_name='batch'),
          mesh=mesh, in_specs=(P('batch'), P()), out_specs=P('batch'), check_vma=check_vma))
      for seed in range(4):
        (_, key), _ = augment.view_keys(jax.random.key(100 + seed))
        got = np.asarray(sharded(x, key))
        want = np.asarray(augment.make_view(x, policy=policy, length=length, example_key=key))
        np.testing.assert_array_equal(got, want)
        if length < 16:
          per_device = got[:, 0, 1::2].max(axis=1).reshape(4, 2)  # crop starts (+1) of each device's rows
          assert len({tuple(r) for r in per_device}) > 1, 'devices drew identical crops'
    print(f'check_vma={check_vma}: ok')
  print('ALL CHECKS PASSED')


if __name__ == '__main__':
  _shard_map_main()
