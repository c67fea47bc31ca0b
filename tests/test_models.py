"""Tests for ssl_jax.models: shapes, parameter count, depthwise forms, BatchNorm semantics, heads."""

from typing import Any
from unittest import mock

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base as base_config
from configs import moco as moco_config
from ssl_jax import models
from ssl_jax.models import layers
from ssl_jax.models import shufflenet

EXPECTED_PARAMS = 335_528
EXPECTED_BATCH_STATS = 7_952
CROP_LENGTHS = (32, 64, 100, 128, 256, 512, 1024)


def _init_shapes(model, length=32, batch=2):
  x = jax.ShapeDtypeStruct((batch, length, 8), jnp.float32)
  return jax.eval_shape(model.init, jax.random.key(0), x)


def test_exact_parameter_count():
  variables = _init_shapes(models.ShuffleNetV2Encoder())
  assert models.count_params(variables['params']) == EXPECTED_PARAMS
  assert models.count_params(variables['batch_stats']) == EXPECTED_BATCH_STATS


def test_parameter_names_documented_scheme():
  params = _init_shapes(models.ShuffleNetV2Encoder())['params']
  assert params['stem_conv']['kernel'].shape == (3, 8, 24)
  assert params['final_conv']['kernel'].shape == (1, 192, 1024)
  assert params['stage2_unit0']['branch1_dw']['kernel'].shape == (3, 1, 24)
  assert params['stage3_unit7']['branch2_dw']['kernel'].shape == (3, 1, 48)
  assert 'branch1_dw' not in params['stage4_unit1']
  units = sorted(k for k in params if k.startswith('stage'))
  assert len(units) == 4 + 8 + 4


@pytest.mark.parametrize('length', CROP_LENGTHS)
def test_output_shape_every_length(length):
  model = models.ShuffleNetV2Encoder()
  variables = _init_shapes(model, length=length)
  x = jax.ShapeDtypeStruct((3, length, 8), jnp.float32)
  out, _ = jax.eval_shape(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']), variables, x)
  assert out.shape == (3, 1024)
  assert jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x).shape == (3, 1024)


@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('length', [7, 8, 33])
def test_depthwise_forms_agree_value_and_gradient(stride, length):
  kx, kk, kg = jax.random.split(jax.random.key(stride * 100 + length), 3)
  x = jax.random.normal(kx, (2, length, 5))
  kernel = jax.random.normal(kk, (3, 1, 5))
  cotangent = jax.random.normal(kg, (2, layers.conv_output_length(length, 3, stride, 1), 5))

  def objective(fn):
    return lambda x, k: jnp.sum(fn(x, k, stride, 1) * cotangent)

  shift = layers.depthwise_conv1d_shift(x, kernel, stride, 1)
  grouped = layers.depthwise_conv1d_grouped(x, kernel, stride, 1)
  assert shift.shape == grouped.shape == cotangent.shape
  np.testing.assert_allclose(shift, grouped, rtol=1e-5, atol=1e-5)
  grad_shift = jax.grad(objective(layers.depthwise_conv1d_shift), argnums=(0, 1))(x, kernel)
  grad_grouped = jax.grad(objective(layers.depthwise_conv1d_grouped), argnums=(0, 1))(x, kernel)
  for a, b in zip(grad_shift, grad_grouped):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  # Independent reference: direct NumPy loop (torch conv1d semantics, zero padding 1).
  x_pad = np.pad(np.asarray(x), ((0, 0), (1, 1), (0, 0)))
  expected = np.stack([sum(x_pad[:, t * stride + k] * np.asarray(kernel)[k, 0] for k in range(3))
                       for t in range(cotangent.shape[1])], axis=1)
  np.testing.assert_allclose(shift, expected, rtol=1e-5, atol=1e-5)


