"""Simulator: determinism, layout, labels, and evidence the physics is right (classical estimators work)."""

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from ssl_jax.data import simulate

MOD = {name: i for i, name in enumerate(simulate.MODULATIONS)}


def _chunk(config, per_class=1, seed=0, split='train'):
  chunks = list(simulate.generate(split, per_class, config, seed))
  return np.concatenate([c['iq_data'] for _, c in chunks]), chunks


def test_same_seed_same_bytes_and_splits_independent():
  config = simulate.SimConfig(length=64)
  a, _ = _chunk(config, seed=3)
  b, _ = _chunk(config, seed=3)
  c, _ = _chunk(config, seed=4)
  t, _ = _chunk(config, seed=3, split='test')
  assert a.tobytes() == b.tobytes()
  assert not np.allclose(a, c) and not np.allclose(a, t)


def test_any_range_gives_the_same_examples():
  config = simulate.SimConfig(length=32)
  per_class = 10  # 2,250 examples: spans two chunks
  full = np.concatenate([c['iq_data'] for _, c in simulate.generate('train', per_class, config, 0)])
  first, part = next(simulate.generate('train', per_class, config, 0, start=2040, stop=2060))
  assert first == 2040
  np.testing.assert_array_equal(part['iq_data'], full[2040:2048])


def test_labels_balanced_and_on_grid():
  aoa, modulation = simulate.label_schedule(0, 26 * 225)
  assert np.all(np.bincount(aoa, minlength=225) == 26)
  counts = np.bincount(modulation, minlength=7)
  assert counts.max() - counts.min() <= 1
  for c in range(225):  # each AoA class sees every modulation (to within one)
    per = np.bincount(modulation[aoa == c], minlength=7)
    assert per.max() - per.min() <= 1
  angles = simulate.class_angles_deg(np.arange(225))
  np.testing.assert_array_equal(simulate.aoa_class(angles[:, 0], angles[:, 1]), np.arange(225))
  assert angles[16].tolist() == [-60.0, -60.0]  # class 16 = az index 1 * 15 + el index 1


def test_unit_power_finite_float32():
  iq, _ = _chunk(simulate.SimConfig(length=128))
  assert iq.dtype == np.float32 and iq.shape == (225, 4, 2, 128)
  assert np.isfinite(iq).all()
  np.testing.assert_allclose(np.sum(iq ** 2, axis=(1, 2)).mean(axis=-1) / 4, 1.0, rtol=1e-4)


def test_all_225_steering_vectors_distinct():
  angles = simulate.class_angles_deg(np.arange(225))
  a = simulate.steering_vector(angles[:, 0], angles[:, 1]).astype(np.complex128)
  similarity = np.abs(a.conj() @ a.T) ** 2 / 16
  np.fill_diagonal(similarity, 0)
  assert similarity.max() < 1 - 1e-4  # no two directions share a response (no mirror ambiguity)


def _bartlett_classes(iq, receiver):
  """Beamformer scan over the 225 grid directions with the calibrated array -> argmax class (n,)."""
  y = iq[:, :, 0].astype(np.complex128) + 1j * iq[:, :, 1]
  cov = np.einsum('nat,nbt->nab', y, y.conj())
  angles = simulate.class_angles_deg(np.arange(225))
  a = simulate.steering_vector(angles[:, 0], angles[:, 1]) * receiver.gains  # (225, 4)
  a = a / np.linalg.norm(a, axis=1, keepdims=True)
  power = np.einsum('ca,nab,cb->nc', a.conj(), cov, a).real
  return power.argmax(axis=1)


@pytest.mark.parametrize('iq_imbalance', [False, True])
def test_beamformer_scan_recovers_aoa_at_high_snr(iq_imbalance):
  config = simulate.SimConfig(length=256, snr_db_low=30, snr_db_high=30, num_reflections=0,
                              iq_imbalance=iq_imbalance)
  aoa, modulation = simulate.label_schedule(0, 2 * 225)
  iq = simulate.simulate_examples(np.random.default_rng(0), aoa, modulation, config)
  accuracy = np.mean(_bartlett_classes(iq, simulate.make_receiver(config)) == aoa)
  assert accuracy >= 0.98, accuracy


