"""TFDS builder `aoam` and HDF5 validation: caching, layout, real files, and every kind of bad file."""

import os
import subprocess
import sys

import h5py
import ml_collections
import numpy as np
import pytest

from ssl_jax.data import aoam
from ssl_jax.data import simulate
from ssl_jax.data import validate

LENGTH = 32


def data_config(tmp_path, **overrides):
  config = ml_collections.ConfigDict(dict(
      source='simulated', data_dir=str(tmp_path / 'tfds'), manual_dir='', length=LENGTH,
      examples_per_class=1, test_examples_per_class=1, snr_db_low=0.0, snr_db_high=30.0, sim_seed=0,
      prefetch=1))
  config.update(overrides)
  return config


def write_file(path, n=20, length=LENGTH, **replace):
  """A small valid AoAM file; `replace` swaps datasets (None removes one)."""
  rng = np.random.default_rng(0)
  aoa = rng.integers(0, 225, n)
  data = {'iq_data': rng.standard_normal((n, 4, 2, length)).astype(np.float32),
          'modulation': rng.integers(0, 7, n), 'angles': simulate.class_angles_deg(aoa)}
  data.update(replace)
  with h5py.File(path, 'w') as f:
    for key, value in data.items():
      if value is not None:
        f[key] = value
  return data


def test_simulated_config_name_encodes_parameters(tmp_path):
  a = aoam.builder_config(data_config(tmp_path))
  b = aoam.builder_config(data_config(tmp_path, snr_db_low=-5.0, sim_seed=3, environment='random',
                                      nuisances='example'))
  assert a.name == 'simulated_l32_e1_t1_snr0to30_s0_static_recording'
  assert b.name == 'simulated_l32_e1_t1_snrm5to30_s3_random_example'
  assert b.sim_config().environment == 'random' and b.sim_config().nuisances == 'example'
  with pytest.raises(ValueError, match="nuisances must be one of.*'session'"):
    aoam.builder_config(data_config(tmp_path, nuisances='session'))
  with pytest.raises(ValueError, match="environment must be one of.*'lab'"):
    aoam.builder_config(data_config(tmp_path, environment='lab'))


def test_builder_prepares_once_and_matches_simulator(tmp_path, monkeypatch):
  config = data_config(tmp_path)
  builder = aoam.get_builder(config)
  assert builder.info.splits['train'].num_examples == 225
  assert builder.info.splits['test'].num_examples == 225
  source = builder.as_data_source('test')
  example = source[7]
  assert example['iq'].shape == (LENGTH, 8) and example['iq'].dtype == np.float32
  expected = next(simulate.generate('test', 1, aoam.builder_config(config).sim_config(), 0))[1]
  np.testing.assert_array_equal(example['iq'], aoam.to_model_layout(expected['iq_data'][7:8])[0])
  assert example['aoa'] == 7 and example['modulation'] == 0
  np.testing.assert_array_equal(example['angles_deg'], expected['angles'][7])

  files = sorted((p, os.path.getmtime(p)) for p in
                 (os.path.join(d, f) for d, _, fs in os.walk(config.data_dir) for f in fs))
  monkeypatch.setattr(simulate, 'generate', lambda *a, **k: pytest.fail('regenerated the shards'))
  again = aoam.get_builder(config)
  assert again.info.splits['train'].num_examples == 225
  assert files == sorted((p, os.path.getmtime(p)) for p in
                         (os.path.join(d, f) for d, _, fs in os.walk(config.data_dir) for f in fs))


def test_model_layout_contract():
  iq = np.arange(2 * 4 * 2 * 3, dtype=np.float32).reshape(2, 4, 2, 3)
  out = aoam.to_model_layout(iq)
  assert out.shape == (2, 3, 8)
  np.testing.assert_array_equal(out[1, 2], [iq[1, a, c, 2] for a in range(4) for c in range(2)])


def test_real_config_reads_manual_dir(tmp_path):
  manual = tmp_path / 'manual'
  manual.mkdir()
  train = write_file(manual / 'train.h5', n=30)
  write_file(manual / 'test.h5', n=10)
  builder = aoam.get_builder(data_config(tmp_path, source='real', manual_dir=str(manual)))
  assert builder.builder_config.name == f'real_l{LENGTH}_{builder.builder_config.real.fingerprint}'
  source = builder.as_data_source('train')
  assert len(source) == 30
  np.testing.assert_array_equal(source[4]['iq'], aoam.to_model_layout(train['iq_data'][4:5])[0])
  assert source[4]['modulation'] == train['modulation'][4]


