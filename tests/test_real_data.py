"""Real AoAM recordings at the default config (L = 1024): loading, bad files, and builds keyed by file content.

The input files are written here with plain h5py in the recordings' layout (see ssl_jax/data/validate.py),
independently of the simulator; expected model-layout arrays and AoA classes are computed here from that
layout's definition.
"""

import json
import logging
import os

import h5py
import numpy as np
import pytest

from configs import base
from ssl_jax.data import aoam
from ssl_jax.data import pipeline
from ssl_jax.data import real_files

GRID_DEG = np.arange(-70, 71, 10)


def recordings(n, length, seed):
  """A valid file's datasets: iq_data float32 (n, 4, 2, L), modulation int64 (n,), angles float32 (n, 2)."""
  rng = np.random.default_rng(seed)
  return {'iq_data': rng.standard_normal((n, 4, 2, length)).astype(np.float32),
          'modulation': rng.integers(0, 7, n).astype(np.int64),
          'angles': np.stack([rng.choice(GRID_DEG, n), rng.choice(GRID_DEG, n)], axis=1).astype(np.float32)}


def write_h5(path, datasets):
  with h5py.File(path, 'w') as f:
    for key, value in datasets.items():
      if value is not None:
        f[key] = value


def write_dir(directory, n_train, n_test, length=1024, seed=0):
  """train.h5 and test.h5 in `directory`; returns {split: datasets written}."""
  os.makedirs(directory, exist_ok=True)
  written = {'train': recordings(n_train, length, seed), 'test': recordings(n_test, length, seed + 1)}
  for split, datasets in written.items():
    write_h5(os.path.join(directory, f'{split}.h5'), datasets)
  return written


def real_config(tmp_path, manual_dir):
  """The default config.data (L = 1024), switched to the real files in manual_dir."""
  data = base.get_config().data
  assert data.length == 1024
  data.source = 'real'
  data.manual_dir = str(manual_dir)
  data.data_dir = str(tmp_path / 'tfds')
  return data


def read_back(data, split):
  """(iq (n, L, 8), labels) of a split through the input pipeline, in file order."""
  iq = np.concatenate([b['iq'] for b in pipeline.eval_batches(data, split, batch_size=4)])
  return iq, pipeline.load_labels(data, split)


def assert_reads(data, written):
  """Every split reads back exactly what was written, in the model layout, with the AoA classes of its angles."""
  for split, datasets in written.items():
    n, _, _, length = datasets['iq_data'].shape
    assert pipeline.num_examples(data, split) == n, split
    iq, labels = read_back(data, split)
    expected = np.stack([datasets['iq_data'][:, a, c, :] for a in range(4) for c in range(2)], axis=-1)
    assert iq.shape == (n, length, 8) and iq.dtype == np.float32
    np.testing.assert_array_equal(iq, expected)
    np.testing.assert_array_equal(labels['modulation'], datasets['modulation'])
    np.testing.assert_array_equal(labels['angles_deg'], datasets['angles'])
    az, el = ((datasets['angles'][:, i] + 70) / 10 for i in (0, 1))
    np.testing.assert_array_equal(labels['aoa'], (az * 15 + el).astype(np.int64))


def built_configs(data):
  """Names of the finished builds under data_dir/aoam."""
  root = os.path.join(data.data_dir, 'aoam')
  if not os.path.isdir(root):
    return []
  return sorted(name for name in os.listdir(root)
                if any(os.path.exists(os.path.join(root, name, v, 'dataset_info.json'))
                       for v in os.listdir(os.path.join(root, name))))


def test_default_configs_make_builders():
  """The default config (simulated or real, L = 1024) is not refused as a clash with a class-listed config."""
  data = base.get_config().data
  builder = aoam.Aoam(config=aoam.builder_config(data), data_dir=None)
  assert builder.builder_config.name == 'simulated_l1024_e200_t26_snr0to30_s0_static_recording'


def test_real_recordings_load_at_the_default_length(tmp_path):
  written = write_dir(tmp_path / 'recordings', n_train=9, n_test=5)
  data = real_config(tmp_path, tmp_path / 'recordings')
  assert_reads(data, written)
  batch = next(pipeline.pretrain_batches(data, batch_size=4, seed=0, process_index=0, process_count=1,
                                         num_local_devices=1))
  assert batch['iq'].shape == (4, 1024, 8)
  rows = {row.tobytes() for row in read_back(data, 'train')[0]}
  assert all(example.tobytes() in rows for example in batch['iq'])


