"""MoCHi (Kalantidis et al. 2020): hard negatives mixed on the fly from MoCo's queue.

For each query `q` (unit norm) the queue rows are ranked by similarity `q·n`; the N most similar are its
hard set `Q̃_N` (`jax.lax.top_k`, per query). Two kinds of synthetic negatives are made from it:

* `num_mix` (s) mixes of two negatives:   h  = α n_i + (1 - α) n_j,   n_i ≠ n_j from Q̃_N,  α ~ U(0, 1)
* `num_query_mix` (s') mixes with the query: h' = β q + (1 - β) n_j,  n_j from Q̃_N,  β ~ U(0, 0.5)

each L2-normalised. They carry no gradient (the query enters h' as a constant), are used only as extra
negatives of their own query, and are never enqueued. Every query draws its own pairs, coefficients and
hard set: the gathers are per query (the public PyTorch code mixes every query's negatives from the first
query's hard set; this does not).

The pieces are pure functions: `draw_mochi` (all randomness, drawn for the global batch so a run does not
depend on the device count), `synthesize_hard_negatives` (deterministic given the draws) and
`mochi_info_nce` (InfoNCE with the queue plus the per-query synthetic negatives). With s = s' = 0,
`mochi_info_nce` is `contrastive.info_nce`.
"""

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from ssl_jax.losses.common import (
    check_matrix, check_pair, check_temperature, compute_dtype, cross_entropy, global_mean, l2_normalize, shard_info)


class MochiDraws(NamedTuple):
  """The random choices of one MoCHi step for this device's queries (positions index the hard set)."""
  mix_first: jax.Array  # (n, s) int32 in [0, N): position of n_i in the query's hard set
  mix_second: jax.Array  # (n, s) int32 in [0, N), != mix_first: position of n_j
  alpha: jax.Array  # (n, s) in [0, 1): weight of n_i
  query_mix: jax.Array  # (n, s') int32 in [0, N): position of the negative mixed with the query
  beta: jax.Array  # (n, s') in [0, 0.5): weight of the query


def _check_counts(num_hard, num_mix, num_query_mix) -> None:
  for name, value in (('num_hard', num_hard), ('num_mix', num_mix), ('num_query_mix', num_query_mix)):
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
      raise ValueError(f'{name} must be an int >= 0; got {value!r}.')
  if num_mix > 0 and num_hard < 2:
    raise ValueError(f'num_hard must be >= 2 to mix two distinct hard negatives (num_mix={num_mix}); '
                     f'got num_hard={num_hard}.')
  if num_query_mix > 0 and num_hard < 1:
    raise ValueError(f'num_hard must be >= 1 to mix the query with a hard negative '
                     f'(num_query_mix={num_query_mix}); got num_hard={num_hard}.')


def draw_mochi(key: jax.Array, batch_size: int, *, num_hard: int, num_mix: int, num_query_mix: int,
               axis_name: Optional[str] = None) -> MochiDraws:
  """Draws one step's MoCHi choices for this device's `batch_size` queries.

  Inside shard_map / pmap pass the same `key` on every device: the draws are made for the global batch and
  each device keeps its rows (global rows `d * batch_size ...`), so they do not depend on the device count.
  """
  _check_counts(num_hard, num_mix, num_query_mix)
  num_devices, offset = shard_info(axis_name, batch_size)
  n = batch_size * num_devices
  k_first, k_second, k_alpha, k_query, k_beta = jax.random.split(key, 5)
  first = jax.random.randint(k_first, (n, num_mix), 0, max(num_hard, 1), jnp.int32)
  second = jax.random.randint(k_second, (n, num_mix), 0, max(num_hard - 1, 1), jnp.int32)
  second = second + (second >= first).astype(jnp.int32)  # uniform over the other N - 1 positions
  draws = MochiDraws(
      mix_first=first, mix_second=second,
      alpha=jax.random.uniform(k_alpha, (n, num_mix), jnp.float32),
      query_mix=jax.random.randint(k_query, (n, num_query_mix), 0, max(num_hard, 1), jnp.int32),
      beta=jax.random.uniform(k_beta, (n, num_query_mix), jnp.float32, 0.0, 0.5))
  if axis_name is None:
    return draws
  return MochiDraws(*(jax.lax.dynamic_slice_in_dim(x, offset, batch_size) for x in draws))


def hardest_negatives(u_q: jax.Array, queue: jax.Array, num_hard: int) -> jax.Array:
  """`(n, num_hard)` queue row indices of each query's most similar rows, most similar first (no gradient)."""
  if num_hard > queue.shape[0]:
    raise ValueError(f'num_hard={num_hard} must not exceed the queue size {queue.shape[0]}.')
  similarity = jax.lax.stop_gradient(u_q) @ jax.lax.stop_gradient(queue).T
  return jax.lax.top_k(similarity, num_hard)[1]


