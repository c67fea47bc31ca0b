"""Multi-host: 2 processes on 127.0.0.1 (1 CPU device each, gloo) train in lockstep and match 1 process.

The two-process run and a single-process run on 2 emulated devices see the same global batches (each
process reads its half), so their final checkpoints must agree. They are different programs (the
collectives run over gloo between processes or inside one process), so both train in float64
(`JAX_ENABLE_X64=1`, `--config.model.dtype=float64`) and must agree to 1e-9 (measured: bit-identical on a
2-core AVX2 CPU), where float32 rounding would leave a CPU-dependent difference.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import smoke
from ssl_jax import methods, optim
from ssl_jax.data import aoam
from ssl_jax.workdir import checkpoints, layout, metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 4
RTOL = 1e-9  # float64 runs of 4 steps (module docstring)
FLOAT64 = ['--config.model.dtype=float64']
TWO_CROPS = ['--config.augment.crop_lengths=(32, 64)']  # every process draws the same pair


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _args(workdir, data_dir):
  return [sys.executable, '-m', 'ssl_jax.main', '--config=configs/smoke.py', f'--workdir={workdir}',
          f'--config.data.data_dir={data_dir}', f'--config.num_train_steps={STEPS}',
          '--config.log_every_steps=1', '--config.augment.antenna_dropout=0.0']


def _env(devices, x64=False):
  return dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu', JAX_ENABLE_X64='1' if x64 else '0',
              XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')


def _final_params(workdir):
  with jax.enable_x64(True):  # the runs' float64 state
    config = layout.read_config(workdir)
    method = methods.get_method(config.method)
    networks = method.create_networks(config, bn_axis_name=None)
    like = jax.eval_shape(lambda: method.init_state(
        config, networks, optim.create_optimizer(config.optim, lambda s: 0.0), jax.random.PRNGKey(0)))
    ckpt = checkpoints.Checkpointer(workdir)
    assert ckpt.latest_step() == STEPS
    state = ckpt.restore(like)
    ckpt.close()
    return jax.device_get(state.params)


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
  data_dir = str(tmp_path / 'tfds')
  config = smoke.get_config()
  config.data.data_dir = data_dir
  aoam.get_builder(config.data)  # Prepare the shards once, before two processes race to.

  single = str(tmp_path / 'single')
  proc = subprocess.run(_args(single, data_dir) + FLOAT64 + TWO_CROPS, cwd=REPO, env=_env(2, x64=True),
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]

  multi = str(tmp_path / 'multi')
  port = _free_port()
  procs = [subprocess.Popen(_args(multi, data_dir) + FLOAT64 + TWO_CROPS + [
      f'--config.distributed.coordinator_address=127.0.0.1:{port}', '--config.distributed.num_processes=2',
      f'--config.distributed.process_id={i}'], cwd=REPO, env=_env(1, x64=True), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(2)]
  outputs = [p.communicate(timeout=900) for p in procs]
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]

  single_losses = [r['loss'] for r in metrics.read_metrics(single)]
  multi_losses = [r['loss'] for r in metrics.read_metrics(multi)]
  assert len(multi_losses) == STEPS  # Only process 0 writes metrics.
  np.testing.assert_allclose(multi_losses, single_losses, rtol=RTOL)
  multi_params, single_params = _final_params(multi), _final_params(single)
  assert all(a.dtype == np.float64 for a in jax.tree.leaves(single_params))
  # The absolute floor: BN biases right before a conv + BN get an exactly-zero gradient in exact
  # arithmetic and hold rounding noise only.
  scale = max(float(np.abs(b).max()) for b in jax.tree.leaves(single_params))
  for a, b in zip(jax.tree.leaves(multi_params), jax.tree.leaves(single_params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=RTOL, atol=RTOL * scale)


def _wait_for_metrics(workdir, rows, proc, timeout=900):
  deadline = time.time() + timeout
  path = os.path.join(workdir, 'metrics.jsonl')
  while not (os.path.exists(path) and len(metrics.read_metrics(workdir)) >= rows):
    assert proc.poll() is None and time.time() < deadline, 'the run ended or stalled before logging'
    time.sleep(0.2)


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_one_checkpoint(tmp_path):
  data_dir = str(tmp_path / 'tfds')
  config = smoke.get_config()
  config.data.data_dir = data_dir
  aoam.get_builder(config.data)
  workdir = str(tmp_path / 'multi')
  port = _free_port()
  args = [a for a in _args(workdir, data_dir) if not a.startswith('--config.num_train_steps=')]
  procs = [subprocess.Popen(args + [
      '--config.num_train_steps=100000', '--config.checkpoint_every_steps=100000',
      f'--config.distributed.coordinator_address=127.0.0.1:{port}', '--config.distributed.num_processes=2',
      f'--config.distributed.process_id={i}'], cwd=REPO, env=_env(1), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(2)]
  try:
    _wait_for_metrics(workdir, 2, procs[0])
    procs[1].send_signal(signal.SIGTERM)  # One process only: the other learns it through the service.
    outputs = [p.communicate(timeout=600) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  # Each process's stdout ends with its summary line: '[ssl_jax] preempted at step N/100000 ...'.
  summaries = [re.match(r'\[ssl_jax\] (\S+) at step (\d+)/', out.strip().splitlines()[-1]) for out, _ in outputs]
  assert all(summaries), [out[-1000:] for out, _ in outputs]
  assert [s.group(1) for s in summaries] == ['preempted', 'preempted']
  final = int(summaries[0].group(2))
  assert int(summaries[1].group(2)) == final >= 2
  ckpt = checkpoints.Checkpointer(workdir)
  assert ckpt.steps() == [final]  # One checkpoint, saved by both processes together.
  ckpt.close()
  assert [r['step'] for r in metrics.read_metrics(workdir)][-1] == final


_STOP_PROBE = '''
import os, signal, sys, time
import jax
from ssl_jax import train
jax.config.update('jax_cpu_collectives_implementation', 'gloo')
jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=1, process_id=0)
stop = train._StopRequest(start_step=40, multi_process=True)
stop.check_available()
with stop.installed():
  os.kill(os.getpid(), getattr(signal, sys.argv[2]))
  for step in range(41, 400):
    time.sleep(0.05)
    if stop.reason(step):
      print('stopped after', step, stop.reason(step + 1), flush=True)
      break
'''


@pytest.mark.parametrize('signal_name', ['SIGTERM', 'SIGINT'])
def test_a_signal_reaches_the_preemption_service_when_the_run_has_processes(signal_name):
  # A process started with jax.distributed stops through the service (SIGINT forwarded as SIGTERM): it
  # stops after a step a few steps on, agreed with all processes, and only at that step.
  proc = subprocess.run([sys.executable, '-c', _STOP_PROBE, f'127.0.0.1:{_free_port()}', signal_name],
                        cwd=REPO, env=_env(1), capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  words = proc.stdout.split()
  assert words[:2] == ['stopped', 'after'] and 41 <= int(words[2]) < 400 and words[3] == 'None', proc.stdout
