"""Decoupled contrastive learning (Yeh et al. 2022): DCL and its weighted form DCLW.

DCL is NT-Xent with the positive removed from the denominator. For anchor view `i` with positive `i⁺`
(the other view of its example) and the 2·batch - 2 other views as negatives,

    loss_i = -w_i · cos(i, i⁺) / τ + logsumexp_{j ∉ {i, i⁺}} cos(i, j) / τ

averaged over the 2·batch anchors. DCL has `w_i = 1`; DCLW weights each positive pair by the negative
von Mises-Fisher weight

    w_i = 2 - batch · softmax_over_pairs(cos(z_a, z_b) / σ)_i

computed on stopped gradients (the weights are constants to the optimiser), so the weights average to 1
and easy (very similar) pairs get less weight than hard ones.

Cross-device convention: the one of `ssl_jax/losses/common.py`; with `axis_name` the negatives are all views of
the global batch, the value is the global loss, and DCLW's softmax runs over the global batch's pairs
(`batch` is the global batch size), so the loss does not depend on the number of devices. (lightly's
`DCLWLoss(gather_distributed=True)` takes the softmax over each process's pairs instead; on one device the
two agree.)
"""

from typing import Optional

import jax
import jax.numpy as jnp

from ssl_jax.losses.common import (
    MASK_LOGIT, check_pair, check_temperature, compute_dtype, gather, global_mean, in_batch_logits, l2_normalize,
    shard_info)


def negative_von_mises_fisher_weights(u_a: jax.Array, u_b: jax.Array, *, sigma: float,
                                      axis_name: Optional[str] = None) -> jax.Array:
  """DCLW's weights `2 - batch · softmax(u_a·u_b / σ)` for this device's pairs, with no gradient.

  Args:
    u_a, u_b: `(n, dim)` unit-norm projections of the two views (this device's shard with `axis_name`).
    sigma: σ > 0.
    axis_name: batch axis; the softmax is over the global batch's pairs.

  Returns:
    `(n,)` weights (mean 1 over the global batch).
  """
  if isinstance(sigma, (int, float)) and not sigma > 0:
    raise ValueError(f'sigma must be > 0; got {sigma}.')
  n_local = u_a.shape[0]
  num_devices, offset = shard_info(axis_name, n_local)
  cos = jnp.sum(jax.lax.stop_gradient(u_a) * jax.lax.stop_gradient(u_b), axis=1)
  cos = gather(cos, axis_name)
  weights = 2.0 - (n_local * num_devices) * jax.nn.softmax(cos / sigma)
  return jax.lax.dynamic_slice_in_dim(weights, offset, n_local) if axis_name is not None else weights


def _decoupled(z_a: jax.Array, z_b: jax.Array, temperature: float, sigma: Optional[float],
               axis_name: Optional[str]) -> jax.Array:
  check_pair('z_a', z_a, 'z_b', z_b)
  check_temperature(temperature)
  dtype = compute_dtype(z_a, z_b)
  u_a = l2_normalize(z_a.astype(dtype))
  u_b = l2_normalize(z_b.astype(dtype))
  logits, positive, negative_mask, n_global = in_batch_logits(u_a, u_b, temperature, axis_name)
  if n_global < 2:
    raise ValueError(f'DCL needs a global batch of at least 2 pairs (it has no negatives otherwise); '
                     f'got {n_global}.')
  if sigma is not None:
    weights = negative_von_mises_fisher_weights(u_a, u_b, sigma=sigma, axis_name=axis_name)
    positive = positive * jnp.concatenate([weights, weights]).astype(dtype)
  negatives = jax.nn.logsumexp(jnp.where(negative_mask, logits, jnp.asarray(MASK_LOGIT, dtype)),
                               axis=1)
  local_sum = jnp.sum(negatives - positive)
  return global_mean(local_sum, 2 * n_global, axis_name)


def dcl(z_a: jax.Array, z_b: jax.Array, *, temperature: float, axis_name: Optional[str] = None) -> jax.Array:
  """DCL loss (module docstring), the mean over the 2·batch anchors of the global batch.

  Args:
    z_a, z_b: `(n, dim)` raw projections of the two views (L2-normalised here); `z_a[i]`, `z_b[i]` pair.
    temperature: τ > 0.
    axis_name: batch axis inside shard_map / pmap (`ssl_jax/losses/common.py` convention).

  Returns:
    Scalar loss (may be negative: the positive is not in the denominator).
  """
  return _decoupled(z_a, z_b, temperature, None, axis_name)


def dclw(z_a: jax.Array, z_b: jax.Array, *, temperature: float, sigma: float = 0.5,
         axis_name: Optional[str] = None) -> jax.Array:
  """DCLW loss: DCL with the positive term weighted by `negative_von_mises_fisher_weights` (σ, no gradient).

  Args: as `dcl`, plus `sigma` σ > 0 (the paper's and lightly's default 0.5).
  """
  if not isinstance(sigma, (int, float)) or isinstance(sigma, bool) or not sigma > 0:
    raise ValueError(f'sigma must be a float > 0; got {sigma!r}.')
  return _decoupled(z_a, z_b, temperature, float(sigma), axis_name)
