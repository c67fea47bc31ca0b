"""DCL, DCLW, the FIFO-bank NT-Xent and SwAV against lightly 1.6 (values and gradients).

lightly's classes are loaded the torchvision-free way of `experiments/torch_baseline/lightly_loss.py` and run
in float64 (torch double). Every comparison is made twice: JAX in float64 (x64), where the only difference
is rounding, and JAX in float32 against the same float64 oracle. Both use one bound, derived from the
rounding unit ε of the JAX dtype:

* Contrastive losses: a logit `u·v / τ` of unit vectors of dimension d has absolute error <= δ = 4 d ε / τ.
  A value (mean of log-sum-exps minus weighted positives) moves by <= 2δ' + 8 ε |loss|, δ' = δ plus, for
  DCLW, the weight error |Δw| / τ with |Δw| <= (2 + max|w|) · 2 · 4 d ε / σ (softmax of cos / σ). A gradient
  row with respect to u_i sums row i and column i of D = ∂loss/∂logits, each entry off by at most
  4ε/anchors + 2δ|D| (+ |Δw| / anchors on DCLW's positives), over τ, plus the rounding of that sum; the
  normalisation's projection has norm 1, so gradients are compared scaled by |z_i|. D is evaluated from its
  closed form in float64 (`_np_*_dlogits`).
* Sinkhorn: every log-space renormalisation `L - logsumexp(L)` is 2-Lipschitz in the max norm and rounds
  with absolute error <= 3 ε (M + 2 log(B K)) (M = max|score| / ε_sinkhorn); over the 1 + 2·iterations
  renormalisations the log-codes are off by at most 2^(1 + 2·iterations) (2 + 2·iterations) 3 ε (M + 2 log(B K)),
  which bounds the codes' relative error r (codes below the dtype's smallest normal number may flush to
  zero: an absolute tolerance of that number). A SwAV value then moves by <= r |loss| + 2 δ_p with
  δ_p = 4 ε (max|score| / τ + log K) (log-softmax error); a gradient entry by <= (2 δ_p + 2 r) / (batch τ).
"""

import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')
pytest.importorskip('lightly')

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.torch_baseline import lightly_loss  # noqa: E402
from ssl_jax.losses import banks, dcl, swav  # noqa: E402

EPS = {np.float32: float(np.finfo(np.float32).eps), np.float64: float(np.finfo(np.float64).eps)}


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _pairs(seed, n=6, dim=8, noise=0.4):
  rng = np.random.default_rng(seed)
  z_a = rng.normal(size=(n, dim)) * 10.0**rng.uniform(-1, 2, size=(n, 1))
  z_b = z_a + noise * np.linalg.norm(z_a, axis=1, keepdims=True) * rng.normal(size=(n, dim)) / np.sqrt(dim)
  return z_a.astype(np.float32), z_b.astype(np.float32)


def _torch_value_and_grads(loss_fn, *arrays):
  tensors = [torch.tensor(np.asarray(a, np.float64), requires_grad=True) for a in arrays]
  loss = loss_fn(*tensors).sum()
  loss.backward()
  return float(loss), [t.grad.numpy() for t in tensors]


def _assert_rows(got, want, z, bound, what):
  scale = np.linalg.norm(np.asarray(z, np.float64), axis=1, keepdims=True)
  error = np.abs(np.asarray(got, np.float64) - want) * scale
  excess = np.max(error - np.asarray(bound).reshape(-1, 1))
  assert excess <= 0, f'{what}: gradient error exceeds its bound by {excess:.3g}'


def _row_bound(d_abs, tau, eps, delta, symmetric, extra=0.0):
  """Per-row bound (module docstring) from |D| `(rows, cols)`; extra: additional per-row error of D."""
  per_entry = 4 * eps / d_abs.shape[0] + 2 * delta * d_abs
  total = per_entry.sum(1) + (per_entry.sum(0) if symmetric else 0.0) + 2 * extra
  magnitude = d_abs.sum(1) + (d_abs.sum(0) if symmetric else 0.0)
  return (total + d_abs.shape[1] * eps * magnitude) / tau


