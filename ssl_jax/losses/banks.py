"""Memory banks of past embeddings as pure functions: instance discrimination (Wu et al. 2018) and a FIFO bank.

Instance-discrimination bank (`update_memory_bank`, `sample_bank_negatives`, `memory_bank_info_nce`)
---------------------------------------------------------------------------------------------------
One unit-norm embedding `m_i` per training example `i` (`(num_examples, dim)`, replicated on every device).
A query `q` of example `i` is scored against its own bank entry (the positive) and K bank entries of other
examples drawn uniformly (the negatives): InfoNCE over `[q·m_i, q·m_j1, ..., q·m_jK] / τ`. After the step the
bank moves towards the new embeddings `v` of the batch's examples:

    m_i <- normalize(μ m_i + (1 - μ) v_i)                (Wu et al.: μ = 0.5)

Duplicate indices (an example twice in one global batch) are resolved by averaging: every occurrence of `i`
contributes, and `v_i` is the mean of their embeddings, so the update is the same whatever the order of the
batch and whatever the device count. It is computed with a `(batch, batch)` equality matrix (a matmul, no
scatter-add), so it is deterministic on every backend; the rows are then written with a scatter whose
duplicate writes carry identical values. With `axis_name`, indices and embeddings of all devices are
gathered first, and every device applies the same update to its replica.

Negatives are drawn per query, uniformly among the other `num_examples - 1` examples (the query's own index
is never a negative); different queries' negatives may coincide, and a query may draw one example twice.

FIFO bank (`nt_xent_fifo_bank`, `fifo_bank_update`): lightly's `NTXentLoss(memory_bank_size=...)`
------------------------------------------------------------------------------------------------
A ring buffer of the last `size` second-view embeddings. The loss is NT-Xent with the first view as anchors:
logits `[z_a·z_b, z_a·bankᵀ] / τ`, positive first; the gradient flows into both views (not into the bank).
After the step `fifo_bank_update` writes the (gathered) normalised second views at the pointer, wrapping
around the end. lightly writes only up to the end of the bank and drops the rest of a batch that does not
fit; the two agree when the bank size is a multiple of the global batch size.

Cross-device convention: the one of `ssl_jax/losses/common.py` (with `axis_name` the value is the global batch's
loss; the caller pmeans gradients). Without `axis_name` the value is the local batch mean.
"""

from typing import Optional

import jax
import jax.numpy as jnp

from ssl_jax.losses.common import (
    check_matrix, check_pair, check_temperature, compute_dtype, cross_entropy, gather, global_mean, l2_normalize,
    shard_info)


def _check_indices(name: str, indices: jax.Array, batch: int) -> None:
  shape = getattr(indices, 'shape', None)
  dtype = getattr(indices, 'dtype', None)
  if shape is None or tuple(shape) != (batch,) or not jnp.issubdtype(dtype, jnp.integer):
    raise ValueError(f'{name} must be an integer array of shape ({batch},); got shape {shape}, dtype {dtype}.')


def init_bank(key: jax.Array, size: int, dim: int, dtype=jnp.float32) -> jax.Array:
  """`(size, dim)` random unit-norm rows (both banks start from these)."""
  if not isinstance(size, int) or size < 1 or not isinstance(dim, int) or dim < 1:
    raise ValueError(f'size and dim must be positive ints; got size={size!r}, dim={dim!r}.')
  return l2_normalize(jax.random.normal(key, (size, dim), dtype))


# ---------------------------------------------------------------- instance discrimination


