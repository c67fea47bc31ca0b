"""CLIP-style cross-representation pretraining (ssl_jax/methods/clip.py): the spectrum representation, CLIP's
loss and gradient in the step, the stored layout read by evaluation (the IQ encoder by default, the spectrum
encoder on request), exact resume, and one step on 1 and 2 devices."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import smoke
from ssl_jax import augment, config_checks, encoders, evaluate, evaluation, models
from ssl_jax.losses import common as loss_common
from ssl_jax.methods import clip, common
from ssl_jax.workdir import checkpoints, layout
import method_harness  # tests/method_harness.py
from test_evaluate import array_data, tiny_probe_config


def test_spectrum_is_the_centred_unitary_dft_of_each_antenna():
  x = np.random.default_rng(0).normal(size=(3, 32, 8)).astype(np.float32)
  got = np.asarray(clip.spectrum(jnp.asarray(x)), np.float64)
  assert got.shape == x.shape and clip.spectrum(jnp.asarray(x)).dtype == jnp.float32
  z = x[..., 0::2] + 1j * x[..., 1::2]
  want = np.fft.fftshift(np.fft.fft(z.astype(np.complex128), axis=1), axes=1) / np.sqrt(32)
  np.testing.assert_allclose(got[..., 0::2] + 1j * got[..., 1::2], want, atol=1e-5)
  np.testing.assert_allclose(np.sum(got ** 2, axis=(1, 2)), np.sum(x.astype(np.float64) ** 2, axis=(1, 2)),
                             rtol=1e-5)  # energy kept


def test_spectrum_keeps_the_inter_antenna_phases_of_a_plane_wave():
  t = np.arange(64)
  signal = np.exp(2j * np.pi * 0.11 * t) + 0.5 * np.exp(-2j * np.pi * 0.3 * t)
  phases = np.array([0.0, 0.7, -1.9, 2.8])  # steering phases of a direction
  z = signal[None, :, None] * np.exp(1j * phases)[None, None, :]
  x = np.stack([z.real, z.imag], axis=-1).reshape(1, 64, 8)
  s = np.asarray(clip.spectrum(jnp.asarray(x, jnp.float32)), np.float64)
  spectrum = s[..., 0::2] + 1j * s[..., 1::2]
  strong = np.abs(spectrum[0, :, 0]) > 1.0  # the bins the tones fall in
  assert np.sum(strong) >= 2
  relative = spectrum[0, strong] / spectrum[0, strong, :1]
  np.testing.assert_allclose(relative, np.broadcast_to(np.exp(1j * (phases - phases[0])), relative.shape),
                             atol=1e-4)


def test_spectrum_encoder_is_the_shufflenet_on_the_spectrum():
  config = smoke.get_config('clip')
  networks = clip.create_networks(config, bn_axis_name=None)
  assert type(networks.encoder) is models.ShuffleNetV2Encoder  # the IQ tower reads IQ
  assert isinstance(networks.spectrum_encoder, clip.SpectrumEncoder)
  x = jax.random.normal(jax.random.key(0), (2, 64, 8))
  variables = networks.spectrum_encoder.init(jax.random.key(1), x)
  plain = models.create_encoder(config.model)
  assert jax.tree.structure(variables) == jax.tree.structure(plain.init(jax.random.key(1), x))
  np.testing.assert_array_equal(np.asarray(networks.spectrum_encoder.apply(variables, x)),
                                np.asarray(plain.apply(variables, clip.spectrum(x))))


def _clip_loss_by_hand(config, state, iq):
  """CLIP's loss of `state`'s step, written from its definition: logits u vᵀ / τ between the unit embeddings
  of the IQ tower (view a) and the spectrum tower (view b), the mean of the row and column cross-entropies."""
  networks = clip.create_networks(config, bn_axis_name=None)
  plain_encoder = models.create_encoder(config.model)  # the spectrum tower's encoder, less its DFT
  policy = augment.AugmentPolicy.from_config(config.augment)
  lengths = common.crop_lengths_for_step(state.rng, int(state.step), policy, config.data.length)
  views = [augment.make_view(iq, policy=policy, length=length, example_key=key) for length, key in
           zip(lengths, (common.view_keys(state.rng, state.step).example_a,
                         common.view_keys(state.rng, state.step).example_b))]

  def loss(params):
    h_iq = networks.encoder.apply({'params': params['encoder'], 'batch_stats': state.batch_stats['encoder']},
                                  views[0], train=True, mutable=['batch_stats'])[0]
    h_sp = plain_encoder.apply({'params': params['spectrum']['encoder'],
                                'batch_stats': state.batch_stats['spectrum']['encoder']},
                               clip.spectrum(views[1]), train=True, mutable=['batch_stats'])[0]
    u = loss_common.l2_normalize(networks.head.apply({'params': params['head']}, h_iq))
    v = loss_common.l2_normalize(networks.head.apply({'params': params['spectrum']['head']}, h_sp))
    logits = u @ v.T / config.temperature
    diagonal = jnp.diagonal(logits)
    rows = jnp.mean(jax.nn.logsumexp(logits, axis=1) - diagonal)
    columns = jnp.mean(jax.nn.logsumexp(logits, axis=0) - diagonal)
    return 0.5 * (rows + columns)

  return jax.jit(jax.value_and_grad(loss))(state.params)


def test_the_step_trains_both_towers_with_clip_s_loss_and_gradient():
  # float64: the step and the loss by hand are different programs of the same arithmetic, so they agree to
  # float64 rounding (float32's differences, ~1e-4 relative in the gradient norm after two encoders'
  # backward passes, would depend on how XLA fuses each program).
  with jax.enable_x64(True):
    config = smoke.get_config('clip')
    config.model.dtype = 'float64'
    state, step = method_harness.one_device(config)
    batch = method_harness.batch(config)
    want_loss, want_grads = _clip_loss_by_hand(config, state, jnp.asarray(batch['iq'], jnp.float64))
    new_state, metrics = step(state, dict(batch, iq=np.asarray(batch['iq'], np.float64)))
    assert float(metrics['loss']) == pytest.approx(float(want_loss), rel=1e-10)
    # The gradient of both directions reaches both towers (keys differentiated, unlike MoCo v3's loss).
    assert float(metrics['grad_norm']) == pytest.approx(float(optax.global_norm(want_grads)), rel=1e-9)
  for tower in (('encoder',), ('head',), ('spectrum', 'encoder'), ('spectrum', 'head')):
    before, after = state.params, new_state.params
    for key in tower:
      before, after = before[key], after[key]
    assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(after))), tower
  for key in ('embedding_std', 'embedding_std_spectrum', 'positive_similarity', 'negative_similarity'):
    assert np.isfinite(float(metrics[key])), key
  config = smoke.get_config('clip')
  state, step = method_harness.one_device(config)
  new_state = state
  for i in range(1, 3):  # float32, as trained
    new_state, metrics = step(new_state, method_harness.batch(config, seed=i))
    assert np.isfinite(float(metrics['loss']))


def test_evaluation_reads_the_iq_encoder_and_the_spectrum_encoder_on_request(tmp_path):
  config = smoke.get_config('clip')
  config.data.data_dir = str(tmp_path / 'tfds')
  workdir = str(tmp_path / 'run')
  state, step = method_harness.one_device(config)
  state, _ = step(state, method_harness.batch(config))
  layout.write_config(workdir, config)
  checkpointer = checkpoints.Checkpointer(workdir)
  checkpointer.save(1, state)
  checkpointer.close()

  iq = encoders.load_encoder(workdir)
  assert type(iq.module) is models.ShuffleNetV2Encoder and iq.step == 1
  for got, want in ((iq.variables['params'], state.params['encoder']),
                    (iq.variables['batch_stats'], state.batch_stats['encoder'])):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  same = encoders.load_clip_tower(workdir, representation='iq')
  assert same.module == iq.module and same.step == 1
  spectrum = encoders.load_clip_tower(workdir, representation='spectrum')
  assert isinstance(spectrum.module, clip.SpectrumEncoder) and spectrum.step == 1
  for x, y in zip(jax.tree.leaves(spectrum.variables['params']), jax.tree.leaves(state.params['spectrum']['encoder'])):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  with pytest.raises(ValueError, match="representation must be one of \\('iq', 'spectrum'\\); got 'phase'"):
    encoders.load_clip_tower(workdir, representation='phase')

  data = array_data(config.data.length)
  results = evaluate.run(workdir, tiny_probe_config(), seed=0, data=data)
  assert results['method'] == 'clip' and results['step'] == 1
  accuracy = results['pretrained']['tasks']['amc']['probe']['1']['accuracy']['values']
  assert len(accuracy) == 2 and all(0.0 <= a <= 1.0 for a in accuracy)
  probe = tiny_probe_config()
  spectrum_results = evaluation.evaluate_encoder(spectrum.module, spectrum.variables, config.data, probe, seed=0,
                                                 data=data)
  assert set(spectrum_results['tasks']) == {'aoa', 'amc'}


def test_a_spectrum_encoder_is_refused_for_another_method(tmp_path):
  config = smoke.get_config('simclr')
  workdir = str(tmp_path / 'run')
  layout.write_config(workdir, config)
  with pytest.raises(ValueError, match="holds a 'simclr' run; only a clip run has a spectrum encoder"):
    encoders.load_clip_tower(workdir, representation='spectrum')


def test_clip_needs_two_examples_per_step():
  config = smoke.get_config('clip')
  config.batch_size = 1
  assert any(p.startswith('config.batch_size = 1: must be an integer >= 2')
             for p in config_checks.pretrain_config_problems(config))


@pytest.mark.slow
def test_resumed_run_is_bit_identical(tmp_path):
  config = smoke.get_config('clip')
  config.data.data_dir = str(tmp_path / 'tfds')
  method_harness.assert_resume_is_bit_identical(config, tmp_path)


@pytest.mark.slow
def test_one_step_on_two_devices_is_the_step_on_one():
  # With IQ augmentations on: their per-example draws are the global batch's, as MTC's. Antenna dropout
  # off, as tests/test_parallel.py (an all-zero example's max-pool ties).
  report = method_harness.device_count_report('clip', {'augment.antenna_dropout': 0.0,
                                                       'augment.iq.common_phase': True,
                                                       'augment.iq.snr_db': [5.0, 20.0]})
  method_harness.assert_device_count_invariant(report)
