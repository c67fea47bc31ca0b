"""The pretraining loop end to end on the simulated data: metrics, checkpoints, exact resume, guards, CLI."""

import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import smoke
from ssl_jax import host_allocator, methods, optim, train
from ssl_jax.workdir import checkpoints, metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def _config(method, data_dir, **overrides):
  config = smoke.get_config(method)
  config.data.data_dir = data_dir
  config.update_from_flattened_dict(overrides)
  return config


def tensorboard_steps(workdir, tag='loss'):
  """The steps of every `tag` event in the workdir's TensorBoard files, in file order (repeats kept)."""
  import tensorflow as tf
  steps = []
  for path in sorted(glob.glob(os.path.join(workdir, 'tensorboard', '*tfevents*'))):
    for event in tf.compat.v1.train.summary_iterator(path):
      steps += [event.step for value in event.summary.value if value.tag == tag]
  return steps


def _restore(workdir, config, step=None):
  method = methods.get_method(config.method)
  networks = method.create_networks(config, bn_axis_name=None)
  tx = optim.create_optimizer(config.optim, lambda s: 0.0)
  like = jax.eval_shape(lambda: method.init_state(config, networks, tx, jax.random.PRNGKey(0)))
  ckpt = checkpoints.Checkpointer(workdir)
  state = ckpt.restore(like, step)
  ckpt.close()
  return state


@pytest.mark.parametrize('method', ['simclr'] + [pytest.param(m, marks=pytest.mark.slow) for m in (
    'moco', 'moco_v3', 'memory_bank', 'fifo_bank', 'mochi')])
def test_resumed_run_is_bit_identical(method, data_dir, tmp_path):
  # SimCLR's run draws two crop lengths per step: their draw resumes with the run too.
  config = _config(method, data_dir, **({'augment.crop_lengths': (32, 64)} if method == 'simclr' else {}))
  straight, resumed = str(tmp_path / 'straight'), str(tmp_path / 'resumed')
  summary = train.pretrain(config, straight)
  assert summary['final_step'] == config.num_train_steps and summary['stop_reason'] == 'completed'
  records = metrics.read_metrics(straight)
  assert [r['step'] for r in records] == [2, 4, 6]
  for key in ('loss', 'learning_rate', 'grad_norm', 'views_per_second', 'embedding_std',
              'positive_similarity', 'negative_similarity'):
    assert all(np.isfinite(r[key]) for r in records), key
  if method in ('moco', 'mochi', 'fifo_bank'):  # v3 has no queue to fill
    assert records[-1]['queue_fill'] == pytest.approx(1.0)
  if 'moco' in config:
    assert 0.996 <= records[-1]['momentum'] <= 1.0
  if method == 'memory_bank':  # a row per train example; the pipeline's indices address them
    from ssl_jax.data import pipeline
    assert _restore(straight, config).bank.shape[0] == pipeline.num_examples(config.data, 'train')
  assert os.listdir(os.path.join(straight, 'tensorboard'))

  # Interrupt: a run that stopped after its step-4 checkpoint (having logged step 6), then resumed to the end.
  train.pretrain(config, resumed)
  shutil.rmtree(os.path.join(resumed, 'checkpoints', '6'))
  summary = train.pretrain(config, resumed)
  assert summary['start_step'] == 4 and summary['final_step'] == 6
  a, b = _restore(straight, config), _restore(resumed, config)
  # Bit-exact on purpose: both runs execute the same compiled programs on the same inputs on this machine
  # (float32 state restored exactly; the data stream resumes at the step), and XLA:CPU's reductions have a
  # fixed order. A tolerance would hide a resume that skips or repeats a batch or drops optimiser state.
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # Step 6 was logged before the interruption and again after the resume: once in each place.
  assert [r['step'] for r in metrics.read_metrics(resumed)] == [2, 4, 6]
  assert tensorboard_steps(resumed) == tensorboard_steps(straight) == [2, 4, 6]