# ---------------------------------------------------------------- DCL / DCLW


def _np_dcl_dlogits(z_a, z_b, tau, sigma):
  """|∂loss/∂logits| `(2n, 2n)` of DCL (sigma None) / DCLW in float64, and the weights."""
  n = len(z_a)
  u = _unit(np.concatenate([z_a, z_b]).astype(np.float64))
  logits = u @ u.T / tau
  if sigma is None:
    w = np.ones(n)
  else:
    cos = np.sum(u[:n] * u[n:], axis=1) / sigma
    w = 2 - n * np.exp(cos - cos.max()) / np.exp(cos - cos.max()).sum()
  d = np.zeros_like(logits)
  for r in range(2 * n):
    pos = (r + n) % (2 * n)
    negs = [c for c in range(2 * n) if c not in (r, pos)]
    p = np.exp(logits[r, negs] - logits[r, negs].max())
    d[r, negs] = p / p.sum()
    d[r, pos] = -w[r % n]
  return np.abs(d) / (2 * n), w


@pytest.mark.parametrize('tau, sigma', [(0.1, None), (0.5, None), (0.07, None), (0.1, 0.5), (0.5, 0.5),
                                        (0.07, 0.2)])
def test_dcl_and_dclw_match_lightly(tau, sigma):
  dcl_cls, dclw_cls = lightly_loss.load_dcl_loss_classes()
  z_a, z_b = _pairs(0)
  if sigma is None:
    oracle = dcl_cls(temperature=tau)
    fn = lambda a, b: dcl.dcl(a, b, temperature=tau)
  else:
    oracle = dclw_cls(temperature=tau, sigma=sigma)
    fn = lambda a, b: dcl.dclw(a, b, temperature=tau, sigma=sigma)
  want, (want_a, want_b) = _torch_value_and_grads(oracle, z_a, z_b)
  d_abs, w = _np_dcl_dlogits(z_a, z_b, tau, sigma)
  n, dim = z_a.shape
  for dtype, eps in EPS.items():
    with jax.enable_x64(dtype == np.float64):
      loss, (ga, gb) = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))(z_a.astype(dtype), z_b.astype(dtype))
      assert loss.dtype == dtype
    delta = 4 * dim * eps / tau
    weight_error = 0.0 if sigma is None else (2 + np.abs(w).max()) * 2 * 4 * dim * eps / sigma
    np.testing.assert_allclose(float(loss), want, rtol=0,
                               atol=2 * delta + 2 * weight_error / tau + 8 * eps * abs(want))
    bound = _row_bound(d_abs, tau, eps, delta, True, extra=weight_error / (2 * n))
    _assert_rows(ga, want_a, z_a, bound[:n], f'{dtype.__name__} d/dz_a')
    _assert_rows(gb, want_b, z_b, bound[n:], f'{dtype.__name__} d/dz_b')


def test_dclw_weights_have_no_gradient_and_mean_one():
  z_a, z_b = _pairs(1)
  u_a, u_b = _unit(z_a), _unit(z_b)
  w = dcl.negative_von_mises_fisher_weights(u_a, u_b, sigma=0.5)
  np.testing.assert_allclose(float(jnp.mean(w)), 1.0, atol=1e-6)
  grads = jax.grad(lambda a, b: jnp.sum(dcl.negative_von_mises_fisher_weights(a, b, sigma=0.5)),
                   argnums=(0, 1))(u_a, u_b)
  assert not np.any(grads[0]) and not np.any(grads[1])
  # The weight changes the loss: DCLW != DCL on the same data.
  dclw_loss, dcl_loss = dcl.dclw(z_a, z_b, temperature=0.1), dcl.dcl(z_a, z_b, temperature=0.1)
  assert abs(float(dclw_loss) - float(dcl_loss)) > 1e-3


