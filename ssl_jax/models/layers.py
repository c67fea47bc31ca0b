"""Building blocks of the 1-D encoder: a depthwise conv with backend-specific forms, max-pool, channel
shuffle, and BatchNorm (+ ReLU) with a hand-written backward pass.

The depthwise conv has two numerically equivalent forms over one parameter, `kernel` of shape
`(kernel_size, 1, channels)` (the layout of flax's grouped `nn.Conv` kernel), and `DepthwiseConv1D` runs
the one that is fast on the backend it is traced for (`depthwise_form`):

- shift (CPU): `sum_k kernel[k] * x_pad[:, k : k + stride * (T_out - 1) + 1 : stride, :]`, i.e.
  kernel_size strided slices of the padded input, multiplied and added; XLA:CPU runs its grouped
  convolution far slower (`experiments/bench_depthwise.py`).
- grouped (GPU, TPU): `lax.conv_general_dilated` with `feature_group_count=channels`.
"""

import functools
import operator
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

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
  return functools.reduce(operator.add, [tap * kernel[k, 0] for k, tap in enumerate(taps(
      x, kernel.shape[0], stride, padding))])


def taps(x: jax.Array, kernel_size: int, stride: int, padding: int) -> list[jax.Array]:
  """The inputs each tap of a 1-D conv sees: `x_pad[:, k : k + stride * (time_out - 1) + 1 : stride, :]` for
  k < kernel_size, `x` `(batch, time, channels)` zero-padded by `padding` on both ends of time."""
  if (kernel_size, stride, padding) == (1, 1, 0):
    return [x]
  batch, length, channels = x.shape
  length_out = conv_output_length(length, kernel_size, stride, padding)
  x_pad = jnp.pad(x, ((0, 0), (padding, padding), (0, 0))) if padding else x
  return [lax.slice(x_pad, (0, k, 0), (batch, k + stride * (length_out - 1) + 1, channels), (1, stride, 1))
          for k in range(kernel_size)]


def depthwise_conv1d_grouped(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
  """Depthwise 1-D conv via XLA's grouped convolution; same signature as the shift form."""
  return lax.conv_general_dilated(
      x, kernel, window_strides=(stride,), padding=((padding, padding),),
      dimension_numbers=('NWC', 'WIO', 'NWC'), feature_group_count=x.shape[-1])


DepthwiseFn = Callable[[jax.Array, jax.Array, int, int], jax.Array]


def depthwise_form(backend: str) -> DepthwiseFn:
  """The depthwise conv `(x, kernel, stride, padding) -> y` to run on `backend`: shift on 'cpu', else grouped."""
  return depthwise_conv1d_shift if backend == 'cpu' else depthwise_conv1d_grouped


class DepthwiseConv1D(nn.Module):
  """Depthwise conv over time, no bias (a BatchNorm follows). `(B, T, C) -> (B, T_out, C)`.

  Parameter: `kernel` `(kernel_size, 1, C)`; torch weight `(C, 1, kernel_size)` = `kernel.transpose(2, 1, 0)`.
  The form is `depthwise_form(jax.default_backend())`, chosen at trace time; both give the same result.
  """
  kernel_size: int = 3
  stride: int = 1
  padding: int = 1
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (self.kernel_size, 1, channels),
                        self.param_dtype)
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    return depthwise_form(jax.default_backend())(x, kernel, self.stride, self.padding)


def conv1d_taps(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
  """Dense (ungrouped) 1-D conv as a sum over taps of matmuls over channels.

  `x` `(batch, time, in)`, `kernel` `(kernel_size, in, out)` (flax `nn.Conv`'s layout) -> `(batch, time_out,
  out)`, `time_out` as `conv_output_length`: `sum_k x_pad[:, k : k + stride * (time_out - 1) + 1 : stride, :]
  @ kernel[k]`, each a 2-D matmul of `(batch * time_out, in)` rows. The same result as
  `lax.conv_general_dilated`; under `jax.vmap` over members it stays batched matmuls, where a convolution
  becomes a grouped one that XLA:CPU runs slower (docs/performance.md).
  """
  def matmul(tap: jax.Array, weight: jax.Array) -> jax.Array:  # (B, T, in) @ (in, out) as one 2-D matmul
    return (tap.reshape(-1, tap.shape[-1]) @ weight).reshape(tap.shape[:-1] + weight.shape[-1:])

  return functools.reduce(operator.add, [matmul(tap, kernel[k])
                                         for k, tap in enumerate(taps(x, kernel.shape[0], stride, padding))])


class Conv1D(nn.Module):
  """Dense conv over time, no bias (a BatchNorm follows): `(B, T, C) -> (B, T_out, features)`, as
  `conv1d_taps`. Its parameter is `nn.Conv(features, (kernel_size,), use_bias=False)`'s: `kernel`
  `(kernel_size, C, features)` with the same initialiser; torch weight = `kernel.transpose(2, 1, 0)`."""
  features: int
  kernel_size: int = 1
  stride: int = 1
  padding: int = 0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (self.kernel_size, x.shape[-1], self.features),
                        self.param_dtype)
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    return conv1d_taps(x, kernel, self.stride, self.padding)