def test_beamformer_with_random_multipath_mostly_right_and_errors_are_neighbours():
  config = simulate.SimConfig(length=256, snr_db_low=30, snr_db_high=30, environment='random')
  aoa, modulation = simulate.label_schedule(0, 2 * 225)
  iq = simulate.simulate_examples(np.random.default_rng(1), aoa, modulation, config)
  predicted = _bartlett_classes(iq, simulate.make_receiver(config))
  assert np.mean(predicted == aoa) >= 0.5
  error_deg = np.abs(simulate.class_angles_deg(predicted) - simulate.class_angles_deg(aoa))
  assert np.median(error_deg.max(axis=1)) <= 10.0


def _covariance_features(iq):
  y = iq[:, :, 0].astype(np.complex128) + 1j * iq[:, :, 1]
  cov = np.einsum('nat,nbt->nab', y, y.conj()) / y.shape[-1]
  upper = np.triu_indices(4)
  return np.concatenate([cov[:, upper[0], upper[1]].real, cov[:, upper[0], upper[1]].imag], axis=1)


def _nearest_centroid_accuracy(environment):
  config = simulate.SimConfig(length=128, snr_db_low=20, snr_db_high=30, environment=environment)
  train, test = (simulate.simulate_examples(np.random.default_rng(seed), *simulate.label_schedule(0, n), config)
                 for seed, n in ((0, 8 * 225), (1, 2 * 225)))
  centroids = _covariance_features(train).reshape(8, 225, -1).mean(axis=0)
  test_x = _covariance_features(test)
  predicted = np.argmin(((test_x[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
  return np.mean(predicted == simulate.label_schedule(0, 2 * 225)[0])


def test_static_room_gives_each_position_one_multipath_signature():
  """The same position sees the same reflections: covariance centroids classify AoA far better than in
  a room whose reflections change with every example."""
  static, random = _nearest_centroid_accuracy('static'), _nearest_centroid_accuracy('random')
  assert static >= 0.9, static
  assert static > random + 0.2, (static, random)


def test_static_room_is_fixed_by_its_seed():
  config = simulate.SimConfig(length=64)
  room = simulate.static_environment(config)
  assert room['az'].shape == (225, config.num_reflections)
  assert np.array_equal(room['delay'], simulate.static_environment(simulate.SimConfig(length=128))['delay'])
  other = simulate.static_environment(simulate.SimConfig(length=64, environment_seed=2))
  assert not np.allclose(room['az'], other['az'])
  with pytest.raises(ValueError, match='environment'):
    simulate.SimConfig(environment='lab')


def test_recording_nuisances_are_fixed_per_recording_and_redrawn_per_example_otherwise():
  """'recording': the slices of one (position, modulation) session share SNR and carrier offset, the
  transmitter's program (sps, roll-off) is one per modulation; 'example' redraws all of them."""
  aoa, modulation = simulate.label_schedule(0, 3 * 1575)  # every recording three times
  recording = np.asarray(aoa) * 7 + np.asarray(modulation)
  draws = {}
  for scope in simulate.NUISANCE_SCOPES:
    config = simulate.SimConfig(length=64, nuisances=scope)
    _, draws[scope] = simulate.simulate_examples(np.random.default_rng(0), aoa, modulation, config,
                                                 return_info=True)
  fixed, free = draws['recording'], draws['example']
  for key in ('snr_db', 'cfo', 'sps', 'rolloff'):
    distinct = [len(np.unique(fixed[key][recording == r])) for r in range(0, 1575, 97)]
    assert distinct == [1] * len(distinct), key
    assert len(np.unique(free[key][recording == 5])) > 1, key
  for m in range(7):
    assert len(np.unique(fixed['sps'][np.asarray(modulation) == m])) == 1
  table = simulate.recordings(simulate.SimConfig(length=64))
  assert table['snr_db'].shape == (225, 7) and 0 <= table['snr_db'].min() and table['snr_db'].max() <= 30
  assert np.all(table['snr_db'] == table['snr_db'][:, :1]) and np.std(table['snr_db'][:, 0]) > 5  # per position
  assert 0 < np.ptp(table['cfo']) <= 2 * simulate.SimConfig.cfo_drift  # one LO, a small drift per session
  other = simulate.recordings(simulate.SimConfig(length=64, recording_seed=4))
  assert not np.allclose(table['cfo'], other['cfo'])
  with pytest.raises(ValueError, match='nuisances'):
    simulate.SimConfig(nuisances='session')
  with pytest.raises(ValueError, match='cfo_drift'):
    simulate.SimConfig(cfo_drift=0.02)


def test_measured_snr_matches_drawn_snr():
  """Eigenvalues of the array covariance: signal + noise in one, noise alone in the other three."""
  config = simulate.SimConfig(length=512, snr_db_low=0, snr_db_high=20, num_reflections=0)
  aoa, modulation = simulate.label_schedule(0, 300)
  iq, info = simulate.simulate_examples(np.random.default_rng(2), aoa, modulation, config, return_info=True)
  y = iq[:, :, 0].astype(np.complex128) + 1j * iq[:, :, 1]
  eig = np.linalg.eigvalsh(np.einsum('nat,nbt->nab', y, y.conj()) / 512)
  noise = eig[:, :3].mean(axis=1)
  snr_db = 10 * np.log10((eig[:, 3] - noise) / (4 * noise))
  assert np.median(np.abs(snr_db - info['snr_db'])) < 0.5


def _fit_error(r, points):
  return np.mean(np.min(np.abs(r[:, None] - points[None]) ** 2, axis=1))


def _classify_waveform(z, sps, rolloff):
  """A rule on hand-crafted statistics of the beamformed signal z (L,) -> modulation id."""
  length = len(z)
  power = np.sum(np.abs(z) ** 2)
  carrier_fraction = np.max(np.abs(np.fft.fft(z, 8 * length)) ** 2) / (length * power)  # spectral peakiness
  if carrier_fraction > 0.5:
    envelope = np.abs(z) ** 2
    return MOD['cw'] if envelope.var() / envelope.mean() ** 2 < 0.02 else MOD['sine']
  realness = np.max(np.abs(np.fft.fft(z ** 2, 8 * length))) / power  # 1 for real constellations (|C20| = 1)
  # Matched filter (RRC -> raised cosine), symbol timing by maximum energy, then amplitude levels.
  matched = np.fft.ifft(np.fft.fft(z) * simulate.rrc_frequency_response(length, sps, rolloff))
  timing = np.argmax([np.sum(np.abs(matched[t::sps]) ** 2) for t in range(sps)])
  r = matched[timing::sps]
  order = 2 if realness > 0.5 else 4
  spectrum = np.fft.fft(r ** order, 8192)
  peak = np.argmax(np.abs(spectrum))
  # E[r^2] > 0 for real constellations, E[r^4] < 0 for square QAM (C40 = -1, -0.68, -0.62): undo that sign.
  sign_phase = 0.0 if order == 2 else np.pi
  phase = (2 * np.pi * np.fft.fftfreq(8192)[peak] * np.arange(len(r)) + np.angle(spectrum[peak]) - sign_phase) / order
  r = r * np.exp(-1j * phase)
  r = r / np.sqrt(np.mean(np.abs(r) ** 2))
  candidates = ('bpsk', 'pam4') if order == 2 else ('qpsk', 'qam16', 'qam64')
  errors = [_fit_error(r, np.unique(simulate.CONSTELLATIONS[MOD[c]])) for c in candidates]
  return MOD[candidates[int(np.argmin(errors))]]


def test_waveforms_told_apart_by_simple_statistics():
  config = simulate.SimConfig(length=512, snr_db_low=30, snr_db_high=30, num_reflections=0)
  aoa, modulation = simulate.label_schedule(0, 280)
  receiver = simulate.make_receiver(config)
  iq, info = simulate.simulate_examples(np.random.default_rng(3), aoa, modulation, config, receiver,
                                        return_info=True)
  y = iq[:, :, 0] + 1j * iq[:, :, 1]
  angles = simulate.class_angles_deg(aoa)
  weights = simulate.steering_vector(angles[:, 0], angles[:, 1]) * receiver.gains
  z = np.einsum('na,nat->nt', weights.conj(), y)
  predicted = np.array([_classify_waveform(z[i], info['sps'][i], info['rolloff'][i]) for i in range(len(z))])
  accuracy = np.mean(predicted == modulation)
  per_class = [np.mean(predicted[modulation == m] == m) for m in range(7)]
  assert accuracy >= 0.95, (accuracy, per_class)


def test_bad_arguments():
  with pytest.raises(ValueError, match='snr_db_low'):
    simulate.SimConfig(snr_db_low=10, snr_db_high=0)
  with pytest.raises(ValueError, match='examples_per_class'):
    next(simulate.generate('train', 0, simulate.SimConfig(length=32), 0))
  with pytest.raises(ValueError, match='split'):
    next(simulate.generate('val', 1, simulate.SimConfig(length=32), 0))
  with pytest.raises(ValueError, match='aoa'):
    simulate.simulate_examples(np.random.default_rng(0), [225], [0], simulate.SimConfig(length=32))


def test_write_hdf5_layout_and_atomic(tmp_path):
  path = tmp_path / 'test.h5'
  config = simulate.SimConfig(length=32)
  simulate.write_hdf5(str(path), 'test', 1, config, seed=5)
  assert os.listdir(tmp_path) == ['test.h5']  # no temp file left behind
  with h5py.File(path) as f:
    assert f['iq_data'].shape == (225, 4, 2, 32) and f['iq_data'].dtype == np.float32
    assert f['modulation'].shape == (225,) and np.issubdtype(f['modulation'].dtype, np.integer)
    assert f['angles'].shape == (225, 2)
    assert [s.decode() if isinstance(s, bytes) else s for s in f.attrs['modulation_classes']] == list(
        simulate.MODULATIONS)
    iq = f['iq_data'][:]
  expected, _ = _chunk(config, seed=5, split='test')
  np.testing.assert_array_equal(iq, expected)


def test_write_hdf5_failure_leaves_no_file(tmp_path, monkeypatch):
  def boom(*args, **kwargs):
    raise RuntimeError('crash mid-write')
    yield  # pylint: disable=unreachable

  monkeypatch.setattr(simulate, 'generate', boom)
  with pytest.raises(RuntimeError):
    simulate.write_hdf5(str(tmp_path / 'x.h5'), 'train', 1, simulate.SimConfig(length=32), 0)
  assert os.listdir(tmp_path) == []


def test_cli(tmp_path):
  out = tmp_path / 'cli.h5'
  cmd = [sys.executable, '-m', 'ssl_jax.data.simulate', '--out', str(out), '--examples_per_class', '1',
         '--length', '32', '--seed', '1', '--split', 'test']
  done = subprocess.run(cmd, capture_output=True, text=True, check=False)
  assert done.returncode == 0, done.stderr
  with h5py.File(out) as f:
    assert f['iq_data'].shape == (225, 4, 2, 32)
    assert f.attrs['sim_nuisances'] == 'recording' and f.attrs['sim_environment'] == 'static'
  other = subprocess.run(cmd + ['--nuisances', 'example', '--environment', 'random', '--out', str(out)],
                         capture_output=True, text=True, check=False)
  assert other.returncode == 0, other.stderr
  with h5py.File(out) as f:
    assert f.attrs['sim_nuisances'] == 'example' and f.attrs['sim_environment'] == 'random'
  bad = subprocess.run(cmd[:-4] + ['--length', '4'], capture_output=True, text=True, check=False)
  assert bad.returncode != 0 and 'length' in bad.stderr
