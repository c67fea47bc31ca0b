"""Label-preserving IQ augmentations: their invariants, exactness and statistics.

Error bounds (float32, ε its epsilon). A rotation `i' = c i - s q, q' = s i + c q` with cos/sin accurate to
4ε (XLA's float32 sin/cos on arguments of at most a few hundred radians) moves each output by at most
(2ε · 2 + 4ε · 2)|z| <= 12ε|z| (|i|, |q| <= |z|), so a product z'_a conj(z'_b) differs from z_a conj(z_b)
by at most (2 · 12 + 2)ε |z_a||z_b| (the last term: |c|² + |s|² = 1 ± 2·4ε). Sums over time are formed in
float64 here, so the spatial covariance R_ab = Σ_t z_a conj(z_b) is invariant to 26ε Σ_t |z_a||z_b|.
Statistical checks use 6 standard errors of the stated law.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import augment

EPS32 = float(np.finfo(np.float32).eps)


def _complex(x):
  x = np.asarray(x, np.float64)
  return x[..., 0::2] + 1j * x[..., 1::2]  # (batch, time, 4)


def _covariance(z):
  return np.einsum('bta,btc->bac', z, np.conj(z))


def _covariance_bound(z):
  mag = np.abs(z)
  return 26 * EPS32 * np.einsum('bta,btc->bac', mag, mag)


def _signal(seed, batch=32, time=64):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(batch, time, 8)) * 10.0**rng.uniform(-2, 2, size=(batch, 1, 1))
  return x.astype(np.float32)


def test_common_phase_rotation_is_one_rotation_per_example_and_keeps_covariance():
  x = _signal(0, batch=2000, time=16)
  y = jax.jit(augment.common_phase_rotation)(jax.random.key(1), x)
  assert y.shape == x.shape and y.dtype == x.dtype
  z, w = _complex(x), _complex(y)
  theta = np.angle(np.einsum('bta,bta->b', w, np.conj(z)))  # the example's rotation
  want = z * np.exp(1j * theta)[:, None, None]
  assert np.all(np.abs(w - want) <= 12 * EPS32 * np.abs(z) + 1e-30)
  assert np.all(np.abs(_covariance(w) - _covariance(z)) <= _covariance_bound(z))
  # theta ~ U[0, 2 pi): E e^{j theta} = 0 and E e^{2 j theta} = 0 (each component has variance 1/2).
  for harmonic in (1, 2):
    mean = np.mean(np.exp(1j * harmonic * theta))
    assert abs(mean.real) < 6 * np.sqrt(0.5 / len(theta)) and abs(mean.imag) < 6 * np.sqrt(0.5 / len(theta))


def test_a_per_antenna_phase_change_breaks_the_covariance_check():
  """The invariant above is not vacuous: different phases per antenna change R's phases (and the AoA)."""
  x = _signal(2)
  z = _complex(x)
  per_antenna = z * np.exp(1j * np.array([0.0, 0.3, 0.6, 0.9]))[None, None, :]
  assert np.any(np.abs(_covariance(per_antenna) - _covariance(z)) > 1e3 * _covariance_bound(z))