def _forms_value_and_grad(x, train, dtype=jnp.float32, stage_repeats=shufflenet.STAGE_REPEATS):
  """Embedding and parameter gradient of a fixed scalar, for the encoder with the shift depthwise conv
  (the one it runs on CPU) and with the grouped-conv form (the oracle), forced by replacing the dispatch."""
  results, convolutions = [], []
  for form in (layers.depthwise_conv1d_shift, layers.depthwise_conv1d_grouped):
    model = models.ShuffleNetV2Encoder(dtype=dtype, stage_repeats=stage_repeats)
    with mock.patch.object(layers, 'depthwise_form', lambda backend, form=form: form):
      variables = model.init(jax.random.key(0), x)
      convolutions.append(str(jax.make_jaxpr(model.apply)(variables, x)).count('conv_general_dilated'))

      def fn(params, model=model, variables=variables):
        z, _ = model.apply({'params': params, 'batch_stats': variables['batch_stats']}, x, train=train,
                           mutable=['batch_stats'])
        return jnp.sum(z * jnp.linspace(-1.0, 1.0, z.shape[-1], dtype=z.dtype)), z

      results.append((variables, jax.jit(jax.grad(fn, has_aux=True))(variables['params'])))
  (vars_shift, (grad_shift, z_shift)), (vars_grouped, (grad_grouped, z_grouped)) = results
  assert convolutions[1] > convolutions[0], convolutions  # the grouped form really ran in the second
  # Same parameter tree (names, shapes, and values from the same seed) for both forms.
  assert jax.tree.structure(vars_shift) == jax.tree.structure(vars_grouped)
  for a, b in zip(jax.tree.leaves(vars_shift), jax.tree.leaves(vars_grouped)):
    np.testing.assert_array_equal(a, b)
  return (z_shift, grad_shift), (z_grouped, grad_grouped)


