"""1-D ShuffleNetV2 encoder: the block structure of torchvision's `shufflenet_v2_x0_5`, over time.

`(batch, time, 8)` channels-last IQ (a0-I, a0-Q, ..., a3-Q) -> `(batch, 1024)` embedding.

Structure (width 0.5; channels 24 / 48 / 96 / 192 / 1024, repeats 4 / 8 / 4), in the default layout:
  stem:   conv k3 s1 p1 (8 -> 24, no bias) + BN + ReLU, max-pool k3 s2 p1
  stage2..4: unit0 halves the time axis and has two branches, each at full length and max-pooled (k3 s2 p1)
          at its end; units 1.. split the channels in half, keep one half (identity) and transform the
          other; both concatenate and shuffle channels (groups 2)
  final:  conv 1x1 (192 -> 1024, no bias) + BN + ReLU, mean over time.
The layout attributes (`stem_stride`, `stem_pool`, `dw_kernel`, `unit_downsample`, `input_scaling`) build the
other layouts, among them `models.LEGACY_LAYOUT` ('v1': a stride-2 stem, and stride-2 units whose depthwise
convs downsample), the layout of every run before the layout keys existed; how the default was chosen:
docs/design.md ("The encoder's layout"). Every conv is bias-free and followed by BatchNorm, like torchvision;
BN and the ReLU after it run as one `layers.BatchNorm` (flax's variables, a hand-written backward pass). Time
lengths: any T >= 32 (the default halves T four times, `v1` five: T = 32 ends at length 2, or 1; odd lengths
round up at each halving, as in torch).

Parameter count at width 0.5: exactly 335,528 trainable parameters (`params`: conv kernels and BN
scale/bias), plus 7,952 BatchNorm running statistics in `batch_stats` (mean and var, not trained).
(torchvision's 2-D `shufflenet_v2_x0_5` has 341,792 without its fc; the 1-D version has 3-tap instead of
3x3 depthwise kernels and 8 instead of 3 input channels.)

Parameter names and the torchvision (PyTorch) names they map to, for weight conversion:

  flax (params / batch_stats)           torchvision `shufflenet_v2_x0_5` (1-D twin)
  stem_conv/kernel      (3, 8, 24)       conv1.0.weight       (24, 8, 3)
  stem_bn/{scale,bias,mean,var}          conv1.1.{weight,bias,running_mean,running_var}
  stage{s}_unit{i}/branch1_dw/kernel     stage{s}.{i}.branch1.0.weight   (unit 0 only)
  stage{s}_unit{i}/branch1_dw_bn         stage{s}.{i}.branch1.1
  stage{s}_unit{i}/branch1_pw/kernel     stage{s}.{i}.branch1.2.weight
  stage{s}_unit{i}/branch1_pw_bn         stage{s}.{i}.branch1.3
  stage{s}_unit{i}/branch2_pw1/kernel    stage{s}.{i}.branch2.0.weight
  stage{s}_unit{i}/branch2_pw1_bn        stage{s}.{i}.branch2.1
  stage{s}_unit{i}/branch2_dw/kernel     stage{s}.{i}.branch2.3.weight
  stage{s}_unit{i}/branch2_dw_bn         stage{s}.{i}.branch2.4
  stage{s}_unit{i}/branch2_pw2/kernel    stage{s}.{i}.branch2.5.weight
  stage{s}_unit{i}/branch2_pw2_bn        stage{s}.{i}.branch2.6
  final_conv/kernel     (1, 192, 1024)   conv5.0.weight       (1024, 192, 1)
  final_bn                               conv5.1
with s in {2, 3, 4}. Every conv kernel is flax `(kernel, in / groups, out)` = torch weight
`.transpose(2, 1, 0)`; depthwise kernels are `(3, 1, C)` <-> torch `(C, 1, 3)`. BN: flax scale/bias/mean/var
= torch weight/bias/running_mean/running_var. BN momentum 0.9 here = torch momentum 0.1; eps 1e-5 both.
One difference remains: torch updates running_var with the unbiased batch variance, flax with the
biased one (a factor n / (n - 1), negligible at the study's batch sizes).
"""

import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.data import spec
from ssl_jax.models import layers

ModuleDef = Any  # a flax Module class (or a partial of one)

INPUT_CHANNELS = spec.NUM_CHANNELS
MIN_TIME = 32
# torchvision's channels at width 0.5: stem, stage2, stage3, stage4, final conv.
STAGE_OUT_CHANNELS = (24, 48, 96, 192, 1024)
STAGE_REPEATS = (4, 8, 4)


