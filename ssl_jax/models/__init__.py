"""Encoder and heads, and the factories that build them from `config.model`.

`create_encoder(config.model)` -> `ShuffleNetV2Encoder`, `(batch, time, 8) -> (batch, 1024)`;
`create_head(config.model)` -> `ProjectionHead(hidden_dim, output_dim)`;
`create_predictor(config.model)` -> MoCo v3 `Predictor(hidden_dim, output_dim)`.
"""

from typing import Any, Optional

import jax
import jax.numpy as jnp

from ssl_jax.models.heads import PROJECTION_NORMS, Predictor, ProjectionHead, batch_standardize
from ssl_jax.models.layers import BatchNorm, DepthwiseConv1D, channel_shuffle
from ssl_jax.models.shufflenet import ShuffleNetV2Encoder, ShuffleUnit

_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}
DTYPES = tuple(_DTYPES)  # config.model.dtype values


def _get(model_config: Any, key: str) -> Any:
  if key not in model_config:
    raise ValueError(f'model_config has no key {key!r} (keys: {sorted(model_config.keys())})')
  return model_config[key]


def create_encoder(model_config: Any, bn_axis_name: Optional[str] = None) -> ShuffleNetV2Encoder:
  """Encoder from `config.model` (dtype, stage_repeats)."""
  dtype = _get(model_config, 'dtype')
  if dtype not in _DTYPES:
    raise ValueError(f'model_config.dtype must be one of {sorted(_DTYPES)}, got {dtype!r}')
  stage_repeats = tuple(int(r) for r in model_config.get('stage_repeats', (4, 8, 4)))
  if len(stage_repeats) != 3 or min(stage_repeats) < 1:
    raise ValueError(f'model_config.stage_repeats must be 3 positive ints, got {stage_repeats!r}')
  return ShuffleNetV2Encoder(bn_axis_name=bn_axis_name, dtype=_DTYPES[dtype], stage_repeats=stage_repeats)


def create_head(model_config: Any, bn_axis_name: Optional[str] = None) -> ProjectionHead:
  """Projection MLP `hidden_dim -> output_dim` from `config.model` (`projection_norm`, default 'none')."""
  output_norm = model_config.get('projection_norm', 'none')
  if output_norm not in PROJECTION_NORMS:
    raise ValueError(f'model_config.projection_norm must be one of {PROJECTION_NORMS}, got {output_norm!r}')
  return ProjectionHead(hidden_dim=int(_get(model_config, 'hidden_dim')),
                        output_dim=int(_get(model_config, 'output_dim')), output_norm=output_norm,
                        axis_name=bn_axis_name)


def create_predictor(model_config: Any, bn_axis_name: Optional[str] = None) -> Predictor:
  """MoCo v3 predictor `hidden_dim -> output_dim` (it maps projections back to the projection space)."""
  return Predictor(hidden_dim=int(_get(model_config, 'hidden_dim')),
                   output_dim=int(_get(model_config, 'output_dim')), bn_axis_name=bn_axis_name)


def count_params(params: Any) -> int:
  """Number of scalars in a pytree of arrays (pass `variables['params']` for trainable parameters)."""
  return int(sum(leaf.size for leaf in jax.tree.leaves(params)))


__all__ = [
    'BatchNorm', 'DepthwiseConv1D', 'PROJECTION_NORMS', 'Predictor', 'ProjectionHead', 'batch_standardize', 'ShuffleNetV2Encoder', 'ShuffleUnit',
    'channel_shuffle', 'count_params', 'create_encoder', 'create_head', 'create_predictor',
]