def test_workdir_of_another_method_is_refused(data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  train.pretrain(_config('simclr', data_dir, num_train_steps=2), workdir)
  with pytest.raises(ValueError, match='config.method'):
    train.pretrain(_config('moco', data_dir, num_train_steps=2), workdir)
  with pytest.raises(ValueError, match='config.model'):
    train.pretrain(_config('simclr', data_dir, num_train_steps=2, **{'model.output_dim': 64}),
                             workdir)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(data_dir, tmp_path):
  workdir = str(tmp_path / 'nan')
  config = _config('simclr', data_dir, num_train_steps=20, checkpoint_every_steps=1,
                   **{'optim.learning_rate': 1e12, 'optim.schedule': 'constant'})
  with pytest.raises(train.NonFiniteLossError, match='last good checkpoint'):
    train.pretrain(config, workdir)
  ckpt = checkpoints.Checkpointer(workdir)
  last = ckpt.latest_step()
  ckpt.close()
  assert last is not None and last < 20
  state = _restore(workdir, config)
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(state.params))


def _poison_at(monkeypatch, bad_step, part):
  """SimCLR's step, except that the step making `bad_step` turns `part` of the state ('params' or
  'batch_stats') into NaN; NaN params stay NaN (and so do the loss and the parameter norm after them),
  NaN BatchNorm statistics leave the loss and the parameters finite (train mode normalises by the batch)."""
  from ssl_jax.methods import simclr
  make_train_step = simclr.make_train_step

  def poisoned_make_train_step(*args, **kwargs):
    step = make_train_step(*args, **kwargs)

    def poisoned(state, batch, crop_lengths):
      state, metrics = step(state, batch, crop_lengths)
      poison = jnp.where(state.step == bad_step, jnp.nan, 0.0)
      return state.replace(**{part: jax.tree.map(lambda x: x + poison, getattr(state, part))}), metrics

    return poisoned

  monkeypatch.setattr(simclr, 'make_train_step', poisoned_make_train_step)


@pytest.mark.parametrize('part, seen_at, message', [
    ('params', 8, r'\(loss nan, param_norm nan\)'),  # seen at the log step after the poisoned step
    ('batch_stats', 8, r'\(the state holds a NaN or an infinity\)'),  # seen only when the state is saved
])
def test_nan_between_log_steps_is_stopped_at_the_next_check_and_never_checkpointed(
    data_dir, tmp_path, monkeypatch, part, seen_at, message):
  _poison_at(monkeypatch, bad_step=6, part=part)
  workdir = str(tmp_path / part)
  config = _config('simclr', data_dir, num_train_steps=12, log_every_steps=2 if part == 'batch_stats' else 4,
                   checkpoint_every_steps=4, keep_checkpoints=3)
  with pytest.raises(train.NonFiniteLossError) as raised:
    train.pretrain(config, workdir)
  text = str(raised.value)
  assert re.search(rf'non-finite training state at step {seen_at} {message}; stopped', text), text
  assert f'step {seen_at} is the first of those where this was seen' in text
  assert f"last good checkpoint (step 4) in {os.path.join(workdir, 'checkpoints')} is kept" in text
  assert _steps(workdir) == [4]
  state = _restore(workdir, config, 4)
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(state))
  logged = [r['step'] for r in metrics.read_metrics(workdir)]
  assert logged == ([2, 4, 6, 8] if part == 'batch_stats' else [4])  # Non-finite metrics are not written.


def _damage(workdir, step):
  """Truncates the data files of a finalized checkpoint step (a full disk or a partial copy would)."""
  data = os.path.join(workdir, 'checkpoints', str(step), 'default', 'd')
  for name in os.listdir(data):
    with open(os.path.join(data, name), 'r+b') as f:
      f.truncate(10)


def _steps(workdir):
  ckpt = checkpoints.Checkpointer(workdir)
  steps = ckpt.steps()
  ckpt.close()
  return steps


def test_unreadable_latest_checkpoint_is_set_aside_and_the_previous_one_resumed(data_dir, tmp_path, capsys):
  config = _config('simclr', data_dir)
  workdir = str(tmp_path / 'run')
  train.pretrain(config, workdir)
  assert _steps(workdir) == [4, 6]
  _damage(workdir, 6)
  capsys.readouterr()
  summary = train.pretrain(config, workdir)
  assert summary['start_step'] == 4 and summary['final_step'] == 6
  out = capsys.readouterr().out
  assert out.count(f"{os.path.join(workdir, 'checkpoints', '6')} is unreadable") == 1, out
  assert 'resuming from step 4 instead' in out
  assert os.listdir(os.path.join(workdir, 'unreadable_checkpoints')) == ['6']  # Kept, out of orbax's sight.
  assert _steps(workdir) == [4, 6]
  _restore(workdir, config, 6)  # The new step 6 reads back.
  assert [r['step'] for r in metrics.read_metrics(workdir)] == [2, 4, 6]