@pytest.mark.parametrize('kernel_size, stride, padding', [(1, 1, 0), (3, 2, 1), (3, 1, 1)])
@pytest.mark.parametrize('length', [8, 33])
def test_conv1d_is_flax_conv_in_float64_value_gradient_and_parameter(kernel_size, stride, padding, length):
  """layers.Conv1D (per-tap matmuls) against nn.Conv (XLA's convolution) and a NumPy loop, in float64: the
  same parameter (shape and initial value), the same output and gradients to rounding (~1e-15 relative)."""
  with jax.enable_x64(True):
    kx, kg = jax.random.split(jax.random.key(length * 10 + kernel_size + stride), 2)
    x = jax.random.normal(kx, (2, length, 5), jnp.float64)
    flax_conv = nn.Conv(7, kernel_size=(kernel_size,), strides=(stride,), padding=((padding, padding),),
                        use_bias=False, dtype=jnp.float64, param_dtype=jnp.float64)
    conv = layers.Conv1D(7, kernel_size, stride, padding, dtype=jnp.float64, param_dtype=jnp.float64)
    variables = flax_conv.init(jax.random.key(0), x)
    ours = conv.init(jax.random.key(0), x)
    np.testing.assert_array_equal(ours['params']['kernel'], variables['params']['kernel'])
    out_len = layers.conv_output_length(length, kernel_size, stride, padding)
    cotangent = jax.random.normal(kg, (2, out_len, 7), jnp.float64)

    def objective(module):
      return lambda v, x: jnp.sum(module.apply(v, x) * cotangent)

    np.testing.assert_allclose(conv.apply(variables, x), flax_conv.apply(variables, x), rtol=1e-12, atol=1e-12)
    for a, b in zip(jax.tree.leaves(jax.grad(objective(conv), argnums=(0, 1))(variables, x)),
                    jax.tree.leaves(jax.grad(objective(flax_conv), argnums=(0, 1))(variables, x))):
      np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    kernel = np.asarray(variables['params']['kernel'])
    x_pad = np.pad(np.asarray(x), ((0, 0), (padding, padding), (0, 0)))
    expected = np.stack([sum(x_pad[:, t * stride + k] @ kernel[k] for k in range(kernel_size))
                         for t in range(out_len)], axis=1)
    np.testing.assert_allclose(conv.apply(variables, x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_encoder_forms_agree_eval_float32():
  """Full encoder, odd length, running-average BN: forward and parameter gradients to ~1e-5."""
  x = jax.random.normal(jax.random.key(1), (2, 100, 8))
  (z_a, g_a), (z_b, g_b) = _forms_value_and_grad(x, train=False)
  # The two programs differ only in the depthwise layers' 3-term sums (the rest is the same program): with
  # ~20 such layers on the longest chain and fixed eval-mode BN, ~0.4 * sqrt(20 * 3) * u = 2e-7 relative
  # (u = 6e-8), so 1e-5 is a wide margin while a wrong tap order or padding moves outputs by O(1).
  np.testing.assert_allclose(z_a, z_b, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(g_a), jax.tree.leaves(g_b)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_encoder_forms_agree_train_float64():
  """Train-mode BN on 2 examples amplifies float32 rounding (~5e-5), so compare in float64 (one unit per stage)."""
  with jax.enable_x64(True):
    x = jax.random.normal(jax.random.key(1), (2, 67, 8), jnp.float64)
    (z_a, g_a), (z_b, g_b) = _forms_value_and_grad(x, train=True, dtype=jnp.float64, stage_repeats=(2, 1, 2))
    np.testing.assert_allclose(z_a, z_b, rtol=1e-9, atol=1e-10)
    for a, b in zip(jax.tree.leaves(g_a), jax.tree.leaves(g_b)):
      np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


def test_depthwise_form_is_shift_on_cpu_and_grouped_elsewhere():
  assert layers.depthwise_form('cpu') is layers.depthwise_conv1d_shift
  assert layers.depthwise_form('gpu') is layers.depthwise_conv1d_grouped
  assert layers.depthwise_form('tpu') is layers.depthwise_conv1d_grouped
  assert jax.default_backend() == 'cpu'
  x = jax.random.normal(jax.random.key(0), (2, 9, 4))
  conv = layers.DepthwiseConv1D(stride=2)
  variables = conv.init(jax.random.key(1), x)
  traced = jax.make_jaxpr(lambda x: conv.apply(variables, x))(x)
  assert 'conv_general_dilated' not in str(traced)  # the shift form: slices, multiplies and adds


def test_channel_shuffle_matches_torch_permutation():
  x = jnp.arange(2 * 3 * 8, dtype=jnp.float32).reshape(2, 3, 8)
  # torch: view(B, 2, C/2, L).transpose(1, 2).reshape(B, C, L) in channels-first.
  x_cf = np.asarray(x).transpose(0, 2, 1)
  expected = x_cf.reshape(2, 2, 4, 3).transpose(0, 2, 1, 3).reshape(2, 8, 3).transpose(0, 2, 1)
  np.testing.assert_array_equal(layers.channel_shuffle(x, 2), expected)


@pytest.mark.parametrize('length', [8, 9, 16])
def test_max_pool_matches_reduce_window(length):
  x = jax.random.normal(jax.random.key(length), (2, length, 3))
  expected = nn.max_pool(x, window_shape=(3,), strides=(2,), padding=((1, 1),))
  np.testing.assert_array_equal(layers.max_pool1d(x, 3, 2, 1), expected)


def test_train_updates_batch_stats_and_eval_uses_running_averages():
  model = models.ShuffleNetV2Encoder(stage_repeats=(1, 2, 1))
  x = 3.0 * jax.random.normal(jax.random.key(2), (4, 32, 8)) + 1.0
  variables = jax.jit(model.init)(jax.random.key(0), x)
  apply_train = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']))
  apply_eval = jax.jit(lambda v, x: model.apply(v, x, train=False))
  z, updates = apply_train(variables, x)
  assert z.shape == (4, 1024)
  old, new = variables['batch_stats']['stem_bn'], updates['batch_stats']['stem_bn']
  assert not np.allclose(old['mean'], new['mean'])
  # Flax momentum 0.9 == torch momentum 0.1: new = 0.9 * old (zeros) + 0.1 * batch mean.
  stem = nn.Conv(24, (3,), strides=(model.stem_stride,), padding=((1, 1),), use_bias=False)
  h = stem.apply({'params': variables['params']['stem_conv']}, x)
  np.testing.assert_allclose(new['mean'], 0.1 * jnp.mean(h, axis=(0, 1)), rtol=1e-4, atol=1e-6)
  # Eval: running averages, so one example's output does not depend on the rest of the batch.
  eval_vars = {'params': variables['params'], 'batch_stats': updates['batch_stats']}
  full = apply_eval(eval_vars, x)
  single = apply_eval(eval_vars, x[:1])
  np.testing.assert_allclose(full[:1], single, rtol=1e-5, atol=1e-6)
  train_pair, _ = apply_train(eval_vars, x[:2])
  assert not np.allclose(train_pair[:1], single, atol=1e-4)


def test_bn_axis_name_gives_global_batch_statistics():
  """BN with bn_axis_name under vmap(axis_name=...) == BN over the concatenated batch (float64: exact-ish)."""
  with jax.enable_x64(True):
    scale = jnp.array([1.0, 4.0], jnp.float64)[:, None, None, None]
    shards = jax.random.normal(jax.random.key(3), (2, 3, 32, 8), jnp.float64) * scale
    kwargs = dict(stage_repeats=(1, 2, 1), dtype=jnp.float64)
    local = models.ShuffleNetV2Encoder(**kwargs)
    variables = local.init(jax.random.key(0), shards[0])
    apply_train = lambda model: lambda x: model.apply(variables, x, train=True, mutable=['batch_stats'])
    z_global, upd_global = jax.jit(apply_train(local))(shards.reshape(6, 32, 8))
    sharded = models.ShuffleNetV2Encoder(bn_axis_name='devices', **kwargs)
    z_sharded, upd_sharded = jax.jit(jax.vmap(apply_train(sharded), axis_name='devices'))(shards)
    np.testing.assert_allclose(z_sharded.reshape(6, 1024), z_global, rtol=1e-9, atol=1e-10)
    for a, b in zip(jax.tree.leaves(upd_sharded), jax.tree.leaves(upd_global)):
      np.testing.assert_allclose(a[0], b, rtol=1e-9, atol=1e-10)
      np.testing.assert_allclose(a[1], b, rtol=1e-9, atol=1e-10)
    # Without the axis name each shard normalises with its own statistics: a different result.
    z_local, _ = jax.jit(jax.vmap(apply_train(local)))(shards)
    assert not np.allclose(z_local.reshape(6, 1024), z_global, atol=1e-3)


@pytest.mark.parametrize('shape, dtype, match', [
    ((2, 64), jnp.float32, r'x must have shape \(batch, time, 8\).*\(2, 64\)'),
    ((2, 64, 4), jnp.float32, r'x must have shape.*\(2, 64, 4\)'),
    ((2, 16, 8), jnp.float32, r'time >= 32.*\(2, 16, 8\)'),
    ((2, 64, 8), jnp.int32, r'floating.*int32'),
])
def test_bad_input_raises(shape, dtype, match):
  model = models.ShuffleNetV2Encoder()
  with pytest.raises(ValueError, match=match):
    model.init(jax.random.key(0), jnp.zeros(shape, dtype))


def test_heads_shapes():
  head = models.ProjectionHead(hidden_dim=1024, output_dim=256)
  h = jnp.ones((3, 1024))
  variables = head.init(jax.random.key(0), h)
  assert head.apply(variables, h).shape == (3, 256)
  assert variables['params']['fc1']['kernel'].shape == (1024, 1024)
  predictor = models.Predictor(hidden_dim=64, output_dim=256)
  p_vars = predictor.init(jax.random.key(0), jnp.ones((3, 256)))
  out, updates = predictor.apply(p_vars, jnp.ones((3, 256)), train=True, mutable=['batch_stats'])
  assert out.shape == (3, 256) and 'bn1' in updates['batch_stats']
  with pytest.raises(ValueError, match=r'ProjectionHead.*\(3, 4, 5\)'):
    head.apply(variables, jnp.ones((3, 4, 5)))


def test_batch_standardize_matches_float64_numpy():
  z = np.random.RandomState(0).randn(12, 5).astype(np.float32) * 30.0 + 7.0
  want = (z.astype(np.float64) - z.mean(0, dtype=np.float64)) / np.sqrt(z.astype(np.float64).var(0) + 1e-5)
  np.testing.assert_allclose(np.asarray(models.batch_standardize(jnp.asarray(z))), want, rtol=1e-4, atol=1e-5)
  head = models.ProjectionHead(hidden_dim=16, output_dim=8, output_norm='batch')
  h = jnp.asarray(np.random.RandomState(1).randn(10, 32), jnp.float32)
  variables = head.init(jax.random.key(0), h)
  assert set(variables) == {'params'}  # no running statistics
  out = np.asarray(head.apply(variables, h))
  np.testing.assert_allclose(out.mean(0), 0.0, atol=1e-5)
  np.testing.assert_allclose(out.std(0), 1.0, atol=1e-3)
  with pytest.raises(ValueError, match=r"output_norm.*'layer'"):
    models.ProjectionHead(hidden_dim=16, output_dim=8, output_norm='layer').init(jax.random.key(0), h)


def test_batch_standardize_uses_the_global_batch_across_devices():
  """Per-device calls with `axis_name` give the standardisation of the whole batch (vmap as 3 devices)."""
  z = jnp.asarray(np.random.RandomState(2).randn(9, 4) * 5.0 + 2.0, jnp.float32)
  shards = jax.vmap(lambda x: models.batch_standardize(x, 'batch'), axis_name='batch')(z.reshape(3, 3, 4))
  np.testing.assert_allclose(np.asarray(shards).reshape(9, 4), np.asarray(models.batch_standardize(z)),
                             rtol=1e-5, atol=1e-5)


def test_factories_from_config():
  config = base_config.get_config()
  encoder = models.create_encoder(config.model, bn_axis_name='batch')
  assert isinstance(encoder, models.ShuffleNetV2Encoder) and encoder.bn_axis_name == 'batch'
  head = models.create_head(config.model)
  assert (head.hidden_dim, head.output_dim) == (config.model.hidden_dim, config.model.output_dim)
  assert head.output_norm == 'none'
  config.model.projection_norm = 'batch'
  assert models.create_head(config.model, bn_axis_name='batch').axis_name == 'batch'
  config.model.projection_norm = 'group'
  with pytest.raises(ValueError, match=r"projection_norm.*'group'"):
    models.create_head(config.model)
  predictor = models.create_predictor(moco_config.get_config().model)
  assert predictor.output_dim == config.model.output_dim


def test_model_dtype_decides_parameter_and_compute_dtypes():
  """config.model.dtype: float32 parameters for float32/bfloat16; 'float64' puts every variable and output
  of encoder, head and predictor in float64, and is refused with a clear message without 64-bit JAX."""
  config = moco_config.get_config().model
  config.stage_repeats = (1, 1, 1)
  x = jax.ShapeDtypeStruct((2, 32, 8), jnp.float32)

  def dtypes_of(model_config):
    encoder = models.create_encoder(model_config)
    head, predictor = models.create_head(model_config), models.create_predictor(model_config)
    enc_vars = jax.eval_shape(encoder.init, jax.random.key(0), x)
    h, _ = jax.eval_shape(lambda v, x: encoder.apply(v, x, train=True, mutable=['batch_stats']), enc_vars, x)
    head_vars = jax.eval_shape(head.init, jax.random.key(0), h)
    z = jax.eval_shape(head.apply, head_vars, h)
    pred_vars = jax.eval_shape(predictor.init, jax.random.key(0), z)
    p, _ = jax.eval_shape(lambda v, z: predictor.apply(v, z, train=True, mutable=['batch_stats']), pred_vars, z)
    variables = {jnp.dtype(a.dtype).name for a in jax.tree.leaves((enc_vars, head_vars, pred_vars))}
    return variables, h.dtype, z.dtype, p.dtype

  assert dtypes_of(config) == ({'float32'}, jnp.float32, jnp.float32, jnp.float32)
  config.dtype = 'bfloat16'  # bfloat16 encoder, float32 parameters; the heads promote to float32
  assert dtypes_of(config) == ({'float32'}, jnp.bfloat16, jnp.float32, jnp.float32)
  config.dtype = 'float64'
  with pytest.raises(ValueError, match=r"model_config.dtype='float64' needs JAX's 64-bit mode.*JAX_ENABLE_X64"):
    models.create_encoder(config)
  with jax.enable_x64(True):
    assert dtypes_of(config) == ({'float64'}, jnp.float64, jnp.float64, jnp.float64)
  config.dtype = 'float128'
  with pytest.raises(ValueError, match=r"model_config.dtype must be one of .*'float64'.*got 'float128'"):
    models.create_encoder(config)


def test_count_params():
  assert models.count_params({'a': jnp.zeros((2, 3)), 'b': {'c': jnp.zeros(4)}}) == 10


def _numpy_batch_norm(x, scale, bias, relu, eps=1e-5):
  """Training-mode BN (+ ReLU) in float64 NumPy: the reference for `layers.BatchNorm`."""
  x = np.asarray(x, np.float64)
  axes = tuple(range(x.ndim - 1))
  y = (x - x.mean(axes)) / np.sqrt(x.var(axes) + eps) * scale + bias
  return np.maximum(y, 0.0) if relu else y


@pytest.mark.parametrize('relu', [False, True])
def test_batch_norm_matches_float64_numpy_value_and_gradient(relu):
  rng = np.random.RandomState(0)
  x = (rng.randn(4, 9, 6) * 3.0 + 2.0).astype(np.float32)
  scale = (1.0 + 0.5 * rng.randn(6)).astype(np.float64)
  bias = (0.3 * rng.randn(6)).astype(np.float64)
  weights = rng.randn(*x.shape)  # the test objective: sum(weights * bn(x))

  def objective(x, scale, bias):
    y, _, _ = layers.batch_norm_train(x, scale, bias, 1e-5, None, relu)
    return jnp.sum(jnp.asarray(weights, jnp.float32) * y)

  y, mean, var = layers.batch_norm_train(jnp.asarray(x), jnp.asarray(scale, jnp.float32),
                                         jnp.asarray(bias, jnp.float32), 1e-5, None, relu)
  np.testing.assert_allclose(y, _numpy_batch_norm(x, scale, bias, relu), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(mean, x.astype(np.float64).mean((0, 1)), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(var, x.astype(np.float64).var((0, 1)), rtol=1e-5)
  grads = jax.grad(objective, argnums=(0, 1, 2))(jnp.asarray(x), jnp.asarray(scale, jnp.float32),
                                                 jnp.asarray(bias, jnp.float32))
  # Central differences of the float64 NumPy objective along random directions, for each argument.
  f = lambda x, scale, bias: float(np.sum(weights * _numpy_batch_norm(x, scale, bias, relu)))
  args = [x.astype(np.float64), scale, bias]
  for index, grad in enumerate(grads):
    direction = rng.randn(*args[index].shape)
    step = 1e-6
    plus, minus = list(args), list(args)
    plus[index] = args[index] + step * direction
    minus[index] = args[index] - step * direction
    numeric = (f(*plus) - f(*minus)) / (2 * step)
    np.testing.assert_allclose(np.sum(np.asarray(grad, np.float64) * direction), numeric, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('relu', [False, True])
def test_batch_norm_module_equals_flax_batch_norm(relu):
  """Same variables, values, running-statistics update, eval output and gradients as flax's BN (+ ReLU)."""
  x = jax.random.normal(jax.random.key(4), (5, 11, 7)) * 2.0 - 1.0
  ours = layers.BatchNorm(relu=relu)
  theirs = nn.BatchNorm(momentum=0.9, epsilon=1e-5, use_fast_variance=False)
  variables = ours.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, variables) == jax.tree.map(
      jnp.shape, theirs.init(jax.random.key(0), x, use_running_average=False))
  variables = {'params': {'scale': 1.0 + 0.3 * jax.random.normal(jax.random.key(1), (7,)),
                          'bias': 0.2 * jax.random.normal(jax.random.key(2), (7,))},
               'batch_stats': variables['batch_stats']}
  activation = nn.relu if relu else (lambda y: y)

  def train_loss(module, post, params, x):
    kwargs = {} if module is ours else {'use_running_average': False}
    y, updates = module.apply({'params': params, 'batch_stats': variables['batch_stats']}, x,
                              mutable=['batch_stats'], **kwargs)
    return jnp.sum(jnp.sin(post(y))), (post(y), updates['batch_stats'])

  (loss_a, (y_a, stats_a)), grads_a = jax.value_and_grad(train_loss, argnums=(2, 3), has_aux=True)(
      ours, lambda y: y, variables['params'], x)
  (loss_b, (y_b, stats_b)), grads_b = jax.value_and_grad(train_loss, argnums=(2, 3), has_aux=True)(
      theirs, activation, variables['params'], x)
  np.testing.assert_allclose(y_a, y_b, rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree.leaves((stats_a, grads_a)), jax.tree.leaves((stats_b, grads_b))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  trained = {'params': variables['params'], 'batch_stats': stats_a}
  np.testing.assert_allclose(layers.BatchNorm(use_running_average=True, relu=relu).apply(trained, x),
                             activation(theirs.apply(trained, x, use_running_average=True)), rtol=1e-5, atol=1e-6)


def test_batch_norm_gradients_with_axis_name_are_those_of_the_global_batch():
  """Under vmap(axis_name) as 3 devices: outputs and input gradients of the whole batch; parameter
  gradients per device that sum to the whole batch's (the train step then averages them)."""
  x = jax.random.normal(jax.random.key(5), (3, 4, 6, 5)) * jnp.array([1.0, 3.0, 0.5])[:, None, None, None]
  scale, bias = jnp.linspace(0.5, 1.5, 5), jnp.linspace(-0.2, 0.2, 5)
  weights = jax.random.normal(jax.random.key(6), x.shape)

  def loss(x, scale, bias, weights, axis_name):
    y, _, _ = layers.batch_norm_train(x, scale, bias, 1e-5, axis_name, True)
    return jnp.sum(weights * y)

  grad = jax.grad(loss, argnums=(0, 1, 2))
  sharded = jax.vmap(lambda x, w: grad(x, scale, bias, w, 'batch'), axis_name='batch')(x, weights)
  whole = grad(x.reshape(12, 6, 5), scale, bias, weights.reshape(12, 6, 5), None)
  np.testing.assert_allclose(sharded[0].reshape(12, 6, 5), whole[0], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(jnp.sum(sharded[1], 0), whole[1], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(jnp.sum(sharded[2], 0), whole[2], rtol=1e-4, atol=1e-5)


class FlaxBatchNormReLU(nn.Module):
  """The oracle for `layers.BatchNorm` inside the encoder: flax's `nn.BatchNorm`, then `nn.relu` if `relu`.

  Same constructor as `layers.BatchNorm`, and the same variable names (the flax BN shares this scope).
  """
  use_running_average: bool = False
  momentum: float = 0.9
  epsilon: float = 1e-5
  axis_name: str | None = None
  relu: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    bn = nn.BatchNorm(use_running_average=self.use_running_average, momentum=self.momentum,
                      epsilon=self.epsilon, use_fast_variance=False, axis_name=self.axis_name, dtype=self.dtype,
                      param_dtype=self.param_dtype)
    nn.share_scope(self, bn)
    y = bn(x)
    return nn.relu(y) if self.relu else y


def test_encoder_with_the_fused_batch_norm_equals_the_encoder_with_flax_batch_norm():
  """The fused BN (+ ReLU) and flax's BN + ReLU give the same variables, train-mode outputs, statistics
  and gradients through the whole encoder (so every BN and ReLU sits where flax's would).

  Two different programs through train-mode BN on a small batch, which amplifies float32 rounding by an
  amount no simple bound gives, so in float64: they agree to ~1e-15, and 1e-9 is far from both that and
  a misplaced BN or ReLU (O(1))."""
  with jax.enable_x64(True):
    x = jax.random.normal(jax.random.key(7), (4, 64, 8), jnp.float64)
    kwargs = dict(stage_repeats=(1, 2, 1), dtype=jnp.float64, param_dtype=jnp.float64)
    fused = models.ShuffleNetV2Encoder(**kwargs)
    reference = models.ShuffleNetV2Encoder(norm=FlaxBatchNormReLU, **kwargs)
    variables = jax.jit(fused.init)(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(
        jnp.shape, jax.eval_shape(reference.init, jax.random.key(0), x))

    def loss(model, params):
      z, updates = model.apply({'params': params, 'batch_stats': variables['batch_stats']}, x, train=True,
                               mutable=['batch_stats'])
      return jnp.sum(jnp.tanh(z)), updates['batch_stats']

    (loss_a, stats_a), grads_a = jax.jit(jax.value_and_grad(lambda p: loss(fused, p), has_aux=True))(
        variables['params'])
    (loss_b, stats_b), grads_b = jax.jit(jax.value_and_grad(lambda p: loss(reference, p), has_aux=True))(
        variables['params'])
    assert loss_a.dtype == np.float64
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-9)
    # The absolute floor: BN biases right before a conv + BN get an exactly-zero gradient in exact
    # arithmetic, rounding noise only.
    scale = max(float(np.abs(a).max()) for a in jax.tree.leaves((stats_b, grads_b)))
    for a, b in zip(jax.tree.leaves((stats_a, grads_a)), jax.tree.leaves((stats_b, grads_b))):
      np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9 * scale)
  assert models.create_encoder(base_config.get_config().model).norm is layers.BatchNorm


@pytest.mark.parametrize('layout, length, out_length_after_stem', [
    ({'stem_stride': 2, 'stem_pool': True}, 128, 32),
    ({'stem_stride': 1, 'stem_pool': True}, 128, 64),
    ({'stem_stride': 1, 'stem_pool': False}, 128, 128),
    ({'stem_stride': 2, 'stem_pool': False}, 33, 17),
])
def test_layout_stem_downsamples_as_documented(layout, length, out_length_after_stem):
  encoder = models.ShuffleNetV2Encoder(stage_repeats=(1, 1, 1), **layout)
  x = jnp.ones((2, length, 8), jnp.float32)
  variables = encoder.init(jax.random.key(0), x)
  _, state = encoder.apply(variables, x, capture_intermediates=lambda mdl, _: mdl.name == 'stem_bn')
  stem = state['intermediates']['stem_bn']['__call__'][0]
  assert stem.shape[1] == layers.conv_output_length(length, 3, layout['stem_stride'], 1)
  assert encoder.apply(variables, x).shape == (2, 1024)
  if layout['stem_pool']:
    assert layers.conv_output_length(stem.shape[1], 3, 2, 1) == out_length_after_stem
  else:
    assert stem.shape[1] == out_length_after_stem


@pytest.mark.parametrize('dw_kernel', [1, 5, 9])
def test_layout_depthwise_taps_change_only_depthwise_kernels(dw_kernel):
  params = _init_shapes(models.ShuffleNetV2Encoder(dw_kernel=dw_kernel))['params']
  assert params['stage2_unit0']['branch1_dw']['kernel'].shape == (dw_kernel, 1, 24)
  assert params['stage3_unit7']['branch2_dw']['kernel'].shape == (dw_kernel, 1, 48)
  depthwise_channels = sum(unit[branch]['kernel'].shape[-1] for name, unit in params.items()
                           if name.startswith('stage') for branch in ('branch1_dw', 'branch2_dw') if branch in unit)
  assert models.count_params(params) == EXPECTED_PARAMS + (dw_kernel - 3) * depthwise_channels
  x = jnp.ones((2, 40, 8), jnp.float32)  # every length stays as with 3 taps ('same' padding)
  encoder = models.ShuffleNetV2Encoder(dw_kernel=dw_kernel, stage_repeats=(1, 1, 1))
  assert encoder.apply(encoder.init(jax.random.key(0), x), x).shape == (2, 1024)


def test_rms_input_scaling_makes_the_encoder_blind_to_each_examples_scale():
  encoder = models.ShuffleNetV2Encoder(stage_repeats=(1, 1, 1), input_scaling='rms')
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4, 64, 8)).astype(np.float32)
  gains = np.array([1.0, 1e-3, 10.0, 1e3], np.float32)[:, None, None]
  variables = encoder.init(jax.random.key(0), jnp.asarray(x))
  np.testing.assert_allclose(encoder.apply(variables, jnp.asarray(x * gains)), encoder.apply(variables, jnp.asarray(x)),
                             rtol=1e-5, atol=1e-6)
  scaled = shufflenet.scale_input(jnp.asarray(x * gains), 'rms')
  np.testing.assert_allclose(np.sqrt(np.mean(np.square(scaled), axis=(1, 2))), 1.0, rtol=1e-5)
  # One scalar per example: the antennas' relative amplitudes and the I/Q phases are kept.
  np.testing.assert_allclose(scaled[:, :, 0] / scaled[:, :, 3], x[:, :, 0] / x[:, :, 3], rtol=1e-4)
  assert np.all(np.asarray(shufflenet.scale_input(jnp.zeros((1, 32, 8)), 'rms')) == 0)
  with pytest.raises(ValueError, match='input_scaling'):
    shufflenet.scale_input(jnp.asarray(x), 'per_channel')


def test_create_encoder_reads_the_layout_from_config():
  config = base_config.get_config().model
  config.stem_stride, config.stem_pool, config.dw_kernel, config.input_scaling = 1, False, 9, 'rms'
  config.unit_downsample = 'pool'
  encoder = models.create_encoder(config)
  assert (encoder.stem_stride, encoder.stem_pool, encoder.dw_kernel, encoder.input_scaling,
          encoder.unit_downsample) == (1, False, 9, 'rms', 'pool')
  for key in models.LAYOUT_KEYS:  # every layout key is in the base config, with the encoder's default
    assert base_config.get_config().model[key] == getattr(models.ShuffleNetV2Encoder(), key)


def test_pooled_unit_downsampling_keeps_the_parameters_and_lengths_and_pools_each_branch():
  x = jax.random.normal(jax.random.key(1), (2, 33, 24))
  strided, pooled = shufflenet.ShuffleUnit(48, stride=2), shufflenet.ShuffleUnit(48, stride=2, downsample='pool')
  variables = strided.init(jax.random.key(0), x, train=False)
  assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, pooled.init(jax.random.key(0), x, train=False))
  y = pooled.apply(variables, x, train=False)
  assert y.shape == strided.apply(variables, x, train=False).shape == (2, 17, 48)
  # The same unit with stride 1 everywhere and each branch max-pooled at its end, by hand.
  _, state = pooled.apply(variables, x, train=False, capture_intermediates=lambda mdl, _: mdl.name in (
      'branch1_pw_bn', 'branch2_pw2_bn'))
  branch1 = state['intermediates']['branch1_pw_bn']['__call__'][0]
  branch2 = state['intermediates']['branch2_pw2_bn']['__call__'][0]
  assert branch1.shape == branch2.shape == (2, 33, 24)
  expected = layers.channel_shuffle(jnp.concatenate([layers.max_pool1d(branch1), layers.max_pool1d(branch2)], -1))
  np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match='downsample'):
    shufflenet.ShuffleUnit(48, stride=2, downsample='conv').init(jax.random.key(0), x, train=False)


def test_a_model_config_without_layout_keys_builds_the_legacy_layout():
  """A workdir's config.json written before the layout keys existed is rebuilt with the layout it trained."""
  config = base_config.get_config().model
  for key in models.LAYOUT_KEYS:
    del config[key]
  encoder = models.create_encoder(config)
  assert {key: getattr(encoder, key) for key in models.LAYOUT_KEYS} == models.LEGACY_LAYOUT
