"""The label-preserving IQ augmentations in pretraining (`config.augment.iq`): off by default, where the views
are bit-identical to MTC + AD alone; each key, switched on, transforms every view after MTC and AD as its
function specifies; the train step of every method reads them; bad values are named; older runs resume."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base, smoke
from ssl_jax import augment, config_checks, methods
from ssl_jax.workdir import resume
import method_harness  # tests/method_harness.py


def _complex(view):
  view = np.asarray(view, np.float64)
  return view[..., 0::2] + 1j * view[..., 1::2]  # (batch, time, antenna)


def _policy(**iq):
  config = smoke.get_config('simclr')
  for key, value in iq.items():
    config.augment.iq[key] = value
  return augment.AugmentPolicy.from_config(config.augment)


def _example(batch=12, time=128, seed=0):
  return jax.random.normal(jax.random.key(seed), (batch, time, 8)) + 0.5  # no zero sample


def test_default_config_switches_none_on_and_makes_the_mtc_ad_views_bit_for_bit():
  for config in (base.get_config(), smoke.get_config('simclr')):
    policy = augment.AugmentPolicy.from_config(config.augment)
    assert policy.iq == augment.IQAugmentations() and not policy.iq.any_enabled
  x, key = _example(), jax.random.key(3)
  policy = augment.AugmentPolicy.from_config(smoke.get_config('simclr').augment)
  crop_key, dropout_key = jax.random.split(key)  # MTC then AD, as views were made without IQ augmentations
  want = augment.antenna_dropout(dropout_key, augment.random_crop(crop_key, x, 64), policy.antenna_dropout)
  np.testing.assert_array_equal(np.asarray(augment.make_view(x, policy=policy, length=64, example_key=key)),
                                np.asarray(want))


def _per_example_factor(got, ref):
  """c with got = c * ref per sample (complex), `(batch, time, antenna)`; NaN where ref is 0 (dropped)."""
  with np.errstate(invalid='ignore', divide='ignore'):
    return _complex(got) / _complex(ref)


@pytest.mark.parametrize('iq', [dict(common_phase=True), dict(rotate_90=True), dict(max_frequency_shift=0.1),
                                dict(cyclic_shift=True), dict(snr_db=(5.0, 10.0))])
@pytest.mark.parametrize('enabled', [True, False])
def test_each_augmentation_transforms_the_mtc_ad_view_as_specified(iq, enabled):
  x, key, length = _example(), jax.random.key(7), 96
  plain, policy = _policy(), _policy(**iq)
  plain, policy = (augment.AugmentPolicy(p.crop_lengths, p.antenna_dropout, enabled, p.iq) for p in (plain, policy))
  ref = np.asarray(augment.make_view(x, policy=plain, length=length, example_key=key))
  got = np.asarray(augment.make_view(x, policy=policy, length=length, example_key=key))
  assert got.shape == ref.shape == ((12, length, 8) if enabled else x.shape)
  assert not np.array_equal(got, ref)
  kept = np.abs(_complex(ref)) > 0  # antennas AD dropped stay zero under every augmentation
  np.testing.assert_array_equal(np.abs(_complex(got)) > 0 if 'snr_db' not in iq else kept, kept)
  if 'common_phase' in iq or 'rotate_90' in iq or 'max_frequency_shift' in iq:
    factor = _per_example_factor(got, ref)
    np.testing.assert_allclose(np.abs(factor[kept]), 1.0, rtol=1e-5)  # a pure rotation of every sample
    # One factor per (example, time) for all kept antennas: the AoA's phase differences are kept.
    first = np.take_along_axis(factor, np.argmax(kept, axis=2)[..., None], axis=2)
    np.testing.assert_allclose(np.where(kept, factor, first), np.broadcast_to(first, factor.shape), atol=2e-5)
    if 'common_phase' in iq:  # constant over time as well
      np.testing.assert_allclose(first, np.broadcast_to(first[:, :1], first.shape), atol=2e-5)
    if 'rotate_90' in iq:  # one of 1, j, -1, -j, exactly
      assert np.all(np.min(np.abs(first[..., None] - np.array([1, 1j, -1, -1j])), axis=-1) < 1e-6)
    if 'max_frequency_shift' in iq:  # e^{j 2 pi f t}, |f| <= 0.1 cycles per sample
      step = np.angle(first[:, 1:, 0] / first[:, :-1, 0]) / (2 * np.pi)
      np.testing.assert_allclose(step, np.broadcast_to(step[:, :1], step.shape), atol=1e-4)
      assert np.all(np.abs(step) <= 0.1 + 1e-5) and np.std(step[:, 0]) > 0.01
  if 'cyclic_shift' in iq:  # each example a roll in time of its MTC + AD view
    for g, r in zip(got, ref):
      assert any(np.array_equal(g, np.roll(r, d, axis=0)) for d in range(r.shape[0]))
  if 'snr_db' in iq:  # noise power P / 10^(s/10) with s in [5, 10] dB, P the view's own power
    noise = got.astype(np.float64) - ref
    snr = 10 * np.log10(np.mean(ref.astype(np.float64) ** 2, axis=(1, 2)) / np.mean(noise ** 2, axis=(1, 2)))
    # >= 768 noise values per example: the estimate is within 0.25 of the drawn power, ~1 dB (5 sigma).
    assert np.all(snr > 5.0 - 1.0) and np.all(snr < 10.0 + 1.0), snr


def test_views_a_and_b_draw_their_iq_augmentations_independently():
  x = _example()
  policy = _policy(common_phase=True)
  (_, key_a), (_, key_b) = augment.view_keys(jax.random.key(5))
  plain = _policy()
  phases = [np.angle(_per_example_factor(augment.make_view(x, policy=policy, length=64, example_key=k),
                                         augment.make_view(x, policy=plain, length=64, example_key=k))[:, 0, 0])
            for k in (key_a, key_b)]
  assert not np.allclose(phases[0], phases[1])


def test_the_step_makes_its_views_with_the_iq_augmentations():
  """SimCLR without MTC and AD: both views are the example (positive cosine 1) until an IQ augmentation is on."""
  similarity = {}
  for name, iq in (('off', {}), ('common_phase', {'common_phase': True})):
    config = smoke.get_config('simclr')
    config.augment.enabled = False
    config.augment.iq.update(iq)
    state, step = method_harness.one_device(config)
    _, metrics = step(state, method_harness.batch(config))
    similarity[name] = float(metrics['positive_similarity'])
  assert similarity['off'] == pytest.approx(1.0, abs=1e-5)
  assert similarity['common_phase'] < 0.99


@pytest.mark.slow
@pytest.mark.parametrize('method', sorted(methods.METHODS))
def test_every_method_reads_the_iq_augmentations(method):
  losses = {}
  for name, iq in (('off', {}), ('on', {'rotate_90': True, 'snr_db': (0.0, 5.0)})):
    config = smoke.get_config(method)
    config.augment.iq.update(iq)
    state, step = method_harness.one_device(config)
    _, metrics = step(state, method_harness.batch(config))
    losses[name] = float(metrics['loss'])
  assert np.isfinite(losses['on']) and losses['on'] != losses['off']


@pytest.mark.parametrize('overrides, expected', [
    ({'cyclic_shift': 1}, 'config.augment.iq.cyclic_shift = 1: must be True or False'),
    ({'rotate_90': 'yes'}, "config.augment.iq.rotate_90 = 'yes': must be True or False"),
    ({'common_phase': None}, 'config.augment.iq.common_phase = None: must be True or False'),
    ({'max_frequency_shift': 0.6}, 'config.augment.iq.max_frequency_shift = 0.6: must be a finite number in [0, 0.5]'),
    ({'max_frequency_shift': -0.1}, 'config.augment.iq.max_frequency_shift = -0.1'),
    ({'snr_db': (10.0, 5.0)}, 'config.augment.iq.snr_db = (10.0, 5.0): must be () (no added noise) or a (low, high)'),
    ({'snr_db': (5.0,)}, 'config.augment.iq.snr_db = (5.0,)'),
    ({'snr_db': (0.0, float('inf'))}, 'config.augment.iq.snr_db = (0.0, inf)'),
])
def test_bad_iq_values_are_named(overrides, expected):
  config = smoke.get_config('simclr').to_dict()  # a plain dict takes values of any type, as a config file can
  config['augment']['iq'].update(overrides)
  problems = config_checks.pretrain_config_problems(config)
  assert any(p.startswith(expected) for p in problems), problems


def test_good_iq_values_pass_the_checks():
  config = smoke.get_config('simclr')
  config.augment.iq.update({'cyclic_shift': True, 'rotate_90': True, 'common_phase': True,
                            'max_frequency_shift': 0.5, 'snr_db': (-5, 20.0)})
  assert config_checks.pretrain_config_problems(config) == []
  augment.AugmentPolicy.from_config(config.augment)


def test_a_run_stored_before_the_iq_keys_resumes_with_them_off_only():
  saved = json.loads(smoke.get_config('simclr').to_json_best_effort())
  del saved['augment']['iq']
  assert resume.differences(saved, smoke.get_config('simclr')) == []
  config = smoke.get_config('simclr')
  config.augment.iq.snr_db = (0.0, 10.0)
  (change,) = resume.differences(saved, config)
  assert change.key == 'augment.iq.snr_db' and change.kind == resume.RUN
