"""Host allocator policy: 'mimalloc' removes the page faults of XLA:CPU's per-step buffers.

The policy is process-wide (and 'mimalloc' replaces the process), so everything that applies one runs in a
subprocess. Bad input is refused; where mimalloc cannot be preloaded the process goes on and says why.
"""

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from ssl_jax import host_allocator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIMALLOC = platform.system() == 'Linux' and host_allocator.mimalloc_library() is not None
needs_mimalloc = pytest.mark.skipif(not MIMALLOC,
                                    reason='mimalloc is preloaded from the cmeel-mimalloc wheel, on Linux')

# Allocates a fresh 64 MiB output per call, like a step's activations; prints the median faults per call.
_FAULT_PROBE = textwrap.dedent('''
    import sys
    from ssl_jax import host_allocator
    print(host_allocator.configure(sys.argv[1]), file=sys.stderr)
    import jax, jax.numpy as jnp
    double = jax.jit(lambda x: x * 2.0)
    x = jnp.ones((16 * 1024 * 1024,), jnp.float32)
    # Buffers are freed asynchronously, so a fresh one can find its old chunk still held and grow the heap;
    # after 8 calls 5-10 of the next 10 were fault-free under load (flaky), after 30 calls 9-10.
    for _ in range(30):
      jax.block_until_ready(double(x))
    faults = []
    for _ in range(10):
      before = host_allocator.minor_page_faults()
      y = double(x)
      jax.block_until_ready(y)
      del y
      faults.append(host_allocator.minor_page_faults() - before)
    print(sorted(faults)[len(faults) // 2])  # The median call: an odd late free can still grow the heap once.
''')
_PAGES_PER_CALL = 64 * 1024 * 1024 // 4096


