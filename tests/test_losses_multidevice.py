"""Device-sharded losses equal the single-device global loss (values and pmean'd gradients).

Runs itself in a subprocess with 4 emulated CPU devices, in the three ways a per-device step can run:
`jax.shard_map` with and without `check_vma`, and `jax.pmap`. The convention checked is the one in
`ssl_jax/losses/common.py`: every device returns the global loss, and `pmean` of the per-device parameter
gradients is the global-batch gradient. The sharded and global programs sum in different orders, so the
check runs in float64 (`JAX_ENABLE_X64=1`): rounding leaves ~1e-15 there, and a tolerance of 1e-12 is far
from both it and a wrong collective (> 1e-3, checked below). The losses' float32 accuracy is tested
against float64 NumPy in test_losses.py.
"""

import os
import subprocess
import sys

NUM_DEVICES = 4


def test_sharded_losses_equal_global():
  # A device thread starved for > 40 s on a loaded host makes XLA:CPU abort at a collective's rendezvous
  # (see test_parallel.py): allow 600 s.
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={NUM_DEVICES} '
             '--xla_cpu_collective_call_terminate_timeout_seconds=600', JAX_PLATFORMS='cpu', JAX_ENABLE_X64='1')
  result = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
  assert result.returncode == 0, result.stdout + result.stderr
  assert 'ALL CHECKS PASSED' in result.stdout, result.stdout


def _main() -> None:
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.sharding import Mesh, PartitionSpec as P

  from ssl_jax.losses import contrastive

  assert jax.device_count() == NUM_DEVICES, jax.devices()
  assert jax.config.jax_enable_x64, 'run with JAX_ENABLE_X64=1 (float64 comparisons)'
  rtol = 1e-12
  mesh = Mesh(np.array(jax.devices()), ('batch',))
  n_local, in_dim, out_dim = 3, 5, 6
  n = n_local * NUM_DEVICES
  keys = jax.random.split(jax.random.key(0), 4)
  params = {'w': jax.random.normal(keys[0], (in_dim, out_dim), jnp.float64)}
  # Per-example scale is a (sharded) data input so projection norms vary widely across rows.
  scale = 10.0**jax.random.uniform(keys[1], (n, 1), jnp.float64, minval=-1.0, maxval=3.0)
  x_a = jax.random.normal(keys[2], (n, in_dim), jnp.float64)
  x_b = x_a + 0.3 * jax.random.normal(keys[3], (n, in_dim), jnp.float64)

  def project(params, x, s):
    return s * (x @ params['w'])

  def nt_xent_loss(params, x_a, x_b, s, axis_name=None):
    return contrastive.nt_xent(project(params, x_a, s), project(params, x_b, s), temperature=0.05,
                               axis_name=axis_name)

  def v3_loss(params, x_a, x_b, s, axis_name=None):
    # Keys come from the same parameters: the gather must still carry no gradient into them.
    k_b = project(params, x_b * 0.5 + 0.1, s)
    k_a = project(params, x_a * 0.5 + 0.1, s)
    return contrastive.symmetric_info_nce(project(params, x_a, s), project(params, x_b, s), k_a, k_b,
                                          temperature=0.1, axis_name=axis_name)

  def check(name, loss_fn):
    want_loss, want_grad = jax.jit(jax.value_and_grad(loss_fn))(params, x_a, x_b, scale)
    want_grad = want_grad['w']

    def body(params, x_a, x_b, s):
      loss, grad = jax.value_and_grad(loss_fn)(params, x_a, x_b, s, 'batch')
      return loss[None], jax.lax.pmean(grad, 'batch')['w']

    runs = {}
    for check_vma in (True, False):
      fn = jax.shard_map(body, mesh=mesh, in_specs=(P(), P('batch'), P('batch'), P('batch')),
                         out_specs=(P('batch'), P()), check_vma=check_vma)
      runs[f'shard_map(check_vma={check_vma})'] = jax.jit(fn)(params, x_a, x_b, scale)
    split = lambda x: x.reshape(NUM_DEVICES, n_local, *x.shape[1:])
    loss, grad = jax.pmap(body, axis_name='batch', in_axes=(None, 0, 0, 0))(
        params, split(x_a), split(x_b), split(scale))
    runs['pmap'] = (loss[:, 0], grad[0])
    for mode, (loss, grad) in runs.items():
      assert loss.dtype == grad.dtype == jnp.float64
      np.testing.assert_allclose(np.asarray(loss), np.full(NUM_DEVICES, want_loss), rtol=rtol,
                                 err_msg=f'{name} {mode}: per-device loss != global loss')
      np.testing.assert_allclose(np.asarray(grad), np.asarray(want_grad), rtol=rtol,
                                 atol=rtol * float(jnp.abs(want_grad).max()),
                                 err_msg=f'{name} {mode}: pmean(grad) != global grad')
      print(f'{name} {mode}: ok')

    # The check can fail: per-device losses without the gather give a different value and gradient.
    local_loss, local_grad = jax.value_and_grad(loss_fn)(params, x_a[:n_local], x_b[:n_local],
                                                         scale[:n_local])
    assert abs(float(local_loss) - float(want_loss)) > 1e-3
    assert float(jnp.abs(local_grad['w'] - want_grad).max()) > 1e-3 * float(jnp.abs(want_grad).max())

  def clip_loss(params, x_a, x_b, s, axis_name=None):
    # CLIP: both towers' embeddings are differentiated, through the gather of the keys too.
    z_a, z_b = project(params, x_a, s), project(params, x_b * 0.5 + 0.1, s)
    return contrastive.symmetric_info_nce(z_a, z_b, z_a, z_b, temperature=0.1, axis_name=axis_name,
                                          key_gradient=True)

  check('nt_xent', nt_xent_loss)
  check('symmetric_info_nce', v3_loss)
  check('symmetric_info_nce(key_gradient=True)', clip_loss)

  z_a, z_b = project(params, x_a, scale), project(params, x_b, scale)
  want = contrastive.similarity_stats(z_a, z_b)
  got = jax.jit(jax.shard_map(lambda a, b: contrastive.similarity_stats(a, b, 'batch'), mesh=mesh,
                              in_specs=(P('batch'), P('batch')), out_specs=P()))(z_a, z_b)
  for key in want:
    np.testing.assert_allclose(float(got[key]), float(want[key]), atol=rtol, err_msg=key)
  print('similarity_stats: ok')
  print('ALL CHECKS PASSED')


if __name__ == '__main__':
  _main()
