"""The new losses, banks, MoCHi draws and IQ augmentations on 4 emulated devices equal one device's global run.

Runs itself in a subprocess with 4 CPU devices, under `jax.shard_map` with and without `check_vma`. The
convention checked is the one in `ssl_jax/losses/common.py`: every device returns the global loss and `pmean` of
the per-device parameter gradients is the global-batch gradient; Sinkhorn's sums, the banks' updates, the
random draws and the augmentations equal those of one device holding the concatenated batch.

Tolerances: sharded and global runs compute the same per-row quantities; they differ only in the order of
the final sums (psum against one sum over n rows) and in matmul blocking, so values agree to 8 n ε
relative and gradients to 8 n ε of their largest entry (n = global rows, ε the float32 epsilon). Sinkhorn
codes, whose renormalisations amplify rounding, use the bound of `tests/test_lightly_oracles.py`. Each
check also shows that leaving out the cross-device step changes the result by more than the tolerance.
"""

import math
import os
import subprocess
import sys

import pytest

NUM_DEVICES = 4


@pytest.mark.slow  # ~40 programs compiled in one subprocess: minutes on 2 busy cores
def test_sharded_equals_global():
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={NUM_DEVICES}',
             JAX_PLATFORMS='cpu')
  result = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True,
                          timeout=600, check=False)
  assert result.returncode == 0, result.stdout + result.stderr
  assert 'ALL CHECKS PASSED' in result.stdout, result.stdout


