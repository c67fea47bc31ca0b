"""Contrastive losses: SimCLR's NT-Xent, MoCo's InfoNCE (v2, queue) and MoCo v3's symmetric form.

All losses are pure functions of raw projections. They L2-normalise inside, compute in (at least)
float32, and go through log-sum-exp only: no raw `exp` of a logit, so they stay finite and accurate for
temperatures down to 0.01 and projection norms up to 1e4 (and beyond).

Every `axis_name` argument follows the cross-device convention of `ssl_jax/losses/common.py`: called per
device inside shard_map / pmap, the value is the global batch's loss and the caller `pmean`s gradients.
"""

from typing import Optional

import jax
import jax.numpy as jnp

from ssl_jax.losses.common import (
    MASK_LOGIT, check_matrix, check_pair, check_temperature, compute_dtype, cross_entropy, gather, global_mean,
    l2_normalize, shard_info)


def nt_xent(z_a: jax.Array, z_b: jax.Array, *, temperature: float,
            axis_name: Optional[str] = None) -> jax.Array:
  """SimCLR's NT-Xent loss over the 2N views of the (global) batch.

  Each of the 2N views is an anchor: its positive is the other view of the same example, its
  negatives are the other 2N - 2 views, itself is excluded. The loss is the mean over the 2N anchors
  of `-log softmax(cos / temperature)[positive]`.

  Args:
    z_a: `(n, dim)` raw projections of the first views (L2-normalised here).
    z_b: `(n, dim)` raw projections of the second views; `z_a[i]`, `z_b[i]` are a positive pair.
    temperature: softmax temperature τ > 0.
    axis_name: batch axis when called per device (shard_map / pmap); `n` is then the local shard
      size and all views are gathered as negatives. See the module docstring for the value and
      gradient convention (value = global loss; caller pmeans gradients).

  Returns:
    Scalar float32 (or float64 for float64 inputs) loss.
  """
  check_pair('z_a', z_a, 'z_b', z_b)
  check_temperature(temperature)
  dtype = compute_dtype(z_a, z_b)
  n_local = z_a.shape[0]
  u_a = l2_normalize(z_a.astype(dtype))
  u_b = l2_normalize(z_b.astype(dtype))
  num_devices, offset = shard_info(axis_name, n_local)
  n_global = n_local * num_devices

  anchors = jnp.concatenate([u_a, u_b], axis=0)  # (2 n_local, dim)
  columns = jnp.concatenate([gather(u_a, axis_name), gather(u_b, axis_name)], axis=0)
  logits = anchors @ columns.T / temperature  # (2 n_local, 2 n_global)

  rows = jnp.arange(n_local) + offset  # global example index of each local pair
  self_col = jnp.concatenate([rows, rows + n_global])
  positive_col = jnp.concatenate([rows + n_global, rows])
  is_self = self_col[:, None] == jnp.arange(2 * n_global)[None, :]
  logits = jnp.where(is_self, jnp.asarray(MASK_LOGIT, dtype), logits)

  local_sum = jnp.sum(cross_entropy(logits, positive_col))
  return global_mean(local_sum, 2 * n_global, axis_name)


def info_nce(q: jax.Array, k: jax.Array, queue: jax.Array, *, temperature: float) -> jax.Array:
  """MoCo (v1/v2) InfoNCE: logits `[q·k, q·queueᵀ] / τ`, positive at index 0, mean over the batch.

  No gradient flows into `k` or `queue` (both are wrapped in stop_gradient).

  Args:
    q: `(n, dim)` raw query projections (L2-normalised here).
    k: `(n, dim)` raw key projections from the momentum encoder (L2-normalised here).
    queue: `(queue_size, dim)` past keys, rows already unit norm (not renormalised here).
    temperature: softmax temperature τ > 0.

  Returns:
    Scalar loss (local batch mean; MoCo's queue holds the cross-device negatives).
  """
  check_pair('q', q, 'k', k)
  check_matrix('queue', queue, dim=q.shape[1])
  check_temperature(temperature)
  dtype = compute_dtype(q, k, queue)
  u_q = l2_normalize(q.astype(dtype))
  u_k = jax.lax.stop_gradient(l2_normalize(k.astype(dtype)))
  queue = jax.lax.stop_gradient(queue.astype(dtype))
  positive = jnp.sum(u_q * u_k, axis=1, keepdims=True)  # (n, 1)
  logits = jnp.concatenate([positive, u_q @ queue.T], axis=1) / temperature  # (n, 1 + K)
  return jnp.mean(cross_entropy(logits, jnp.zeros((q.shape[0],), jnp.int32)))


