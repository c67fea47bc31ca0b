"""Debiased (Chuang et al. 2020) and hard-negative (Robinson et al. 2021) losses against float64 NumPy.

The references are the papers' formulas written directly, with plain exponentials (fine in float64 for the
logits |s| <= 100 used here):

    N g = max( (N Σ_i w_i e^{s_i} - τ+ N e^{p}) / (1 - τ+),  N e^{-1/τ} ),   w = softmax(β s)
    loss = log(e^p + N g) - p

and their gradients are derived by hand (below) and checked against finite differences.

Tolerances are derived from the rounding unit ε of the compute dtype (float32 and float64 runs both use
them). A logit `u·v / τ` of unit vectors of dimension `d` has absolute error at most δ = 4 d ε / τ
(normalisation and dot product). The hardness weights `softmax(β s)` see logits scaled by β: (1 + 2β) δ.
The debiased difference X - Y amplifies relative errors by κ = X / (X - Y) (the reference reports the
largest κ over the anchors whose unclamped estimate is used). With δ' = (1 + 2β)(2 + 2κ) δ:
* value: each anchor's loss moves by at most δ' + δ, so |Δloss| <= 2δ' + 8ε|loss|;
* gradient: the loss's gradient with respect to the logits, D (reference), has entries with absolute error
  at most 4ε/anchors (the cancellation in `probability - 1`) plus 2δ'|D|; the gradient with respect to a
  unit vector u_i sums its row and column of D times unit vectors over τ (plus the rounding of that sum),
  and the normalisation divides by |z_i| (a projection, norm 1). `_grad_bound` evaluates this per row, and
  the gradients are compared scaled by |z_i|.
"""

import jax
import numpy as np
import pytest

from ssl_jax.losses import contrastive, debiased

EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)

# ---------------------------------------------------------------- float64 references


def _np_normalize(z):
  norm = np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
  return z / norm, norm


def _np_normalize_backward(u, norm, du):
  return (du - u * np.sum(u * du, axis=1, keepdims=True)) / norm


def _np_row(p, s, tau, tau_plus, beta):
  """One anchor: (loss, dloss/dp, dloss/ds, kappa or None when clamped)."""
  n = len(s)
  w = np.exp(beta * s - np.max(beta * s))
  w /= w.sum()
  h = np.sum(w * np.exp(s))  # Σ w_i e^{s_i}
  x, y = n * h, tau_plus * n * np.exp(p)
  a = (x - y) / (1 - tau_plus)
  floor = n * np.exp(-1.0 / tau)
  g = max(a, floor)
  loss = np.log(np.exp(p) + g) - p
  if a > floor:
    dg_dp = -tau_plus * n * np.exp(p) / (1 - tau_plus)
    # d h / d s_j = w_j e^{s_j} (1 + β) - β w_j h   (w depends on s through the softmax)
    dg_ds = n * (w * np.exp(s) * (1 + beta) - beta * w * h) / (1 - tau_plus)
    kappa = x / (x - y)
  else:
    dg_dp, dg_ds, kappa = 0.0, np.zeros_like(s), None
  d_p = (np.exp(p) + dg_dp) / (np.exp(p) + g) - 1.0
  d_s = dg_ds / (np.exp(p) + g)
  return loss, d_p, d_s, kappa


def np_debiased_nt_xent(z_a, z_b, tau, tau_plus, beta):
  """Returns (loss, dloss/dz_a, dloss/dz_b, info) in float64; info: max kappa and number of clamped anchors."""
  z_a, z_b = np.asarray(z_a, np.float64), np.asarray(z_b, np.float64)
  n = len(z_a)
  u, norm = _np_normalize(np.concatenate([z_a, z_b]))
  logits = u @ u.T / tau
  dlogits = np.zeros_like(logits)
  total, kappas, clamped = 0.0, [1.0], 0
  for r in range(2 * n):
    pos = (r + n) % (2 * n)
    negs = np.array([c for c in range(2 * n) if c not in (r, pos)])
    loss, d_p, d_s, kappa = _np_row(logits[r, pos], logits[r, negs], tau, tau_plus, beta)
    total += loss
    dlogits[r, pos] = d_p
    dlogits[r, negs] = d_s
    if kappa is None:
      clamped += 1
    else:
      kappas.append(kappa)
  dlogits /= 2 * n
  du = (dlogits + dlogits.T) @ u / tau
  dz = _np_normalize_backward(u, norm, du)
  return total / (2 * n), dz[:n], dz[n:], {'kappa': max(kappas), 'clamped': clamped, 'dlogits': dlogits}