def _main() -> None:
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.sharding import Mesh, PartitionSpec as P

  from ssl_jax import augment
  from ssl_jax.losses import banks, common as loss_common, dcl, debiased, mochi, swav as swav_losses

  assert jax.device_count() == NUM_DEVICES, jax.devices()
  eps = float(np.finfo(np.float32).eps)
  mesh = Mesh(np.array(jax.devices()), ('batch',))
  n_local, in_dim, out_dim, num_prototypes = 3, 5, 6, 4
  n = n_local * NUM_DEVICES
  keys = jax.random.split(jax.random.key(0), 8)
  params = {'w': jax.random.normal(keys[0], (in_dim, out_dim))}
  scale = 10.0**jax.random.uniform(keys[1], (n, 1), minval=-1.0, maxval=2.0)
  x_a = jax.random.normal(keys[2], (n, in_dim))
  x_b = x_a + 0.3 * jax.random.normal(keys[3], (n, in_dim))
  queue = loss_common.l2_normalize(jax.random.normal(keys[4], (10, out_dim)))
  prototypes = loss_common.l2_normalize(jax.random.normal(keys[5], (num_prototypes, out_dim)))
  swav_queue = jax.random.normal(keys[6], (2 * NUM_DEVICES, in_dim))  # 2 queue rows per device
  indices = jnp.array([0, 5, 5, 7, 2, 19, 11, 5, 3, 0, 14, 8], jnp.int32)  # duplicates across devices
  bank = banks.init_bank(keys[7], 20, out_dim)
  step_key = jax.random.key(42)

  def project(params, x, s):
    return s * (x @ params['w'])

  def shard(fn, in_specs, out_specs, check_vma):
    return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=check_vma))

  def check_loss(name, loss_fn, data, rows):
    """loss_fn(params, *data, axis_name=None); data are sharded over the batch axis (dim 0)."""
    want_loss, want_grad = jax.jit(jax.value_and_grad(loss_fn))(params, *data)
    want_grad = np.asarray(want_grad['w'])
    tol = 8 * rows * eps

    def body(params, *xs):
      loss, grad = jax.value_and_grad(loss_fn)(params, *xs, axis_name='batch')
      return loss[None], jax.lax.pmean(grad, 'batch')['w']

    for check_vma in (True, False):
      loss, grad = shard(body, (P(),) + (P('batch'),) * len(data), (P('batch'), P()), check_vma)(params, *data)
      np.testing.assert_allclose(np.asarray(loss), np.full(NUM_DEVICES, want_loss), rtol=tol,
                                 err_msg=f'{name} check_vma={check_vma}: per-device loss != global loss')
      np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=0, atol=tol * np.abs(want_grad).max(),
                                 err_msg=f'{name} check_vma={check_vma}: pmean(grad) != global grad')
      print(f'{name} check_vma={check_vma}: ok')
    local_loss, local_grad = jax.value_and_grad(loss_fn)(params, *(d[:n_local] for d in data))
    assert abs(float(local_loss) - float(want_loss)) > tol * abs(float(want_loss)), name
    assert np.abs(np.asarray(local_grad['w']) - want_grad).max() > tol * np.abs(want_grad).max(), name

  pairs = (x_a, x_b, scale)
  check_loss('debiased_nt_xent', lambda p, a, b, s, axis_name=None: debiased.debiased_nt_xent(
      project(p, a, s), project(p, b, s), temperature=0.2, tau_plus=0.1, beta=1.0, axis_name=axis_name),
             pairs, 2 * n)
  check_loss('debiased_info_nce', lambda p, a, b, s, axis_name=None: debiased.debiased_info_nce(
      project(p, a, s), project(p, b, s), queue, temperature=0.2, tau_plus=0.1, beta=1.0, axis_name=axis_name),
             pairs, n)
  check_loss('dcl', lambda p, a, b, s, axis_name=None: dcl.dcl(
      project(p, a, s), project(p, b, s), temperature=0.1, axis_name=axis_name), pairs, 2 * n)
  check_loss('dclw', lambda p, a, b, s, axis_name=None: dcl.dclw(
      project(p, a, s), project(p, b, s), temperature=0.1, sigma=0.5, axis_name=axis_name), pairs, 2 * n)
  check_loss('nt_xent_fifo_bank', lambda p, a, b, s, axis_name=None: banks.nt_xent_fifo_bank(
      project(p, a, s), project(p, b, s), queue, temperature=0.1, axis_name=axis_name), pairs, n)

  def mochi_loss(p, a, b, s, axis_name=None):
    q = project(p, a, s)
    draws = mochi.draw_mochi(step_key, q.shape[0], num_hard=4, num_mix=3, num_query_mix=2,
                             axis_name=axis_name)
    synthetic = mochi.synthesize_hard_negatives(q, queue, draws, num_hard=4)
    return mochi.mochi_info_nce(q, project(p, b, s), queue, synthetic, temperature=0.1,
                                axis_name=axis_name)

  check_loss('mochi_info_nce', mochi_loss, pairs, n)

  def bank_loss(p, a, s, idx, axis_name=None):
    negatives = banks.sample_bank_negatives(step_key, idx, num_examples=20, num_negatives=6,
                                            axis_name=axis_name)
    return banks.memory_bank_info_nce(project(p, a, s), idx, negatives, bank, temperature=0.1,
                                      axis_name=axis_name)

  check_loss('memory_bank_info_nce', bank_loss, (x_a, scale, indices), n)

  def scores(p, x, s):
    return loss_common.l2_normalize(project(p, x, s)) @ prototypes.T

  def swav(p, a, b, s, qx, axis_name=None):
    crops = [scores(p, a, s), scores(p, b, s), scores(p, 0.5 * a + 0.5 * b, s)]
    queue_scores = [scores(p, qx, 1.0), scores(p, -qx, 1.0)]
    return swav_losses.swav_loss(crops[:2], crops[2:], queue_scores, temperature=0.1, epsilon=0.05,
                                 sinkhorn_iterations=3, axis_name=axis_name)

  check_loss('swav_loss', swav, (x_a, x_b, scale, swav_queue), n + 2 * NUM_DEVICES)

  # Sinkhorn codes alone.
  s_all = scores(params, x_a, scale)
  want_codes = np.asarray(swav_losses.sinkhorn_knopp(s_all, epsilon=0.05, iterations=3))
  iterations, log_bk = 3, math.log(n * num_prototypes)
  r = math.expm1(2.0**7 * 8 * 3 * eps * (float(jnp.abs(s_all).max()) / 0.05 + 2 * log_bk))
  for check_vma in (True, False):
    codes = shard(lambda s: swav_losses.sinkhorn_knopp(s, epsilon=0.05, iterations=iterations, axis_name='batch'),
                  (P('batch'),), P('batch'), check_vma)(s_all)
    np.testing.assert_allclose(np.asarray(codes), want_codes, rtol=r, atol=float(np.finfo(np.float32).tiny))
  local_codes = np.asarray(swav_losses.sinkhorn_knopp(s_all[:n_local], epsilon=0.05, iterations=3))
  assert np.any(np.abs(local_codes - want_codes[:n_local]) > r * want_codes[:n_local] + 1e-30)
  print('sinkhorn_knopp: ok')

  # Bank updates: every device ends with the global update. (Each device returns its replica, stacked: with
  # check_vma=True, shard_map cannot infer that an all_gather's result is replicated.)
  v = project(params, x_b, scale)
  want_bank = np.asarray(banks.update_memory_bank(bank, indices, v, momentum=0.5))
  want_fifo, want_ptr = banks.fifo_bank_update(queue, jnp.int32(6), v[:8])
  stack = lambda tree: jax.tree.map(lambda x: x[None], tree)
  for check_vma in (True, False):
    got = shard(lambda i, v: stack(banks.update_memory_bank(bank, i, v, momentum=0.5, axis_name='batch')),
                (P('batch'), P('batch')), P('batch'), check_vma)(indices, v)
    for replica in np.asarray(got):
      np.testing.assert_allclose(replica, want_bank, rtol=0, atol=8 * n * out_dim * eps)
    fifo, ptr = shard(lambda v: stack(banks.fifo_bank_update(queue, jnp.int32(6), v, axis_name='batch')),
                      (P('batch'),), (P('batch'), P('batch')), check_vma)(v[:8])
    for replica, replica_ptr in zip(np.asarray(fifo), np.asarray(ptr)):
      np.testing.assert_allclose(replica, np.asarray(want_fifo), rtol=0, atol=4 * out_dim * eps)
      assert int(replica_ptr) == int(want_ptr) == 4
  local_bank = np.asarray(banks.update_memory_bank(bank, indices[:n_local], v[:n_local], momentum=0.5))
  assert np.abs(local_bank - want_bank).max() > 0.1
  print('bank updates: ok')

  # Random draws and augmentations do not depend on the device count.
  def draws_fn(axis_name=None):
    return mochi.draw_mochi(step_key, n_local if axis_name else n, num_hard=5, num_mix=3, num_query_mix=2,
                            axis_name=axis_name)

  want_draws = draws_fn()
  want_negatives = banks.sample_bank_negatives(step_key, indices, num_examples=20, num_negatives=7)
  signal = jax.random.normal(keys[2], (n, 16, 8))
  on = augment.IQAugmentations(cyclic_shift=True, rotate_90=True, common_phase=True, max_frequency_shift=0.1,
                               snr_db=(0.0, 10.0))
  want_view = np.asarray(augment.iq_augment(step_key, signal, on))
  for check_vma in (True, False):
    got_draws = shard(lambda: draws_fn('batch'), (), P('batch'), check_vma)()
    # The sampler's own indices must be this device's rows: pass them sharded.
    got_negatives = shard(lambda idx: banks.sample_bank_negatives(
        step_key, idx, num_examples=20, num_negatives=7, axis_name='batch'), (P('batch'),), P('batch'),
                          check_vma)(indices)
    for got, want in zip(jax.tree.leaves(got_draws), jax.tree.leaves(want_draws)):
      np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    np.testing.assert_array_equal(np.asarray(got_negatives), np.asarray(want_negatives))
    view = shard(lambda x: augment.iq_augment(step_key, x, on, axis_name='batch'), (P('batch'),), P('batch'),
                 check_vma)(signal)
    # Same draws; elementwise rotations may round differently under another fusion: 2 rotations' bound.
    np.testing.assert_allclose(np.asarray(view), want_view, rtol=0,
                               atol=2 * 12 * eps * float(np.abs(want_view).max()) * 2)
  print('draws and augmentations: ok')
  print('ALL CHECKS PASSED')


if __name__ == '__main__':
  _main()