def _contrast(u_q: jax.Array, u_k: jax.Array, temperature: float, axis_name,
              key_gradient: bool = False) -> jax.Array:
  """MoCo v3 `ctr`: CE of local queries against all (gathered) keys; positive at own global index."""
  n_local = u_q.shape[0]
  num_devices, offset = shard_info(axis_name, n_local)
  keys = gather(u_k, axis_name)  # (n_global, dim)
  if not key_gradient:
    keys = jax.lax.stop_gradient(keys)
  logits = u_q @ keys.T / temperature
  local_sum = jnp.sum(cross_entropy(logits, jnp.arange(n_local) + offset))
  return global_mean(local_sum, n_local * num_devices, axis_name)


def symmetric_info_nce(q_a: jax.Array, q_b: jax.Array, k_a: jax.Array, k_b: jax.Array, *,
                       temperature: float, axis_name: Optional[str] = None,
                       key_gradient: bool = False) -> jax.Array:
  """MoCo v3 loss `ctr(q_a, k_b) + ctr(q_b, k_a)`.

  `ctr(q, k)` is the mean over queries of the cross-entropy of `q_i · k_j / τ` over all keys `j` of
  the global batch, positive at `j = i`. Keys get no gradient unless `key_gradient`: then every input
  gets the gradient of the whole expression, and `symmetric_info_nce(u, v, u, v, key_gradient=True) / 2`
  is CLIP's loss between two towers' embeddings u and v (the mean of its row and column cross-entropies).

  Scaling: this returns the plain sum of the two cross-entropies. The MoCo v3 reference code
  multiplies it by `2τ`; do that in the caller if its exact gradient scale is wanted.

  Args:
    q_a, q_b: `(n, dim)` raw queries (online encoder + predictor) of the two views.
    k_a, k_b: `(n, dim)` raw keys (momentum encoder) of the two views.
    temperature: softmax temperature τ > 0.
    axis_name: batch axis when called per device; keys are gathered across devices and the value
      and gradient convention is the one in the module docstring.
    key_gradient: False (MoCo v3): the keys are constants; True: they are differentiated too.

  Returns:
    Scalar loss.
  """
  check_pair('q_a', q_a, 'q_b', q_b)
  check_pair('q_a', q_a, 'k_a', k_a)
  check_pair('q_a', q_a, 'k_b', k_b)
  check_temperature(temperature)
  dtype = compute_dtype(q_a, q_b, k_a, k_b)
  u_qa, u_qb, u_ka, u_kb = (l2_normalize(x.astype(dtype)) for x in (q_a, q_b, k_a, k_b))
  return (_contrast(u_qa, u_kb, temperature, axis_name, key_gradient) +
          _contrast(u_qb, u_ka, temperature, axis_name, key_gradient))


def similarity_stats(z_a: jax.Array, z_b: jax.Array,
                     axis_name: Optional[str] = None) -> dict[str, jax.Array]:
  """Collapse monitor: mean cosine similarity of positive pairs and of negative pairs.

  O(n · dim): the negative mean comes from `|Σ u|² = Σ_ij u_i·u_j` minus the self and positive
  terms, over the 2N(2N - 2) ordered negative pairs of the global batch. No gradient.

  Args:
    z_a, z_b: `(n, dim)` raw projections of the two views (local shard with `axis_name`).
    axis_name: batch axis when called per device; statistics are over the global batch.

  Returns:
    {'pos_cosine': scalar, 'neg_cosine': scalar}; equal on every device.
  """
  check_pair('z_a', z_a, 'z_b', z_b)
  dtype = compute_dtype(z_a, z_b)
  u_a = l2_normalize(jax.lax.stop_gradient(z_a).astype(dtype))
  u_b = l2_normalize(jax.lax.stop_gradient(z_b).astype(dtype))
  pos_sum = jnp.sum(u_a * u_b)
  total = jnp.sum(u_a, axis=0) + jnp.sum(u_b, axis=0)
  self_sum = jnp.sum(jnp.square(u_a)) + jnp.sum(jnp.square(u_b))
  n = z_a.shape[0]
  if axis_name is not None:
    pos_sum, total, self_sum = jax.lax.psum((pos_sum, total, self_sum), axis_name)
    n = n * jax.lax.axis_size(axis_name)
  neg_sum = jnp.sum(jnp.square(total)) - self_sum - 2.0 * pos_sum
  num_neg = max(2 * n * (2 * n - 2), 1)
  return {'pos_cosine': pos_sum / n, 'neg_cosine': neg_sum / num_neg}
