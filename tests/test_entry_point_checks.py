"""Bad input at every entry point (issue 17's probe list): a message that names the key, path or step, a
non-zero exit, no traceback, nothing written. CLIs run as subprocesses where the exit code and the output
are the point; library entry points are called in-process."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import smoke
from ssl_jax import evaluate, evaluation, methods, optim
from ssl_jax.data import simulate, validate
from ssl_jax.evaluation import metrics
from ssl_jax.workdir import checkpoints, layout

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, timeout=300):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=timeout)


def _main(*args):
  return _run(['-m', 'ssl_jax.main', *args])


def _assert_message(proc, *expected):
  assert proc.returncode != 0, proc.stdout[-2000:]
  assert 'Traceback' not in proc.stderr, proc.stderr[-4000:]
  for text in expected:
    assert text in proc.stderr, proc.stderr[-4000:]


def _workdir(tmp_path, config=None, name='run', step=3):
  """A workdir holding config.json and one checkpoint of an untrained state (no training step run)."""
  if config is None:
    config = smoke.get_config('simclr')
    config.data.data_dir = str(tmp_path / 'tfds')
  workdir = str(tmp_path / name)
  layout.write_config(workdir, config)
  module = methods.get_method(config.method)
  networks = module.create_networks(config, bn_axis_name=None)
  tx = optim.create_optimizer(config.optim, lambda s: 0.0)
  state = module.init_state(config, networks, tx, jax.random.PRNGKey(0))
  checkpointer = checkpoints.Checkpointer(workdir)
  checkpointer.save(step, state)
  checkpointer.close()
  return workdir, config


# ssl_jax.main --------------------------------------------------------------------------------------------


def test_main_refuses_zero_cadences_batch_one_zero_steps_and_negative_keep(tmp_path):
  workdir = tmp_path / 'run'
  proc = _main('--config=configs/smoke.py', f'--workdir={workdir}', '--config.batch_size=1',
               '--config.log_every_steps=0', '--config.checkpoint_every_steps=0', '--config.num_train_steps=0',
               '--config.keep_checkpoints=-1')
  _assert_message(proc, 'config.batch_size = 1: must be an integer >= 2',
                  'config.log_every_steps = 0: must be an integer >= 1',
                  'config.checkpoint_every_steps = 0: must be an integer >= 1',
                  'config.num_train_steps = 0: must be >= 1 (train that many steps), or -1',
                  'config.keep_checkpoints = -1: must be an integer >= 0')
  assert not workdir.exists()  # Refused before anything was written.


def test_main_names_an_unknown_preset():
  proc = _main('--config=configs/smoke.py:byol', '--workdir=/tmp/never-written')
  from configs import METHOD_CONFIGS  # pylint: disable=g-import-not-at-top
  _assert_message(proc, f"unknown preset 'byol'; choose one of {sorted(METHOD_CONFIGS)}")
  proc = _main('--config=configs/moco.py:scale=huge', '--workdir=/tmp/never-written')
  _assert_message(proc, "configs/moco.py: the config argument must be scale=NAME with NAME one of ('smoke', "
                  "'demo', 'cpu', 'full'), got 'scale=huge'")


def test_main_refuses_a_workdir_that_is_a_file(tmp_path):
  a_file = tmp_path / 'file'
  a_file.write_text('not a directory')
  proc = _main('--config=configs/smoke.py', f'--workdir={a_file}')
  _assert_message(proc, f"workdir '{a_file}' is a file, not a directory")
  assert a_file.read_text() == 'not a directory'


def test_main_names_a_missing_or_empty_manual_dir(tmp_path):
  proc = _main('--config=configs/smoke.py', f'--workdir={tmp_path / "run"}', '--config.data.source=real',
               f'--config.data.manual_dir={tmp_path / "nowhere"}')
  _assert_message(proc, f"config.data.manual_dir (the real recordings' directory) '{tmp_path / 'nowhere'}' "
                  'does not exist')
  proc = _main('--config=configs/smoke.py', f'--workdir={tmp_path / "run"}', '--config.data.source=real',
               f'--config.data.manual_dir={tmp_path}')
  _assert_message(proc, "lacks ['train.h5', 'test.h5']")


# ssl_jax.evaluate ----------------------------------------------------------------------------------------


def _array_data(length, per_class, drop_class=None):
  rng = np.random.default_rng(0)
  aoa = np.repeat(np.arange(225), per_class).astype(np.int32)
  if drop_class is not None:
    aoa = aoa[aoa != drop_class]
  split = {'iq': rng.normal(size=(aoa.size, length, 8)).astype(np.float32), 'aoa': aoa,
           'modulation': (aoa % 7).astype(np.int32),
           'angles_deg': metrics.aoa_class_to_angles_deg(aoa).astype(np.float32)}
  return evaluation.ArrayData({'train': split, 'test': split})


def _tiny_probe_config(budgets=(1,)):
  from configs import probe
  config = probe.get_config()
  config.budgets = budgets
  config.num_seeds = 1
  config.embed_batch_size = 128
  config.probe.num_steps = 3
  config.heads.aoa.hidden_dim = 8
  config.random_init = False
  return config


def test_evaluate_refuses_a_train_split_missing_an_aoa_class_before_probing(tmp_path):
  workdir, config = _workdir(tmp_path)
  data = _array_data(config.data.length, per_class=2, drop_class=17)
  with pytest.raises(ValueError, match=r'probe aoa: budget 1 per class cannot be drawn: 1 of 225 classes have no '
                     r'train examples \(class 17\)'):
    evaluate.run(workdir, _tiny_probe_config(), data=data)
  assert not os.path.exists(layout.eval_results_path(workdir))
  # Told to skip: the AoA numbers are skipped with the reason, AMC's are computed, and the results say so.
  probes = _tiny_probe_config()
  probes.skip_unavailable_budgets = True
  results = evaluate.run(workdir, probes, data=data)
  assert 'class 17' in results['pretrained']['tasks']['aoa']['probe']['1']['skipped']
  assert 'accuracy' in results['pretrained']['tasks']['amc']['probe']['1']
  assert len(results['skipped']) == 1 and 'class 17' in results['skipped'][0]


def test_evaluate_cli_refuses_budgets_above_the_data(tmp_path):
  workdir, _ = _workdir(tmp_path)  # smoke data: 2 train examples per class
  proc = _run(['-m', 'ssl_jax.evaluate', f'--workdir={workdir}', '--probe_config.budgets=1,10'])
  _assert_message(proc, 'probe aoa: budget 10 per class exceeds the smallest train class (2 examples',
                  '--probe_config.skip_unavailable_budgets=True')
  assert 'probe amc' not in proc.stderr  # 450 examples over 7 modulations: 10 per class is there.
  assert not os.path.exists(layout.eval_results_path(workdir))


def test_evaluate_names_a_missing_step_and_a_bad_probe_config(tmp_path):
  workdir, _ = _workdir(tmp_path)
  proc = _run(['-m', 'ssl_jax.evaluate', f'--workdir={workdir}', '--step=99', '--probe_config.num_seeds=0'])
  _assert_message(proc, 'probe_config.num_seeds = 0: must be an integer >= 1')
  with pytest.raises(ValueError, match=r'no step 99 under .*checkpoints \(have 3\)'):
    evaluate.run(workdir, _tiny_probe_config(), step=99)


# experiments/study.py ------------------------------------------------------------------------------------


def test_study_rerun_with_other_steps_is_refused_before_any_work(tmp_path, capsys):
  from experiments import study
  out = tmp_path / 'study'
  from configs import scales
  first = study.pretrain_config('simclr', True, 'smoke')
  scales.set_steps(first, 1)
  first.data.data_dir = str(out / 'tfds')
  workdir = out / 'runs' / 'simclr_aug'
  _workdir(out / 'runs', first, name='simclr_aug', step=1)
  code = study.main(['--scale', 'smoke', '--out', str(out), '--steps', '2'])
  err = capsys.readouterr().err
  assert code == 1
  assert f"'{workdir}' holds a run simclr_aug trained with other settings" in err
  assert 'config.num_train_steps: 1 -> 2' in err
  assert not (out / 'tfds').exists() and not (out / 'runs' / 'moco_aug').exists()  # Nothing was started.


# ssl_jax.data.simulate / validate ------------------------------------------------------------------------


def test_simulate_cli_refuses_a_directory_or_an_unwritable_out(tmp_path):
  proc = _run(['-m', 'ssl_jax.data.simulate', '--out', str(tmp_path), '--examples_per_class', '1',
               '--length', '32'])
  _assert_message(proc, f"--out '{tmp_path}' is a directory; give a file path inside it")
  assert os.listdir(tmp_path) == []
  a_file = tmp_path / 'file'
  a_file.write_text('x')
  assert simulate.main(['--out', str(a_file / 'x.h5'), '--examples_per_class', '1', '--length', '32']) == 2
  assert simulate.main(['--out', str(tmp_path / 'x.h5'), '--examples_per_class', '0']) == 2
  assert sorted(os.listdir(tmp_path)) == ['file']


def test_validate_cli_names_a_directory_and_a_bad_length(tmp_path, capsys):
  assert validate.main([str(tmp_path)]) == 1
  assert 'is a directory, not a file' in capsys.readouterr().err
  assert validate.main([str(tmp_path / 'x.h5'), '--length', '0']) == 2
  assert '--length must be >= 1' in capsys.readouterr().err


# experiments/torch_baseline/convert.py -------------------------------------------------------------------


def test_convert_runs_as_a_script_and_names_an_empty_workdir(tmp_path):
  empty = tmp_path / 'empty'
  empty.mkdir()
  proc = _run(['experiments/torch_baseline/convert.py', 'to_torch', f'--workdir={empty}',
               f'--out={tmp_path / "encoder.pt"}'])
  assert 'No module named' not in proc.stderr, proc.stderr[-3000:]
  _assert_message(proc, 'not a pretraining workdir')
  assert not (tmp_path / 'encoder.pt').exists()


def test_convert_never_writes_into_a_workdir_that_holds_a_run(tmp_path):
  import torch
  from experiments.torch_baseline import convert
  workdir, config = _workdir(tmp_path)
  before = {name: os.path.getmtime(os.path.join(workdir, name)) for name in os.listdir(workdir)}
  with open(layout.config_path(workdir)) as f:
    config_before = f.read()
  _, state_dict = convert.workdir_to_state_dict(workdir)
  torch.save(state_dict, tmp_path / 'encoder.pt')
  proc = _run(['experiments/torch_baseline/convert.py', 'to_flax', f'--state_dict={tmp_path / "encoder.pt"}',
               '--config=configs/smoke.py', f'--workdir={workdir}'])
  _assert_message(proc, f"--workdir '{workdir}' is not empty (it holds checkpoints, config.json)")
  with pytest.raises(ValueError, match='is not empty'):
    convert.state_dict_to_workdir(state_dict, config, workdir)
  with open(layout.config_path(workdir)) as f:
    assert f.read() == config_before
  assert {name: os.path.getmtime(os.path.join(workdir, name)) for name in os.listdir(workdir)} == before
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['3']


# experiments/compare_torch.py ----------------------------------------------------------------------------


def test_compare_torch_checks_its_flags_before_any_work(tmp_path):
  proc = _run(['experiments/compare_torch.py', '--batch_size', '1', '--length', '64', '--crop_length', '128',
               '--steps', '5', '--out', str(tmp_path / 'out')])
  _assert_message(proc, '--batch_size: config.batch_size = 1: must be an integer >= 2',
                  '--crop_length: config.augment.crop_lengths = (128,)')
  assert not (tmp_path / 'out').exists()
