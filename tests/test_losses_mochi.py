"""MoCHi (Kalantidis et al. 2020) against a float64 NumPy reference written from the paper.

The reference ranks each query's queue similarities in float64 (`np.argsort`), takes its own N hardest,
mixes them with the same draws (`h = α n_i + (1 - α) n_j`, `h' = β q + (1 - β) n_j`, normalised) and
evaluates InfoNCE with the synthetic negatives appended. It asserts that the test data leave every
ranking gap above the float32 similarity error, so float32 `top_k` must pick the same hard sets in the same
order.

Tolerances: a float32 cosine of unit vectors of dimension d has absolute error <= 4 d ε; a mix of two unit
vectors has norm m >= the reference's smallest mix norm, and normalising it divides the error by m, so
synthetic rows agree to 8 d ε / m. Logits then have error δ = (4 d ε + 8 d ε / m) / τ; the InfoNCE value
moves by at most 2δ + 8 ε |loss|, and each gradient row (scaled by |q|) by (4ε + 2δ) · 2 / (τ · batch)
(softmax - onehot has row sums of absolute values <= 2).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.losses import contrastive, mochi

EPS32 = float(np.finfo(np.float32).eps)


def _np_normalize(z):
  norm = np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
  return z / norm, norm


def np_mochi(q, k, queue, draws, num_hard, tau):
  """Returns (loss, dloss/dq, synthetic (n, s + s', d), info) in float64."""
  q, k, queue = (np.asarray(x, np.float64) for x in (q, k, queue))
  u_q, norm = _np_normalize(q)
  u_k, _ = _np_normalize(k)
  first, second, alpha, query_mix, beta = (np.asarray(x) for x in draws)
  alpha, beta = alpha.astype(np.float64), beta.astype(np.float64)
  synthetic, min_gap, min_mix_norm = [], np.inf, np.inf
  for b in range(len(q)):
    sims = queue @ u_q[b]
    order = np.argsort(-sims, kind='stable')
    ranked = sims[order]
    min_gap = min(min_gap, np.min((ranked[:-1] - ranked[1:])[:num_hard]))
    hard = queue[order[:num_hard]]
    rows = []
    for j in range(first.shape[1]):
      mix = alpha[b, j] * hard[first[b, j]] + (1 - alpha[b, j]) * hard[second[b, j]]
      min_mix_norm = min(min_mix_norm, np.linalg.norm(mix))
      rows.append(mix)
    for j in range(query_mix.shape[1]):
      mix = beta[b, j] * u_q[b] + (1 - beta[b, j]) * hard[query_mix[b, j]]
      min_mix_norm = min(min_mix_norm, np.linalg.norm(mix))
      rows.append(mix)
    synthetic.append(_np_normalize(np.array(rows).reshape(-1, q.shape[1]))[0])
  synthetic = np.stack(synthetic)
  logits = np.concatenate([np.sum(u_q * u_k, 1, keepdims=True), u_q @ queue.T,
                           np.einsum('nd,nmd->nm', u_q, synthetic)], axis=1) / tau
  m = logits.max(1, keepdims=True)
  lse = (m + np.log(np.exp(logits - m).sum(1, keepdims=True)))[:, 0]
  loss = np.mean(lse - logits[:, 0])
  dlogits = np.exp(logits - lse[:, None])
  dlogits[:, 0] -= 1
  dlogits /= len(q)
  negatives = np.concatenate([np.broadcast_to(queue, (len(q),) + queue.shape), synthetic], axis=1)
  du = (dlogits[:, :1] * u_k + np.einsum('nm,nmd->nd', dlogits[:, 1:], negatives)) / tau
  dq = (du - u_q * np.sum(u_q * du, 1, keepdims=True)) / norm
  return loss, dq, synthetic, {'min_gap': min_gap, 'min_mix_norm': min_mix_norm}


def _inputs(seed, n=5, dim=8, queue_size=16):
  rng = np.random.default_rng(seed)
  q = rng.normal(size=(n, dim)) * 10.0**rng.uniform(-1, 2, size=(n, 1))
  k = q + 0.5 * np.linalg.norm(q, axis=1, keepdims=True) * rng.normal(size=(n, dim)) / np.sqrt(dim)
  queue, _ = _np_normalize(rng.normal(size=(queue_size, dim)))
  return q.astype(np.float32), k.astype(np.float32), queue.astype(np.float32)


@pytest.mark.parametrize('num_hard, num_mix, num_query_mix, tau', [
    (6, 4, 2, 0.2), (2, 3, 0, 0.07), (5, 0, 3, 0.07), (16, 8, 8, 0.5)])
def test_mochi_matches_reference(num_hard, num_mix, num_query_mix, tau):
  q, k, queue = _inputs(0)
  draws = mochi.draw_mochi(jax.random.key(1), q.shape[0], num_hard=num_hard, num_mix=num_mix,
                           num_query_mix=num_query_mix)
  want, want_dq, want_synthetic, info = np_mochi(q, k, queue, draws, num_hard, tau)
  dim = q.shape[1]
  cos_error = 4 * dim * EPS32
  assert info['min_gap'] > 2 * cos_error, info  # the float32 ranking is the float64 one

  def loss_fn(q):
    synthetic = mochi.synthesize_hard_negatives(q, queue, draws, num_hard=num_hard)
    return mochi.mochi_info_nce(q, k, queue, synthetic, temperature=tau), synthetic

  (loss, synthetic), dq = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(q)
  synthetic_error = 2 * cos_error / info['min_mix_norm']
  np.testing.assert_allclose(np.asarray(synthetic, np.float64), want_synthetic, rtol=0, atol=synthetic_error)
  delta = (cos_error + synthetic_error) / tau
  np.testing.assert_allclose(float(loss), want, rtol=0, atol=2 * delta + 8 * EPS32 * abs(want))
  row_bound = (4 * EPS32 + 2 * delta) * 2 / (tau * q.shape[0])
  scale = np.linalg.norm(q.astype(np.float64), axis=1, keepdims=True)
  np.testing.assert_allclose(np.asarray(dq, np.float64) * scale, want_dq * scale, rtol=0, atol=row_bound)


def test_float64_matches_reference_to_rounding():
  q, k, queue = _inputs(2)
  draws = mochi.draw_mochi(jax.random.key(3), q.shape[0], num_hard=4, num_mix=3, num_query_mix=2)
  want, want_dq, want_synthetic, _ = np_mochi(q, k, queue, draws, 4, 0.1)
  with jax.enable_x64(True):
    q64, k64, queue64 = (jnp.asarray(x, jnp.float64) for x in (q, k, queue))
    fn = lambda q: mochi.mochi_info_nce(
        q, k64, queue64, mochi.synthesize_hard_negatives(q, queue64, draws, num_hard=4), temperature=0.1)
    loss, dq = jax.jit(jax.value_and_grad(fn))(q64)
    synthetic = jax.jit(lambda q: mochi.synthesize_hard_negatives(q, queue64, draws, num_hard=4))(q64)
    assert synthetic.dtype == jnp.float64
  np.testing.assert_allclose(np.asarray(synthetic), want_synthetic, rtol=0, atol=1e-14)
  np.testing.assert_allclose(float(loss), want, rtol=1e-13)
  np.testing.assert_allclose(np.asarray(dq), want_dq, rtol=0, atol=1e-13 * np.abs(want_dq).max())


def test_no_synthetic_negatives_is_info_nce():
  q, k, queue = _inputs(4)
  draws = mochi.draw_mochi(jax.random.key(5), q.shape[0], num_hard=4, num_mix=0, num_query_mix=0)
  fn = lambda q: mochi.mochi_info_nce(
      q, k, queue, mochi.synthesize_hard_negatives(q, queue, draws, num_hard=4), temperature=0.1)
  loss, dq = jax.value_and_grad(fn)(q)
  want, want_dq = jax.value_and_grad(lambda q: contrastive.info_nce(q, k, queue, temperature=0.1))(q)
  # One computation, one op order: the appended (n, 0) block changes no value.
  np.testing.assert_array_equal(np.asarray(loss), np.asarray(want))
  np.testing.assert_array_equal(np.asarray(dq), np.asarray(want_dq))


def test_each_query_mixes_its_own_hard_negatives():
  """Queries along different axes, queue rows clustered around each axis: every synthetic negative of a
  query lies near that query (the public code's first-query hard set would put them near query 0)."""
  rng = np.random.default_rng(6)
  dim, n = 8, 4
  q = np.eye(dim, dtype=np.float32)[:n] * 3.0
  queue = np.repeat(np.eye(dim)[:n], 4, axis=0) + 0.1 * rng.normal(size=(4 * n, dim))
  queue = _np_normalize(queue)[0].astype(np.float32)
  draws = mochi.draw_mochi(jax.random.key(7), n, num_hard=4, num_mix=5, num_query_mix=5)
  synthetic = np.asarray(mochi.synthesize_hard_negatives(q, queue, draws, num_hard=4))
  own = np.einsum('nmd,nd->nm', synthetic, q / 3.0)
  assert own.min() > 0.8, own
  hard = np.asarray(mochi.hardest_negatives(q / 3.0, queue, 4))
  np.testing.assert_array_equal(np.sort(hard, axis=1), np.arange(4 * n).reshape(n, 4))


def test_synthetic_negatives_get_no_gradient():
  q, k, queue = _inputs(8)
  draws = mochi.draw_mochi(jax.random.key(9), q.shape[0], num_hard=4, num_mix=2, num_query_mix=2)
  grads = jax.grad(lambda q, queue: jnp.sum(mochi.synthesize_hard_negatives(q, queue, draws, num_hard=4)),
                   argnums=(0, 1))(q, queue)
  assert not np.any(grads[0]) and not np.any(grads[1])


def test_draws_have_the_paper_distributions():
  """Statistics over 200,000 draws; bounds are 6 standard errors of the uniform laws."""
  n, s = 20_000, 10
  draws = mochi.draw_mochi(jax.random.key(10), n, num_hard=5, num_mix=s, num_query_mix=s)
  first, second, alpha, query_mix, beta = (np.asarray(x, np.float64) for x in draws)
  count = n * s
  assert np.all(first != second)
  for positions in (first, second, query_mix):
    assert positions.min() == 0 and positions.max() == 4
    frequencies = np.bincount(positions.astype(int).ravel(), minlength=5) / count
    np.testing.assert_allclose(frequencies, 0.2, atol=6 * np.sqrt(0.2 * 0.8 / count))
  assert 0 <= alpha.min() and alpha.max() < 1 and 0 <= beta.min() and beta.max() < 0.5
  np.testing.assert_allclose(alpha.mean(), 0.5, atol=6 * np.sqrt(1 / 12 / count))
  np.testing.assert_allclose(beta.mean(), 0.25, atol=6 * np.sqrt(0.25 / 12 / count))
  # Pairs are uniform over the 20 ordered pairs of distinct positions.
  pairs = np.bincount((first * 5 + second).astype(int).ravel(), minlength=25) / count
  off_diagonal = ~np.eye(5, dtype=bool).ravel()
  np.testing.assert_allclose(pairs[off_diagonal], 0.05, atol=6 * np.sqrt(0.05 * 0.95 / count))


_Q = np.ones((4, 8), np.float32)
_QUEUE = np.eye(8, dtype=np.float32)


@pytest.mark.parametrize('call, match', [
    (lambda: mochi.draw_mochi(jax.random.key(0), 4, num_hard=1, num_mix=2, num_query_mix=0),
     r'num_hard must be >= 2.*num_mix=2'),
    (lambda: mochi.draw_mochi(jax.random.key(0), 4, num_hard=0, num_mix=0, num_query_mix=1),
     r'num_hard must be >= 1'),
    (lambda: mochi.draw_mochi(jax.random.key(0), 4, num_hard=3, num_mix=-1, num_query_mix=0),
     r'num_mix.*-1'),
    (lambda: mochi.synthesize_hard_negatives(
        _Q, _QUEUE, mochi.draw_mochi(jax.random.key(0), 4, num_hard=9, num_mix=1, num_query_mix=0),
        num_hard=9), r'num_hard=9.*queue size 8'),
    (lambda: mochi.synthesize_hard_negatives(
        _Q, _QUEUE, mochi.draw_mochi(jax.random.key(0), 3, num_hard=2, num_mix=1, num_query_mix=0),
        num_hard=2), r'draws.mix_first.*\(4, 1\).*\(3, 1\)'),
    (lambda: mochi.mochi_info_nce(_Q, _Q, _QUEUE, np.zeros((4, 2, 7), np.float32), temperature=0.1),
     r'synthetic.*\(4, m, 8\).*\(4, 2, 7\)'),
])
def test_bad_input_raises(call, match):
  with pytest.raises(ValueError, match=match):
    call()
