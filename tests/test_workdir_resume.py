"""Resuming a workdir with another config (ssl_jax.workdir.resume): what is refused, what is applied on purpose
and recorded, and a run asked for fewer steps than it has done."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import smoke
from ssl_jax import methods, optim, train
from ssl_jax.methods import common
from ssl_jax.workdir import checkpoints, layout, metrics, resume


def _config(**overrides):
  config = smoke.get_config('simclr')
  config.update_from_flattened_dict(overrides)
  return config


def test_differences_are_classified():
  old = _config()
  new = _config(**{'batch_size': 32, 'data.length': 128, 'num_train_steps': 10, 'log_every_steps': 1,
                   'data.data_dir': '/elsewhere', 'distributed.process_id': 0})
  kinds = {c.key: c.kind for c in resume.differences(old, new)}
  assert kinds == {'batch_size': resume.RUN, 'data.length': resume.RUN,
                   'num_train_steps': resume.ON_PURPOSE, 'log_every_steps': resume.FREE,
                   'data.data_dir': resume.FREE}


def test_keys_neither_config_reads_are_ignored():
  # num_epochs is not read while num_train_steps fixes the length; manual_dir not for simulated data.
  assert resume.differences(_config(), _config(**{'num_epochs': 7, 'data.manual_dir': '/x'})) == []
  # A key the stored config lacks (written by an older version) counts as a difference.
  saved = json.loads(_config().to_json_best_effort())
  del saved['model']['projection_norm']
  (change,) = resume.differences(saved, _config())
  assert str(change) == 'config.model.projection_norm: <absent> -> "none"' and change.kind == resume.RUN



def test_a_config_written_before_the_layout_keys_resumes_as_the_layout_it_trained():
  """A stored config without the layout keys ran `models.LEGACY_LAYOUT`: resumed with those values, nothing
  differs; with another layout, every key that differs is named."""
  from ssl_jax import models
  assert {k: resume.ABSENT_MEANS[f'model.{k}'] for k in models.LAYOUT_KEYS} == models.LEGACY_LAYOUT
  saved = json.loads(_config().to_json_best_effort())
  for key in models.LAYOUT_KEYS:
    del saved['model'][key]
  assert resume.differences(saved, _config(**{f'model.{k}': v for k, v in models.LEGACY_LAYOUT.items()})) == []
  changed = resume.differences(saved, _config(**{'model.stem_stride': 1, 'model.unit_downsample': 'pool'}))
  assert [str(c) for c in changed] == ['config.model.stem_stride: 2 -> 1',
                                       'config.model.unit_downsample: "stride" -> "pool"']

def test_refusal_names_every_key_old_and_new():
  new = _config(**{'batch_size': 32, 'data.length': 128, 'num_train_steps': 10})
  with pytest.raises(resume.ResumeError) as info:
    resume.check_resume(_config(), new, workdir='/runs/a')
  message = str(info.value)
  assert "'/runs/a' holds a run with other settings (/runs/a/config.json)" in message
  for line in ('config.batch_size: 16 -> 32', 'config.data.length: 64 -> 128', 'config.num_train_steps: 6 -> 10',
               '--config.allow_resume_changes=num_train_steps'):
    assert line in message


def test_a_longer_run_is_applied_only_on_purpose():
  with pytest.raises(resume.ResumeError, match='allow_resume_changes=num_train_steps'):
    resume.check_resume(_config(), _config(num_train_steps=10), workdir='/w')
  applied = resume.check_resume(_config(), _config(num_train_steps=10, allow_resume_changes='num_train_steps'),
                                       workdir='/w')
  assert {c.key: (c.old, c.new) for c in applied} == {'num_train_steps': (6, 10),
                                                      'allow_resume_changes': ('', 'num_train_steps')}
  # Allowing one key does not allow the others.
  with pytest.raises(resume.ResumeError, match='config.batch_size: 16 -> 32'):
    resume.check_resume(_config(), _config(num_train_steps=10, batch_size=32,
                                                  allow_resume_changes='num_train_steps'), workdir='/w')


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def _stored_run(data_dir, tmp_path, step=4):
  """A workdir as a 4-step run leaves it: config.json and a checkpoint at `step` (of an untrained state)."""
  config = _config(**{'num_train_steps': 4, 'checkpoint_every_steps': 2, 'data.data_dir': data_dir})
  workdir = str(tmp_path / 'run')
  layout.write_config(workdir, config)
  module = methods.get_method(config.method)
  networks = module.create_networks(config, bn_axis_name=None)
  tx = optim.create_optimizer(config.optim, lambda s: 0.0)
  state = module.init_state(config, networks, tx, jax.random.PRNGKey(0)).replace(step=jnp.asarray(step, jnp.int32))
  checkpointer = checkpoints.Checkpointer(workdir)
  checkpointer.save(step, state)
  checkpointer.close()
  return workdir, config


@pytest.mark.parametrize('key, value, shown', [
    ('batch_size', 32, 'config.batch_size: 16 -> 32'),
    ('data.length', 128, 'config.data.length: 64 -> 128'),
    ('num_train_steps', 8, 'config.num_train_steps: 4 -> 8'),
])
def test_resume_with_changed_settings_is_refused_before_the_data_is_built(tmp_path, key, value, shown):
  data_dir = str(tmp_path / 'tfds')
  workdir, stored = _stored_run(data_dir, tmp_path)
  config = stored.copy_and_resolve_references()
  node = config
  *path, last = key.split('.')
  for part in path:
    node = node[part]
  node[last] = value
  with pytest.raises(resume.ResumeError, match=shown):
    train.pretrain(config, workdir)
  assert not os.path.exists(os.path.join(data_dir, 'aoam'))  # Refused before any data was simulated.
  assert layout.read_config(workdir).to_dict() == stored.to_dict()  # Nothing rewritten.


def test_fewer_steps_than_done_is_refused(data_dir, tmp_path):
  workdir, config = _stored_run(data_dir, tmp_path)
  config.num_train_steps = 2
  config.allow_resume_changes = 'num_train_steps'
  with pytest.raises(resume.ResumeError, match='holds a checkpoint at step 4, past the 2 steps'):
    train.pretrain(config, workdir)
  assert layout.read_config(workdir).num_train_steps == 4


@pytest.mark.slow  # Trains 8 smoke steps (two compiles).
def test_longer_run_on_purpose_follows_the_new_schedule_and_is_recorded(data_dir, tmp_path):
  config = _config(**{'num_train_steps': 4, 'checkpoint_every_steps': 2, 'data.data_dir': data_dir})
  workdir = str(tmp_path / 'run')
  train.pretrain(config, workdir)
  config.num_train_steps = 8
  with pytest.raises(resume.ResumeError, match='allow_resume_changes=num_train_steps'):
    train.pretrain(config, workdir)
  config.allow_resume_changes = 'num_train_steps'
  summary = train.pretrain(config, workdir)
  assert summary['start_step'] == 4 and summary['final_step'] == 8

  with open(layout.config_path(workdir)) as f:
    stored = json.load(f)
  assert stored['num_train_steps'] == 8
  assert stored['config_changes'] == [
      {'step': 4, 'key': 'allow_resume_changes', 'old': '', 'new': 'num_train_steps'},
      {'step': 4, 'key': 'num_train_steps', 'old': 4, 'new': 8}]
  rows = metrics.read_metrics(workdir)
  (change,) = [r for r in rows if 'config_change/num_train_steps' in r]
  assert change == {'step': 4, 'config_change/num_train_steps': 8.0, 'config_change/num_train_steps/previous': 4.0}

  # Steps 5..8 took the 8-step schedule's learning rate at their index (the logged lr is the one step s used).
  steps_per_epoch = max(2 * 225 // config.batch_size, 1)
  schedule = optim.learning_rate_schedule(config.optim, batch_size=config.batch_size,
                                          steps_per_epoch=steps_per_epoch,
                                          total_steps=common.total_steps(config, steps_per_epoch))
  late = [row for row in rows if row['step'] > 4 and 'learning_rate' in row]
  assert late
  for row in late:
    np.testing.assert_allclose(row['learning_rate'], float(schedule(row['step'] - 1)), rtol=1e-6)

  # The next resume compares against the recorded config: the same settings resume as they are.
  config.allow_resume_changes = ''
  train.pretrain(config, workdir)
  with open(layout.config_path(workdir)) as f:
    assert len(json.load(f)['config_changes']) == 3  # Only allow_resume_changes went back to ''.
