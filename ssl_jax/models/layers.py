"""Building blocks of the 1-D encoder: a depthwise conv with backend-specific forms, channel shuffle.

The depthwise conv exists in two numerically equivalent forms that share one parameter, `kernel` of
shape `(kernel_size, 1, channels)` (the layout of flax's grouped `nn.Conv` kernel), so a checkpoint
trained with either form loads into the other:

- 'grouped': `lax.conv_general_dilated` with `feature_group_count=channels`. Fast on GPU/TPU.
- 'shift': `sum_k kernel[k] * x_pad[:, k : k + stride * (T_out - 1) + 1 : stride, :]`, i.e. kernel_size
  strided slices of the padded input, multiplied and added. XLA's grouped conv on CPU is ~20x slower
  than this form (measured on the project machine), so 'auto' picks 'shift' on CPU.
- 'auto': 'shift' when `jax.default_backend() == 'cpu'`, else 'grouped' (decided at trace time).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

DEPTHWISE_IMPLS = ('auto', 'shift', 'grouped')


def resolve_depthwise_impl(depthwise_impl: str) -> str:
  """Maps 'auto' to the fast form on the current default backend; validates the name."""
  if depthwise_impl not in DEPTHWISE_IMPLS:
    raise ValueError(f'depthwise_impl must be one of {DEPTHWISE_IMPLS}, got {depthwise_impl!r}')
  if depthwise_impl == 'auto':
    return 'shift' if jax.default_backend() == 'cpu' else 'grouped'
  return depthwise_impl


def conv_output_length(length: int, kernel_size: int, stride: int, padding: int) -> int:
  """Output length of a conv/pool with symmetric zero padding (torch's formula)."""
  return (length + 2 * padding - kernel_size) // stride + 1


def depthwise_conv1d_shift(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
  """Depthwise 1-D conv as shifted multiply-adds.

  Args:
    x: `(batch, time, channels)`.
    kernel: `(kernel_size, 1, channels)`.
    stride: temporal stride.
    padding: zeros added on both ends of time.

  Returns:
    `(batch, time_out, channels)` with `time_out = (time + 2 * padding - kernel_size) // stride + 1`.
  """
  kernel_size = kernel.shape[0]
  batch, length, channels = x.shape
  length_out = conv_output_length(length, kernel_size, stride, padding)
  x_pad = jnp.pad(x, ((0, 0), (padding, padding), (0, 0))) if padding else x
  out = None
  for k in range(kernel_size):
    tap = lax.slice(x_pad, (0, k, 0), (batch, k + stride * (length_out - 1) + 1, channels),
                    (1, stride, 1))
    term = tap * kernel[k, 0]
    out = term if out is None else out + term
  return out


def depthwise_conv1d_grouped(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
  """Depthwise 1-D conv via XLA's grouped convolution; same signature as the shift form."""
  return lax.conv_general_dilated(
      x, kernel, window_strides=(stride,), padding=((padding, padding),),
      dimension_numbers=('NWC', 'WIO', 'NWC'), feature_group_count=x.shape[-1])


class DepthwiseConv1D(nn.Module):
  """Depthwise conv over time, no bias (a BatchNorm follows). `(B, T, C) -> (B, T_out, C)`.

  Parameter: `kernel` `(kernel_size, 1, C)`; torch weight `(C, 1, kernel_size)` = `kernel.transpose(2, 1, 0)`.
  """
  kernel_size: int = 3
  stride: int = 1
  padding: int = 1
  depthwise_impl: str = 'auto'
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    impl = resolve_depthwise_impl(self.depthwise_impl)
    channels = x.shape[-1]
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (self.kernel_size, 1, channels),
                        self.param_dtype)
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    if impl == 'shift':
      return depthwise_conv1d_shift(x, kernel, self.stride, self.padding)
    return depthwise_conv1d_grouped(x, kernel, self.stride, self.padding)


def max_pool1d(x: jax.Array, window: int = 3, stride: int = 2, padding: int = 1) -> jax.Array:
  """Max-pool over time as an elementwise max of strided slices, padded with -inf (torch's semantics).

  `(B, T, C) -> (B, T_out, C)`. Same forward values as `nn.max_pool`, but its gradient is a few
  elementwise selects instead of XLA's `select_and_scatter`, which is ~20x slower on CPU.
  """
  batch, length, channels = x.shape
  length_out = conv_output_length(length, window, stride, padding)
  x_pad = jnp.pad(x, ((0, 0), (padding, padding), (0, 0)), constant_values=-jnp.inf) if padding else x
  out = None
  for k in range(window):
    tap = lax.slice(x_pad, (0, k, 0), (batch, k + stride * (length_out - 1) + 1, channels),
                    (1, stride, 1))
    out = tap if out is None else jnp.maximum(out, tap)
  return out


def channel_shuffle(x: jax.Array, groups: int = 2) -> jax.Array:
  """ShuffleNet channel shuffle on channels-last `(B, T, C)`, the same permutation as torchvision's.

  Channel `g * (C // groups) + i` moves to position `i * groups + g`.
  """
  batch, length, channels = x.shape
  x = x.reshape(batch, length, groups, channels // groups)
  x = jnp.swapaxes(x, 2, 3)
  return x.reshape(batch, length, channels)
