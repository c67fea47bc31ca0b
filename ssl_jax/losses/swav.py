"""SwAV (Caron et al. 2020): Sinkhorn-Knopp codes and the swapped-prediction loss over crops.

Inputs are prototype scores: `scores = l2_normalize(z) @ prototypesᵀ`, `(batch, num_prototypes)`, one array
per crop (the caller keeps the prototypes' rows unit norm).

Sinkhorn-Knopp (`sinkhorn_knopp`) turns the scores of a batch of B samples into soft codes Q, `(B, K)`, an
approximate equipartition of the samples over the K prototypes: starting from `Q ∝ exp(scores / ε)`, it
alternately rescales every prototype's total over the batch to one common value and every sample's
total over the prototypes to 1/B (`iterations` rounds), then returns `B · Q` (every row sums to 1). It
runs without gradient, in (at least) float32, and entirely in log space: `log Q` is renormalised with
log-sum-exps, so no `exp(score / ε)` can overflow whatever ε. With `axis_name` the column sums (and the
initial total) are taken over the global batch with collectives (`pmax` / `psum`), so the codes equal the
codes of one device holding the concatenated batch; row sums are per sample and stay local.

Swapped prediction (`swav_loss`): for each crop `i` in `code_crops` its codes `q_i` (Sinkhorn on its
scores, plus an optional queue of past scores that enter the sums and are then dropped) are predicted from
every other crop `v`: `-mean_b Σ_k q_i[b, k] · log_softmax(scores_v[b] / τ)_k`. The loss is the mean over
code crops of the mean over their predicting crops, exactly lightly's `SwaVLoss` with `high_resolution =
code_crops` and `low_resolution = other_crops`.

Cross-device convention: the one of `ssl_jax/losses/common.py` (value = global-batch loss; caller pmeans gradients).
"""

import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from ssl_jax.losses.common import check_matrix, check_temperature, compute_dtype, global_mean, shard_info


def _global_logsumexp(x: jax.Array, axis, axis_name: Optional[str]) -> jax.Array:
  """logsumexp of `x` over `axis` (None: all) and, with `axis_name`, over every device's rows (axis 0)."""
  if axis_name is None:
    return jax.nn.logsumexp(x, axis=axis, keepdims=True)
  peak = jax.lax.pmax(jnp.max(x, axis=axis, keepdims=True), axis_name)
  total = jax.lax.psum(jnp.sum(jnp.exp(x - peak), axis=axis, keepdims=True), axis_name)
  return peak + jnp.log(total)


def sinkhorn_knopp(scores: jax.Array, *, epsilon: float = 0.05, iterations: int = 3,
                   axis_name: Optional[str] = None) -> jax.Array:
  """Soft codes `(batch, K)` from prototype scores `(batch, K)` (module docstring); no gradient.

  Args:
    scores: `(n, K)` prototype scores of this device's samples (and queue rows, if any).
    epsilon: ε > 0, the entropic regularisation (SwAV's 0.05).
    iterations: number of column/row rescaling rounds (>= 0; SwAV's 3).
    axis_name: batch axis inside shard_map / pmap; sums over samples are global.

  Returns:
    `(n, K)` codes in float32 (float64 for float64 scores); each row sums to 1 when iterations >= 1.
  """
  check_matrix('scores', scores)
  if isinstance(epsilon, (int, float)) and not epsilon > 0:
    raise ValueError(f'epsilon must be > 0; got {epsilon}.')
  if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 0:
    raise ValueError(f'iterations must be an int >= 0; got {iterations!r}.')
  dtype = compute_dtype(scores)
  num_devices, _ = shard_info(axis_name, scores.shape[0])
  log_batch = math.log(scores.shape[0] * num_devices)
  log_q = jax.lax.stop_gradient(scores).astype(dtype) / epsilon
  log_q = log_q - _global_logsumexp(log_q, None, axis_name)  # Q /= sum(Q)
  for _ in range(iterations):
    log_q = log_q - _global_logsumexp(log_q, 0, axis_name)  # every prototype's total over the batch -> 1
    log_q = log_q - jax.nn.logsumexp(log_q, axis=1, keepdims=True) - log_batch  # each sample's -> 1/B
  return jnp.exp(log_q + log_batch)


