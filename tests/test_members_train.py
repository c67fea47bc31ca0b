"""Member runs through the whole loop: metrics per member, exact resume, frozen divergent members, the read
side (encoders, evaluation, the torch export), and the workdir and config checks."""

import os
import shutil

import jax
import numpy as np
import pytest

from configs import probe as probe_configs, smoke
from ssl_jax import encoders, evaluate, members, train
from ssl_jax.workdir import checkpoints, metrics, resume

pytestmark = pytest.mark.slow  # every test here pretrains (20 s to minutes each on 2 shared cores)

TWO = dict(count=2, temperature=(0.1, 0.2))


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def _config(method, data_dir, **member_values):
  config = smoke.get_config(method)
  config.data.data_dir = data_dir
  for key, value in member_values.items():
    config.members[key] = value
  return config


def _leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(state)]


def _tensorboard_tags(workdir):
  import glob
  import tensorflow as tf
  tags = set()
  for path in glob.glob(os.path.join(workdir, 'tensorboard', '*tfevents*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      tags |= {value.tag for value in event.summary.value}
  return tags


@pytest.fixture(scope='module')
def moco_run(data_dir, tmp_path_factory):
  """A 2-member MoCo smoke run (temperatures and per-member data order differ), straight to the end."""
  config = _config('moco', data_dir, data_order='member', momentum=(0.99, 0.996), **TWO)
  workdir = str(tmp_path_factory.mktemp('moco_members'))
  return config, workdir, train.pretrain(config, workdir)


def test_member_run_logs_each_member(moco_run):
  config, workdir, summary = moco_run
  assert summary['final_step'] == 6 and summary['alive'] == [True, True]
  records = metrics.read_metrics(workdir)
  assert [(r['step'], r['member']) for r in records] == [(s, m) for s in (2, 4, 6) for m in (0, 1)]
  assert all(np.isfinite(r['loss']) for r in records)
  assert records[-1]['loss'] != records[-2]['loss']  # two members, two trajectories
  assert {'loss/member_0', 'loss/member_1'} <= _tensorboard_tags(workdir)


def test_member_run_resumes_bit_exactly(moco_run, tmp_path):
  config, straight, _ = moco_run
  resumed = str(tmp_path / 'resumed')
  train.pretrain(config, resumed)
  shutil.rmtree(os.path.join(resumed, 'checkpoints', '6'))
  summary = train.pretrain(config, resumed)
  assert summary['start_step'] == 4 and summary['final_step'] == 6
  for m in (0, 1):
    a, b = encoders.load_run(straight, member=m).state, encoders.load_run(resumed, member=m).state
    for x, y in zip(_leaves(a), _leaves(b)):
      np.testing.assert_array_equal(x, y)
  assert [(r['step'], r['member']) for r in metrics.read_metrics(resumed)] == [
      (s, m) for s in (2, 4, 6) for m in (0, 1)]


def test_encoders_read_one_member_with_its_config(moco_run):
  config, workdir, _ = moco_run
  first, second = encoders.load_encoder(workdir, member=0), encoders.load_encoder(workdir, member=1)
  assert (first.config.temperature, second.config.temperature) == (0.1, 0.2)
  assert second.config.moco.momentum == 0.996 and second.config.members.count == 1
  assert any(not np.array_equal(x, y) for x, y in zip(_leaves(first.variables), _leaves(second.variables)))
  with pytest.raises(ValueError, match=r'has 2 members .*member=0\.\.1'):
    encoders.load_encoder(workdir)
  with pytest.raises(ValueError, match=r'member=2 is not a member'):
    encoders.load_encoder(workdir, member=2)


def test_torch_export_of_one_member(moco_run):
  from experiments.torch_baseline import convert
  _, workdir, _ = moco_run
  _, state_dict = convert.workdir_to_state_dict(workdir, member=1)
  back = convert.encoder_to_flax(state_dict)
  want = encoders.load_encoder(workdir, member=1).variables
  for x, y in zip(_leaves(back['params']), _leaves(want['params'])):
    np.testing.assert_array_equal(x, y)


def test_evaluate_probes_every_member_with_a_confidence_interval(moco_run):
  _, workdir, _ = moco_run
  probe_config = probe_configs.get_config('scale=smoke')
  probe_config.random_init = False
  probe_config.supervised.enabled = False
  results = evaluate.run(workdir, probe_config, seed=0)
  assert results['num_members'] == 2 and [m['member'] for m in results['members']] == [0, 1]
  assert [m['settings']['temperature'] for m in results['members']] == [0.1, 0.2]
  per_member = [m['pretrained']['tasks']['aoa']['probe']['1']['accuracy']['mean'] for m in results['members']]
  summary = results['pretrained']['tasks']['aoa']['probe']['1']['accuracy']
  assert summary['values'] == per_member and summary['mean'] == pytest.approx(np.mean(per_member))
  low, high = summary['ci95']
  assert low <= summary['mean'] <= high
  # t(0.975, 1) = 12.706: the half width of two members is 12.706 * |a - b| / 2.
  assert high - summary['mean'] == pytest.approx(12.706 * abs(per_member[0] - per_member[1]) / 2, rel=1e-3)


def test_a_diverged_member_is_frozen_and_the_others_go_on(data_dir, tmp_path, capsys):
  config = _config('simclr', data_dir, count=2, learning_rate=(0.01, 1e30))
  summary = train.pretrain(config, str(tmp_path / 'run'))
  assert summary['alive'] == [True, False] and summary['final_step'] == 6
  assert 'WARNING: member 1 diverged' in capsys.readouterr().out
  state = encoders.load_run(str(tmp_path / 'run'), member=1).state
  assert checkpoints.all_finite(state)  # frozen at its last finite state
  assert int(state.step) < 6 and int(encoders.load_run(str(tmp_path / 'run'), member=0).state.step) == 6
  rows = metrics.read_metrics(str(tmp_path / 'run'))
  assert [r['alive'] for r in rows if r['member'] == 1] == [0.0]  # reported once, then no more rows


def test_every_member_diverging_stops_the_run(data_dir, tmp_path):
  config = _config('simclr', data_dir, count=2, learning_rate=(1e30, 1e31))
  with pytest.raises(train.NonFiniteLossError, match='every member diverged'):
    train.pretrain(config, str(tmp_path / 'run'))


def test_one_member_is_the_plain_run_bit_for_bit(data_dir, tmp_path):
  listed = _config('simclr', data_dir, count=1, temperature=(0.3,), seed=(4,))
  plain = _config('simclr', data_dir)
  plain.temperature, plain.seed = 0.3, 4
  train.pretrain(listed, str(tmp_path / 'listed'))
  train.pretrain(plain, str(tmp_path / 'plain'))
  for x, y in zip(_leaves(encoders.load_run(str(tmp_path / 'listed')).state),
                  _leaves(encoders.load_run(str(tmp_path / 'plain')).state)):
    np.testing.assert_array_equal(x, y)


def test_a_workdir_of_another_member_list_is_refused(moco_run):
  config, workdir, _ = moco_run
  other = _config('moco', os.path.dirname(workdir), data_order='member', momentum=(0.99, 0.996), count=2,
                  temperature=(0.1, 0.3))
  other.data.data_dir = config.data.data_dir
  with pytest.raises(resume.ResumeError, match=r'config\.members\.temperature: \[0\.1, 0\.2\] -> \[0\.1, 0\.3\]'):
    resume.check_workdir_resume(workdir, other)
  other.members.temperature, other.members.count = (0.1, 0.2, 0.3), 3
  other.members.momentum = (0.99, 0.996, 0.999)
  with pytest.raises(resume.ResumeError, match=r'config\.members\.count: 2 -> 3'):
    resume.check_workdir_resume(workdir, other)


@pytest.mark.slow
@pytest.mark.parametrize('method', ['moco_v3', 'memory_bank', 'fifo_bank', 'mochi', 'swav', 'clip', 'dcl'])
def test_every_method_trains_as_members(method, data_dir, tmp_path):
  config = _config(method, data_dir, count=2, temperature=(0.1, 0.2))
  config.num_train_steps = 2
  summary = train.pretrain(config, str(tmp_path / 'run'))
  assert summary['alive'] == [True, True] and summary['final_losses'][0] != summary['final_losses'][1]