def np_debiased_info_nce(q, k, queue, tau, tau_plus, beta):
  """Returns (loss, dloss/dq, info) in float64."""
  q, k, queue = (np.asarray(x, np.float64) for x in (q, k, queue))
  u_q, norm = _np_normalize(q)
  u_k, _ = _np_normalize(k)
  total, du, kappas, clamped = 0.0, np.zeros_like(u_q), [1.0], 0
  dlogits = np.zeros((len(q), 1 + len(queue)))
  for r in range(len(q)):
    loss, d_p, d_s, kappa = _np_row(u_q[r] @ u_k[r] / tau, queue @ u_q[r] / tau, tau, tau_plus, beta)
    total += loss
    du[r] = (d_p * u_k[r] + d_s @ queue) / tau
    dlogits[r, 0], dlogits[r, 1:] = d_p / len(q), d_s / len(q)
    if kappa is None:
      clamped += 1
    else:
      kappas.append(kappa)
  du /= len(q)
  return total / len(q), _np_normalize_backward(u_q, norm, du), {'kappa': max(kappas), 'clamped': clamped,
                                                                  'dlogits': dlogits}


def _np_numerical_grad(f, x, h=1e-6):
  g = np.zeros_like(x)
  for idx in np.ndindex(x.shape):
    xp, xm = x.copy(), x.copy()
    xp[idx] += h
    xm[idx] -= h
    g[idx] = (f(xp) - f(xm)) / (2 * h)
  return g


# ---------------------------------------------------------------- inputs


def _near_pairs(rng, n, dim, noise, log10_norm=(0.0, 0.0)):
  z_a = rng.normal(size=(n, dim))
  z_a /= np.linalg.norm(z_a, axis=1, keepdims=True)
  z_a *= 10.0**rng.uniform(*log10_norm, size=(n, 1))
  z_b = z_a + noise * np.linalg.norm(z_a, axis=1, keepdims=True) * rng.normal(size=z_a.shape)
  return z_a.astype(np.float32), z_b.astype(np.float32)


def _unit_queue(rng, size, dim):
  queue, _ = _np_normalize(rng.normal(size=(size, dim)))
  return queue.astype(np.float32)


def _delta(tau, beta, kappa, dim, eps):
  return (1 + 2 * beta) * (2 + 2 * kappa) * 4 * dim * eps / tau


def _value_tol(tau, beta, kappa, dim, loss, eps=EPS32):
  return 2 * _delta(tau, beta, kappa, dim, eps) + 8 * eps * abs(loss)


def _grad_bound(dlogits, tau, beta, kappa, dim, symmetric, eps=EPS32):
  """Per-row bound on |Δ gradient| · |z_row| (module docstring). symmetric: in-batch form (rows = columns)."""
  d = np.abs(dlogits)
  per_entry = 4 * eps / d.shape[0] + 2 * _delta(tau, beta, kappa, dim, eps) * d
  total = per_entry.sum(1) + (per_entry.sum(0) if symmetric else 0.0)
  magnitude = d.sum(1) + (d.sum(0) if symmetric else 0.0)
  return (total + d.shape[1] * eps * magnitude) / tau


def _assert_grad(got, want, z, bound):
  """Gradients scaled by the row norms |z_i|, compared with the per-row absolute bound."""
  scale = np.linalg.norm(np.asarray(z, np.float64), axis=1, keepdims=True)
  error = np.abs(np.asarray(got, np.float64) - want) * scale
  worst = np.max(error - bound[:, None])
  assert worst <= 0, f'gradient error exceeds the bound by {worst:.3g} (rows {np.nonzero(error.max(1) > bound)[0]})'


# ---------------------------------------------------------------- tests

CASES = [  # (tau, tau_plus, beta)
    (0.5, 0.1, 0.0), (0.5, 0.0, 1.0), (0.5, 0.1, 1.0), (0.1, 0.05, 0.5), (0.07, 0.1, 2.0), (0.01, 0.01, 0.5),
]


def test_references_match_finite_differences():
  rng = np.random.default_rng(0)
  z_a, z_b = rng.normal(size=(2, 3, 4)) * np.array([[0.5], [2.0], [7.0]])
  queue, _ = _np_normalize(rng.normal(size=(5, 4)))
  for tau, tau_plus, beta in [(0.5, 0.1, 1.0), (0.3, 0.0, 0.0), (0.4, 0.2, 2.0)]:
    _, da, db, _ = np_debiased_nt_xent(z_a, z_b, tau, tau_plus, beta)
    f = lambda a, b: np_debiased_nt_xent(a, b, tau, tau_plus, beta)[0]
    np.testing.assert_allclose(da, _np_numerical_grad(lambda x: f(x, z_b), z_a), atol=1e-7)
    np.testing.assert_allclose(db, _np_numerical_grad(lambda x: f(z_a, x), z_b), atol=1e-7)
    _, dq, _ = np_debiased_info_nce(z_a, z_b, queue, tau, tau_plus, beta)
    g = lambda x: np_debiased_info_nce(x, z_b, queue, tau, tau_plus, beta)[0]
    np.testing.assert_allclose(dq, _np_numerical_grad(g, z_a), atol=1e-7)


