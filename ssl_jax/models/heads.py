"""Projection heads on top of the encoder embedding `(batch, 1024)`.

- `ProjectionHead`: Dense(hidden) -> ReLU -> Dense(output), the SimCLR / MoCo v2 projection MLP.
  Parameters `fc1/{kernel,bias}`, `fc2/{kernel,bias}` (torch `nn.Sequential(Linear, ReLU, Linear)`:
  `0.weight = fc1.kernel.T`, `2.weight = fc2.kernel.T`).
- `Predictor`: Dense(hidden) -> BN -> ReLU -> Dense(output), the MoCo v3 prediction MLP on the query
  projection. Parameters `fc1` (kernel only: BN follows), `bn1` (+ `batch_stats`), `fc2`.
"""

from typing import Optional

import flax.linen as nn
import jax


def _validate_features(x: jax.Array, name: str) -> None:
  if x.ndim != 2:
    raise ValueError(f'{name}: x must have shape (batch, features), got shape {x.shape}')


class ProjectionHead(nn.Module):
  """`(batch, features) -> (batch, output_dim)` through a hidden ReLU layer of `hidden_dim`."""
  hidden_dim: int
  output_dim: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    _validate_features(x, 'ProjectionHead')
    x = nn.relu(nn.Dense(self.hidden_dim, name='fc1')(x))
    return nn.Dense(self.output_dim, name='fc2')(x)


class Predictor(nn.Module):
  """MoCo v3 predictor: `(batch, features) -> (batch, output_dim)`, BN with optional global statistics."""
  hidden_dim: int
  output_dim: int
  bn_axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    _validate_features(x, 'Predictor')
    x = nn.Dense(self.hidden_dim, use_bias=False, name='fc1')(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, use_fast_variance=False,
                     axis_name=self.bn_axis_name, name='bn1')(x)
    return nn.Dense(self.output_dim, name='fc2')(nn.relu(x))
