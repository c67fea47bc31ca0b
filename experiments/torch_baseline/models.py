"""The 1-D ShuffleNetV2-0.5 encoder and the heads of `ssl_jax.models`, in PyTorch (NCW layout).

Module names follow torchvision's `shufflenet_v2_x0_5` (`conv1`, `maxpool`, `stage2..4` of
`InvertedResidual`, `conv5`), with every Conv2d/BatchNorm2d/MaxPool2d replaced by its 1-D twin, so the
`state_dict` keys are the ones in the table of `ssl_jax/models/shufflenet.py` and `convert.py` maps them
one to one. Input: `(batch, 8, time)` (channels first; `x_ncw = x_nwc.transpose(1, 2)`). Output:
`(batch, 1024)`, the mean over time of the last feature map (no classifier `fc`).
BatchNorm: eps 1e-5, momentum 0.1 (= flax momentum 0.9). torch updates `running_var` with the unbiased
batch variance, flax with the biased one; train-mode outputs do not depend on it.
"""

from typing import Sequence

import torch
from torch import nn

from ssl_jax.data import spec
from ssl_jax.models import LAYOUT_KEYS, LEGACY_LAYOUT

STAGE_OUT_CHANNELS = (24, 48, 96, 192, 1024)  # width 0.5: stem, stage2, stage3, stage4, conv5
STAGE_REPEATS = (4, 8, 4)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
  """`(B, C, T)`: channel `g * (C // groups) + i` moves to `i * groups + g` (torchvision's shuffle)."""
  batch, channels, length = x.shape
  x = x.view(batch, groups, channels // groups, length).transpose(1, 2)
  return x.reshape(batch, channels, length)


def _depthwise(channels: int, stride: int, kernel_size: int = 3) -> nn.Conv1d:
  return nn.Conv1d(channels, channels, kernel_size=kernel_size, stride=stride, padding=kernel_size // 2,
                   groups=channels, bias=False)


def _pool() -> nn.MaxPool1d:
  return nn.MaxPool1d(kernel_size=3, stride=2, padding=1)


def _pointwise(in_channels: int, out_channels: int) -> nn.Conv1d:
  return nn.Conv1d(in_channels, out_channels, kernel_size=1, bias=False)


class InvertedResidual(nn.Module):
  """torchvision's ShuffleNetV2 unit in 1-D. `(B, C_in, T) -> (B, out_channels, T_out)`. `dw_kernel` and
  `downsample` as `ssl_jax.models.ShuffleUnit` ('pool': a stride-2 unit's branches run at full length and each
  ends with a max-pool k3 s2 p1, appended to its Sequential so the parameter keys stay torchvision's)."""

  def __init__(self, in_channels: int, out_channels: int, stride: int, dw_kernel: int = 3,
               downsample: str = 'stride'):
    super().__init__()
    if stride not in (1, 2):
      raise ValueError(f'stride must be 1 or 2, got {stride}')
    if stride == 1 and in_channels != out_channels:
      raise ValueError(f'a stride-1 unit needs in == out channels, got {in_channels} -> {out_channels}')
    if downsample not in ('stride', 'pool'):
      raise ValueError(f"downsample must be 'stride' or 'pool', got {downsample!r}")
    self.stride = stride
    branch = out_channels // 2
    pooled = stride == 2 and downsample == 'pool'
    dw_stride = 1 if pooled else stride
    end = [_pool()] if pooled else []
    if stride > 1:
      self.branch1 = nn.Sequential(
          _depthwise(in_channels, dw_stride, dw_kernel), nn.BatchNorm1d(in_channels),
          _pointwise(in_channels, branch), nn.BatchNorm1d(branch), nn.ReLU(inplace=True), *end)
    else:
      self.branch1 = nn.Sequential()
    self.branch2 = nn.Sequential(
        _pointwise(in_channels if stride > 1 else branch, branch), nn.BatchNorm1d(branch), nn.ReLU(inplace=True),
        _depthwise(branch, dw_stride, dw_kernel), nn.BatchNorm1d(branch),
        _pointwise(branch, branch), nn.BatchNorm1d(branch), nn.ReLU(inplace=True), *end)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    if self.stride == 1:
      identity, x2 = x.chunk(2, dim=1)
      out = torch.cat((identity, self.branch2(x2)), dim=1)
    else:
      out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
    return channel_shuffle(out, 2)


class ShuffleNetV2Encoder(nn.Module):
  """1-D ShuffleNetV2-0.5: `(batch, 8, time)` -> `(batch, 1024)`. `stage_repeats` and the layout (`stem_stride`,
  `stem_pool`, `dw_kernel`, `unit_downsample`, `input_scaling`) as `config.model`."""

  def __init__(self, stage_repeats: Sequence[int] = STAGE_REPEATS, in_channels: int = spec.NUM_CHANNELS, *,
               stem_stride: int = 1, stem_pool: bool = True, dw_kernel: int = 3, unit_downsample: str = 'pool',
               input_scaling: str = 'none'):
    super().__init__()
    if len(stage_repeats) != 3 or min(stage_repeats) < 1:
      raise ValueError(f'stage_repeats must be 3 positive ints, got {stage_repeats!r}')
    if input_scaling not in ('none', 'rms'):
      raise ValueError(f"input_scaling must be 'none' or 'rms', got {input_scaling!r}")
    self.input_scaling = input_scaling
    channels = STAGE_OUT_CHANNELS
    self.conv1 = nn.Sequential(nn.Conv1d(in_channels, channels[0], 3, stem_stride, 1, bias=False),
                               nn.BatchNorm1d(channels[0]), nn.ReLU(inplace=True))
    self.maxpool = _pool() if stem_pool else nn.Identity()
    previous = channels[0]
    for index, (repeats, out) in enumerate(zip(stage_repeats, channels[1:4])):
      units = [InvertedResidual(previous, out, 2, dw_kernel, unit_downsample)] + [
          InvertedResidual(out, out, 1, dw_kernel, unit_downsample) for _ in range(repeats - 1)]
      setattr(self, f'stage{index + 2}', nn.Sequential(*units))
      previous = out
    self.conv5 = nn.Sequential(_pointwise(previous, channels[4]), nn.BatchNorm1d(channels[4]), nn.ReLU(inplace=True))
    self.out_dim = channels[4]

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    if x.ndim != 3 or x.shape[1] != spec.NUM_CHANNELS or x.shape[2] < 32:
      raise ValueError(f'x must have shape (batch, {spec.NUM_CHANNELS}, time >= 32) (channels first), got '
                       f'{tuple(x.shape)}')
    if self.input_scaling == 'rms':  # `ssl_jax.models.shufflenet.scale_input`
      rms = x.square().mean(dim=(1, 2), keepdim=True).sqrt()
      x = x / rms.clamp_min(torch.finfo(x.dtype).tiny ** 0.5)
    x = self.maxpool(self.conv1(x))
    x = self.stage4(self.stage3(self.stage2(x)))
    return self.conv5(x).mean(dim=2)


class BatchStandardize(nn.Module):
  """`ssl_jax.models.batch_standardize`: each column to zero mean, unit (biased) variance over the batch."""

  def __init__(self, epsilon: float = 1e-5):
    super().__init__()
    self.epsilon = epsilon

  def forward(self, z: torch.Tensor) -> torch.Tensor:
    mean = z.mean(dim=0)
    variance = (z * z).mean(dim=0) - mean * mean
    return (z - mean) * torch.rsqrt(variance.clamp_min(0.0) + self.epsilon)


def projection_head(in_dim: int, hidden_dim: int, output_dim: int, output_norm: str = 'none') -> nn.Sequential:
  """`ssl_jax.models.ProjectionHead`: Linear -> ReLU -> Linear (keys `0.*` = fc1, `2.*` = fc2), then
  `BatchStandardize` (no parameters) when `output_norm='batch'`."""
  if output_norm not in ('none', 'batch'):
    raise ValueError(f"output_norm must be 'none' or 'batch', got {output_norm!r}")
  layers = [nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, output_dim)]
  return nn.Sequential(*layers, *([BatchStandardize()] if output_norm == 'batch' else []))


