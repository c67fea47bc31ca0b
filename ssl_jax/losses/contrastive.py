"""Contrastive losses: SimCLR's NT-Xent, MoCo's InfoNCE (v2, queue) and MoCo v3's symmetric form.

All losses are pure functions of raw projections. They L2-normalise inside, compute in (at least)
float32, and go through log-sum-exp only: no raw `exp` of a logit, so they stay finite and accurate for
temperatures down to 0.01 and projection norms up to 1e4 (and beyond).

Cross-device convention (every `axis_name` argument in this module)
-------------------------------------------------------------------
Call the loss inside `jax.shard_map` or `jax.pmap` with the batch axis named `axis_name`; each device
holds a shard of the pairs (device `d` holds global rows `d * n_local ... (d + 1) * n_local - 1`, the
order of `jax.lax.all_gather(..., tiled=True)`). Then:

* Value: every device returns the loss of the GLOBAL batch, computed as
  `psum(sum of the local anchors' losses) / global number of anchors`.
* Gradient: the caller differentiates the per-device value and then takes `jax.lax.pmean` of the
  parameter gradients over `axis_name`. The result is exactly the gradient of the global-batch loss.
  This holds in all three ways of running a per-device step, through JAX's own transpose rules:
  - `jax.pmap`, and `jax.shard_map(..., check_vma=False)`: the transpose of `psum` is `psum`, so the
    per-device gradient is `num_devices` times the device's share of the global gradient, and the
    `pmean` turns the shares into the global gradient.
  - `jax.shard_map(..., check_vma=True)` (the default): the gradient of a replicated (invariant)
    parameter is already summed over the axis by JAX (the transpose of its implicit `pvary` is
    `psum`), so it already is the global gradient, and `pmean` of it is a no-op.
  Gradients through `all_gather` (its transpose is `psum_scatter`) carry every device's negatives'
  contributions back to the device that owns the view. Tests check all three modes against the
  single-device global loss (`tests/test_losses_multidevice.py`).
"""

from typing import Optional

import jax
import jax.numpy as jnp

# Squared-norm floor for L2 normalisation: zero vectors normalise to zero (finite gradient).
_NORM_EPS = 1e-12
# Logit given to excluded (self) entries; finite, so no inf - inf can arise anywhere.
_MASK_LOGIT = -1e9


def _check_matrix(name: str, x: jax.Array, dim: Optional[int] = None) -> None:
  """Raises ValueError unless `x` is a floating `(n, dim)` array."""
  shape = getattr(x, 'shape', None)
  dtype = getattr(x, 'dtype', None)
  if shape is None or len(shape) != 2:
    raise ValueError(f'{name} must have shape (batch, dim); got shape {shape}.')
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f'{name} must be a floating array; got dtype {dtype} with shape {shape}.')
  if dim is not None and shape[1] != dim:
    raise ValueError(f'{name} must have feature dim {dim}; got shape {shape}.')


def _check_pair(name_a: str, a: jax.Array, name_b: str, b: jax.Array) -> None:
  _check_matrix(name_a, a)
  _check_matrix(name_b, b)
  if a.shape != b.shape:
    raise ValueError(f'{name_b} must have the shape of {name_a} {a.shape}; got shape {b.shape}.')


def _check_temperature(temperature) -> None:
  if isinstance(temperature, (int, float)) and not temperature > 0:
    raise ValueError(f'temperature must be > 0; got {temperature}.')


def _compute_dtype(*xs: jax.Array):
  return jnp.result_type(jnp.float32, *[x.dtype for x in xs])


def l2_normalize(x: jax.Array) -> jax.Array:
  """Rows of `x` `(n, dim)` scaled to unit L2 norm; zero rows stay zero."""
  sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, _NORM_EPS**2))


def _cross_entropy(logits: jax.Array, positive_col: jax.Array) -> jax.Array:
  """Per-row `logsumexp(logits) - logits[positive]`, `(rows, cols)` -> `(rows,)`."""
  positive = jnp.take_along_axis(logits, positive_col[:, None], axis=1)[:, 0]
  return jax.nn.logsumexp(logits, axis=1) - positive


def _shard_info(axis_name, n_local: int):
  """(number of devices, global row offset of this device's shard)."""
  if axis_name is None:
    return 1, 0
  num_devices = jax.lax.axis_size(axis_name)
  return num_devices, jax.lax.axis_index(axis_name) * n_local


def _gather(x: jax.Array, axis_name) -> jax.Array:
  return x if axis_name is None else jax.lax.all_gather(x, axis_name, tiled=True)


def _global_mean(local_sum: jax.Array, global_count: int, axis_name) -> jax.Array:
  if axis_name is not None:
    local_sum = jax.lax.psum(local_sum, axis_name)
  return local_sum / global_count