def _check_crops(name: str, crops: Sequence[jax.Array], shape: Optional[tuple[int, ...]]) -> tuple[int, ...]:
  if isinstance(crops, (str, bytes)) or not isinstance(crops, Sequence):
    raise ValueError(f'{name} must be a sequence of (batch, num_prototypes) arrays; got {type(crops).__name__}.')
  for i, crop in enumerate(crops):
    check_matrix(f'{name}[{i}]', crop)
    if shape is None:
      shape = tuple(crop.shape)
    elif tuple(crop.shape) != shape:
      raise ValueError(f'{name}[{i}] must have shape {shape} like the first crop; got {tuple(crop.shape)}.')
  return shape


def swav_loss(code_crops: Sequence[jax.Array], other_crops: Sequence[jax.Array] = (),
              queue_scores: Optional[Sequence[jax.Array]] = None, *, temperature: float = 0.1,
              epsilon: float = 0.05, sinkhorn_iterations: int = 3, axis_name: Optional[str] = None) -> jax.Array:
  """SwAV's swapped-prediction loss over crops (module docstring).

  Args:
    code_crops: scores `(n, K)` of the crops whose codes are predicted (SwAV's two high-resolution crops).
    other_crops: scores `(n, K)` of crops that only predict (SwAV's low-resolution crops).
    queue_scores: optional, one `(m, K)` array per code crop: scores of past samples against the current
      prototypes, used in that crop's Sinkhorn sums only (local rows with `axis_name`).
    temperature: τ > 0 of the prediction softmax (SwAV's 0.1).
    epsilon, sinkhorn_iterations: Sinkhorn's ε and number of rounds.
    axis_name: batch axis inside shard_map / pmap.

  Returns:
    Scalar loss; gradients flow into the scores of every crop through the predictions only.
  """
  shape = _check_crops('code_crops', code_crops, None)
  if not code_crops:
    raise ValueError('code_crops must hold at least one crop.')
  _check_crops('other_crops', other_crops, shape)
  num_crops = len(code_crops) + len(other_crops)
  if num_crops < 2:
    raise ValueError(f'swav_loss needs at least 2 crops in all (one to predict the other); got {num_crops}.')
  if queue_scores is not None:
    if isinstance(queue_scores, (str, bytes)) or not isinstance(queue_scores, Sequence) or (
        len(queue_scores) != len(code_crops)):
      raise ValueError(f'queue_scores must hold one array per code crop ({len(code_crops)}); got {queue_scores!r}.')
    for i, queue in enumerate(queue_scores):
      check_matrix(f'queue_scores[{i}]', queue, dim=shape[1])
  check_temperature(temperature)
  dtype = compute_dtype(*code_crops, *other_crops)
  n_local = shape[0]
  num_devices, _ = shard_info(axis_name, n_local)
  log_predictions = [jax.nn.log_softmax(c.astype(dtype) / temperature, axis=1)
                     for c in (*code_crops, *other_crops)]

  total = jnp.zeros((), dtype)
  for i, crop in enumerate(code_crops):
    sinkhorn_input = crop if queue_scores is None else jnp.concatenate(
        [crop.astype(dtype), queue_scores[i].astype(dtype)], axis=0)
    codes = sinkhorn_knopp(sinkhorn_input, epsilon=epsilon, iterations=sinkhorn_iterations,
                           axis_name=axis_name)[:n_local].astype(dtype)
    cross_entropy = sum(-jnp.sum(codes * log_predictions[v]) for v in range(num_crops) if v != i)
    total = total + cross_entropy / (num_crops - 1)
  return global_mean(total, n_local * num_devices * len(code_crops), axis_name)