def test_no_readable_checkpoint_is_an_error_not_a_fresh_start(data_dir, tmp_path):
  config = _config('simclr', data_dir)
  workdir = str(tmp_path / 'run')
  train.pretrain(config, workdir)
  _damage(workdir, 4)
  _damage(workdir, 6)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    metrics_before = f.read()
  with pytest.raises(checkpoints.UnreadableCheckpointError, match=r'step 6: .*; step 4: .*Nothing was overwritten'):
    train.pretrain(config, workdir)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['4', '6']
  assert not os.path.exists(os.path.join(workdir, 'unreadable_checkpoints'))
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    assert f.read() == metrics_before


def test_keep_checkpoints_zero_keeps_every_checkpoint(data_dir, tmp_path):
  workdir = str(tmp_path / 'all')
  train.pretrain(_config('simclr', data_dir, checkpoint_every_steps=2, keep_checkpoints=0), workdir)
  assert _steps(workdir) == [2, 4, 6]
  with pytest.raises(ValueError, match='keep_checkpoints = -1: must be an integer >= 0'):
    train.pretrain(_config('simclr', data_dir, keep_checkpoints=-1), str(tmp_path / 'negative'))


def _main(args, **kwargs):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'ssl_jax.main', *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=600, **kwargs)


def test_cli_rejects_unknown_config_key(tmp_path):
  proc = _main(['--config=configs/smoke.py', f'--workdir={tmp_path}', '--config.no_such_key=1'])
  assert proc.returncode != 0
  assert 'no_such_key' in proc.stderr


def _summary(stdout):
  """Stop reason, first and last step of the run, read from the summary line that ends its stdout."""
  last = stdout.strip().splitlines()[-1]
  match = re.fullmatch(r'\[ssl_jax\] (\S+) at step (\d+)/\d+ \((\d+) steps this run\).*', last)
  assert match, last
  final, made = int(match.group(2)), int(match.group(3))
  return {'stop_reason': match.group(1), 'start_step': final - made, 'final_step': final}


