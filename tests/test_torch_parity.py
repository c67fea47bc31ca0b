"""Parity of the PyTorch baseline (experiments/torch_baseline) with ssl_jax: weights, outputs, losses, training.

Tolerances. Multi-step training runs in float64 in both frameworks (`config.model.dtype='float64'`, torch
float64). In float32 (unit roundoff u = 2^-24 = 6e-8) the 20-step trajectories part by 1e-4..6e-3, by an
amount that depends on the CPU: they agree to ~1e-7 for some steps, then jump 10-100x in one step, the mark
of a discrete event (an activation within rounding of a ReLU kink or of a max-pool near-tie, where a
rounding difference changes a gradient entry by O(1)), whose chance is proportional to u. The smooth part of
the dynamics hardly amplifies: random 1e-12 relative changes of the weights move float64 losses by <=
3.4e-12 over the 20 steps. In float64 (u = 1.1e-16) the two frameworks agree to ~1e-15 (measured with XLA at
its default ISA and limited to SSE4.2). Single-step checks stay in float32, with tolerances from an error
model: a float32 dot product of n terms of random sign has relative error ~0.4 * sqrt(n) * u (the rounding
of each partial sum, a random walk; Higham & Mary, SIAM J. Sci. Comput. 2019), errors of a chain of layers
add the same way, so a network with fan-ins n_l has relative error ~0.4 * sqrt(sum n_l) * u per framework
and sqrt(2) times that between two frameworks that sum in different orders. Each test states its numbers.
"""

import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip('torch')

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import smoke  # noqa: E402
from experiments.torch_baseline import convert, lightly_loss, models  # noqa: E402
from ssl_jax.losses import common as loss_common, contrastive  # noqa: E402
from ssl_jax.methods import moco as jax_moco  # noqa: E402
from ssl_jax.models import Predictor, ProjectionHead, ShuffleNetV2Encoder  # noqa: E402

pytest.importorskip('lightly')
SMOKE = (1, 1, 1)


def _rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def _random_stats(variables, seed=1):
  """Non-trivial running statistics, so eval mode tests the mean/var mapping."""
  rng = np.random.RandomState(seed)
  stats = jax.tree.map(lambda a: (rng.rand(*a.shape) * 0.5 + 0.5).astype(np.float32), variables['batch_stats'])
  stats = jax.tree_util.tree_map_with_path(
      lambda p, a: a - 0.75 if jax.tree_util.keystr(p).endswith("['mean']") else a, stats)
  return {'params': variables['params'], 'batch_stats': stats}


def _flax_encoder(stage_repeats, length=64, seed=0):
  encoder = ShuffleNetV2Encoder(stage_repeats=stage_repeats)
  variables = encoder.init(jax.random.PRNGKey(seed), jnp.zeros((2, length, 8)), train=False)
  return encoder, _random_stats(variables)


def _ncw(x):
  return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 2, 1))))


def test_lightly_loss_loads_without_torchvision_and_leaves_sys_modules_clean():
  before = {k for k in sys.modules if k == 'lightly' or k.startswith('lightly.')}
  cls = lightly_loss.load_ntxent_loss_class()
  after = {k for k in sys.modules if k == 'lightly' or k.startswith('lightly.')}
  assert cls.__name__ == 'NTXentLoss'
  assert after == before
  assert 'torchvision' not in sys.modules
  import importlib.metadata
  assert importlib.metadata.version('lightly') == lightly_loss.LIGHTLY_VERSION


def test_full_encoder_eval_embeddings_match_and_weights_round_trip():
  encoder, variables = _flax_encoder((4, 8, 4), length=128)
  x = np.random.RandomState(0).randn(4, 128, 8).astype(np.float32)
  want = np.asarray(jax.jit(lambda v, x: encoder.apply(v, x, train=False))(variables, x))
  model = models.ShuffleNetV2Encoder((4, 8, 4))
  state_dict = convert.encoder_to_torch(variables)
  model.load_state_dict(state_dict, strict=True)
  model.eval()
  with torch.no_grad():
    got = model(_ncw(x)).numpy()
  assert got.shape == (4, 1024)
  # Eval mode (fixed affine BN, ReLU: relative errors neither grow nor shrink on average). Longest chain of
  # fan-ins: stem 24, stage2 4 x (24 + 3 + 24), stage3 8 x (48 + 3 + 48), stage4 4 x (96 + 3 + 96), final
  # 192, ~36 BN affines: sum ~2,060; 0.4 * sqrt(2060) * u = 1.1e-6 per framework, 1.6e-6 between the two.
  # The largest of 4,096 outputs' differences (~4 sigma), over the largest output: ~3e-6 < 1e-5.
  assert _rel(got, want) < 1e-5
  back = convert.encoder_to_flax(model.state_dict())
  assert jax.tree.structure(back) == jax.tree.structure(variables)
  assert all(jax.tree.leaves(jax.tree.map(np.array_equal, back, jax.device_get(variables))))
  again = convert.encoder_to_torch(back)
  assert all(torch.equal(again[k], v) for k, v in model.state_dict().items())


