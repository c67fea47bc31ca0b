"""Instance-discrimination accuracy: how often a contrastive task's positive is the top-1 of its candidates.

The metric `instance_accuracy` that the methods' steps report (no gradient, over the global batch): the
fraction of anchors whose positive scores strictly above every negative it is contrasted with. A tie counts
as a miss, so a collapsed representation (all scores equal) scores 0, not 1 / (number of candidates).
Chance for a random representation is 1 / (number of candidates).

What the candidates are, per method:
  SimCLR (every loss variant): each of the 2N views against the other 2N - 1 views of the global batch
    (`in_batch_top1`, the 2N - 2 negatives of NT-Xent and the positive);
  MoCo v2 and MoCHi: each query's key against the queue (`queue_top1`; MoCHi's synthetic negatives are
    left out, so the figure is comparable with MoCo's);
  FIFO bank: each first view's second view against the bank (`queue_top1`);
  MoCo v3: each query of view a against the N keys of view b of the global batch (`cross_top1`);
  CLIP: each IQ embedding against the N spectrum embeddings and back, the mean of both (`cross_top1`);
  memory bank: each query's own bank row against its K sampled bank rows (`positive_top1`).
SwAV reports none: it contrasts codes with prototype assignments, not an instance with other instances.

Convention for `axis_name`: as in `ssl_jax/losses/common.py` (called per device inside shard_map / pmap; the value is
the global batch's, equal on every device). Statistics are in at least float32.
"""

from typing import Optional

import jax
import jax.numpy as jnp

from ssl_jax.losses.common import in_batch_logits, l2_normalize


def _unit(x: jax.Array) -> jax.Array:
  return l2_normalize(jax.lax.stop_gradient(x).astype(jnp.result_type(jnp.float32, x.dtype)))


def _global_fraction(hits: jax.Array, axis_name: Optional[str]) -> jax.Array:
  """The mean of the boolean `hits` `(n,)` over all devices' rows (equal row counts per device)."""
  total, count = jnp.sum(hits.astype(jnp.float32)), hits.shape[0]
  if axis_name is not None:
    total = jax.lax.psum(total, axis_name)
    count = count * jax.lax.axis_size(axis_name)
  return total / count


def positive_top1(positive: jax.Array, negatives: jax.Array, axis_name: Optional[str] = None) -> jax.Array:
  """The fraction of rows whose `positive` `(n,)` score is above all their `negatives` `(n, K)` (ties miss)."""
  return _global_fraction(positive > jnp.max(negatives, axis=1), axis_name)


def in_batch_top1(z_a: jax.Array, z_b: jax.Array, axis_name: Optional[str] = None) -> jax.Array:
  """SimCLR's task: each of the 2N views picks its other view among the 2N - 1 others (cosine, top-1).

  `z_a`, `z_b` `(n, dim)`: the two views of this device's examples (raw projections, normalised here).
  """
  logits, positive, negative_mask, _ = in_batch_logits(_unit(z_a), _unit(z_b), 1.0, axis_name)
  negatives = jnp.where(negative_mask, logits, -jnp.inf)
  return positive_top1(positive, negatives, axis_name)


def queue_top1(q: jax.Array, k: jax.Array, queue: jax.Array, axis_name: Optional[str] = None) -> jax.Array:
  """MoCo v2's task: each query `q` `(n, dim)` picks its key `k` `(n, dim)` among the keys and the `queue`
  `(size, dim)` (cosine; the queue's rows are normalised here too)."""
  u_q, u_k, u_queue = _unit(q), _unit(k), _unit(queue)
  return positive_top1(jnp.sum(u_q * u_k, axis=1), u_q @ u_queue.T, axis_name)


def cross_top1(q: jax.Array, k: jax.Array, axis_name: Optional[str] = None) -> jax.Array:
  """MoCo v3's and CLIP's task: each local query `q` `(n, dim)` picks its own key among the keys `k` of the
  global batch (gathered over `axis_name`); the positive of local row i is global row offset + i."""
  u_q, u_k = _unit(q), _unit(k)
  n_local = u_q.shape[0]
  keys, offset = u_k, 0
  if axis_name is not None:
    keys = jax.lax.all_gather(u_k, axis_name, tiled=True)
    offset = jax.lax.axis_index(axis_name) * n_local
  scores = u_q @ keys.T  # (n, N)
  positive_col = jnp.arange(n_local) + offset
  positive = jnp.take_along_axis(scores, positive_col[:, None], axis=1)[:, 0]
  negatives = jnp.where(jnp.arange(keys.shape[0])[None, :] == positive_col[:, None], -jnp.inf, scores)
  return positive_top1(positive, negatives, axis_name)