def _python(script: str, *args: str, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
  """Runs `python -c script args` on CPU, in an environment without mimalloc unless `env` adds it."""
  return subprocess.run([sys.executable, '-c', script, *args], cwd=REPO, capture_output=True, text=True,
                        timeout=timeout,
                        env=dict(host_allocator.without_mimalloc(dict(os.environ)), JAX_PLATFORMS='cpu', **env))


def _run_probe(policy: str, **env: str) -> subprocess.CompletedProcess:
  return _python(_FAULT_PROBE, policy, **env)


def _faults_per_call(policy: str) -> float:
  proc = _run_probe(policy)
  assert proc.returncode == 0, proc.stderr
  assert f'host allocator: {policy} (' in proc.stderr, proc.stderr
  return float(proc.stdout.strip().splitlines()[-1])


@needs_mimalloc
def test_mimalloc_relaunches_the_process_and_stops_the_page_faults_the_system_allocator_pays():
  system = _faults_per_call('system')
  mimalloc = _faults_per_call('mimalloc')
  assert system > 0.5 * _PAGES_PER_CALL, f'the probe should fault on every page by default, got {system}'
  assert mimalloc < 0.02 * _PAGES_PER_CALL, f'mimalloc still faults {mimalloc} pages per call'


@needs_mimalloc
def test_relaunch_keeps_the_pid_and_command_line_and_does_not_loop():
  script = ('import os, sys; print("before", os.getpid(), sys.argv[1:], flush=True)\n'
            'from ssl_jax import host_allocator; print(host_allocator.configure("mimalloc"))\n'
            'print("after", os.getpid(), sys.argv[1:], host_allocator.RELAUNCH_MARK in os.environ)')
  proc = _python(script, 'x', '--flag=1', timeout=120)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  pid = lines[0].split()[1]
  # Once as launched, once relaunched (same PID, same arguments), then on: no second relaunch.
  assert lines == [f"before {pid} ['x', '--flag=1']"] * 2 + [
      lines[2], f"after {pid} ['x', '--flag=1'] False"], proc.stdout
  assert lines[2].startswith('host allocator: mimalloc (') and 'MIMALLOC_PURGE_DELAY=-1' in lines[2]


@needs_mimalloc
def test_a_relaunch_the_loader_refused_goes_on_with_the_system_allocator_and_says_why():
  # The mark says "already relaunched" while mimalloc is not loaded: what a refused LD_PRELOAD looks like.
  proc = _run_probe('mimalloc', **{host_allocator.RELAUNCH_MARK: '1'})
  assert proc.returncode == 0, proc.stderr
  assert 'host allocator: system (mimalloc unavailable: relaunched with LD_PRELOAD=' in proc.stderr
  assert 'going on with the system allocator' in proc.stderr


@needs_mimalloc
def test_other_policies_under_an_inherited_mimalloc_say_that_mimalloc_serves():
  script = 'from ssl_jax import host_allocator; print(host_allocator.configure("system"))'
  proc = _python(script, timeout=120, LD_PRELOAD=host_allocator.mimalloc_library())
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip() == 'host allocator: mimalloc (inherited LD_PRELOAD; system was asked for and cannot apply)'
  assert 'clear LD_PRELOAD' in proc.stderr


def test_mimalloc_without_relaunch_or_package_falls_back_in_process(monkeypatch):
  monkeypatch.setattr(host_allocator, 'mimalloc_version', lambda: None)
  monkeypatch.setattr(host_allocator.os, 'execve', lambda *a: pytest.fail('must not replace the process'))
  monkeypatch.setattr(host_allocator.platform, 'system', lambda: 'Linux')
  monkeypatch.setattr(host_allocator, 'mimalloc_library', lambda: '/lib/libmimalloc.so')
  applied = host_allocator.configure('mimalloc', relaunch=False)
  assert applied.policy == 'system' and 'may not relaunch itself' in applied.detail
  monkeypatch.setattr(host_allocator, 'mimalloc_library', lambda: None)
  applied = host_allocator.configure('mimalloc')
  assert applied.policy == 'system' and 'cmeel-mimalloc package is not installed' in applied.detail
  monkeypatch.setattr(host_allocator.platform, 'system', lambda: 'Darwin')
  assert 'preloading needs Linux; this is Darwin' in str(host_allocator.configure('mimalloc'))


def test_preload_environment_puts_mimalloc_first_and_keeps_the_rest():
  env = host_allocator.preload_environment({'LD_PRELOAD': '/a.so /b.so', 'HOME': '/h'}, '/m/libmimalloc.so')
  assert env == {'LD_PRELOAD': '/m/libmimalloc.so:/a.so:/b.so', 'HOME': '/h', 'MIMALLOC_PURGE_DELAY': '-1',
                 host_allocator.RELAUNCH_MARK: '1'}
  assert host_allocator.preload_environment({'MIMALLOC_PURGE_DELAY': '100'}, '/m.so')['MIMALLOC_PURGE_DELAY'] == '100'
  assert host_allocator.without_mimalloc(env) == {'LD_PRELOAD': '/a.so:/b.so', 'HOME': '/h',
                                                  'MIMALLOC_PURGE_DELAY': '-1'}
  assert 'LD_PRELOAD' not in host_allocator.without_mimalloc({'LD_PRELOAD': '/m/libmimalloc.so'})


def test_unknown_policy_is_refused_with_the_choices():
  with pytest.raises(ValueError, match=r"host_allocator must be one of \('mimalloc', 'system'\), "
                                       r"got 'tcmalloc'"):
    host_allocator.configure('tcmalloc')


def test_system_policy_changes_nothing():
  assert str(host_allocator.configure('system')) == 'host allocator: system (the C library defaults)'


def test_main_refuses_an_unknown_host_allocator(tmp_path):
  proc = subprocess.run([sys.executable, '-m', 'ssl_jax.main', '--config=configs/smoke.py',
                         f'--workdir={tmp_path}', '--host_allocator=jemalloc'], cwd=REPO, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode != 0
  assert 'host_allocator' in proc.stderr and 'jemalloc' in proc.stderr
  assert not os.listdir(tmp_path)


@pytest.mark.slow
@needs_mimalloc
def test_bench_times_each_allocator_in_its_own_process_side_by_side():
  # The mimalloc child relaunches itself over the parent's pipes: the protocol must survive it.
  policies = ['system', 'mimalloc']
  proc = subprocess.run([sys.executable, 'experiments/bench_train_step.py', '--methods=simclr', '--batch_sizes=4',
                         '--length=64', '--steps=2', '--rounds=2', f'--host_allocators={",".join(policies)}'],
                        cwd=REPO, capture_output=True, text=True, timeout=600, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr[-3000:]
  table = [line for line in proc.stdout.splitlines() if line.startswith('| simclr | 4 |')]
  assert [line.split(' | ')[3] for line in table] == policies, proc.stdout
  assert f'{policies[1]} / system step time' in proc.stdout
  assert f'peak RSS of the process with host allocator {policies[1]}' in proc.stdout