# ---------------------------------------------------------------- NT-Xent with a FIFO bank


def test_fifo_bank_nt_xent_matches_lightly_over_steps():
  """Three steps, batch 4, bank 8: losses, gradients and the bank (wrapping to row 0) match lightly."""
  tau, size, dim, n = 0.2, 8, 6, 4
  oracle = lightly_loss.ntxent_loss(tau, memory_bank_size=size, dim=dim)
  bank = np.asarray(banks.init_bank(jax.random.key(0), size, dim))
  oracle.memory_bank.bank = torch.tensor(bank, dtype=torch.float64)
  pointer = jnp.int32(0)
  step = jax.jit(jax.value_and_grad(lambda a, b, bank: banks.nt_xent_fifo_bank(a, b, bank, temperature=tau),
                                    argnums=(0, 1)))
  for i in range(3):
    z_a, z_b = _pairs(10 + i, n=n, dim=dim)
    want, (want_a, want_b) = _torch_value_and_grads(oracle, z_a, z_b)
    loss, (ga, gb) = step(z_a, z_b, bank)
    eps = EPS[np.float32]
    delta = 4 * dim * eps / tau
    np.testing.assert_allclose(float(loss), want, rtol=0, atol=2 * delta + 8 * eps * abs(want))
    # Rows of D = softmax - onehot sum to <= 2 / n in absolute value; 1 + size columns.
    bound = (4 * eps * (1 + size) / n + 2 * delta * 2 / n + (1 + size) * eps * 2 / n) / tau
    _assert_rows(ga, want_a, z_a, np.full(n, bound), f'step {i} d/dz_a')
    _assert_rows(gb, want_b, z_b, np.full(n, bound), f'step {i} d/dz_b')
    bank, pointer = banks.fifo_bank_update(bank, pointer, z_b)
    np.testing.assert_allclose(np.asarray(bank, np.float64), oracle.memory_bank.bank.numpy(), rtol=0,
                               atol=4 * dim * eps)
    assert int(pointer) == int(oracle.memory_bank.bank_ptr)


# ---------------------------------------------------------------- SwAV


def _scores(seed, n, num_prototypes=6, dim=5, scale=1.0):
  rng = np.random.default_rng(seed)
  prototypes = _unit(rng.normal(size=(num_prototypes, dim)))
  return (scale * _unit(rng.normal(size=(n, dim))) @ prototypes.T).astype(np.float32)


def _sinkhorn_rel_error(scores, epsilon, iterations, eps):
  b, k = scores.shape
  m = np.abs(scores).max() / epsilon
  return 2.0**(1 + 2 * iterations) * (2 + 2 * iterations) * 3 * eps * (m + 2 * math.log(b * k))


@pytest.mark.parametrize('iterations, epsilon, scale', [(3, 0.05, 1.0), (1, 0.05, 1.0), (0, 0.05, 1.0),
                                                        (3, 0.01, 1.0), (3, 0.05, 5.0)])
def test_sinkhorn_matches_lightly(iterations, epsilon, scale):
  """Includes scores / ε = 100 and 100: exp overflows float32 there, the log-space codes do not."""
  _, sinkhorn = lightly_loss.load_swav_loss()
  scores = _scores(0, 8, scale=scale)
  want = sinkhorn(torch.tensor(scores, dtype=torch.float64), iterations=iterations, epsilon=epsilon).numpy()
  for dtype, eps in EPS.items():
    with jax.enable_x64(dtype == np.float64):
      got = np.asarray(swav.sinkhorn_knopp(jnp.asarray(scores, dtype), epsilon=epsilon,
                                           iterations=iterations), np.float64)
    r = _sinkhorn_rel_error(scores, epsilon, iterations, eps)
    # Codes below the dtype's smallest normal number may flush to zero (the log-codes are still right).
    np.testing.assert_allclose(got, want, rtol=math.expm1(r), atol=float(np.finfo(dtype).tiny))
  if iterations >= 1:
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=0, atol=8 * 6 * EPS[np.float32])