def test_param_counts_match_flax():
  _, variables = _flax_encoder((4, 8, 4), length=64)
  model = models.ShuffleNetV2Encoder()
  assert sum(p.numel() for p in model.parameters()) == sum(a.size for a in jax.tree.leaves(variables['params']))
  assert sum(b.numel() for n, b in model.named_buffers() if 'running' in n) == 7952


def test_train_mode_batchnorm_outputs_and_running_stats():
  encoder, variables = _flax_encoder(SMOKE)
  x = np.random.RandomState(2).randn(6, 64, 8).astype(np.float32) * 3.0 + 0.5
  want, updates = jax.jit(lambda v, x: encoder.apply(v, x, train=True, mutable=['batch_stats']))(variables, x)
  model = models.ShuffleNetV2Encoder(SMOKE)
  model.load_state_dict(convert.encoder_to_torch(variables))
  model.train()
  counts = {}
  for name, module in model.named_modules():
    if isinstance(module, torch.nn.BatchNorm1d):
      module.register_forward_hook(lambda m, i, o, name=name: counts.__setitem__(name, i[0].shape[0] * i[0].shape[2]))
  with torch.no_grad():
    got = model(_ncw(x)).numpy()
  # Fan-ins 24 + 51 + 99 + 195 + 192, plus BN's batch reductions (6 x 32 rows at the stem, halving per
  # stage: ~380): sum ~950, 0.4 * sqrt(950) * u = 7e-7 per framework, 1e-6 between them; ~4 sigma < 1e-5.
  assert _rel(got, want) < 1e-5
  # Running means agree; running_var differs only by torch's unbiased n / (n - 1) on the batch part.
  # new = 0.9 * old + 0.1 * batch statistic, old in [-0.25, 1]: storing `new` rounds by u * |new| <= 6e-8
  # absolute, and the batch statistic's own ~1e-6 relative error enters times 0.1, so 1e-6 absolute plus
  # 1e-5 relative covers both. The batch part of running_var is recovered by subtracting 0.9 * old (in
  # float64, so the test adds no rounding of its own): that cancellation leaves the stored values' absolute
  # rounding (<= 2 * 6e-8 < atol) on a value 0.1 * var; the variance of inputs carrying ~1e-6 relative
  # error is within ~2e-6 relative, and rtol=2e-4 stays 25x below a missed n / (n - 1) (>= 1/191 = 5e-3).
  before = convert.encoder_to_torch(variables)
  flax_after = convert.encoder_to_torch({'params': variables['params'], 'batch_stats': updates['batch_stats']})
  torch_after = model.state_dict()
  for name, n in counts.items():
    np.testing.assert_allclose(torch_after[f'{name}.running_mean'], flax_after[f'{name}.running_mean'],
                               rtol=1e-5, atol=1e-6)
    old_var = before[f'{name}.running_var'].double()
    batch_var_torch = (torch_after[f'{name}.running_var'].double() - 0.9 * old_var).numpy()
    batch_var_flax = (flax_after[f'{name}.running_var'].double() - 0.9 * old_var).numpy()
    np.testing.assert_allclose(batch_var_torch * (n - 1) / n, batch_var_flax, rtol=2e-4, atol=1e-6)