def test_the_build_records_its_files(tmp_path):
  write_dir(tmp_path / 'recordings', n_train=9, n_test=5)
  data = real_config(tmp_path, tmp_path / 'recordings')
  builder = aoam.get_builder(data)
  real = real_files.inspect(data.manual_dir, 1024)
  assert builder.builder_config.name == f'real_l1024_{real.fingerprint}'
  with open(os.path.join(builder.data_path, 'metadata.json')) as f:
    recorded = json.load(f)
  assert recorded['digest'] == real.digest and recorded['manual_dir'] == data.manual_dir
  train = recorded['files']['train']
  path = os.path.join(data.manual_dir, 'train.h5')
  assert (train['path'], train['num_examples'], train['length']) == (path, 9, 1024)
  assert (train['size'], train['mtime_ns']) == (os.path.getsize(path), os.stat(path).st_mtime_ns)


def bad_layouts():
  """case -> (split, datasets to write for it, pattern the error must match besides the file's path)."""
  good = recordings(6, 1024, seed=3)
  cases = {
      'missing key': ({**good, 'angles': None}, r"missing dataset\(s\) \['angles'\]"),
      'iq rank': ({**good, 'iq_data': np.zeros((6, 8, 1024), np.float32)},
                  r'iq_data has shape \(6, 8, 1024\), expected \(n, 4, 2, L\)'),
      'antennas': ({**good, 'iq_data': np.zeros((6, 2, 2, 1024), np.float32)},
                   r'iq_data has shape \(6, 2, 2, 1024\), expected \(n, 4, 2, L\)'),
      'angles shape': ({**good, 'angles': np.zeros((6, 3), np.float32)}, r'angles has shape \(6, 3\)'),
      'iq dtype': ({**good, 'iq_data': np.zeros((6, 4, 2, 1024), np.int16)}, 'iq_data has dtype int16'),
      'modulation dtype': ({**good, 'modulation': good['modulation'].astype(np.float32)},
                           'modulation has dtype float32'),
      'counts': ({**good, 'modulation': good['modulation'][:5]}, 'example counts differ: iq_data 6, modulation 5'),
      'length': (recordings(6, 512, seed=3), r'length L = 512, the config asks for 1024'),
  }
  return {f'{split} {case}': (split, datasets, pattern) for split in ('train', 'test')
          for case, (datasets, pattern) in cases.items()}


BAD_LAYOUTS = bad_layouts()


@pytest.mark.parametrize('case', sorted(BAD_LAYOUTS))
def test_wrong_layout_is_a_clear_error_before_any_build(tmp_path, case):
  split, datasets, pattern = BAD_LAYOUTS[case]
  manual = tmp_path / 'recordings'
  write_dir(manual, n_train=6, n_test=6)
  write_h5(manual / f'{split}.h5', datasets)
  data = real_config(tmp_path, manual)
  with pytest.raises(ValueError, match=pattern) as error:
    pipeline.num_examples(data, 'train')
  assert str(manual / f'{split}.h5') in str(error.value)
  assert built_configs(data) == []


@pytest.mark.parametrize('missing', ['manual_dir unset', 'no such dir', 'empty dir', 'train.h5', 'test.h5'])
def test_missing_files_are_a_clear_error(tmp_path, missing):
  manual = tmp_path / 'recordings'
  if missing not in ('manual_dir unset', 'no such dir'):
    write_dir(manual, n_train=6, n_test=6)
  if missing == 'empty dir':
    for name in ('train.h5', 'test.h5'):
      os.remove(manual / name)
  elif missing.endswith('.h5'):
    os.remove(manual / missing)
  data = real_config(tmp_path, '' if missing == 'manual_dir unset' else manual)
  expected = {'manual_dir unset': 'config.data.manual_dir is empty',
              'no such dir': f"config.data.manual_dir = '{manual}': no such directory",
              'empty dir': f'{manual}/train.h5: file not found',
              'train.h5': f'{manual}/train.h5: file not found',
              'test.h5': f'{manual}/test.h5: file not found'}[missing]
  with pytest.raises(ValueError, match=expected.replace('.', r'\.')):
    pipeline.num_examples(data, 'train')
  assert built_configs(data) == []


