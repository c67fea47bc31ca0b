"""experiments/study.py on real AoAM files (`--data real --manual_dir DIR`), written here with plain h5py."""

import json
import os
import re

import h5py
import numpy as np
import pytest

from experiments import study

GRID_DEG = np.arange(-70, 71, 10)


def write_recordings(directory, per_class, length, seed, **replace):
  """DIR/train.h5 and DIR/test.h5 with `per_class` = (train, test) examples of each of the 225 AoA classes.

  `replace` swaps a dataset of train.h5 (None removes it).
  """
  os.makedirs(directory, exist_ok=True)
  rng = np.random.default_rng(seed)
  for split, n_per_class in zip(('train', 'test'), per_class):
    aoa = np.repeat(np.arange(225), n_per_class)
    datasets = {'iq_data': rng.standard_normal((len(aoa), 4, 2, length)).astype(np.float32),
                'modulation': rng.integers(0, 7, len(aoa)).astype(np.int64),
                'angles': np.stack([GRID_DEG[aoa // 15], GRID_DEG[aoa % 15]], axis=1).astype(np.float32)}
    if split == 'train':
      datasets.update(replace)
    with h5py.File(os.path.join(directory, f'{split}.h5'), 'w') as f:
      for key, value in datasets.items():
        if value is not None:
          f[key] = value


@pytest.mark.slow
def test_smoke_study_on_real_files(tmp_path):
  manual = str(tmp_path / 'recordings')
  write_recordings(manual, per_class=(2, 1), length=64, seed=0)
  out = str(tmp_path / 'study')
  results = study.run_study('smoke', out, data_source='real', manual_dir=manual)
  assert results['data']['source'] == 'real' and results['data']['num_examples'] == {'train': 450, 'test': 225}
  with open(os.path.join(out, 'results.json')) as f:
    saved = json.load(f)
  assert set(saved['runs']) == {'simclr_aug', 'moco_aug', 'simclr_noaug', 'moco_noaug', 'random_init',
                                'supervised'}
  for run in ('simclr_aug', 'moco_aug', 'simclr_noaug', 'moco_noaug'):
    data = saved['runs'][run]['config']['data']
    assert (data['source'], data['manual_dir']) == ('real', manual), run
    assert saved['runs'][run]['pretrain']['final_step'] == 6
  # Every run, probe and baseline read the real files: the only build in the data dir is theirs.
  assert os.listdir(os.path.join(out, 'tfds', 'aoam')) == [results['data']['tfds_config']]
  assert results['data']['tfds_config'].startswith('real_l64_')
  report = open(os.path.join(out, 'report.md')).read()
  assert f'Data: real AoAM recordings from `{manual}` (450 train and 225 test examples of length 64' in report
  assert report.count('| SimCLR |') == 6


BAD = {
    'length': (dict(length=128), r'train\.h5: examples of length 128; the smoke scale runs length 64 '
                                 r'\(scales: smoke 64, demo 128, cpu 128, full 1024\)'),
    'missing key': (dict(modulation=None), r"train\.h5: missing dataset\(s\) \['modulation'\]"),
    'wrong shape': (dict(iq_data=np.zeros((450, 4, 64), np.float32)),
                    r'train\.h5: iq_data has shape \(450, 4, 64\), expected \(n, 4, 2, L\)'),
    'wrong dtype': (dict(iq_data=np.zeros((450, 4, 2, 64), np.int16)), r'train\.h5: iq_data has dtype int16'),
    'bad value': (dict(modulation=np.full(450, 7)), r'train\.h5: modulation\[0\] = 7 is out of range'),
}


@pytest.mark.parametrize('case', sorted(BAD))
def test_unusable_files_stop_the_study_before_training(tmp_path, case, capsys):
  overrides, message = dict(BAD[case][0]), BAD[case][1]
  length = overrides.pop('length', 64)
  manual = str(tmp_path / 'recordings')
  write_recordings(manual, per_class=(2, 1), length=length, seed=0, **overrides)
  out = str(tmp_path / 'study')
  code = study.main(['--scale', 'smoke', '--out', out, '--data', 'real', '--manual_dir', manual])
  error = capsys.readouterr().err.strip().splitlines()[-1]  # (TFDS progress bars may come before it)
  assert code == 2
  assert error.startswith(f'[study] error: --data real --manual_dir {manual}: {manual}/'), error
  assert re.search(message, error), error
  assert not os.path.exists(os.path.join(out, 'runs'))


@pytest.mark.parametrize('argv, message', [
    (['--data', 'real'], '--data real needs --manual_dir'),
    (['--manual_dir', '/somewhere'], '--manual_dir /somewhere is read only with --data real'),
])
def test_data_flags_are_checked(tmp_path, argv, message, capsys):
  with pytest.raises(SystemExit) as exit_info:
    study.main(['--scale', 'smoke', '--out', str(tmp_path / 'study')] + argv)
  assert exit_info.value.code == 2 and message in capsys.readouterr().err
  with pytest.raises(ValueError, match='--data must be one of'):
    study.run_study('smoke', str(tmp_path / 'study'), data_source='recorded')