def test_encoder_gradients_match():
  repeats = (2, 2, 1)  # stride-1 units (channel split) too
  encoder, variables = _flax_encoder(repeats)
  rng = np.random.RandomState(3)
  x = rng.randn(8, 64, 8).astype(np.float32)
  w = rng.randn(8, 1024).astype(np.float32)

  def objective(params):
    h, _ = encoder.apply({'params': params, 'batch_stats': variables['batch_stats']}, x, train=True,
                         mutable=['batch_stats'])
    return jnp.sum(jnp.tanh(h) * w)

  grads = jax.jit(jax.grad(objective))(variables['params'])
  model = models.ShuffleNetV2Encoder(repeats)
  model.load_state_dict(convert.encoder_to_torch(variables))
  model.train()
  torch.sum(torch.tanh(model(_ncw(x))) * torch.from_numpy(w)).backward()
  want = convert.encoder_to_torch({'params': grads, 'batch_stats': variables['batch_stats']})
  scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(grads))
  for name, param in model.named_parameters():
    # Forward and backward chains (train-mode BN: batch reductions of 8 x 32 rows and fewer) sum to n ~ 2,500
    # fan-ins, and a weight's gradient sums 8 x T products: 0.4 * sqrt(2500 + 256) * u = 1.3e-6 of the
    # layer's gradient scale per framework, 1.8e-6 between them. An entry well away from 0 is within
    # rtol=1e-4 (>50 sigma); an entry near 0 (a cancelling sum; BN biases right before a conv + BN get an
    # exactly-zero gradient in exact arithmetic, rounding noise only) keeps that absolute error, so an
    # absolute floor of 1e-5 of the largest gradient (>5 sigma).
    np.testing.assert_allclose(param.grad.numpy(), want[name].numpy(), rtol=1e-4, atol=1e-5 * scale,
                               err_msg=name)



def test_the_torch_twin_defaults_to_the_encoders_layout():
  """`models.ShuffleNetV2Encoder()` (torch) builds the layout `ShuffleNetV2Encoder()` (flax) builds by default."""
  import inspect
  from ssl_jax.models import LAYOUT_KEYS
  defaults = inspect.signature(models.ShuffleNetV2Encoder.__init__).parameters
  assert {key: defaults[key].default for key in LAYOUT_KEYS} == {key: getattr(ShuffleNetV2Encoder(), key)
                                                                  for key in LAYOUT_KEYS}

LAYOUTS = [
    {},  # the encoder's defaults
    {'stem_stride': 2, 'stem_pool': True, 'dw_kernel': 3, 'unit_downsample': 'stride', 'input_scaling': 'none'},
    {'stem_stride': 1, 'stem_pool': False, 'dw_kernel': 3, 'unit_downsample': 'pool', 'input_scaling': 'none'},
    {'stem_stride': 1, 'stem_pool': True, 'dw_kernel': 5, 'unit_downsample': 'stride', 'input_scaling': 'rms'},
]


@pytest.mark.parametrize('layout', LAYOUTS, ids=lambda layout: ','.join(f'{k}={v}' for k, v in layout.items())
                         or 'defaults')
def test_every_layout_matches_in_float64_train_mode_value_and_gradient(layout):
  """The torch twin builds each layout of `ShuffleNetV2Encoder` (same keys, same function): train-mode embeddings
  and parameter gradients in float64, where the frameworks' sums differ in order only (~1e-16 per operation)."""
  repeats = (2, 2, 1)
  rng = np.random.RandomState(5)
  x = rng.randn(6, 64, 8) * 3.0
  w = rng.randn(6, 1024)
  with jax.enable_x64(True):
    encoder = ShuffleNetV2Encoder(stage_repeats=repeats, param_dtype=jnp.float64, dtype=jnp.float64, **layout)
    variables = encoder.init(jax.random.PRNGKey(0), jnp.zeros((2, 64, 8), jnp.float64), train=False)

    def objective(params):
      h, _ = encoder.apply({'params': params, 'batch_stats': variables['batch_stats']}, x, train=True,
                           mutable=['batch_stats'])
      return jnp.sum(jnp.tanh(h) * w), h

    (_, want_h), grads = jax.jit(jax.value_and_grad(objective, has_aux=True))(variables['params'])
    want = convert.encoder_to_torch({'params': grads, 'batch_stats': variables['batch_stats']})
    model = models.ShuffleNetV2Encoder(repeats, **layout).double()
    model.load_state_dict(convert.encoder_to_torch(variables))
  model.train()
  h = model(_ncw(x))
  torch.sum(torch.tanh(h) * torch.from_numpy(w)).backward()
  assert _rel(h.detach().numpy(), want_h) < 1e-12
  scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(grads))
  for name, param in model.named_parameters():
    np.testing.assert_allclose(param.grad.numpy(), want[name].numpy(), rtol=1e-9, atol=1e-12 * scale, err_msg=name)


