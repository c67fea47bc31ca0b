"""The evaluation launcher on a fake pretraining workdir (written with the engine's checkpoint API)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import probe as probe_config_lib
from configs import smoke
from ssl_jax import encoders, evaluate, evaluation, methods, optim
from ssl_jax.evaluation import metrics, summary
from ssl_jax.workdir import checkpoints, layout

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_workdir(tmp_path, method='simclr'):
  """A workdir holding config.json and one checkpoint of an untrained state (no training step run)."""
  config = smoke.get_config(method)
  config.data.data_dir = str(tmp_path / 'tfds')
  workdir = str(tmp_path / 'run')
  layout.write_config(workdir, config)
  module = methods.get_method(config.method)
  networks = module.create_networks(config, bn_axis_name=None)
  tx = optim.create_optimizer(config.optim, lambda step: 0.0)
  state = module.init_state(config, networks, tx, jax.random.PRNGKey(0))
  checkpointer = checkpoints.Checkpointer(workdir)
  checkpointer.save(3, state)
  checkpointer.close()
  return workdir, config


def array_data(length, per_class_train=2, per_class_test=2):
  rng = np.random.default_rng(0)

  def split(per_class):
    aoa = np.repeat(np.arange(225), per_class).astype(np.int32)
    return {'iq': rng.normal(size=(aoa.size, length, 8)).astype(np.float32), 'aoa': aoa,
            'modulation': (aoa % 7).astype(np.int32),
            'angles_deg': metrics.aoa_class_to_angles_deg(aoa).astype(np.float32)}
  return evaluation.ArrayData({'train': split(per_class_train), 'test': split(per_class_test)})


def tiny_probe_config():
  config = probe_config_lib.get_config()
  config.budgets = (1,)
  config.num_seeds = 2
  config.embed_batch_size = 128
  config.probe.num_steps = 5
  config.heads.aoa.hidden_dim = 8
  return config


def test_run_writes_results_json(tmp_path):
  workdir, config = make_workdir(tmp_path)
  results = evaluate.run(workdir, tiny_probe_config(), seed=0, data=array_data(config.data.length))
  path = layout.eval_results_path(workdir)
  assert path == os.path.join(workdir, 'eval', 'results.json')
  with open(path) as f:
    on_disk = json.load(f)
  assert on_disk == json.loads(json.dumps(results, sort_keys=True))
  assert os.listdir(os.path.dirname(path)) == ['results.json']  # No temporary file left behind.
  assert on_disk['method'] == 'simclr' and on_disk['step'] == 3
  assert on_disk['probe_config']['budgets'] == [1]
  for name in ('pretrained', 'random_init'):
    assert set(on_disk[name]['tasks']) == {'aoa', 'amc'}
    assert len(on_disk[name]['tasks']['amc']['probe']['1']['accuracy']['values']) == 2
  assert 'supervised' not in on_disk


def test_cli_without_checkpoint_fails_clearly(tmp_path):
  empty = tmp_path / 'empty'
  empty.mkdir()
  proc = subprocess.run([sys.executable, '-m', 'ssl_jax.evaluate', f'--workdir={empty}'], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert 'not a pretraining workdir' in proc.stderr
  assert not (empty / 'eval').exists()


@pytest.mark.slow
def test_cli_end_to_end_on_the_smoke_data(tmp_path):
  """The real path: load_encoder, the aoam builder (generated into tmp), the pipeline, JSON out."""
  workdir, _ = make_workdir(tmp_path, method='moco')
  proc = subprocess.run(
      [sys.executable, '-m', 'ssl_jax.evaluate', f'--workdir={workdir}', '--probe_config.budgets=1',
       '--probe_config.num_seeds=1', '--probe_config.probe.num_steps=3', '--probe_config.random_init=false',
       '--probe_config.embed_batch_size=64'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip().endswith(os.path.join('eval', 'results.json'))
  with open(layout.eval_results_path(workdir)) as f:
    results = json.load(f)
  table = summary.summary_table(results)  # The table, then the path: the end of stdout.
  assert table[0] == 'linear probes on the test split: moco at step 3'
  assert [line.split()[:2] for line in table[2:-1]] == [['AoA', '1'], ['AMC', '1']]
  assert proc.stdout.splitlines()[-len(table) - 1:] == table + [layout.eval_results_path(workdir)]
  assert results['method'] == 'moco'
  assert results['pretrained']['num_test'] == 225  # smoke: 1 test example per AoA class
  assert results['pretrained']['tasks']['aoa']['silhouette'] is None  # undefined at 1 per class
  assert 'random_init' not in results


def _workdir_with_steps(tmp_path, steps):
  """config.json and checkpoints at `steps` of an untrained smoke SimCLR state (keep: all of them)."""
  config = smoke.get_config('simclr')
  config.data.data_dir = str(tmp_path / 'tfds')
  workdir = str(tmp_path / 'run')
  layout.write_config(workdir, config)
  module = methods.get_method(config.method)
  networks = module.create_networks(config, bn_axis_name=None)
  state = module.init_state(config, networks, optim.create_optimizer(config.optim, lambda step: 0.0),
                            jax.random.PRNGKey(0))
  checkpointer = checkpoints.Checkpointer(workdir, keep=0)
  for step in steps:
    checkpointer.save(step, state.replace(step=step))
  checkpointer.close()
  return workdir


def _damage(workdir, step):
  """Truncates the data files of a finalized step (as a disk that filled up, or a partial copy, would)."""
  data = os.path.join(workdir, 'checkpoints', str(step), 'default', 'd')
  for name in os.listdir(data):
    with open(os.path.join(data, name), 'r+b') as f:
      f.truncate(10)


def test_missing_step_is_named_with_the_steps_there(tmp_path):
  workdir = _workdir_with_steps(tmp_path, [4, 6])
  with pytest.raises(FileNotFoundError, match=rf'no step 99 in {workdir} \(have 4, 6\)'):
    encoders.load_encoder(workdir, 99)
  assert encoders.load_encoder(workdir, 4).step == 4


def test_cli_missing_step_is_one_line(tmp_path):
  workdir = _workdir_with_steps(tmp_path, [4, 6])
  proc = subprocess.run([sys.executable, '-m', 'ssl_jax.evaluate', f'--workdir={workdir}', '--step=99'],
                        cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1
  assert proc.stderr.strip() == f"error: no step 99 under {os.path.join(workdir, 'checkpoints')} (have 4, 6)"


def test_unreadable_latest_falls_back_to_the_newest_good_step(tmp_path, caplog):
  workdir = _workdir_with_steps(tmp_path, [4, 6])
  _damage(workdir, 6)
  loaded = encoders.load_encoder(workdir)
  assert loaded.step == 4
  assert any('checkpoints/6 is unreadable, using step 4' in r.getMessage() for r in caplog.records)
  with pytest.raises(checkpoints.UnreadableCheckpointError, match='checkpoints/6 cannot be restored'):
    encoders.load_encoder(workdir, 6)  # Asked for by name: an error, no substitute.
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', '6'))  # The reader moves nothing.
  _damage(workdir, 4)
  with pytest.raises(checkpoints.UnreadableCheckpointError, match='step 6: .*; step 4: '):
    encoders.load_encoder(workdir)


def test_reader_sees_only_finalized_steps_and_leaves_a_save_in_progress_alone(tmp_path):
  from ssl_jax.workdir import lock
  workdir = _workdir_with_steps(tmp_path, [4])
  in_progress = os.path.join(workdir, 'checkpoints', '8.orbax-checkpoint-tmp-1234')
  os.makedirs(in_progress)
  with lock.WorkdirLock(workdir):  # A run writing there holds the lock; the reader takes none.
    assert encoders.load_encoder(workdir).step == 4
  assert os.path.isdir(in_progress)  # A writing manager would clean it up; the reader does not.


def test_cli_unreadable_step_is_one_line(tmp_path):
  workdir = _workdir_with_steps(tmp_path, [4, 6])
  _damage(workdir, 6)
  proc = subprocess.run([sys.executable, '-m', 'ssl_jax.evaluate', f'--workdir={workdir}', '--step=6'],
                        cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1
  assert proc.stderr.startswith(f'error: checkpoint {workdir}/checkpoints/6 cannot be restored'), proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr  # No traceback, no 'Event loop is closed'.
  assert 'is not valid for value of size 10' in proc.stderr  # The cause: the truncated file.