def in_batch_logits(u_a: jax.Array, u_b: jax.Array, temperature: float,
                    axis_name: Optional[str]) -> tuple[jax.Array, jax.Array, jax.Array, int]:
  """SimCLR's in-batch logits of this device's 2n views against all 2N views of the global batch.

  Rows are the local anchors `[u_a; u_b]`; columns the gathered `[u_a of all devices; u_b of all devices]`
  (see the module docstring for the row order). For the losses that treat the positive and the negatives
  separately (`debiased`, `dcl`).

  Args:
    u_a, u_b: `(n, dim)` unit-norm views of this device's pairs.
    temperature: τ.
    axis_name: batch axis, or None on one device.

  Returns:
    `(logits (2n, 2N) = cos / τ, positive (2n,) logits of each anchor's other view,
    negative_mask (2n, 2N) True on the 2N - 2 negatives of each anchor, N)`.
  """
  n_local = u_a.shape[0]
  num_devices, offset = _shard_info(axis_name, n_local)
  n_global = n_local * num_devices
  anchors = jnp.concatenate([u_a, u_b], axis=0)
  columns = jnp.concatenate([_gather(u_a, axis_name), _gather(u_b, axis_name)], axis=0)
  logits = anchors @ columns.T / temperature
  rows = jnp.arange(n_local) + offset
  self_col = jnp.concatenate([rows, rows + n_global])
  positive_col = jnp.concatenate([rows + n_global, rows])
  col = jnp.arange(2 * n_global)[None, :]
  negative_mask = (col != self_col[:, None]) & (col != positive_col[:, None])
  positive = jnp.take_along_axis(logits, positive_col[:, None], axis=1)[:, 0]
  return logits, positive, negative_mask, n_global


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
  _check_pair('z_a', z_a, 'z_b', z_b)
  _check_temperature(temperature)
  dtype = _compute_dtype(z_a, z_b)
  n_local = z_a.shape[0]
  u_a = l2_normalize(z_a.astype(dtype))
  u_b = l2_normalize(z_b.astype(dtype))
  num_devices, offset = _shard_info(axis_name, n_local)
  n_global = n_local * num_devices

  anchors = jnp.concatenate([u_a, u_b], axis=0)  # (2 n_local, dim)
  columns = jnp.concatenate([_gather(u_a, axis_name), _gather(u_b, axis_name)], axis=0)
  logits = anchors @ columns.T / temperature  # (2 n_local, 2 n_global)

  rows = jnp.arange(n_local) + offset  # global example index of each local pair
  self_col = jnp.concatenate([rows, rows + n_global])
  positive_col = jnp.concatenate([rows + n_global, rows])
  is_self = self_col[:, None] == jnp.arange(2 * n_global)[None, :]
  logits = jnp.where(is_self, jnp.asarray(_MASK_LOGIT, dtype), logits)

  local_sum = jnp.sum(_cross_entropy(logits, positive_col))
  return _global_mean(local_sum, 2 * n_global, axis_name)


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
  _check_pair('q', q, 'k', k)
  _check_matrix('queue', queue, dim=q.shape[1])
  _check_temperature(temperature)
  dtype = _compute_dtype(q, k, queue)
  u_q = l2_normalize(q.astype(dtype))
  u_k = jax.lax.stop_gradient(l2_normalize(k.astype(dtype)))
  queue = jax.lax.stop_gradient(queue.astype(dtype))
  positive = jnp.sum(u_q * u_k, axis=1, keepdims=True)  # (n, 1)
  logits = jnp.concatenate([positive, u_q @ queue.T], axis=1) / temperature  # (n, 1 + K)
  return jnp.mean(_cross_entropy(logits, jnp.zeros((q.shape[0],), jnp.int32)))


def _contrast(u_q: jax.Array, u_k: jax.Array, temperature: float, axis_name,
              key_gradient: bool = False) -> jax.Array:
  """MoCo v3 `ctr`: CE of local queries against all (gathered) keys; positive at own global index."""
  n_local = u_q.shape[0]
  num_devices, offset = _shard_info(axis_name, n_local)
  keys = _gather(u_k, axis_name)  # (n_global, dim)
  if not key_gradient:
    keys = jax.lax.stop_gradient(keys)
  logits = u_q @ keys.T / temperature
  local_sum = jnp.sum(_cross_entropy(logits, jnp.arange(n_local) + offset))
  return _global_mean(local_sum, n_local * num_devices, axis_name)


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
  _check_pair('q_a', q_a, 'q_b', q_b)
  _check_pair('q_a', q_a, 'k_a', k_a)
  _check_pair('q_a', q_a, 'k_b', k_b)
  _check_temperature(temperature)
  dtype = _compute_dtype(q_a, q_b, k_a, k_b)
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
  _check_pair('z_a', z_a, 'z_b', z_b)
  dtype = _compute_dtype(z_a, z_b)
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
