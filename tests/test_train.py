"""The pretraining loop end to end on the simulated data: metrics, checkpoints, exact resume, guards, CLI."""

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import smoke
from ssl_jax import checkpointing, metrics_writer, methods, optim, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def _config(method, data_dir, **overrides):
  config = smoke.get_config(method)
  config.data.data_dir = data_dir
  for key, value in overrides.items():
    node = config
    *path, last = key.split('.')
    for part in path:
      node = node[part]
    node[last] = value
  return config


def _restore(workdir, config, step=None):
  method = methods.get_method(config.method)
  networks = method.create_networks(config, bn_axis_name=None)
  tx = optim.create_optimizer(config.optim, lambda s: 0.0)
  like = jax.eval_shape(lambda: method.init_state(config, networks, tx, jax.random.PRNGKey(0)))
  ckpt = checkpointing.Checkpointer(workdir)
  state = ckpt.restore(like, step)
  ckpt.close()
  return state


@pytest.mark.parametrize('method', ['simclr', pytest.param('moco', marks=pytest.mark.slow),
                                    pytest.param('moco_v3', marks=pytest.mark.slow)])
def test_resumed_run_is_bit_identical(method, data_dir, tmp_path):
  config = _config(method, data_dir)
  straight, resumed = str(tmp_path / 'straight'), str(tmp_path / 'resumed')
  summary = train.train_and_evaluate(config, straight)
  assert summary['final_step'] == config.num_train_steps and summary['stop_reason'] == 'completed'
  records = metrics_writer.read_metrics(straight)
  assert [r['step'] for r in records] == [2, 4, 6]
  for key in ('loss', 'learning_rate', 'grad_norm', 'views_per_second', 'embedding_std',
              'positive_similarity', 'negative_similarity'):
    assert all(np.isfinite(r[key]) for r in records), key
  if method == 'moco':  # v3 has no queue to fill
    assert records[-1]['queue_fill'] == pytest.approx(1.0)
  if method != 'simclr':
    assert 0.996 <= records[-1]['momentum'] <= 1.0
  assert os.listdir(os.path.join(straight, 'tensorboard'))

  # Interrupt: a run that stopped after its step-4 checkpoint, then resumed to the end.
  train.train_and_evaluate(config, resumed)
  shutil.rmtree(os.path.join(resumed, 'checkpoints', '6'))
  summary = train.train_and_evaluate(config, resumed)
  assert summary['start_step'] == 4 and summary['final_step'] == 6
  a, b = _restore(straight, config), _restore(resumed, config)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_workdir_of_another_method_is_refused(data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(_config('simclr', data_dir, num_train_steps=2), workdir)
  with pytest.raises(ValueError, match='config.method'):
    train.train_and_evaluate(_config('moco', data_dir, num_train_steps=2), workdir)
  with pytest.raises(ValueError, match='config.model'):
    train.train_and_evaluate(_config('simclr', data_dir, num_train_steps=2, **{'model.output_dim': 64}),
                             workdir)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(data_dir, tmp_path):
  workdir = str(tmp_path / 'nan')
  config = _config('simclr', data_dir, num_train_steps=20, checkpoint_every_steps=1,
                   **{'optim.learning_rate': 1e12, 'optim.schedule': 'constant'})
  with pytest.raises(train.NonFiniteLossError, match='last good checkpoint'):
    train.train_and_evaluate(config, workdir)
  ckpt = checkpointing.Checkpointer(workdir)
  last = ckpt.latest_step()
  ckpt.close()
  assert last is not None and last < 20
  state = _restore(workdir, config)
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(state.params))


def _main(args, **kwargs):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'ssl_jax.main', *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=600, **kwargs)


def test_cli_rejects_unknown_config_key(tmp_path):
  proc = _main(['--config=configs/smoke.py', f'--workdir={tmp_path}', '--config.no_such_key=1'])
  assert proc.returncode != 0
  assert 'no_such_key' in proc.stderr


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits(data_dir, tmp_path):
  workdir = str(tmp_path / 'term')
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  proc = subprocess.Popen([sys.executable, '-m', 'ssl_jax.main', '--config=configs/smoke.py',
                           f'--workdir={workdir}', f'--config.data.data_dir={data_dir}',
                           '--config.num_train_steps=100000', '--config.checkpoint_every_steps=100000',
                           '--config.log_every_steps=1'], cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  metrics = os.path.join(workdir, 'metrics.jsonl')
  deadline = time.time() + 300
  while time.time() < deadline and not (os.path.exists(metrics) and os.path.getsize(metrics) > 0):
    time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  summary = json.loads(out.strip().splitlines()[-1])
  assert summary['stop_reason'] == 'SIGTERM'
  if platform.system() == 'Linux':  # The default relaunched the process with mimalloc: same PID, signal received.
    assert 'host allocator: mimalloc (' in err, err[-3000:]
  ckpt = checkpointing.Checkpointer(workdir)
  assert ckpt.latest_step() == summary['final_step'] >= 1
  ckpt.close()