@pytest.mark.parametrize('with_queue', [False, True])
def test_swav_loss_matches_lightly(with_queue):
  swav_cls, _ = lightly_loss.load_swav_loss()
  tau, epsilon, iterations, n, k = 0.1, 0.05, 3, 8, 6
  high = [_scores(1, n), _scores(2, n)]
  low = [_scores(3, n), _scores(4, n)]
  queue = [_scores(5, 4), _scores(6, 4)] if with_queue else None
  oracle = swav_cls(temperature=tau, sinkhorn_iterations=iterations, sinkhorn_epsilon=epsilon)

  def torch_loss(h0, h1, l0, l1):
    queue_t = None if queue is None else [torch.tensor(q, dtype=torch.float64) for q in queue]
    return oracle([h0, h1], [l0, l1], queue_t)

  want, want_grads = _torch_value_and_grads(torch_loss, *high, *low)

  def fn(h0, h1, l0, l1):
    return swav.swav_loss([h0, h1], [l0, l1], queue, temperature=tau, epsilon=epsilon,
                          sinkhorn_iterations=iterations)

  for dtype, eps in EPS.items():
    with jax.enable_x64(dtype == np.float64):
      loss, grads = jax.jit(jax.value_and_grad(fn, argnums=(0, 1, 2, 3)))(*(x.astype(dtype) for x in high + low))
    r = math.expm1(_sinkhorn_rel_error(np.concatenate([high[0], queue[0]]) if queue else high[0], epsilon,
                                       iterations, eps))
    delta_p = 4 * eps * (1.0 / tau + math.log(k))
    np.testing.assert_allclose(float(loss), want, rtol=0, atol=r * abs(want) + 2 * delta_p)
    for i, (got, expected) in enumerate(zip(grads, want_grads)):
      np.testing.assert_allclose(np.asarray(got, np.float64), expected, rtol=0,
                                 atol=(2 * delta_p + 2 * r) / (n * tau), err_msg=f'{dtype.__name__} crop {i}')


def test_swav_codes_carry_no_gradient():
  """Only the predictions are differentiated: zeroing the log-softmax path zeroes the gradient."""
  scores = _scores(7, 8)
  grad = jax.grad(lambda s: jnp.sum(swav.sinkhorn_knopp(s)))(scores)
  assert not np.any(grad)


_S = np.zeros((4, 6), np.float32)


@pytest.mark.parametrize('call, match', [
    (lambda: swav.swav_loss([_S]), r'at least 2 crops.*1'),
    (lambda: swav.swav_loss([], [_S, _S]), r'code_crops must hold at least one'),
    (lambda: swav.swav_loss([_S, np.zeros((4, 5), np.float32)]), r'code_crops\[1\].*\(4, 6\).*\(4, 5\)'),
    (lambda: swav.swav_loss([_S], [np.zeros((3, 6), np.float32)]), r'other_crops\[0\].*\(3, 6\)'),
    (lambda: swav.swav_loss([_S, _S], queue_scores=[_S]), r'queue_scores.*one array per code crop \(2\)'),
    (lambda: swav.swav_loss([_S, _S], queue_scores=[_S, np.zeros((2, 5), np.float32)]),
     r'queue_scores\[1\].*\(2, 5\)'),
    (lambda: swav.sinkhorn_knopp(_S, epsilon=0.0), r'epsilon.*0'),
    (lambda: swav.sinkhorn_knopp(_S, iterations=-1), r'iterations.*-1'),
    (lambda: dcl.dclw(_S, _S, temperature=0.1, sigma=0.0), r'sigma.*0'),
    (lambda: dcl.dcl(_S[:1], _S[:1], temperature=0.1), r'at least 2 pairs.*1'),
])
def test_bad_input_raises(call, match):
  with pytest.raises(ValueError, match=match):
    call()