def max_pool1d(x: jax.Array, window: int = 3, stride: int = 2, padding: int = 1) -> jax.Array:
  """Max-pool over time as an elementwise max of strided slices, padded with -inf (torch's semantics).

  `(B, T, C) -> (B, T_out, C)`. Same forward values as `nn.max_pool`, but its gradient is a few
  elementwise selects instead of XLA's `select_and_scatter`, which is much slower on CPU (docs/performance.md).
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


def _sum_rows(x: jax.Array) -> jax.Array:
  """Sum over every axis but the last (the channels)."""
  return jnp.sum(x, axis=tuple(range(x.ndim - 1)))


def _batch_moments(x: jax.Array, axis_name: Optional[str]) -> tuple[jax.Array, jax.Array]:
  """Mean and biased variance per channel over the global batch (every axis but the last, all devices).

  Two passes (the variance of the centred values), as flax's `use_fast_variance=False`: the one-pass
  E[x^2] - E[x]^2 cancels in float32 and made runs drift.
  """
  count = x.size // x.shape[-1]
  mean = _sum_rows(x) / count
  if axis_name is not None:
    mean = lax.pmean(mean, axis_name)
  var = _sum_rows(jnp.square(x - mean)) / count
  if axis_name is not None:
    var = lax.pmean(var, axis_name)
  return mean, var


def _normalize(x: jax.Array, mean: jax.Array, var: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float,
               relu: bool) -> jax.Array:
  """(x - mean) / sqrt(var + epsilon) * scale + bias per channel, then ReLU if `relu`."""
  y = (x - mean) * (lax.rsqrt(var + epsilon) * scale) + bias
  return jnp.maximum(y, 0) if relu else y


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float,
                     axis_name: Optional[str], relu: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Training-mode BatchNorm of `(..., C)` over every axis but the last, then ReLU if `relu`.

  Returns `(y, batch mean, batch variance)`; with `axis_name` the statistics are those of the global
  batch across the devices of that named axis. Differentiable in `x`, `scale` and `bias` through a
  hand-written backward pass (below): it keeps only `x` and recomputes the ReLU mask from it, and needs
  two channel sums where autodiff of flax's BatchNorm + ReLU makes several passes (docs/performance.md).
  """
  mean, var = _batch_moments(x, axis_name)
  return _normalize(x, mean, var, scale, bias, epsilon, relu), mean, var


def _batch_norm_train_fwd(x, scale, bias, epsilon, axis_name, relu):
  out = batch_norm_train(x, scale, bias, epsilon, axis_name, relu)
  return out, (x, scale, bias, out[1], out[2])


def _batch_norm_train_bwd(epsilon, axis_name, relu, residuals, cotangents):
  """VJP of `batch_norm_train`: with x_hat = (x - mean) / std and g the output gradient (masked by ReLU),

  dx = scale / std * (g - mean(g) - x_hat * mean(g * x_hat)) + d mean / n + 2 (x - mean) d var / n,
  the means over the global batch (psum over `axis_name`); d scale = sum(g * x_hat), d bias = sum(g) over
  this device's rows (the train step averages parameter gradients across devices, as for every weight).
  """
  x, scale, bias, mean, var = residuals
  grad_y, grad_mean, grad_var = cotangents
  inv_std = lax.rsqrt(var + epsilon)
  count = x.size // x.shape[-1]
  centered = x - mean
  x_hat = centered * inv_std
  if relu:
    grad_y = jnp.where(x_hat * scale + bias > 0, grad_y, 0)
  sum_grad = _sum_rows(grad_y)
  sum_grad_xhat = _sum_rows(grad_y * x_hat)
  grad_scale, grad_bias = sum_grad_xhat, sum_grad
  if axis_name is not None:
    sum_grad, sum_grad_xhat, grad_mean, grad_var = lax.psum((sum_grad, sum_grad_xhat, grad_mean, grad_var),
                                                           axis_name)
    count = count * lax.axis_size(axis_name)
  grad_x = (scale * inv_std) * (grad_y - sum_grad / count - x_hat * (sum_grad_xhat / count))
  grad_x = grad_x + grad_mean / count + centered * (2.0 * grad_var / count)
  return grad_x.astype(x.dtype), grad_scale.astype(scale.dtype), grad_bias.astype(bias.dtype)


batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)


class BatchNorm(nn.Module):
  """BatchNorm over every axis but the last, optionally fused with the ReLU that follows it.

  The variables of `flax.linen.BatchNorm` (params `scale`, `bias`; batch_stats `mean`, `var`), its
  initialisers, momentum convention and biased running variance, so checkpoints and the torch weight
  mapping are unchanged; `use_fast_variance=False` semantics. Training mode runs `batch_norm_train`.
  Statistics and normalisation are computed in at least float32 and the output cast to `dtype`; the
  parameters and running statistics are kept in `param_dtype`.
  """
  use_running_average: bool = False
  momentum: float = 0.9
  epsilon: float = 1e-5
  axis_name: Optional[str] = None
  relu: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = (x.shape[-1],)
    ra_mean = self.variable('batch_stats', 'mean', lambda shape: jnp.zeros(shape, self.param_dtype), features)
    ra_var = self.variable('batch_stats', 'var', lambda shape: jnp.ones(shape, self.param_dtype), features)
    scale = self.param('scale', nn.initializers.ones, features, self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, features, self.param_dtype)
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))  # bfloat16 -> float32; float64 stays.
    if self.use_running_average:
      y = _normalize(x, ra_mean.value, ra_var.value, scale, bias, self.epsilon, self.relu)
    else:
      # At init the named axis may not exist yet (flax's rule): per-call statistics, no running update.
      axis_name = None if self.is_initializing() else self.axis_name
      y, mean, var = batch_norm_train(x, scale, bias, self.epsilon, axis_name, self.relu)
      if not self.is_initializing():
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * lax.stop_gradient(mean)
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * lax.stop_gradient(var)
    return y.astype(self.dtype)