def test_carrier_frequency_shift_is_linear_phase_and_keeps_covariance():
  max_shift, time = 0.1, 64
  x = _signal(3, batch=1500, time=time)
  y = jax.jit(lambda k, x: augment.carrier_frequency_shift(k, x, max_shift))(jax.random.key(4), x)
  z, w = _complex(x), _complex(y)
  mag = np.abs(z)  # every per-time product z_a(t) conj(z_b(t)) is kept, not only their sums
  product_error = np.abs(np.einsum('bta,btc->btac', w, np.conj(w)) - np.einsum('bta,btc->btac', z, np.conj(z)))
  assert np.all(product_error <= 26 * EPS32 * np.einsum('bta,btc->btac', mag, mag))
  assert np.all(np.abs(_covariance(w) - _covariance(z)) <= _covariance_bound(z))
  # Phase of the example at time t: angle of Σ_a w_a conj(z_a); its increments are one constant 2 pi f.
  phase = np.einsum('bta,bta->bt', w, np.conj(z))
  increments = np.angle(phase[:, 1:] * np.conj(phase[:, :-1]))
  freq = increments.mean(axis=1) / (2 * np.pi)
  # Each phase is off by <= 12ε (rotation) + 2 pi |f| t · 2ε (the float32 product f·t): increments by twice.
  increment_error = 2 * (12 * EPS32 + 2 * np.pi * max_shift * time * 2 * EPS32)
  assert np.all(np.abs(increments - 2 * np.pi * freq[:, None]) <= increment_error)
  assert np.all(np.abs(freq) <= max_shift + increment_error)
  # f ~ U[-max, max]: mean 0, variance max² / 3.
  n = len(freq)
  assert abs(freq.mean()) < 6 * max_shift / np.sqrt(3 * n)
  assert abs(np.mean(freq**2) - max_shift**2 / 3) < 6 * np.sqrt(4 / 45 * max_shift**4 / n)
  assert augment.carrier_frequency_shift(jax.random.key(0), x, 0.0) is x


def test_noise_reaches_the_target_snr():
  """Per example the added noise power over M = time · 8 real values is P 10^(-s/10) χ²_M / M: relative
  standard deviation sqrt(2/M) per example, sqrt(2/(M B)) for the mean over B examples."""
  batch, time = 256, 256
  x = _signal(5, batch=batch, time=time)
  m = time * 8
  y = jax.jit(lambda k, x: augment.add_noise_to_snr(k, x, (10.0, 10.0)))(jax.random.key(6), x)
  assert y.dtype == x.dtype
  power = np.mean(np.asarray(x, np.float64)**2, axis=(1, 2))
  noise = np.asarray(y, np.float64) - np.asarray(x, np.float64)
  ratio = np.mean(noise**2, axis=(1, 2)) / (power * 10.0**-1.0)
  assert np.all(np.abs(ratio - 1) < 6 * np.sqrt(2 / m)), ratio
  assert abs(ratio.mean() - 1) < 6 * np.sqrt(2 / (m * batch))
  # White: every channel and both I and Q carry the same share (normalised noise variance 1 per channel).
  normalised = noise / np.sqrt(power * 10.0**-1.0)[:, None, None]
  np.testing.assert_allclose(np.mean(normalised**2, axis=(0, 1)), 1.0, atol=6 * np.sqrt(2 / (batch * time)))
  # A range: the per-example SNRs are uniform in [0, 20] dB (spread of the estimate: 10 log10(e) sqrt(2/M)).
  y = jax.jit(lambda k, x: augment.add_noise_to_snr(k, x, (0.0, 20.0)))(jax.random.key(7), x)
  snr = 10 * np.log10(power / np.mean((np.asarray(y, np.float64) - np.asarray(x, np.float64))**2, axis=(1, 2)))
  spread = 10 * np.log10(np.e) * np.sqrt(2 / m)
  assert snr.min() > -6 * spread and snr.max() < 20 + 6 * spread
  assert abs(snr.mean() - 10) < 6 * np.sqrt((400 / 12 + spread**2) / batch)
  zero = np.zeros((2, 8, 8), np.float32)
  np.testing.assert_array_equal(np.asarray(augment.add_noise_to_snr(jax.random.key(8), zero, (0.0, 5.0))), zero)


def test_cyclic_time_shift_is_an_exact_roll_with_uniform_shifts():
  batch, time = 8000, 8
  x = (np.arange(time)[None, :, None] + 100 * np.arange(8)[None, None, :] + 1000 * np.arange(batch)[:, None, None])
  x = x.astype(np.float32)
  y = np.asarray(jax.jit(augment.cyclic_time_shift)(jax.random.key(9), x))
  shifts = (-(y[:, 0, 0] - x[:, 0, 0]).astype(int)) % time
  np.testing.assert_array_equal(y, np.stack([np.roll(x[b], shifts[b], axis=0) for b in range(batch)]))
  counts = np.bincount(shifts, minlength=time)
  p = 1 / time
  assert np.all(np.abs(counts - batch * p) < 6 * np.sqrt(batch * p * (1 - p))), counts