@pytest.mark.parametrize('tau, tau_plus, beta', CASES)
def test_debiased_nt_xent_matches_reference(tau, tau_plus, beta):
  rng = np.random.default_rng(1)
  z_a, z_b = _near_pairs(rng, 6, 8, noise=0.4, log10_norm=(-1.0, 2.0))
  want, wa, wb, info = np_debiased_nt_xent(z_a, z_b, tau, tau_plus, beta)
  fn = lambda a, b: debiased.debiased_nt_xent(a, b, temperature=tau, tau_plus=tau_plus, beta=beta)
  for dtype, eps in ((np.float64, EPS64), (np.float32, EPS32)):
    with jax.enable_x64(dtype == np.float64):
      loss, (ga, gb) = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))(z_a.astype(dtype), z_b.astype(dtype))
      assert loss.dtype == dtype
    np.testing.assert_allclose(float(loss), want, rtol=0, atol=_value_tol(tau, beta, info['kappa'], 8, want, eps))
    bound = _grad_bound(info['dlogits'], tau, beta, info['kappa'], 8, True, eps)
    _assert_grad(ga, wa, z_a, bound[:6])
    _assert_grad(gb, wb, z_b, bound[6:])


@pytest.mark.parametrize('tau, tau_plus, beta', CASES)
def test_debiased_info_nce_matches_reference(tau, tau_plus, beta):
  rng = np.random.default_rng(2)
  q, k = _near_pairs(rng, 5, 8, noise=0.3, log10_norm=(-1.0, 2.0))
  queue = _unit_queue(rng, 13, 8)
  want, wq, info = np_debiased_info_nce(q, k, queue, tau, tau_plus, beta)
  fn = lambda q, k, queue: debiased.debiased_info_nce(q, k, queue, temperature=tau, tau_plus=tau_plus,
                                                      beta=beta)
  for dtype, eps in ((np.float64, EPS64), (np.float32, EPS32)):
    with jax.enable_x64(dtype == np.float64):
      loss, (gq, gk, gqueue) = jax.jit(jax.value_and_grad(fn, argnums=(0, 1, 2)))(
          *(x.astype(dtype) for x in (q, k, queue)))
    np.testing.assert_allclose(float(loss), want, rtol=0, atol=_value_tol(tau, beta, info['kappa'], 8, want, eps))
    _assert_grad(gq, wq, q, _grad_bound(info['dlogits'], tau, beta, info['kappa'], 8, False, eps))
    assert not np.any(gk) and not np.any(gqueue), 'keys and queue must get no gradient'


@pytest.mark.parametrize('tau', [1.0, 0.1, 0.01])
def test_reductions_equal_nt_xent_and_info_nce(tau):
  """τ+ = 0 and β = 0 through the general code path: exactly NT-Xent / InfoNCE (values and gradients)."""
  rng = np.random.default_rng(3)
  z_a, z_b = _near_pairs(rng, 6, 8, noise=0.3, log10_norm=(-1.0, 3.0))
  queue = _unit_queue(rng, 11, 8)
  _, _, _, batch_info = np_debiased_nt_xent(z_a, z_b, tau, 0.0, 0.0)
  _, _, queue_info = np_debiased_info_nce(z_a, z_b, queue, tau, 0.0, 0.0)
  pairs = [
      (lambda a, b: debiased.debiased_nt_xent(a, b, temperature=tau, tau_plus=0.0, beta=0.0),
       lambda a, b: contrastive.nt_xent(a, b, temperature=tau), batch_info, True),
      (lambda a, b: debiased.debiased_info_nce(a, b, queue, temperature=tau, tau_plus=0.0, beta=0.0),
       lambda a, b: contrastive.info_nce(a, b, queue, temperature=tau), queue_info, False),
  ]
  for got_fn, want_fn, info, symmetric in pairs:
    for dtype, eps in ((np.float64, EPS64), (np.float32, EPS32)):
      with jax.enable_x64(dtype == np.float64):
        a, b = z_a.astype(dtype), z_b.astype(dtype)
        got, got_grad = jax.jit(jax.value_and_grad(got_fn))(a, b)
        want, want_grad = jax.jit(jax.value_and_grad(want_fn))(a, b)
      # Two computations of one value in one dtype: each within the bound, so twice the bound apart.
      np.testing.assert_allclose(float(got), float(want), rtol=0,
                                 atol=2 * _value_tol(tau, 0.0, 1.0, 8, float(want), eps))
      bound = 2 * _grad_bound(info['dlogits'], tau, 0.0, 1.0, 8, symmetric, eps)
      _assert_grad(got_grad, np.asarray(want_grad, np.float64), z_a, bound[:6])