def test_bad_values_are_a_clear_error_and_leave_no_build(tmp_path):
  manual = tmp_path / 'recordings'
  written = write_dir(manual, n_train=6, n_test=6)
  bad = dict(written['test'])
  bad['iq_data'] = bad['iq_data'].copy()
  bad['iq_data'][4, 2, 1, 700] = np.nan
  write_h5(manual / 'test.h5', bad)
  data = real_config(tmp_path, manual)
  with pytest.raises(ValueError, match=r'test\.h5: iq_data\[4\] contains NaN or Inf'):
    pipeline.num_examples(data, 'train')
  assert built_configs(data) == []
  write_h5(manual / 'test.h5', written['test'])  # Fixed: the next call builds from the good files.
  assert_reads(data, written)


def test_two_file_sets_in_one_data_dir_each_read_their_own(tmp_path):
  first = write_dir(tmp_path / 'a', n_train=9, n_test=5, seed=0)
  second = write_dir(tmp_path / 'b', n_train=14, n_test=7, seed=10)
  data_a, data_b = real_config(tmp_path, tmp_path / 'a'), real_config(tmp_path, tmp_path / 'b')
  assert data_a.data_dir == data_b.data_dir
  assert_reads(data_a, first)
  assert_reads(data_b, second)
  assert_reads(data_a, first)
  assert len(built_configs(data_a)) == 2


def test_files_rewritten_in_place_are_rebuilt(tmp_path):
  """Same directory, same counts and sizes, other content: the old shards are not read."""
  manual = tmp_path / 'recordings'
  data = real_config(tmp_path, manual)
  old = write_dir(manual, n_train=9, n_test=5, seed=0)
  assert_reads(data, old)
  new = write_dir(manual, n_train=9, n_test=5, seed=20)
  assert_reads(data, new)
  assert len(built_configs(data)) == 2


def test_fingerprint_follows_content_and_mtime(tmp_path):
  manual = tmp_path / 'recordings'
  written = write_dir(manual, n_train=200, n_test=5, length=64)
  path = str(manual / 'train.h5')
  fingerprint = lambda: real_files.inspect(str(manual), 64).digest
  before, stat = fingerprint(), os.stat(path)
  assert fingerprint() == before  # Deterministic.

  def rewrite(datasets, mtime_ns=stat.st_mtime_ns):
    write_h5(path, datasets)
    os.utime(path, ns=(stat.st_atime_ns, mtime_ns))
    return fingerprint()

  assert rewrite(written['train']) == before  # The same bytes and mtime: the same files.
  assert rewrite(written['train'], mtime_ns=stat.st_mtime_ns + 10**9) != before
  assert rewrite({**written['train'], 'modulation': (written['train']['modulation'] + 1) % 7}) != before
  angles = written['train']['angles'].copy()
  angles[123, 1] = -angles[123, 1] if angles[123, 1] else 10.0
  assert rewrite({**written['train'], 'angles': angles}) != before
  iq = written['train']['iq_data'].copy()
  iq[real_files._sample_rows(200)[5], 3, 0, 10] += 1.0
  assert rewrite({**written['train'], 'iq_data': iq}) != before
  assert rewrite(written['train']) == before


def test_a_build_recording_other_files_is_refused(tmp_path):
  write_dir(tmp_path / 'recordings', n_train=9, n_test=5)
  data = real_config(tmp_path, tmp_path / 'recordings')
  builder = aoam.get_builder(data)
  metadata = os.path.join(builder.data_path, 'metadata.json')
  with open(metadata) as f:
    recorded = json.load(f)
  recorded['digest'] = '0' * 32
  with open(metadata, 'w') as f:
    json.dump(recorded, f)
  with pytest.raises(ValueError, match=f'{builder.data_path}: these shards were built from other files.*delete'):
    aoam.get_builder(data)


def test_custom_config_warning_is_not_repeated(tmp_path, caplog):
  write_dir(tmp_path / 'recordings', n_train=9, n_test=5)
  data = real_config(tmp_path, tmp_path / 'recordings')
  caplog.set_level(logging.WARNING)
  for _ in range(3):
    pipeline.num_examples(data, 'train')
    aoam.Aoam(config=aoam.builder_config(base.get_config().data), data_dir=data.data_dir)
  assert not [r for r in caplog.records if 'Using custom data configuration' in r.getMessage()]
