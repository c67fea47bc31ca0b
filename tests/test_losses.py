"""Losses against plain float64 NumPy references: values, gradients, extreme τ and norms, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.losses import common as loss_common, contrastive

# ---------------------------------------------------------------- float64 NumPy references


def _np_lse(logits: np.ndarray) -> np.ndarray:
  m = np.max(logits, axis=1, keepdims=True)
  return (m + np.log(np.sum(np.exp(logits - m), axis=1, keepdims=True)))[:, 0]


def _np_softmax(logits: np.ndarray) -> np.ndarray:
  return np.exp(logits - _np_lse(logits)[:, None])


def _np_normalize(z: np.ndarray):
  norm = np.maximum(np.linalg.norm(z, axis=1, keepdims=True), loss_common.NORM_EPS)
  return z / norm, norm


def _np_normalize_backward(u: np.ndarray, norm: np.ndarray, du: np.ndarray) -> np.ndarray:
  """Gradient w.r.t. z of a function of u = z / |z|, given its gradient du w.r.t. u."""
  return (du - u * np.sum(u * du, axis=1, keepdims=True)) / norm


def np_nt_xent(z_a, z_b, tau):
  """Returns (loss, dloss/dz_a, dloss/dz_b) in float64."""
  z_a, z_b = np.asarray(z_a, np.float64), np.asarray(z_b, np.float64)
  n = len(z_a)
  u, norm = _np_normalize(np.concatenate([z_a, z_b]))
  logits = u @ u.T / tau
  np.fill_diagonal(logits, -np.inf)
  pos = np.concatenate([np.arange(n, 2 * n), np.arange(n)])
  lse = _np_lse(logits)
  loss = np.mean(lse - logits[np.arange(2 * n), pos])
  dlogits = _np_softmax(logits)
  dlogits[np.arange(2 * n), pos] -= 1.0
  dlogits /= 2 * n
  du = (dlogits + dlogits.T) @ u / tau
  dz = _np_normalize_backward(u, norm, du)
  return loss, dz[:n], dz[n:]


def np_info_nce(q, k, queue, tau):
  """Returns (loss, dloss/dq) in float64."""
  q, k, queue = (np.asarray(x, np.float64) for x in (q, k, queue))
  u_q, norm = _np_normalize(q)
  u_k, _ = _np_normalize(k)
  logits = np.concatenate([np.sum(u_q * u_k, axis=1, keepdims=True), u_q @ queue.T], axis=1) / tau
  loss = np.mean(_np_lse(logits) - logits[:, 0])
  dlogits = _np_softmax(logits)
  dlogits[:, 0] -= 1.0
  dlogits /= len(q)
  du = (dlogits[:, :1] * u_k + dlogits[:, 1:] @ queue) / tau
  return loss, _np_normalize_backward(u_q, norm, du)


def _np_ctr(q, k, tau):
  u_q, norm = _np_normalize(np.asarray(q, np.float64))
  u_k, _ = _np_normalize(np.asarray(k, np.float64))
  logits = u_q @ u_k.T / tau
  n = len(q)
  loss = np.mean(_np_lse(logits) - np.diag(logits))
  dlogits = (_np_softmax(logits) - np.eye(n)) / n
  return loss, _np_normalize_backward(u_q, norm, dlogits @ u_k / tau)


def np_symmetric_info_nce(q_a, q_b, k_a, k_b, tau):
  """Returns (loss, dloss/dq_a, dloss/dq_b) in float64."""
  loss_a, dq_a = _np_ctr(q_a, k_b, tau)
  loss_b, dq_b = _np_ctr(q_b, k_a, tau)
  return loss_a + loss_b, dq_a, dq_b


def _np_numerical_grad(f, x, h=1e-6):
  g = np.zeros_like(x)
  for idx in np.ndindex(x.shape):
    xp, xm = x.copy(), x.copy()
    xp[idx] += h
    xm[idx] -= h
    g[idx] = (f(xp) - f(xm)) / (2 * h)
  return g


# ---------------------------------------------------------------- inputs


def _projections(rng, n, dim, log10_norm_range):
  """Random directions with row norms log-uniform in 10**range, float32."""
  z = rng.normal(size=(n, dim))
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  z *= 10.0**rng.uniform(*log10_norm_range, size=(n, 1))
  return z.astype(np.float32)


def _near_pairs(rng, n, dim, log10_norm_range, noise):
  """z_b = z_a + small noise (confident positives: the regime where naive exp overflows)."""
  z_a = _projections(rng, n, dim, log10_norm_range)
  scale = np.linalg.norm(z_a, axis=1, keepdims=True)
  z_b = z_a + noise * scale * rng.normal(size=z_a.shape)
  return z_a, z_b.astype(np.float32)


TAUS = (1.0, 0.07, 0.01)
NORMS = {'unit': (0.0, 0.0), 'wide': (-2.0, 4.0), 'huge': (4.0, 4.0)}


def _assert_grad_close(got, want, norm_rows, rtol=2e-4):
  """Compares gradients scaled by the row norm (the gradient w.r.t. the unit direction)."""
  got = np.asarray(got, np.float64) * norm_rows
  want = want * norm_rows
  np.testing.assert_allclose(got, want, rtol=0, atol=rtol * max(np.abs(want).max(), 1e-3))


def _row_norms(z):
  return np.linalg.norm(np.asarray(z, np.float64), axis=1, keepdims=True)


def test_references_match_finite_differences():
  rng = np.random.default_rng(0)
  z_a, z_b = rng.normal(size=(2, 3, 4)) * np.array([[0.5], [2.0], [7.0]])
  tau = 0.3
  _, da, db = np_clip(z_a, z_b, tau)
  np.testing.assert_allclose(da, _np_numerical_grad(lambda x: np_clip(x, z_b, tau)[0], z_a), atol=1e-7)
  np.testing.assert_allclose(db, _np_numerical_grad(lambda x: np_clip(z_a, x, tau)[0], z_b), atol=1e-7)
  _, da, db = np_nt_xent(z_a, z_b, tau)
  np.testing.assert_allclose(da, _np_numerical_grad(lambda x: np_nt_xent(x, z_b, tau)[0], z_a),
                             atol=1e-7)
  np.testing.assert_allclose(db, _np_numerical_grad(lambda x: np_nt_xent(z_a, x, tau)[0], z_b),
                             atol=1e-7)
  queue, _ = _np_normalize(rng.normal(size=(5, 4)))
  _, dq = np_info_nce(z_a, z_b, queue, tau)
  np.testing.assert_allclose(dq, _np_numerical_grad(lambda x: np_info_nce(x, z_b, queue, tau)[0], z_a),
                             atol=1e-7)
  k_a, k_b = rng.normal(size=(2, 3, 4))
  _, dqa, dqb = np_symmetric_info_nce(z_a, z_b, k_a, k_b, tau)
  np.testing.assert_allclose(
      dqa, _np_numerical_grad(lambda x: np_symmetric_info_nce(x, z_b, k_a, k_b, tau)[0], z_a), atol=1e-7)
  np.testing.assert_allclose(
      dqb, _np_numerical_grad(lambda x: np_symmetric_info_nce(z_a, x, k_a, k_b, tau)[0], z_b), atol=1e-7)


@pytest.mark.parametrize('tau', TAUS)
@pytest.mark.parametrize('norms', list(NORMS))
@pytest.mark.parametrize('near', [False, True])
def test_nt_xent_matches_reference(tau, norms, near):
  rng = np.random.default_rng(1)
  if near:
    z_a, z_b = _near_pairs(rng, 6, 8, NORMS[norms], noise=0.05)
  else:
    z_a, z_b = _projections(rng, 6, 8, NORMS[norms]), _projections(rng, 6, 8, NORMS[norms])
  loss, (ga, gb) = jax.jit(jax.value_and_grad(
      lambda a, b: contrastive.nt_xent(a, b, temperature=tau), argnums=(0, 1)))(z_a, z_b)
  want, wa, wb = np_nt_xent(z_a, z_b, tau)
  assert loss.dtype == jnp.float32
  np.testing.assert_allclose(float(loss), want, rtol=1e-5, atol=2e-6 / tau)
  _assert_grad_close(ga, wa, _row_norms(z_a))
  _assert_grad_close(gb, wb, _row_norms(z_b))


@pytest.mark.parametrize('tau', TAUS)
@pytest.mark.parametrize('norms', list(NORMS))
def test_info_nce_matches_reference(tau, norms):
  rng = np.random.default_rng(2)
  q, k = _near_pairs(rng, 5, 8, NORMS[norms], noise=0.3)
  queue, _ = _np_normalize(rng.normal(size=(11, 8)))
  queue = queue.astype(np.float32)
  loss, (gq, gk, gqueue) = jax.jit(jax.value_and_grad(
      lambda q, k, queue: contrastive.info_nce(q, k, queue, temperature=tau), argnums=(0, 1, 2)))(q, k, queue)
  want, wq = np_info_nce(q, k, queue, tau)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5, atol=2e-6 / tau)
  _assert_grad_close(gq, wq, _row_norms(q))
  assert not np.any(gk) and not np.any(gqueue), 'keys and queue must get no gradient'


def np_clip(a, b, tau):
  """CLIP's loss between two towers' embeddings and its gradients: (loss, dloss/da, dloss/db), float64.

  logits = u vᵀ / τ of the unit rows; the mean of the row-wise and the column-wise cross-entropies.
  """
  u, norm_a = _np_normalize(np.asarray(a, np.float64))
  v, norm_b = _np_normalize(np.asarray(b, np.float64))
  logits, n = u @ v.T / tau, len(a)
  loss = 0.5 * (np.mean(_np_lse(logits) - np.diag(logits)) + np.mean(_np_lse(logits.T) - np.diag(logits)))
  dlogits = 0.5 * ((_np_softmax(logits) - np.eye(n)) + (_np_softmax(logits.T) - np.eye(n)).T) / n
  return (loss, _np_normalize_backward(u, norm_a, dlogits @ v / tau),
          _np_normalize_backward(v, norm_b, dlogits.T @ u / tau))


@pytest.mark.parametrize('tau', TAUS)
@pytest.mark.parametrize('norms', list(NORMS))
def test_symmetric_info_nce_with_key_gradient_is_twice_clip(tau, norms):
  rng = np.random.default_rng(4)
  a, b = _near_pairs(rng, 6, 8, NORMS[norms], noise=0.3)
  fn = lambda a, b: 0.5 * contrastive.symmetric_info_nce(a, b, a, b, temperature=tau, key_gradient=True)
  loss, (grad_a, grad_b) = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))(a, b)
  want, want_a, want_b = np_clip(a, b, tau)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5, atol=2e-6 / tau)
  _assert_grad_close(grad_a, want_a, _row_norms(a))
  _assert_grad_close(grad_b, want_b, _row_norms(b))


@pytest.mark.parametrize('tau', TAUS)
@pytest.mark.parametrize('norms', list(NORMS))
def test_symmetric_info_nce_matches_reference(tau, norms):
  rng = np.random.default_rng(3)
  q_a, k_b = _near_pairs(rng, 5, 8, NORMS[norms], noise=0.3)
  q_b, k_a = _near_pairs(rng, 5, 8, NORMS[norms], noise=0.3)
  fn = lambda *xs: contrastive.symmetric_info_nce(*xs, temperature=tau)
  loss, grads = jax.jit(jax.value_and_grad(fn, argnums=(0, 1, 2, 3)))(q_a, q_b, k_a, k_b)
  want, wqa, wqb = np_symmetric_info_nce(q_a, q_b, k_a, k_b, tau)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5, atol=4e-6 / tau)
  _assert_grad_close(grads[0], wqa, _row_norms(q_a))
  _assert_grad_close(grads[1], wqb, _row_norms(q_b))
  assert not np.any(grads[2]) and not np.any(grads[3]), 'keys must get no gradient'


def test_extreme_logits_stay_finite():
  """τ = 0.01 with identical views: logits of 100 (exp overflows float32), loss -> log(2N - 1)."""
  z = np.full((4, 8), 1e4, np.float32)
  loss, grad = jax.value_and_grad(lambda z: contrastive.nt_xent(z, z, temperature=0.01))(z)
  np.testing.assert_allclose(float(loss), np.log(7.0), rtol=1e-5)
  assert np.all(np.isfinite(grad))
  queue = np.tile(np.eye(8, dtype=np.float32)[:1], (6, 1))
  loss = contrastive.info_nce(z, z, queue, temperature=0.01)
  assert np.isfinite(float(loss))


def test_zero_vectors_are_safe():
  rng = np.random.default_rng(4)
  z_a, z_b = _projections(rng, 4, 8, (0.0, 1.0)), _projections(rng, 4, 8, (0.0, 1.0))
  z_a[1] = 0.0
  loss, (ga, gb) = jax.value_and_grad(
      lambda a, b: contrastive.nt_xent(a, b, temperature=0.1), argnums=(0, 1))(z_a, z_b)
  np.testing.assert_allclose(float(loss), np_nt_xent(z_a, z_b, 0.1)[0], rtol=1e-5)
  assert np.all(np.isfinite(ga)) and np.all(np.isfinite(gb))


def test_float64_inputs_compute_in_float64():
  rng = np.random.default_rng(5)
  z_a, z_b = rng.normal(size=(2, 4, 8))
  with jax.enable_x64(True):
    loss = contrastive.nt_xent(jnp.asarray(z_a), jnp.asarray(z_b), temperature=0.05)
    assert loss.dtype == jnp.float64
    np.testing.assert_allclose(float(loss), np_nt_xent(z_a, z_b, 0.05)[0], rtol=1e-12)


def test_similarity_stats_matches_reference():
  rng = np.random.default_rng(6)
  z_a, z_b = _near_pairs(rng, 6, 8, (-1.0, 2.0), noise=0.2)
  stats = contrastive.similarity_stats(z_a, z_b)
  u, _ = _np_normalize(np.concatenate([z_a, z_b]).astype(np.float64))
  cos = u @ u.T
  n = len(z_a)
  positive = np.zeros_like(cos, bool)
  positive[np.arange(n), np.arange(n) + n] = positive[np.arange(n) + n, np.arange(n)] = True
  negative = ~positive & ~np.eye(2 * n, dtype=bool)
  np.testing.assert_allclose(float(stats['pos_cosine']), np.mean(cos[np.arange(n), np.arange(n) + n]),
                             atol=1e-6)
  np.testing.assert_allclose(float(stats['neg_cosine']), np.mean(cos[negative]), atol=1e-6)


# ---------------------------------------------------------------- bad input

_OK = np.zeros((4, 8), np.float32)


@pytest.mark.parametrize('call, match', [
    (lambda: contrastive.nt_xent(np.zeros((4,), np.float32), _OK, temperature=0.1), r'z_a.*\(4,\)'),
    (lambda: contrastive.nt_xent(_OK, np.zeros((4, 8, 1), np.float32), temperature=0.1),
     r'z_b.*\(4, 8, 1\)'),
    (lambda: contrastive.nt_xent(_OK, np.zeros((3, 8), np.float32), temperature=0.1), r'z_b.*\(3, 8\)'),
    (lambda: contrastive.nt_xent(np.zeros((4, 8), np.int32), _OK, temperature=0.1), r'z_a.*int32.*\(4, 8\)'),
    (lambda: contrastive.nt_xent(_OK, _OK, temperature=0.0), r'temperature.*0'),
    (lambda: contrastive.info_nce(_OK, _OK, np.zeros((5, 7), np.float32), temperature=0.1),
     r'queue.*\(5, 7\)'),
    (lambda: contrastive.info_nce(_OK, np.zeros((4, 7), np.float32), _OK, temperature=0.1), r'k.*\(4, 7\)'),
    (lambda: contrastive.info_nce(_OK, _OK, np.zeros((5, 8), np.int8), temperature=0.1), r'queue.*int8'),
    (lambda: contrastive.symmetric_info_nce(_OK, _OK, _OK, np.zeros((2, 8), np.float32), temperature=0.1),
     r'k_b.*\(2, 8\)'),
    (lambda: contrastive.similarity_stats(_OK, np.zeros((8,), np.float32)), r'z_b.*\(8,\)'),
])
def test_bad_input_raises(call, match):
  with pytest.raises(ValueError, match=match):
    call()