def test_debiasing_and_hardness_change_the_loss():
  """The reductions are not vacuous: τ+ > 0 and β > 0 each move the value away from NT-Xent."""
  rng = np.random.default_rng(4)
  z_a, z_b = _near_pairs(rng, 6, 8, noise=0.5)
  base = float(contrastive.nt_xent(z_a, z_b, temperature=0.5))
  debiased_loss = float(debiased.debiased_nt_xent(z_a, z_b, temperature=0.5, tau_plus=0.1))
  hard = float(debiased.debiased_nt_xent(z_a, z_b, temperature=0.5, beta=1.0))
  assert debiased_loss < base - 1e-3  # subtracting same-class mass shrinks the denominator
  assert hard > base + 1e-3  # upweighting the most similar negatives grows it


def test_clamp_is_a_log_space_max():
  """τ+ large with confident positives: the unclamped estimate is negative and N e^{-1/τ} takes over."""
  rng = np.random.default_rng(5)
  z_a, z_b = _near_pairs(rng, 6, 8, noise=0.02)
  for tau in (0.5, 0.01):
    want, wa, wb, info = np_debiased_nt_xent(z_a, z_b, tau, 0.9, 0.5)
    assert info['clamped'] == 12, info  # every anchor clamped: loss = log(1 + N e^{-1/τ - p})
    loss, (ga, gb) = jax.jit(jax.value_and_grad(
        lambda a, b: debiased.debiased_nt_xent(a, b, temperature=tau, tau_plus=0.9, beta=0.5),
        argnums=(0, 1)))(z_a, z_b)
    np.testing.assert_allclose(float(loss), want, rtol=0, atol=_value_tol(tau, 0.5, 1.0, 8, want))
    bound = _grad_bound(info['dlogits'], tau, 0.5, 1.0, 8, True)
    _assert_grad(ga, wa, z_a, bound[:6])
    _assert_grad(gb, wb, z_b, bound[6:])


def test_extreme_logits_stay_finite():
  """τ = 0.01, identical views of norm 1e4: logits of 100 overflow a float32 exp; the loss stays exact."""
  z = np.full((4, 8), 1e4, np.float32)
  queue = np.tile(np.eye(8, dtype=np.float32)[:1], (6, 1))
  for tau_plus, beta in ((0.0, 0.0), (0.1, 1.0), (0.5, 5.0)):
    loss, grad = jax.jit(jax.value_and_grad(lambda z: debiased.debiased_nt_xent(
        z, z, temperature=0.01, tau_plus=tau_plus, beta=beta)))(z)
    want, _, _, info = np_debiased_nt_xent(z, z, 0.01, tau_plus, beta)
    np.testing.assert_allclose(float(loss), want, rtol=0,
                               atol=_value_tol(0.01, beta, info['kappa'], 8, want))
    assert np.all(np.isfinite(grad))
    loss, grad = jax.jit(jax.value_and_grad(lambda z: debiased.debiased_info_nce(
        z, z, queue, temperature=0.01, tau_plus=tau_plus, beta=beta)))(z)
    assert np.isfinite(float(loss)) and np.all(np.isfinite(grad))


_OK = np.zeros((4, 8), np.float32)


@pytest.mark.parametrize('call, match', [
    (lambda: debiased.debiased_nt_xent(_OK, _OK, temperature=0.1, tau_plus=1.0), r'tau_plus.*1\.0'),
    (lambda: debiased.debiased_nt_xent(_OK, _OK, temperature=0.1, tau_plus=-0.1), r'tau_plus.*-0\.1'),
    (lambda: debiased.debiased_nt_xent(_OK, _OK, temperature=0.1, beta=-1.0), r'beta.*-1\.0'),
    (lambda: debiased.debiased_nt_xent(_OK, _OK, temperature=0.0), r'temperature'),
    (lambda: debiased.debiased_nt_xent(_OK[:1], _OK[:1], temperature=0.1), r'at least 2 pairs.*1'),
    (lambda: debiased.debiased_nt_xent(_OK, np.zeros((3, 8), np.float32), temperature=0.1),
     r'z_b.*\(3, 8\)'),
    (lambda: debiased.debiased_info_nce(_OK, _OK, np.zeros((5, 7), np.float32), temperature=0.1),
     r'queue.*\(5, 7\)'),
    (lambda: debiased.debiased_info_nce(_OK, _OK, np.zeros((0, 8), np.float32), temperature=0.1),
     r'queue.*at least one'),
])
def test_bad_input_raises(call, match):
  with pytest.raises(ValueError, match=match):
    call()
