"""Debiased (Chuang et al. 2020) and hard-negative (Robinson et al. 2021) contrastive losses, in log space.

Both replace the sum of the N negative terms in the InfoNCE denominator by N times an estimate `g` of the
expected negative term under the *true* negative distribution:

    loss = -log( e^p / (e^p + N g) ),    p = cos(anchor, positive) / τ,   s_i = cos(anchor, negative_i) / τ

    g = max( (Σ_i w_i e^{s_i} - τ+ e^p) / (1 - τ+),  e^{-1/τ} )

* `tau_plus` (τ+, Chuang et al.'s class prior) is the probability that a drawn "negative" has the anchor's
  class; the positive (M = 1 positive sample) estimates the same-class term that is subtracted. The clamp
  at `e^{-1/τ}`, the smallest value `e^{s}` can take on the unit sphere, keeps `g` positive.
* `beta` (β, Robinson et al.'s concentration) tilts the negative distribution towards hard negatives,
  q_β(x⁻) ∝ e^{β s} p(x⁻), estimated by self-normalised importance weights over the N drawn negatives:
  `w = softmax(β s)` (so β = 0 gives w_i = 1/N, the plain mean). As in the paper's experiments, β multiplies
  the logit `s = cos/τ` (the paper's f absorbs the temperature).

With τ+ = 0 and β = 0, `N g = max(Σ_i e^{s_i}, N e^{-1/τ}) = Σ_i e^{s_i}` (each `s_i ≥ -1/τ`), and the losses
equal `contrastive.nt_xent` / `contrastive.info_nce`.

Numerics: nothing is exponentiated. `log(N g)` is formed as
    log X = log N + logsumexp_i(log w_i + s_i),     log Y = log(τ+) + log N + p,
    log A = log X + log(-expm1(log Y - log X)) - log1p(-τ+)        (A = N g before the clamp, when Y < X)
    log(N g) = max(log A, log N - 1/τ)                              (the clamp as a log-space max)
and the loss is `softplus(log(N g) - p)` (= `log(e^p + N g) - p`, without rounding `p`'s magnitude into
the small difference when the positive dominates). When Y ≥ X the unclamped estimate is not positive and the clamp
is the value. `log Y - log X` is capped at `-eps` of the compute dtype before `expm1`: a difference smaller
than that is below the resolution of the two logarithms it comes from, and the cap keeps the gradient finite.

Cross-device convention: the one of `ssl_jax/losses/common.py` (with `axis_name` every device returns the loss of
the global batch; the caller `pmean`s parameter gradients). The queue form without `axis_name` returns the
local batch mean, like `contrastive.info_nce`.
"""

from typing import Optional

import jax
import jax.numpy as jnp

from ssl_jax.losses.common import (
    MASK_LOGIT, check_matrix, check_pair, check_temperature, compute_dtype, global_mean, in_batch_logits, l2_normalize,
    shard_info)


def _check_hyperparameters(temperature, tau_plus, beta) -> None:
  check_temperature(temperature)
  if not isinstance(tau_plus, (int, float)) or isinstance(tau_plus, bool) or not 0.0 <= tau_plus < 1.0:
    raise ValueError(f'tau_plus (class prior) must be a float in [0, 1); got {tau_plus!r}.')
  if not isinstance(beta, (int, float)) or isinstance(beta, bool) or not beta >= 0.0:
    raise ValueError(f'beta (hardness concentration) must be a float >= 0; got {beta!r}.')


def log_negative_term(positive: jax.Array, negatives: jax.Array, negative_mask: Optional[jax.Array], *,
                      num_negatives: int, temperature: float, tau_plus: float, beta: float) -> jax.Array:
  """`log(N g)` per anchor (module docstring), from logits.

  Args:
    positive: `(rows,)` positive logits `p = cos / τ`.
    negatives: `(rows, cols)` logits; entries where `negative_mask` is False are ignored.
    negative_mask: `(rows, cols)` bool, True on the N negatives of each row (None: all columns).
    num_negatives: N, the number of True entries in every row.
    temperature: τ, for the clamp `log N - 1/τ`.
    tau_plus, beta: τ+ in [0, 1) and β >= 0.

  Returns:
    `(rows,)` `log(N g)` in the dtype of `negatives`.
  """
  dtype = negatives.dtype
  log_n = jnp.log(jnp.asarray(num_negatives, dtype))
  if negative_mask is None:
    s = negatives
    log_w = jax.nn.log_softmax(beta * negatives, axis=1)
  else:
    s = jnp.where(negative_mask, negatives, jnp.asarray(MASK_LOGIT, dtype))
    log_w = jax.nn.log_softmax(jnp.where(negative_mask, beta * negatives, jnp.asarray(MASK_LOGIT, dtype)), axis=1)
  log_x = log_n + jax.nn.logsumexp(log_w + s, axis=1)
  log_y = jnp.log(jnp.asarray(tau_plus, dtype)) + log_n + positive
  diff = log_y - log_x
  positive_estimate = diff < 0
  capped = jnp.minimum(diff, -jnp.finfo(dtype).eps)
  log_a = log_x + jnp.log(-jnp.expm1(capped)) - jnp.log1p(jnp.asarray(-tau_plus, dtype))
  log_a = jnp.where(positive_estimate, log_a, jnp.asarray(-jnp.inf, dtype))
  floor = log_n - jnp.asarray(1.0 / temperature, dtype)
  return jnp.maximum(log_a, floor)