def test_the_twins_layout_defaults_are_the_encoders():
  import inspect
  defaults = {k: p.default for k, p in inspect.signature(models.ShuffleNetV2Encoder).parameters.items()
              if k in models.LAYOUT_KEYS}
  assert defaults == {k: getattr(ShuffleNetV2Encoder(), k) for k in models.LAYOUT_KEYS}


def test_heads_match():
  rng = np.random.RandomState(4)
  h = rng.randn(6, 32).astype(np.float32)
  head = ProjectionHead(hidden_dim=16, output_dim=8)
  head_params = head.init(jax.random.PRNGKey(0), h)['params']
  torch_head = models.projection_head(32, 16, 8)
  torch_head.load_state_dict(convert.head_to_torch(head_params))
  # Fan-ins 32 + 16 (+ a batch of 6 for the norms): 0.4 * sqrt(54) * u = 2e-7 per framework; 1e-5 is a
  # wide margin, and any wrong weight layout or formula moves outputs by O(1).
  with torch.no_grad():
    assert _rel(torch_head(torch.from_numpy(h)).numpy(), head.apply({'params': head_params}, h)) < 1e-5
  assert all(jax.tree.leaves(jax.tree.map(np.array_equal, convert.head_to_flax(torch_head.state_dict()),
                                          jax.device_get(head_params))))
  torch_normed = models.projection_head(32, 16, 8, output_norm='batch')
  torch_normed.load_state_dict(convert.head_to_torch(head_params))
  normed = ProjectionHead(hidden_dim=16, output_dim=8, output_norm='batch')
  with torch.no_grad():
    assert _rel(torch_normed(torch.from_numpy(h)).numpy(), normed.apply({'params': head_params}, h)) < 1e-5
  predictor = Predictor(hidden_dim=16, output_dim=8)
  pv = predictor.init(jax.random.PRNGKey(1), h, train=False)
  torch_pred = models.predictor(32, 16, 8)
  torch_pred.load_state_dict(convert.predictor_to_torch(pv['params'], pv['batch_stats']))
  torch_pred.train()
  want, _ = predictor.apply(pv, h, train=True, mutable=['batch_stats'])
  with torch.no_grad():
    assert _rel(torch_pred(torch.from_numpy(h)).numpy(), want) < 1e-5
  params, stats = convert.predictor_to_flax(torch_pred.state_dict())
  assert jax.tree.structure(params) == jax.tree.structure(pv['params'])
  assert jax.tree.structure(stats) == jax.tree.structure(pv['batch_stats'])


@pytest.mark.parametrize('temperature', [0.07, 0.5])
def test_nt_xent_value_and_gradient_match_lightly(temperature):
  rng = np.random.RandomState(5)
  z_a, z_b = (rng.randn(12, 16).astype(np.float32) * 3.0 for _ in range(2))
  value, (g_a, g_b) = jax.value_and_grad(
      lambda a, b: contrastive.nt_xent(a, b, temperature=temperature), argnums=(0, 1))(z_a, z_b)
  t_a, t_b = (torch.tensor(z, requires_grad=True) for z in (z_a, z_b))
  loss = lightly_loss.ntxent_loss(temperature)(t_a, t_b)
  loss.backward()
  # A cosine of two normalised dim-16 vectors rounds by ~sqrt(38 roundings / 3) * u = 2e-7 (worst case
  # 38 u = 2.3e-6: two normalisations of 11 u, the dot product 16 u), a logit by that / tau = 3e-6 at
  # tau = 0.07. A row's loss (log-sum-exp minus the positive logit) passes it on about twice and the loss
  # averages 24 rows: ~8e-7 absolute per framework on a loss of 3-4, 3e-7 relative between the two; 1e-5
  # is 30x that (and ~1/4 of the worst case, every rounding in one direction). The gradient is (softmax -
  # one-hot) / tau: the softmax carries the logits' absolute error as relative error (~3e-6 typical,
  # worst case 3e-5), so 1e-4 of the largest entry.
  assert abs(float(loss.detach()) - float(value)) <= 1e-5 * abs(float(value))
  assert _rel(t_a.grad.numpy(), g_a) < 1e-4
  assert _rel(t_b.grad.numpy(), g_b) < 1e-4