def test_real_config_names_missing_file(tmp_path):
  manual = tmp_path / 'manual'
  manual.mkdir()
  write_file(manual / 'train.h5')
  with pytest.raises(ValueError, match='test.h5: file not found'):
    aoam.get_builder(data_config(tmp_path, source='real', manual_dir=str(manual)))


def test_real_config_rejects_bad_file_before_writing(tmp_path):
  manual = tmp_path / 'manual'
  manual.mkdir()
  write_file(manual / 'train.h5', modulation=np.full(20, 9))
  write_file(manual / 'test.h5')
  with pytest.raises(ValueError, match=r'train.h5: modulation\[0\] = 9 is out of range'):
    aoam.get_builder(data_config(tmp_path, source='real', manual_dir=str(manual)))


BAD_FILES = {
    'missing key': (dict(angles=None), r'missing dataset\(s\) \[.angles.\]'),
    'wrong rank': (dict(iq_data=np.zeros((20, 8, LENGTH), np.float32)), r'iq_data has shape \(20, 8, 32\)'),
    'wrong antennas': (dict(iq_data=np.zeros((20, 3, 2, LENGTH), np.float32)), 'expected \\(n, 4, 2, L\\)'),
    'count mismatch': (dict(modulation=np.zeros(19, np.int64)), 'example counts differ'),
    'wrong dtype iq': (dict(iq_data=np.zeros((20, 4, 2, LENGTH), np.int16)), 'iq_data has dtype int16'),
    'wrong dtype labels': (dict(modulation=np.zeros(20, np.float32)), 'modulation has dtype float32'),
    'nan': (dict(iq_data=np.where(np.arange(20)[:, None, None, None] == 13, np.nan,
                                  np.ones((20, 4, 2, LENGTH), np.float32)).astype(np.float32)),
            r'iq_data\[13\] contains NaN or Inf'),
    'inf': (dict(iq_data=np.full((20, 4, 2, LENGTH), np.inf, np.float32)), r'iq_data\[0\] contains NaN'),
    'modulation range': (dict(modulation=np.full(20, -1)), r'modulation\[0\] = -1 is out of range'),
    'angle off grid': (dict(angles=np.full((20, 2), 15.0)), 'not on the AoA grid'),
    'angle out of range': (dict(angles=np.full((20, 2), 80.0)), 'not on the AoA grid'),
    'empty': (dict(iq_data=np.zeros((0, 4, 2, LENGTH), np.float32), modulation=np.zeros(0, np.int64),
                   angles=np.zeros((0, 2))), 'empty file'),
}


@pytest.mark.parametrize('case', sorted(BAD_FILES))
def test_bad_file_is_a_clear_error(tmp_path, case):
  replace, message = BAD_FILES[case]
  path = tmp_path / 'bad.h5'
  write_file(path, **replace)
  with pytest.raises(ValueError, match=message) as error:
    validate.validate_file(str(path))
  assert str(path) in str(error.value)


@pytest.mark.parametrize('damage', ['truncated', 'zero bytes', 'garbage', 'missing'])
def test_unreadable_file_is_a_clear_error(tmp_path, damage):
  path = tmp_path / 'bad.h5'
  if damage != 'missing':
    write_file(path, n=200)
    size = os.path.getsize(path)
    with open(path, 'r+b') as f:
      if damage == 'truncated':
        f.truncate(size // 2)
      elif damage == 'zero bytes':
        f.truncate(0)
      else:
        f.write(b'not an hdf5 file' * 8)
  with pytest.raises(ValueError, match='truncated or corrupt|file not found') as error:
    validate.validate_file(str(path))
  assert str(path) in str(error.value)


def test_wrong_length_names_the_config_key(tmp_path):
  path = tmp_path / 'f.h5'
  write_file(path)
  with pytest.raises(ValueError, match='config.data.length = 32'):
    validate.validate_file(str(path), length=64)


def test_validate_cli_exit_status(tmp_path):
  good, bad = tmp_path / 'good.h5', tmp_path / 'bad.h5'
  write_file(good)
  write_file(bad, modulation=np.full(20, 7))
  run = lambda p: subprocess.run([sys.executable, '-m', 'ssl_jax.data.validate', str(p)],
                                 capture_output=True, text=True, check=False)
  assert run(good).returncode == 0
  done = run(bad)
  assert done.returncode != 0 and 'bad.h5' in done.stderr and 'modulation' in done.stderr