def sample_bank_negatives(key: jax.Array, positive_indices: jax.Array, *, num_examples: int,
                          num_negatives: int, axis_name: Optional[str] = None) -> jax.Array:
  """`(n, K)` bank indices: for each query, K uniform draws among the examples other than its own.

  Inside shard_map / pmap pass the same `key` on every device: draws are made for the global batch and each
  device keeps its rows, so they do not depend on the device count.
  """
  if not isinstance(num_examples, int) or num_examples < 2:
    raise ValueError(f'num_examples must be an int >= 2 (a negative needs another example); got {num_examples!r}.')
  if not isinstance(num_negatives, int) or num_negatives < 1:
    raise ValueError(f'num_negatives must be an int >= 1; got {num_negatives!r}.')
  n_local = getattr(positive_indices, 'shape', (None,))[0]
  _check_indices('positive_indices', positive_indices, n_local)
  num_devices, offset = shard_info(axis_name, n_local)
  draws = jax.random.randint(key, (n_local * num_devices, num_negatives), 0, num_examples - 1, jnp.int32)
  if axis_name is not None:
    draws = jax.lax.dynamic_slice_in_dim(draws, offset, n_local)
  own = positive_indices.astype(jnp.int32)[:, None]
  return draws + (draws >= own).astype(jnp.int32)  # skip the query's own index


def memory_bank_info_nce(q: jax.Array, positive_indices: jax.Array, negative_indices: jax.Array,
                         bank: jax.Array, *, temperature: float, axis_name: Optional[str] = None) -> jax.Array:
  """InfoNCE of queries against their own bank entries (positive) and sampled bank entries (negatives).

  Args:
    q: `(n, dim)` raw query projections (L2-normalised here).
    positive_indices: `(n,)` example index of each query (its bank row).
    negative_indices: `(n, K)` bank rows of each query's negatives (`sample_bank_negatives`).
    bank: `(num_examples, dim)` unit-norm bank (stop_gradient).
    temperature: τ > 0.
    axis_name: batch axis inside shard_map / pmap: the value is the global batch mean. None: local mean.

  Returns:
    Scalar loss.
  """
  check_matrix('q', q)
  check_matrix('bank', bank, dim=q.shape[1])
  _check_indices('positive_indices', positive_indices, q.shape[0])
  shape = getattr(negative_indices, 'shape', None)
  if (shape is None or len(shape) != 2 or shape[0] != q.shape[0] or shape[1] < 1
      or not jnp.issubdtype(negative_indices.dtype, jnp.integer)):
    raise ValueError(f'negative_indices must be an integer array of shape ({q.shape[0]}, K >= 1); got shape {shape}.')
  check_temperature(temperature)
  dtype = compute_dtype(q, bank)
  u_q = l2_normalize(q.astype(dtype))
  bank = jax.lax.stop_gradient(bank.astype(dtype))
  # Every query against every row, then each query's K + 1 columns: n·num_examples·dim multiply-adds and an
  # (n, num_examples) array, instead of gathering an (n, K, dim) array of rows (each query's K rows differ),
  # which moves 4·n·K·dim bytes twice (forward and backward). The matmul is the cheaper of the two up to
  # banks of ~40·K rows (~160,000 at K = 4,096, from a CPU's and a GPU's flop-to-bandwidth ratios), beyond
  # AoAM's sizes; the timing is in docs/performance.md ("The memory bank's logits").
  similarity = u_q @ bank.T
  positive = jnp.take_along_axis(similarity, positive_indices[:, None].astype(jnp.int32), axis=1)
  negatives = jnp.take_along_axis(similarity, negative_indices.astype(jnp.int32), axis=1)
  logits = jnp.concatenate([positive, negatives], axis=1) / temperature
  local_sum = jnp.sum(cross_entropy(logits, jnp.zeros((q.shape[0],), jnp.int32)))
  num_devices, _ = shard_info(axis_name, q.shape[0])
  return global_mean(local_sum, q.shape[0] * num_devices, axis_name)