def test_info_nce_and_queue_match_lightly_memory_bank():
  rng = np.random.RandomState(6)
  batch, dim, size, temperature = 4, 8, 12, 0.07
  queue = rng.randn(size, dim).astype(np.float32)
  queue /= np.linalg.norm(queue, axis=1, keepdims=True)
  criterion = lightly_loss.ntxent_loss(temperature, size, dim)
  criterion.memory_bank.bank.copy_(torch.from_numpy(queue))
  jax_queue, ptr = jnp.asarray(queue), jnp.zeros((), jnp.int32)
  for step in range(4):  # wraps around the queue once
    q, k = rng.randn(batch, dim).astype(np.float32), rng.randn(batch, dim).astype(np.float32)
    value, g_q = jax.value_and_grad(lambda q: contrastive.info_nce(q, k, jax_queue, temperature=temperature))(q)
    t_q = torch.tensor(q, requires_grad=True)
    loss = criterion(t_q, torch.from_numpy(k))
    loss.backward()
    # As for NT-Xent (dim 8, tau 0.07). Queue rows are unit-normalised keys: a norm of 8 squares is off
    # by <= 8 u / 2, the division by u, so each entry (<= 1) by <= 5 u = 3e-7 per framework, 6e-7 < 1e-6.
    assert abs(float(loss.detach()) - float(value)) <= 1e-5 * abs(float(value)), step
    assert _rel(t_q.grad.numpy(), g_q) < 1e-4, step
    jax_queue, ptr = jax_moco.enqueue(jax_queue, ptr, loss_common.l2_normalize(jnp.asarray(k)), None)
    np.testing.assert_allclose(criterion.memory_bank.bank.numpy(), jax_queue, rtol=0, atol=1e-6)
    assert int(criterion.memory_bank.bank_ptr[0]) == int(ptr)


def _trajectories(method: str, num_steps: int = 20):
  """`num_steps` SGD steps of ssl_jax and of the torch baseline in float64, from the same weights on the same
  views: (jax losses, torch losses, jax state, torch trainer)."""
  from experiments.torch_baseline import side_by_side
  config = smoke.get_config(method)
  config.model.dtype = 'float64'
  config.augment.crop_lengths = (32,)  # one compiled JAX step; crops stay random
  # Antenna dropout off: an example with all four antennas dropped is exactly zero, and on its tied
  # max-pool windows JAX splits the gradient while torch routes it to one input (both valid subgradients).
  config.augment.antenna_dropout = 0.0
  config.optim.learning_rate = 0.03
  config.optim.lr_scaling = 'none'
  config.optim.warmup_epochs = 0.0  # cosine decay over the 20 steps
  if method == 'moco':
    config.moco.momentum = 0.99
  with jax.enable_x64(True):
    run = side_by_side.build_jax(config, num_steps, num_steps)
    trainer = side_by_side.build_torch(run, num_steps, num_steps)
    dtype = side_by_side.torch_dtype(run)
    assert dtype == torch.float64 and all(a.dtype == np.float64 for a in jax.tree.leaves(run.state.params))
    x = np.random.RandomState(7).randn(config.batch_size, config.data.length, 8).astype(np.float32)
    jax_losses, torch_losses = [], []
    for step in range(num_steps):  # the same batch every step; the views (crops) change each step
      torch_losses.append(side_by_side.torch_step(trainer, run, x, step)[0])
      run.state, metrics = run.step_fn(run.state, {'iq': x}, side_by_side.crop_lengths(run, step))
      jax_losses.append(float(metrics['loss']))
    return np.array(jax_losses), np.array(torch_losses), jax.device_get(run.state), trainer


# float64 in both frameworks agree to ~1e-15 after 20 steps (module docstring); 1e-9 leaves a wide margin,
# while a wrong optimiser, loss, EMA or queue order moves losses and weights by >1e-3.
FLOAT64_RTOL = 1e-9


def _assert_params_close(got, want, rtol: float = FLOAT64_RTOL) -> None:
  """Every leaf of `got` (converted from torch) against ssl_jax's `want`. The absolute floor is rtol times the
  largest parameter: BN biases right before a conv + BN get an exactly-zero gradient in exact arithmetic
  and hold rounding noise only (~1e-17 in float64)."""
  got_leaves = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(got)}
  want_leaves = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(want)}
  assert sorted(got_leaves) == sorted(want_leaves)
  scale = max(float(np.abs(v).max()) for v in want_leaves.values())
  for key, value in want_leaves.items():
    np.testing.assert_allclose(got_leaves[key], value, rtol=rtol, atol=rtol * scale, err_msg=key)


