"""Projection heads on top of the encoder embedding `(batch, 1024)`.

- `ProjectionHead`: Dense(hidden) -> ReLU -> Dense(output), the SimCLR / MoCo v2 projection MLP.
  Parameters `fc1/{kernel,bias}`, `fc2/{kernel,bias}` (torch `nn.Sequential(Linear, ReLU, Linear)`:
  `0.weight = fc1.kernel.T`, `2.weight = fc2.kernel.T`). `output_norm='batch'` standardises each output
  dimension over the (global) batch, as the BatchNorm without affine that ends MoCo v3's projector.
- `Predictor`: Dense(hidden) -> BN -> ReLU -> Dense(output), the MoCo v3 prediction MLP on the query
  projection. Parameters `fc1` (kernel only: BN follows), `bn1` (+ `batch_stats`), `fc2`.
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp


def _validate_features(x: jax.Array, name: str) -> None:
  if x.ndim != 2:
    raise ValueError(f'{name}: x must have shape (batch, features), got shape {x.shape}')


PROJECTION_NORMS = ('none', 'batch')


def batch_standardize(z: jax.Array, axis_name: Optional[str] = None, epsilon: float = 1e-5) -> jax.Array:
  """Each column of `z (batch, dim)` to zero mean and unit variance over the batch (all devices of
  `axis_name`): BatchNorm without scale, bias or running statistics."""
  mean = jnp.mean(z, axis=0)
  mean_sq = jnp.mean(jnp.square(z), axis=0)
  if axis_name is not None:
    mean, mean_sq = jax.lax.pmean((mean, mean_sq), axis_name)
  variance = jnp.maximum(mean_sq - jnp.square(mean), 0.0)
  return (z - mean) * jax.lax.rsqrt(variance + epsilon)


class ProjectionHead(nn.Module):
  """`(batch, features) -> (batch, output_dim)` through a hidden ReLU layer of `hidden_dim`.

  output_norm: 'none' (the study's MLP) or 'batch' (`batch_standardize` of the output). The projection
    only ever feeds the loss, on a batch, so 'batch' keeps no running statistics: it always normalises
    with the statistics of the batch it is given. It stops the queries of MoCo v2 from bunching into
    one point early in short runs (`configs/moco_short_run.py`).
  axis_name: the batch axis across devices for 'batch' (global statistics), None on one device.
  param_dtype: dtype of the parameters; the layers compute in the promoted dtype of input and parameters.
  """
  hidden_dim: int
  output_dim: int
  output_norm: str = 'none'
  axis_name: Optional[str] = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    _validate_features(x, 'ProjectionHead')
    if self.output_norm not in PROJECTION_NORMS:
      raise ValueError(f'ProjectionHead: output_norm must be one of {PROJECTION_NORMS}, got {self.output_norm!r}')
    x = nn.relu(nn.Dense(self.hidden_dim, param_dtype=self.param_dtype, name='fc1')(x))
    x = nn.Dense(self.output_dim, param_dtype=self.param_dtype, name='fc2')(x)
    return batch_standardize(x, self.axis_name) if self.output_norm == 'batch' else x


class Predictor(nn.Module):
  """MoCo v3 predictor: `(batch, features) -> (batch, output_dim)`, BN with optional global statistics."""
  hidden_dim: int
  output_dim: int
  bn_axis_name: Optional[str] = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    _validate_features(x, 'Predictor')
    x = nn.Dense(self.hidden_dim, use_bias=False, param_dtype=self.param_dtype, name='fc1')(x)
    # x is at least float32 here (the head's output): no promotion to force, and the running statistics
    # are kept in param_dtype (float64 in float64 runs) instead of flax's fixed float32.
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, use_fast_variance=False,
                     axis_name=self.bn_axis_name, param_dtype=self.param_dtype, force_float32_reductions=False,
                     name='bn1')(x)
    return nn.Dense(self.output_dim, param_dtype=self.param_dtype, name='fc2')(nn.relu(x))