def synthesize_hard_negatives(q: jax.Array, queue: jax.Array, draws: MochiDraws, *, num_hard: int) -> jax.Array:
  """MoCHi's synthetic negatives `(n, s + s', dim)` per query: the s two-negative mixes, then the s' query mixes.

  Args:
    q: `(n, dim)` raw queries (L2-normalised here).
    queue: `(queue_size, dim)` unit-norm keys.
    draws: this device's `draw_mochi(...)` for the same `num_hard`.
    num_hard: N, the size of each query's hard set (<= queue size).

  Returns:
    Unit-norm rows in the compute dtype, under stop_gradient.
  """
  check_matrix('q', q)
  check_matrix('queue', queue, dim=q.shape[1])
  num_mix, num_query_mix = draws.alpha.shape[1], draws.beta.shape[1]
  _check_counts(num_hard, num_mix, num_query_mix)
  for name, x, cols in (('mix_first', draws.mix_first, num_mix), ('mix_second', draws.mix_second, num_mix),
                        ('alpha', draws.alpha, num_mix), ('query_mix', draws.query_mix, num_query_mix),
                        ('beta', draws.beta, num_query_mix)):
    if tuple(x.shape) != (q.shape[0], cols):
      raise ValueError(f'draws.{name} must have shape {(q.shape[0], cols)} (queries, mixes); got {tuple(x.shape)}.')
  dtype = compute_dtype(q, queue)
  u_q = jax.lax.stop_gradient(l2_normalize(q.astype(dtype)))
  queue = jax.lax.stop_gradient(queue.astype(dtype))
  if num_mix + num_query_mix == 0:
    return jnp.zeros((q.shape[0], 0, q.shape[1]), dtype)
  hard = hardest_negatives(u_q, queue, num_hard)  # (n, N) queue rows, per query

  def rows(positions):  # (n, m) positions in each query's own hard set -> (n, m, dim) queue rows
    return queue[jnp.take_along_axis(hard, positions, axis=1)]

  alpha = draws.alpha.astype(dtype)[..., None]
  beta = draws.beta.astype(dtype)[..., None]
  mixes = alpha * rows(draws.mix_first) + (1 - alpha) * rows(draws.mix_second)
  query_mixes = beta * u_q[:, None, :] + (1 - beta) * rows(draws.query_mix)
  synthetic = jnp.concatenate([mixes, query_mixes], axis=1)
  return jax.lax.stop_gradient(l2_normalize(synthetic))


def mochi_info_nce(q: jax.Array, k: jax.Array, queue: jax.Array, synthetic: jax.Array, *, temperature: float,
                   axis_name: Optional[str] = None) -> jax.Array:
  """InfoNCE with logits `[q·k, q·queueᵀ, q·synthetic_qᵀ] / τ`, positive first; mean over queries.

  Args:
    q: `(n, dim)` raw queries (L2-normalised here).
    k: `(n, dim)` raw keys (L2-normalised here; stop_gradient).
    queue: `(queue_size, dim)` unit-norm keys (stop_gradient).
    synthetic: `(n, m, dim)` per-query extra negatives (stop_gradient), e.g. `synthesize_hard_negatives`.
    temperature: τ > 0.
    axis_name: batch axis inside shard_map / pmap: the value is the global batch mean. None: local mean.

  Returns:
    Scalar loss.
  """
  check_pair('q', q, 'k', k)
  check_matrix('queue', queue, dim=q.shape[1])
  shape = getattr(synthetic, 'shape', None)
  if shape is None or len(shape) != 3 or shape[0] != q.shape[0] or shape[2] != q.shape[1]:
    raise ValueError(f'synthetic must have shape ({q.shape[0]}, m, {q.shape[1]}); got shape {shape}.')
  check_temperature(temperature)
  dtype = compute_dtype(q, k, queue, synthetic)
  u_q = l2_normalize(q.astype(dtype))
  u_k = jax.lax.stop_gradient(l2_normalize(k.astype(dtype)))
  queue = jax.lax.stop_gradient(queue.astype(dtype))
  synthetic = jax.lax.stop_gradient(synthetic.astype(dtype))
  logits = jnp.concatenate([jnp.sum(u_q * u_k, axis=1, keepdims=True), u_q @ queue.T,
                            jnp.einsum('nd,nmd->nm', u_q, synthetic)], axis=1) / temperature
  local_sum = jnp.sum(cross_entropy(logits, jnp.zeros((q.shape[0],), jnp.int32)))
  num_devices, _ = shard_info(axis_name, q.shape[0])
  return global_mean(local_sum, q.shape[0] * num_devices, axis_name)