def predictor(in_dim: int, hidden_dim: int, output_dim: int) -> nn.Sequential:
  """`ssl_jax.models.Predictor` (MoCo v3): Linear (no bias) -> BN -> ReLU -> Linear (keys 0, 1, 3)."""
  return nn.Sequential(nn.Linear(in_dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim),
                       nn.ReLU(inplace=True), nn.Linear(hidden_dim, output_dim))


class ContrastiveModel(nn.Module):
  """Encoder + projection head: `(batch, 8, time)` -> `(batch, output_dim)` (SimCLR's and MoCo's network)."""

  def __init__(self, stage_repeats: Sequence[int] = STAGE_REPEATS, hidden_dim: int = 1024,
               output_dim: int = 256, projection_norm: str = 'none', **layout):
    super().__init__()
    self.encoder = ShuffleNetV2Encoder(stage_repeats, **layout)
    self.head = projection_head(self.encoder.out_dim, hidden_dim, output_dim, projection_norm)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.head(self.encoder(x))


def from_config(model_config) -> ContrastiveModel:
  """The torch twin of `ssl_jax.models.create_encoder` + `create_head` for `config.model` (a layout key absent
  from it takes its `LEGACY_LAYOUT` value, as there)."""
  return ContrastiveModel(tuple(model_config.get('stage_repeats', STAGE_REPEATS)),
                          int(model_config.hidden_dim), int(model_config.output_dim),
                          str(model_config.get('projection_norm', 'none')),
                          **{key: model_config[key] if key in model_config else LEGACY_LAYOUT[key]
                             for key in LAYOUT_KEYS})