def update_memory_bank(bank: jax.Array, indices: jax.Array, embeddings: jax.Array, *, momentum: float = 0.5,
                       axis_name: Optional[str] = None) -> jax.Array:
  """`m_i <- normalize(μ m_i + (1 - μ) mean(v over the batch's occurrences of i))` for the batch's examples.

  Args:
    bank: `(num_examples, dim)` unit-norm bank.
    indices: `(n,)` example indices of this device's embeddings (must be < num_examples).
    embeddings: `(n, dim)` new embeddings `v` (L2-normalised here; no gradient).
    momentum: μ in [0, 1).
    axis_name: batch axis; indices and embeddings of all devices are gathered first.

  Returns:
    The updated bank (same shape and dtype); rows of examples not in the batch are unchanged.
  """
  check_matrix('bank', bank)
  check_matrix('embeddings', embeddings, dim=bank.shape[1])
  _check_indices('indices', indices, embeddings.shape[0])
  if not isinstance(momentum, (int, float)) or isinstance(momentum, bool) or not 0.0 <= momentum < 1.0:
    raise ValueError(f'momentum must be a float in [0, 1); got {momentum!r}.')
  dtype = compute_dtype(bank, embeddings)
  v = jax.lax.stop_gradient(l2_normalize(embeddings.astype(dtype)))
  indices, v = gather(indices.astype(jnp.int32), axis_name), gather(v, axis_name)
  same = (indices[:, None] == indices[None, :]).astype(dtype)  # (batch, batch) duplicates
  mean_v = (same @ v) / jnp.sum(same, axis=1, keepdims=True)
  old = jax.lax.stop_gradient(bank.astype(dtype))[indices]
  new = l2_normalize(momentum * old + (1.0 - momentum) * mean_v)
  return jnp.asarray(bank).at[indices].set(new.astype(bank.dtype))


# ---------------------------------------------------------------- FIFO bank (lightly's NTXentLoss)


def nt_xent_fifo_bank(z_a: jax.Array, z_b: jax.Array, bank: jax.Array, *, temperature: float,
                      axis_name: Optional[str] = None) -> jax.Array:
  """NT-Xent with negatives from a FIFO bank: CE of `[u_a·u_b, u_a·bankᵀ] / τ`, positive first, mean over z_a.

  Args:
    z_a: `(n, dim)` raw anchors (L2-normalised here).
    z_b: `(n, dim)` raw positives (L2-normalised here; they get gradient too).
    bank: `(size, dim)` unit-norm past second views (stop_gradient).
    temperature: τ > 0.
    axis_name: batch axis inside shard_map / pmap: the value is the global batch mean. None: local mean.

  Returns:
    Scalar loss.
  """
  check_pair('z_a', z_a, 'z_b', z_b)
  check_matrix('bank', bank, dim=z_a.shape[1])
  check_temperature(temperature)
  dtype = compute_dtype(z_a, z_b, bank)
  u_a = l2_normalize(z_a.astype(dtype))
  u_b = l2_normalize(z_b.astype(dtype))
  bank = jax.lax.stop_gradient(bank.astype(dtype))
  logits = jnp.concatenate([jnp.sum(u_a * u_b, axis=1, keepdims=True), u_a @ bank.T], axis=1) / temperature
  local_sum = jnp.sum(cross_entropy(logits, jnp.zeros((z_a.shape[0],), jnp.int32)))
  num_devices, _ = shard_info(axis_name, z_a.shape[0])
  return global_mean(local_sum, z_a.shape[0] * num_devices, axis_name)


def fifo_bank_update(bank: jax.Array, pointer: jax.Array, z: jax.Array, *,
                     axis_name: Optional[str] = None) -> tuple[jax.Array, jax.Array]:
  """Writes the normalised rows of `z` (all devices' with `axis_name`) at `pointer`, wrapping; no gradient.

  Args:
    bank: `(size, dim)` bank.
    pointer: int32 scalar, the next row to overwrite (the oldest).
    z: `(n, dim)` raw embeddings of this device (L2-normalised here).
    axis_name: batch axis; rows of all devices are written, in device order.

  Returns:
    `(bank, (pointer + global batch) % size)`.
  """
  check_matrix('bank', bank)
  check_matrix('z', z, dim=bank.shape[1])
  num_devices, _ = shard_info(axis_name, z.shape[0])
  size, batch = bank.shape[0], z.shape[0] * num_devices
  if batch > size:
    raise ValueError(f'the FIFO bank ({size} rows) must hold at least one global batch ({batch} rows).')
  rows = gather(jax.lax.stop_gradient(l2_normalize(z)), axis_name)
  pointer = jnp.asarray(pointer, jnp.int32)
  positions = (pointer + jnp.arange(batch, dtype=jnp.int32)) % size
  bank = jnp.asarray(bank)
  return bank.at[positions].set(rows.astype(bank.dtype), unique_indices=True), (pointer + batch) % size
