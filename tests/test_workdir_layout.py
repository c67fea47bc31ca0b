"""ssl_jax.workdir.layout: the file names of a workdir and its config.json, read back as written."""

import json
import os

import ml_collections
import pytest

from ssl_jax.workdir import layout


def test_the_names_of_a_workdir():
  paths = {'config': layout.config_path('/w'), 'checkpoints': layout.checkpoints_dir('/w'),
           'step': layout.checkpoint_dir('/w', 6), 'unreadable': layout.unreadable_checkpoints_dir('/w'),
           'metrics': layout.metrics_path('/w'), 'tensorboard': layout.tensorboard_dir('/w'),
           'lock': layout.lock_path('/w'), 'profile': layout.profile_dir('/w'), 'eval': layout.eval_results_path('/w')}
  assert paths == {'config': '/w/config.json', 'checkpoints': '/w/checkpoints', 'step': '/w/checkpoints/6',
                   'unreadable': '/w/unreadable_checkpoints', 'metrics': '/w/metrics.jsonl',
                   'tensorboard': '/w/tensorboard', 'lock': '/w/writer.lock', 'profile': '/w/profile',
                   'eval': '/w/eval/results.json'}


def test_config_reads_back_as_written_with_tuples(tmp_path):
  config = ml_collections.ConfigDict({'method': 'simclr', 'augment': {'crop_lengths': (32, 64)}, 'seed': 3})
  workdir = str(tmp_path / 'run')
  layout.write_config(workdir, config)
  assert sorted(os.listdir(workdir)) == ['config.json']  # No temporary file left behind.
  read = layout.read_config(workdir)
  assert read.to_dict() == config.to_dict() and read.augment.crop_lengths == (32, 64)
  with open(layout.config_path(workdir)) as f:
    assert json.load(f)['augment'] == {'crop_lengths': [32, 64]}


def test_a_directory_without_config_is_not_a_workdir(tmp_path):
  with pytest.raises(FileNotFoundError, match=r'config\.json does not exist: .* is not a pretraining workdir'):
    layout.read_config(str(tmp_path))
  assert layout.checkpoint_steps(str(tmp_path)) == []
  assert not os.path.exists(layout.checkpoints_dir(str(tmp_path)))  # Listing creates nothing.


def test_a_failed_json_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
  path = str(tmp_path / 'out.json')
  layout.write_json_atomic(path, {'a': 1})
  with pytest.raises(TypeError):
    layout.write_json_atomic(path, {'a': object()})
  assert os.listdir(tmp_path) == ['out.json']
  with open(path) as f:
    assert json.load(f) == {'a': 1}