def test_rotate_iq_90_is_exact_with_uniform_quadrants():
  batch = 8000
  x = _signal(10, batch=batch, time=4)
  y = np.asarray(jax.jit(augment.rotate_iq_90)(jax.random.key(11), x))
  z, w = _complex(x), _complex(y)
  k = np.full(batch, -1)
  for quadrant in range(4):
    exact = np.all(w == z * 1j**quadrant, axis=(1, 2))  # bitwise: products by ±1, ±j are exact
    k[exact] = quadrant
  assert np.all(k >= 0), 'every example must be one exact rotation'
  counts = np.bincount(k, minlength=4)
  assert np.all(np.abs(counts - batch / 4) < 6 * np.sqrt(batch * 0.25 * 0.75)), counts


def test_default_augmentations_are_identity_and_all_on_keeps_shape_and_covariance():
  x = _signal(12)
  key = jax.random.key(13)
  assert not augment.IQAugmentations().any_enabled
  assert augment.IQAugmentations(rotate_90=True).any_enabled
  np.testing.assert_array_equal(np.asarray(augment.iq_augment(key, x, augment.IQAugmentations())), x)
  aoa_safe = augment.IQAugmentations(cyclic_shift=True, rotate_90=True, common_phase=True, max_frequency_shift=0.05)
  y = jax.jit(lambda k, x: augment.iq_augment(k, x, aoa_safe))(key, x)
  assert y.shape == x.shape and y.dtype == x.dtype
  z = _complex(x)
  # Two rotations (the 90° one is exact): twice the bound; the roll only reorders the sum over time.
  assert np.all(np.abs(_covariance(_complex(y)) - _covariance(z)) <= 2 * _covariance_bound(z))
  noisy = augment.iq_augment(key, x, augment.IQAugmentations(snr_db=(5.0, 5.0)))
  assert not np.array_equal(np.asarray(noisy), x)


def test_gradients_flow_through_the_augmentations():
  x = _signal(14, batch=4, time=8)
  on = augment.IQAugmentations(cyclic_shift=True, rotate_90=True, common_phase=True, max_frequency_shift=0.05,
                               snr_db=(10.0, 20.0))
  grad = jax.jit(jax.grad(lambda x: jnp.sum(augment.iq_augment(jax.random.key(0), x, on)**2)))(x)
  assert np.all(np.isfinite(grad)) and np.any(grad)


_X = np.zeros((2, 8, 8), np.float32)


@pytest.mark.parametrize('call, match', [
    (lambda: augment.carrier_frequency_shift(jax.random.key(0), _X, 0.6), r'max_cycles_per_sample.*0\.6'),
    (lambda: augment.add_noise_to_snr(jax.random.key(0), _X, (10.0, 0.0)), r'snr_db.*low <= high'),
    (lambda: augment.add_noise_to_snr(jax.random.key(0), _X, (float('nan'), 1.0)), r'snr_db'),
    (lambda: augment.add_noise_to_snr(jax.random.key(0), _X, 'loud'), r'snr_db.*pair'),
    (lambda: augment.rotate_iq_90(jax.random.key(0), np.zeros((2, 8, 6), np.float32)), r'x.*\(2, 8, 6\)'),
    (lambda: augment.IQAugmentations(max_frequency_shift=1.0), r'max_frequency_shift.*1\.0'),
    (lambda: augment.IQAugmentations(snr_db=(3.0,)), r'snr_db'),
    (lambda: augment.IQAugmentations(common_phase=1), r'common_phase.*bool'),
])
def test_bad_input_raises(call, match):
  with pytest.raises(ValueError, match=match):
    call()