def debiased_nt_xent(z_a: jax.Array, z_b: jax.Array, *, temperature: float, tau_plus: float = 0.0,
                     beta: float = 0.0, axis_name: Optional[str] = None) -> jax.Array:
  """Debiased / hard-negative NT-Xent over the 2N views of the (global) batch (SimCLR's in-batch negatives).

  Every view is an anchor; its positive is the other view of its example, its N = 2·batch - 2 negatives are
  all other views (itself excluded), as in `contrastive.nt_xent`. Per anchor `softplus(log(N g) - p)`
  (module docstring); the mean over the 2·batch anchors.

  Args:
    z_a, z_b: `(n, dim)` raw projections of the two views (L2-normalised here); `z_a[i]`, `z_b[i]` pair.
    temperature: τ > 0.
    tau_plus: class prior τ+ in [0, 1) (0: no debiasing).
    beta: hardness β >= 0 (0: uniform weights over negatives).
    axis_name: batch axis inside shard_map / pmap; views of all devices are negatives and the value is the
      global loss (`ssl_jax/losses/common.py` convention).

  Returns:
    Scalar loss in float32 (float64 for float64 inputs).
  """
  check_pair('z_a', z_a, 'z_b', z_b)
  _check_hyperparameters(temperature, tau_plus, beta)
  dtype = compute_dtype(z_a, z_b)
  u_a = l2_normalize(z_a.astype(dtype))
  u_b = l2_normalize(z_b.astype(dtype))
  logits, positive, negative_mask, n_global = in_batch_logits(u_a, u_b, temperature, axis_name)
  if n_global < 2:
    raise ValueError(f'debiased_nt_xent needs a global batch of at least 2 pairs (negatives); got {n_global}.')
  log_ng = log_negative_term(positive, logits, negative_mask, num_negatives=2 * n_global - 2,
                             temperature=temperature, tau_plus=tau_plus, beta=beta)
  local_sum = jnp.sum(jax.nn.softplus(log_ng - positive))
  return global_mean(local_sum, 2 * n_global, axis_name)


def debiased_info_nce(q: jax.Array, k: jax.Array, queue: jax.Array, *, temperature: float,
                      tau_plus: float = 0.0, beta: float = 0.0, axis_name: Optional[str] = None) -> jax.Array:
  """Debiased / hard-negative InfoNCE with the queue as negatives (MoCo's form), N = queue size.

  Per query `softplus(log(N g) - p)` with `p = q·k / τ` and the queue rows as the N negatives (module
  docstring); the mean over queries. No gradient flows into `k` or `queue`.

  Args:
    q: `(n, dim)` raw queries (L2-normalised here).
    k: `(n, dim)` raw keys (L2-normalised here, stop_gradient).
    queue: `(queue_size, dim)` unit-norm past keys (stop_gradient; not renormalised).
    temperature: τ > 0.
    tau_plus: class prior τ+ in [0, 1).
    beta: hardness β >= 0.
    axis_name: batch axis inside shard_map / pmap: the value is the global batch mean. None: local mean
      (as `contrastive.info_nce`).

  Returns:
    Scalar loss.
  """
  check_pair('q', q, 'k', k)
  check_matrix('queue', queue, dim=q.shape[1])
  _check_hyperparameters(temperature, tau_plus, beta)
  if queue.shape[0] < 1:
    raise ValueError(f'queue must hold at least one negative; got shape {queue.shape}.')
  dtype = compute_dtype(q, k, queue)
  u_q = l2_normalize(q.astype(dtype))
  u_k = jax.lax.stop_gradient(l2_normalize(k.astype(dtype)))
  queue = jax.lax.stop_gradient(queue.astype(dtype))
  positive = jnp.sum(u_q * u_k, axis=1) / temperature
  negatives = u_q @ queue.T / temperature
  log_ng = log_negative_term(positive, negatives, None, num_negatives=queue.shape[0],
                             temperature=temperature, tau_plus=tau_plus, beta=beta)
  num_devices, _ = shard_info(axis_name, q.shape[0])
  local_sum = jnp.sum(jax.nn.softplus(log_ng - positive))
  return global_mean(local_sum, q.shape[0] * num_devices, axis_name)