@pytest.mark.slow
def test_simclr_20_sgd_steps_match_in_float64():
  jax_losses, torch_losses, state, trainer = _trajectories('simclr')
  assert np.ptp(jax_losses) > 0.05  # the weights move enough for an optimiser mismatch to show
  np.testing.assert_allclose(torch_losses, jax_losses, rtol=FLOAT64_RTOL)
  params, _ = convert.model_to_flax(trainer.model.state_dict())
  _assert_params_close(params, state.params)


@pytest.mark.slow
def test_moco_20_sgd_steps_match_in_float64():
  jax_losses, torch_losses, state, trainer = _trajectories('moco')
  assert np.ptp(jax_losses) > 0.05
  np.testing.assert_allclose(torch_losses, jax_losses, rtol=FLOAT64_RTOL)
  params, _ = convert.model_to_flax(trainer.model.state_dict())
  _assert_params_close(params, state.params)
  key_params, _ = convert.model_to_flax(trainer.key_model.state_dict())
  _assert_params_close(key_params, state.ema_params)
  # Unit-norm rows: entries <= 1, so an absolute tolerance.
  np.testing.assert_allclose(trainer.queue.numpy(), np.asarray(state.queue), rtol=0, atol=FLOAT64_RTOL)


def test_workdir_round_trip(tmp_path):
  config = smoke.get_config('simclr')
  model = models.ShuffleNetV2Encoder(SMOKE)
  with torch.no_grad():  # non-trivial running statistics
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm1d):
        module.running_mean.uniform_(-0.5, 0.5)
        module.running_var.uniform_(0.5, 1.5)
  state_dict = model.state_dict()
  path = tmp_path / 'encoder.pt'
  torch.save(state_dict, path)
  workdir = str(tmp_path / 'run')
  convert.state_dict_to_workdir(torch.load(path, weights_only=True), config, workdir)
  loaded_config, back = convert.workdir_to_state_dict(workdir)
  assert loaded_config.method == 'simclr'
  for key, value in state_dict.items():
    if not key.endswith('num_batches_tracked'):
      assert torch.equal(back[key], value), key
  from ssl_jax import encoders
  loaded = encoders.load_encoder(workdir)
  encoder, variables = loaded.module, loaded.variables
  x = np.random.RandomState(8).randn(3, 64, 8).astype(np.float32)
  model.eval()
  with torch.no_grad():
    assert _rel(model(_ncw(x)).numpy(), encoder.apply(variables, x, train=False)) < 1e-5


@pytest.mark.parametrize('method', ['moco_v3', 'mochi'])
def test_a_converted_workdirs_key_encoder_starts_as_its_encoder(method, tmp_path):
  from ssl_jax import methods, optim
  from ssl_jax.workdir import checkpoints
  config = smoke.get_config(method)
  state_dict = models.ShuffleNetV2Encoder(SMOKE).state_dict()
  workdir = str(tmp_path / method)
  convert.state_dict_to_workdir(state_dict, config, workdir)
  method_module = methods.get_method(method)
  networks = method_module.create_networks(config, bn_axis_name=None)
  tx = optim.create_optimizer(config.optim, lambda step: 0.0)
  like = jax.eval_shape(lambda: method_module.init_state(config, networks, tx, jax.random.PRNGKey(0)))
  checkpointer = checkpoints.Checkpointer(workdir)
  state = checkpointer.restore(like, 0)
  checkpointer.close()
  for part in ('params', 'batch_stats'):
    query, key = getattr(state, part)['encoder'], getattr(state, 'ema_' + part)['encoder']
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, key, query))), part


def test_bad_state_dict_key_is_named():
  with pytest.raises(ValueError, match='stage9'):
    convert.encoder_to_flax({'stage9.0.branch2.0.weight': torch.zeros(4, 4, 1)})
  with pytest.raises(ValueError, match='do not fit config.model'):
    bad = models.ShuffleNetV2Encoder((1, 2, 1)).state_dict()
    convert.state_dict_to_workdir(bad, smoke.get_config('simclr'), '/nonexistent/never-written')


def test_the_torch_moco_refuses_shuffle_bn():
  """ssl_jax's Shuffle-BN (`config.moco.key_bn='shuffle'`) is not built in torch: refused, not trained as
  'global'."""
  from experiments.torch_baseline import train as torch_train
  config = smoke.get_config('moco')
  config.moco.key_bn = 'shuffle'
  with pytest.raises(ValueError, match=r"config.moco.key_bn='shuffle': the torch baseline trains 'global'"):
    torch_train.MoCo(config, lambda step: 0.0, lambda step: 0.99)