class ShuffleUnit(nn.Module):
  """One ShuffleNetV2 unit (torchvision's `InvertedResidual`). `(B, T, C_in) -> (B, T_out, out_channels)`.

  stride 1: split channels in half; branch2 transforms the second half; the first passes through.
  stride 2: branch1 (dw + pw) and branch2 (pw + dw + pw) both see the whole input; time halves.
  """
  out_channels: int
  stride: int
  dw_kernel: int = 3
  downsample: str = 'stride'
  bn_axis_name: Optional[str] = None
  dtype: Any = jnp.float32
  norm: ModuleDef = layers.BatchNorm
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if self.stride not in (1, 2):
      raise ValueError(f'stride must be 1 or 2, got {self.stride}')
    branch_channels = self.out_channels // 2
    if self.stride == 1 and x.shape[-1] != self.out_channels:
      raise ValueError(f'a stride-1 unit needs in == out channels, got x {x.shape} for {self.out_channels}')
    conv = functools.partial(layers.Conv1D, dtype=self.dtype, param_dtype=self.param_dtype)
    if self.downsample not in DOWNSAMPLINGS:
      raise ValueError(f'downsample must be one of {DOWNSAMPLINGS}, got {self.downsample!r}')
    pooled = self.stride == 2 and self.downsample == 'pool'  # full-length branches, each max-pooled at its end
    dw = functools.partial(layers.DepthwiseConv1D, kernel_size=self.dw_kernel, stride=1 if pooled else self.stride,
                           padding=self.dw_kernel // 2,
                           dtype=self.dtype, param_dtype=self.param_dtype)
    bn = functools.partial(self.norm, use_running_average=not train, axis_name=self.bn_axis_name,
                           dtype=self.dtype, param_dtype=self.param_dtype)

    if self.stride == 1:
      identity, x2 = jnp.split(x, 2, axis=-1)
    else:
      x2 = x
      y = dw(name='branch1_dw')(x)
      y = bn(name='branch1_dw_bn', relu=False)(y)
      y = conv(branch_channels, name='branch1_pw')(y)
      identity = bn(name='branch1_pw_bn', relu=True)(y)
      if pooled:
        identity = layers.max_pool1d(identity, window=3, stride=2, padding=1)

    y = conv(branch_channels, name='branch2_pw1')(x2)
    y = bn(name='branch2_pw1_bn', relu=True)(y)
    y = dw(name='branch2_dw')(y)
    y = bn(name='branch2_dw_bn', relu=False)(y)
    y = conv(branch_channels, name='branch2_pw2')(y)
    y = bn(name='branch2_pw2_bn', relu=True)(y)
    if pooled:
      y = layers.max_pool1d(y, window=3, stride=2, padding=1)
    return layers.channel_shuffle(jnp.concatenate([identity, y], axis=-1), groups=2)


INPUT_SCALINGS = ('none', 'rms')
DOWNSAMPLINGS = ('stride', 'pool')  # a stride-2 unit: strided depthwise convs, or max-pools at its branches' ends


def scale_input(x: jax.Array, scaling: str) -> jax.Array:
  """'none': x; 'rms': each example divided by its root-mean-square over time and all 8 channels (one scalar
  per example, so the antennas' relative amplitudes and phases stay; an all-zero example stays zero)."""
  if scaling == 'none':
    return x
  if scaling != 'rms':
    raise ValueError(f'input_scaling must be one of {INPUT_SCALINGS}, got {scaling!r}')
  x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  rms = jnp.sqrt(jnp.mean(jnp.square(x32), axis=(1, 2), keepdims=True))
  return (x32 / jnp.maximum(rms, jnp.finfo(x32.dtype).tiny ** 0.5)).astype(x.dtype)


def validate_input(x: jax.Array) -> None:
  """Raises ValueError unless x is floating `(batch, time >= 32, 8)`."""
  if x.ndim != 3 or x.shape[-1] != INPUT_CHANNELS:
    raise ValueError(f'x must have shape (batch, time, {INPUT_CHANNELS}) (channels last), got shape {x.shape}')
  if x.shape[1] < MIN_TIME:
    raise ValueError(f'x must have time >= {MIN_TIME} samples, got shape {x.shape}')
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f'x must be floating point, got dtype {x.dtype} (shape {x.shape})')


class ShuffleNetV2Encoder(nn.Module):
  """1-D ShuffleNetV2-0.5 backbone. `(batch, time, 8)` -> `(batch, 1024)`.

  Attributes:
    bn_axis_name: named axis (vmap / shard_map / pmap) over which BatchNorm averages batch statistics,
      so each device normalises with global-batch statistics; None for per-call statistics.
    dtype: computation dtype.
    norm: the BatchNorm (+ ReLU) module class, built as `norm(use_running_average=, axis_name=, dtype=,
      param_dtype=, relu=, name=)` with the variables of `flax.linen.BatchNorm`; `layers.BatchNorm`.
    param_dtype: dtype of the parameters and BatchNorm statistics (float32, or float64 for float64 runs).
  """
  bn_axis_name: Optional[str] = None
  dtype: Any = jnp.float32
  stage_repeats: Sequence[int] = STAGE_REPEATS
  stem_stride: int = 1
  stem_pool: bool = True
  dw_kernel: int = 3
  unit_downsample: str = 'pool'
  input_scaling: str = 'none'
  norm: ModuleDef = layers.BatchNorm
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    validate_input(x)
    channels = STAGE_OUT_CHANNELS
    bn = functools.partial(self.norm, use_running_average=not train, axis_name=self.bn_axis_name,
                           dtype=self.dtype, param_dtype=self.param_dtype)
    x = scale_input(x, self.input_scaling).astype(self.dtype)

    x = layers.Conv1D(channels[0], kernel_size=3, stride=self.stem_stride, padding=1, dtype=self.dtype,
                      param_dtype=self.param_dtype, name='stem_conv')(x)
    x = bn(name='stem_bn', relu=True)(x)
    if self.stem_pool:
      x = layers.max_pool1d(x, window=3, stride=2, padding=1)

    for stage_index, (repeats, out_channels) in enumerate(zip(self.stage_repeats, channels[1:4])):
      for unit_index in range(repeats):
        x = ShuffleUnit(out_channels, stride=2 if unit_index == 0 else 1, dw_kernel=self.dw_kernel,
                        downsample=self.unit_downsample,
                        bn_axis_name=self.bn_axis_name,
                        dtype=self.dtype, norm=self.norm, param_dtype=self.param_dtype,
                        name=f'stage{stage_index + 2}_unit{unit_index}')(x, train)

    x = layers.Conv1D(channels[4], dtype=self.dtype, param_dtype=self.param_dtype, name='final_conv')(x)
    x = bn(name='final_bn', relu=True)(x)
    return jnp.mean(x, axis=1)
