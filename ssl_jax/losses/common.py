"""What every loss family in `ssl_jax.losses` shares: input checks, normalisation, and the cross-device helpers.

The numerics the losses build on: inputs are L2-normalised inside (`l2_normalize`, zero rows stay zero),
computed in (at least) float32 (`compute_dtype`), and turned into losses through log-sum-exp only
(`cross_entropy`; excluded entries hold the finite `MASK_LOGIT`, so no `inf - inf` arises), never through a
raw `exp` of a logit.

Cross-device convention (every `axis_name` argument in `ssl_jax.losses`)
-----------------------------------------------------------------------
Call the loss inside `jax.shard_map` or `jax.pmap` with the batch axis named `axis_name`; each device
holds a shard of the pairs (device `d` holds global rows `d * n_local ... (d + 1) * n_local - 1`, the
order of `jax.lax.all_gather(..., tiled=True)`, see `shard_info` and `gather`). Then:

* Value: every device returns the loss of the GLOBAL batch, computed as
  `psum(sum of the local anchors' losses) / global number of anchors` (`global_mean`).
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
The queue and bank losses called without `axis_name` (and `contrastive.info_nce`, which has none) return
the local batch mean instead; each says so.
"""

from typing import Optional

import jax
import jax.numpy as jnp

# Squared-norm floor for L2 normalisation: zero vectors normalise to zero (finite gradient).
NORM_EPS = 1e-12
# Logit given to excluded (self) entries; finite, so no inf - inf can arise anywhere.
MASK_LOGIT = -1e9


def check_matrix(name: str, x: jax.Array, dim: Optional[int] = None) -> None:
  """Raises ValueError, naming the argument `name`, unless `x` is a floating `(n, dim)` array.

  `dim=None` accepts any feature dim. Only static attributes (shape, dtype) are read, so it runs under jit.
  """
  shape = getattr(x, 'shape', None)
  dtype = getattr(x, 'dtype', None)
  if shape is None or len(shape) != 2:
    raise ValueError(f'{name} must have shape (batch, dim); got shape {shape}.')
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f'{name} must be a floating array; got dtype {dtype} with shape {shape}.')
  if dim is not None and shape[1] != dim:
    raise ValueError(f'{name} must have feature dim {dim}; got shape {shape}.')


def check_pair(name_a: str, a: jax.Array, name_b: str, b: jax.Array) -> None:
  """Raises ValueError unless `a` and `b` are floating `(n, dim)` arrays of one shape."""
  check_matrix(name_a, a)
  check_matrix(name_b, b)
  if a.shape != b.shape:
    raise ValueError(f'{name_b} must have the shape of {name_a} {a.shape}; got shape {b.shape}.')


def check_temperature(temperature) -> None:
  """Raises ValueError for a Python number τ <= 0; a traced τ (an array) is not checked."""
  if isinstance(temperature, (int, float)) and not temperature > 0:
    raise ValueError(f'temperature must be > 0; got {temperature}.')


def compute_dtype(*xs: jax.Array):
  """The dtype the losses compute in: float32, or the widest of the inputs' dtypes if wider (float64)."""
  return jnp.result_type(jnp.float32, *[x.dtype for x in xs])


def l2_normalize(x: jax.Array) -> jax.Array:
  """Rows of `x` `(n, dim)` scaled to unit L2 norm; zero rows stay zero."""
  sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, NORM_EPS**2))


def cross_entropy(logits: jax.Array, positive_col: jax.Array) -> jax.Array:
  """Per-row `logsumexp(logits) - logits[positive]`, `(rows, cols)` and `(rows,)` int columns -> `(rows,)`.

  Log-sum-exp only: finite for any finite logits (excluded entries should hold `MASK_LOGIT`, not -inf).
  """
  positive = jnp.take_along_axis(logits, positive_col[:, None], axis=1)[:, 0]
  return jax.nn.logsumexp(logits, axis=1) - positive


def shard_info(axis_name: Optional[str], n_local: int) -> tuple[int, int | jax.Array]:
  """`(number of devices, global row offset of this device's shard)` for shards of `n_local` rows.

  Device `d` of the axis holds global rows `d * n_local ... (d + 1) * n_local - 1` (the order of `gather`).
  `axis_name=None` (one device): `(1, 0)`. Otherwise the count is a Python int and the offset a traced
  scalar, so it must be called inside shard_map / pmap over `axis_name`.
  """
  if axis_name is None:
    return 1, 0
  num_devices = jax.lax.axis_size(axis_name)
  return num_devices, jax.lax.axis_index(axis_name) * n_local


def gather(x: jax.Array, axis_name: Optional[str]) -> jax.Array:
  """Every device's `x` `(n_local, ...)` stacked along axis 0 in device order, `(num_devices * n_local, ...)`.

  `x` itself when `axis_name` is None. The gradient flows back to each device's own rows (the transpose of
  `all_gather` is `psum_scatter`).
  """
  return x if axis_name is None else jax.lax.all_gather(x, axis_name, tiled=True)


def global_mean(local_sum: jax.Array, global_count: int, axis_name: Optional[str]) -> jax.Array:
  """`psum(local_sum) / global_count`: the global batch's mean from per-device sums, equal on every device.

  `global_count` is the number of terms summed over all devices; with `axis_name=None` this is
  `local_sum / global_count`. It is the value half of the module's cross-device convention; the caller
  `pmean`s the gradients.
  """
  if axis_name is not None:
    local_sum = jax.lax.psum(local_sum, axis_name)
  return local_sum / global_count


def in_batch_logits(u_a: jax.Array, u_b: jax.Array, temperature: float,
                    axis_name: Optional[str]) -> tuple[jax.Array, jax.Array, jax.Array, int]:
  """SimCLR's in-batch logits of this device's 2n views against all 2N views of the global batch.

  Rows are the local anchors `[u_a; u_b]`; columns the gathered `[u_a of all devices; u_b of all devices]`
  (see `gather` for the row order). For the losses and metrics that treat the positive and the negatives
  separately (`debiased`, `dcl`, `discrimination`).

  Args:
    u_a, u_b: `(n, dim)` unit-norm views of this device's pairs.
    temperature: τ.
    axis_name: batch axis, or None on one device.

  Returns:
    `(logits (2n, 2N) = cos / τ, positive (2n,) logits of each anchor's other view,
    negative_mask (2n, 2N) True on the 2N - 2 negatives of each anchor, N)`.
  """
  n_local = u_a.shape[0]
  num_devices, offset = shard_info(axis_name, n_local)
  n_global = n_local * num_devices
  anchors = jnp.concatenate([u_a, u_b], axis=0)
  columns = jnp.concatenate([gather(u_a, axis_name), gather(u_b, axis_name)], axis=0)
  logits = anchors @ columns.T / temperature
  rows = jnp.arange(n_local) + offset
  self_col = jnp.concatenate([rows, rows + n_global])
  positive_col = jnp.concatenate([rows + n_global, rows])
  col = jnp.arange(2 * n_global)[None, :]
  negative_mask = (col != self_col[:, None]) & (col != positive_col[:, None])
  positive = jnp.take_along_axis(logits, positive_col[:, None], axis=1)[:, 0]
  return logits, positive, negative_mask, n_global
