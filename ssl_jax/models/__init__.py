"""Encoder and heads, and the factories that build them from `config.model`.

`create_encoder(config.model)` -> `ShuffleNetV2Encoder`, `(batch, time, 8) -> (batch, 1024)`;
`create_head(config.model)` -> `ProjectionHead(hidden_dim, output_dim)`;
`create_predictor(config.model)` -> MoCo v3 `Predictor(hidden_dim, output_dim)`.

`config.model.dtype` is the one setting of precision, read by `dtypes(config.model)` for all three:
'float32' (the default), 'bfloat16' or 'float16' run the encoder in that dtype with float32 parameters
and statistics (the heads compute in the promoted dtype of their input and parameters); 'float64'
computes and keeps everything in float64 (JAX's 64-bit mode must be on: `JAX_ENABLE_X64=1` or
`with jax.enable_x64(True)`). float64 exists for numerical checks: runs that must agree across programs
or machines to ~1e-9 (the torch parity and device-count tests), where float32 rounding, amplified by
training, leaves ~1e-3.
"""

from typing import Any, Optional

import jax
import jax.numpy as jnp

from ssl_jax.models.heads import PROJECTION_NORMS, Predictor, ProjectionHead, batch_standardize
from ssl_jax.models.layers import BatchNorm, DepthwiseConv1D, channel_shuffle
from ssl_jax.models.shufflenet import DOWNSAMPLINGS, INPUT_SCALINGS, ShuffleNetV2Encoder, ShuffleUnit

_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16, 'float64': jnp.float64}
DTYPES = tuple(_DTYPES)  # config.model.dtype values


def _get(model_config: Any, key: str) -> Any:
  if key not in model_config:
    raise ValueError(f'model_config has no key {key!r} (keys: {sorted(model_config.keys())})')
  return model_config[key]


def float64_needs_x64() -> str | None:
  """Why `config.model.dtype='float64'` cannot run now (JAX's 64-bit mode is off), else None."""
  if jax.config.jax_enable_x64:
    return None
  return ("needs JAX's 64-bit mode: set JAX_ENABLE_X64=1 in the environment (or run under "
          '`with jax.enable_x64(True):`); without it JAX would silently make float32 arrays')


def dtypes(model_config: Any) -> tuple[Any, Any]:
  """`(compute dtype, parameter dtype)` of `config.model.dtype`; parameters are at least float32.

  Raises ValueError for an unknown name, or for 'float64' while JAX's 64-bit mode is off.
  """
  name = _get(model_config, 'dtype')
  if name not in _DTYPES:
    raise ValueError(f'model_config.dtype must be one of {sorted(_DTYPES)}, got {name!r}')
  if name == 'float64' and float64_needs_x64():
    raise ValueError(f"model_config.dtype='float64' {float64_needs_x64()}")
  dtype = _DTYPES[name]
  return dtype, jnp.promote_types(dtype, jnp.float32)


def create_encoder(model_config: Any, bn_axis_name: Optional[str] = None) -> ShuffleNetV2Encoder:
  """Encoder from `config.model`: dtype, stage_repeats and the layout keys (`LAYOUT_KEYS`). A key absent from
  `config.model` takes its `LEGACY_LAYOUT` value, the layout every run had before the keys existed, so that a
  workdir written then is rebuilt as it was trained (`configs/base.py` sets every key)."""
  dtype, param_dtype = dtypes(model_config)
  stage_repeats = tuple(int(r) for r in model_config.get('stage_repeats', (4, 8, 4)))
  if len(stage_repeats) != 3 or min(stage_repeats) < 1:
    raise ValueError(f'model_config.stage_repeats must be 3 positive ints, got {stage_repeats!r}')
  layout = {key: model_config[key] if key in model_config else LEGACY_LAYOUT[key] for key in LAYOUT_KEYS}
  return ShuffleNetV2Encoder(bn_axis_name=bn_axis_name, dtype=dtype, param_dtype=param_dtype,
                             stage_repeats=stage_repeats, **layout)


# The encoder's layout attributes that `config.model` may set (`ShuffleNetV2Encoder`'s docstring).
LAYOUT_KEYS = ('stem_stride', 'stem_pool', 'dw_kernel', 'unit_downsample', 'input_scaling')
# The layout of every config written before the layout keys existed (docs/design.md, "The encoder's layout").
LEGACY_LAYOUT = {'stem_stride': 2, 'stem_pool': True, 'dw_kernel': 3, 'unit_downsample': 'stride',
                 'input_scaling': 'none'}


def create_head(model_config: Any, bn_axis_name: Optional[str] = None) -> ProjectionHead:
  """Projection MLP `hidden_dim -> output_dim` from `config.model` (`projection_norm`, default 'none')."""
  output_norm = model_config.get('projection_norm', 'none')
  if output_norm not in PROJECTION_NORMS:
    raise ValueError(f'model_config.projection_norm must be one of {PROJECTION_NORMS}, got {output_norm!r}')
  return ProjectionHead(hidden_dim=int(_get(model_config, 'hidden_dim')),
                        output_dim=int(_get(model_config, 'output_dim')), output_norm=output_norm,
                        axis_name=bn_axis_name, param_dtype=dtypes(model_config)[1])


def create_predictor(model_config: Any, bn_axis_name: Optional[str] = None) -> Predictor:
  """MoCo v3 predictor `hidden_dim -> output_dim` (it maps projections back to the projection space)."""
  return Predictor(hidden_dim=int(_get(model_config, 'hidden_dim')),
                   output_dim=int(_get(model_config, 'output_dim')), bn_axis_name=bn_axis_name,
                   param_dtype=dtypes(model_config)[1])


def count_params(params: Any) -> int:
  """Number of scalars in a pytree of arrays (pass `variables['params']` for trainable parameters)."""
  return int(sum(leaf.size for leaf in jax.tree.leaves(params)))


__all__ = [
    'BatchNorm', 'DOWNSAMPLINGS', 'DepthwiseConv1D', 'INPUT_SCALINGS', 'LAYOUT_KEYS', 'LEGACY_LAYOUT', 'PROJECTION_NORMS', 'Predictor', 'ProjectionHead', 'batch_standardize', 'ShuffleNetV2Encoder', 'ShuffleUnit',
    'channel_shuffle', 'count_params', 'create_encoder', 'create_head', 'create_predictor', 'dtypes',
]