def test_summary_line_names_the_stop_steps_loss_speed_and_workdir():
  summary = {'method': 'simclr', 'start_step': 40, 'num_steps': 100, 'stop_reason': 'SIGTERM', 'final_step': 57,
             'final_loss': 4.123456, 'views_per_second': 2071.4}
  assert train.summary_line(summary, '/runs/a') == (
      'SIGTERM at step 57/100 (17 steps this run), final loss 4.1235, 2071 views/s; workdir /runs/a (checkpoint 57)')
  members = dict(summary, stop_reason='completed', final_step=100, final_losses=[4.0, None, 5.0],
                 final_loss=4.5, alive=[True, False, True])
  assert train.summary_line(members, '/runs/a') == (
      'completed at step 100/100 (60 steps this run), final loss 4.5000 (mean of the 2/3 members alive), '
      '2071 views/s per member; workdir /runs/a (checkpoint 100)')
  nothing_run = {'method': 'simclr', 'start_step': 100, 'num_steps': 100, 'stop_reason': 'completed',
                 'final_step': 100}
  assert train.summary_line(nothing_run, '/runs/a') == (
      'completed at step 100/100 (0 steps this run); workdir /runs/a (checkpoint 100)')


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits(data_dir, tmp_path):
  workdir = str(tmp_path / 'term')
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  # Started as the README says, through the launcher: it becomes ssl_jax.main (same PID), so the signal lands.
  proc = subprocess.Popen([sys.executable, '-m', 'ssl_jax.launch', '-m', 'ssl_jax.main', '--config=configs/smoke.py',
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
  summary = _summary(out)
  assert summary['stop_reason'] == 'SIGTERM'
  if host_allocator.unavailable_reason() is None:
    assert 'host allocator: mimalloc (' in out, out[-3000:]
  ckpt = checkpoints.Checkpointer(workdir)
  assert ckpt.latest_step() == summary['final_step'] >= 1
  ckpt.close()


def _wait_for(predicate, what, timeout=600):
  deadline = time.time() + timeout
  while not predicate():
    assert time.time() < deadline, f'timed out waiting for {what}'
    time.sleep(0.2)


def _logged_steps(workdir):
  path = os.path.join(workdir, 'metrics.jsonl')
  return [r['step'] for r in metrics.read_metrics(workdir)] if os.path.exists(path) else []


@pytest.mark.slow
def test_second_launch_is_refused_and_a_relaunch_after_kill_9_logs_each_step_once(data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  args = [sys.executable, '-m', 'ssl_jax.main', '--config=configs/smoke.py', f'--workdir={workdir}',
          f'--config.data.data_dir={data_dir}', '--config.num_train_steps=100000',
          '--config.checkpoint_every_steps=3', '--config.log_every_steps=1']
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')

  def launch():
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

  first = launch()
  try:
    _wait_for(lambda: len(_logged_steps(workdir)) >= 1, 'the first run to log')
    second = launch()
    out, err = second.communicate(timeout=300)
    assert second.returncode == 1, err[-3000:]
    assert f'workdir {workdir!r} is in use' in err and f'pid {first.pid} on host' in err, err[-3000:]
    assert len(err.strip().splitlines()) == 1, err[-3000:]
    # Kill -9 just after a checkpoint step, so that steps past the checkpoint have been logged.
    _wait_for(lambda: (_logged_steps(workdir) or [0])[-1] % 3 == 1 and _logged_steps(workdir)[-1] > 3,
              'a step just past a checkpoint')
    first.kill()
  finally:
    first.kill()
    first.communicate()
  killed_at = _logged_steps(workdir)[-1]
  checkpoint = _steps(workdir)[-1]
  assert checkpoint < killed_at  # Steps checkpoint+1 .. killed_at were logged and will be run again.

  third = launch()
  try:
    _wait_for(lambda: len(_logged_steps(workdir)) >= killed_at + 2, 'the relaunch to log past the kill')
    third.send_signal(signal.SIGTERM)
    out, err = third.communicate(timeout=300)
  finally:
    third.kill()
  assert third.returncode == 0, err[-3000:]
  summary = _summary(out)
  assert summary['start_step'] == checkpoint
  dropped = re.search(r'dropped (\d+) metric rows', out)
  assert dropped and int(dropped.group(1)) >= killed_at - checkpoint, out  # (+1 for a line cut by the kill)
  steps = _logged_steps(workdir)
  assert steps == list(range(1, summary['final_step'] + 1))  # Every step once, in order.
  assert tensorboard_steps(workdir) == steps


@pytest.mark.slow
def test_default_console_is_a_header_a_line_per_interval_and_a_summary(data_dir, tmp_path):
  env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
  env.update(PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  workdir = str(tmp_path / 'run')
  proc = subprocess.run([sys.executable, '-m', 'ssl_jax.main', '--config=configs/smoke.py', f'--workdir={workdir}',
                         f'--config.data.data_dir={data_dir}', '--config.num_train_steps=100',
                         '--config.log_every_steps=10', '--config.checkpoint_every_steps=50',
                         '--config.progress_bar=true'],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out, err = proc.stdout.splitlines(), proc.stderr.splitlines()
  assert len(out) + len(err) <= 40, '\n'.join(out + err)
  assert not [line for line in err if line[:1] == 'I' and line[1:5].isdigit()], proc.stderr  # No absl INFO.
  warnings = [line.split('] ', 1)[-1] for line in err if line[:1] == 'W' and line[1:5].isdigit()]
  assert len(warnings) == len(set(warnings)), proc.stderr  # Each warning once.
  assert [line for line in out if '[ssl_jax] step ' in line] == [
      next(line for line in out if f'[ssl_jax] step {s}/100 ' in line) for s in range(10, 101, 10)]
  for key in ('config: configs/smoke.py', f'workdir {workdir}', 'devices: ', 'data: aoam simulated'):
    assert any(key in line for line in out), (key, out)
  assert _summary(proc.stdout) == {'stop_reason': 'completed', 'start_step': 0, 'final_step': 100}
  assert out[-1].endswith(f'; workdir {workdir} (checkpoint 100)') and ' views/s' in out[-1], out[-1]
