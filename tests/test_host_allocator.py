"""Host allocator: `python -m ssl_jax.launch` preloads mimalloc, which removes XLA:CPU's per-step page faults.

malloc is bound when a process starts, so everything that depends on the allocator in force runs in a
subprocess started in an environment without mimalloc (unless the test adds it).
"""

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from ssl_jax import host_allocator, launch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIMALLOC = platform.system() == 'Linux' and host_allocator.mimalloc_library() is not None
needs_mimalloc = pytest.mark.skipif(not MIMALLOC,
                                    reason='mimalloc is preloaded from the cmeel-mimalloc wheel, on Linux')

# Allocates a fresh 64 MiB output per call, like a step's activations; prints the median faults per call.
_FAULT_PROBE = textwrap.dedent('''
    from ssl_jax import host_allocator
    import sys
    print(host_allocator.describe(), file=sys.stderr)
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
_DESCRIBE = 'from ssl_jax import host_allocator; print(host_allocator.describe())'


def _environment(**env: str) -> dict[str, str]:
  """This process's environment without mimalloc, on CPU, with `env` added."""
  return dict(host_allocator.without_mimalloc(dict(os.environ)), JAX_PLATFORMS='cpu', PYTHONPATH=REPO, **env)


def _python(*args: str, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
  """Runs `python args...` in `_environment(**env)`."""
  return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                        env=_environment(**env))


def _faults_per_call(*launcher: str) -> tuple[float, str]:
  """Median page faults per 64 MiB call of the probe started by `python [launcher...] -c PROBE`; its stderr."""
  proc = _python(*launcher, '-c', _FAULT_PROBE)
  assert proc.returncode == 0, proc.stderr
  return float(proc.stdout.strip().splitlines()[-1]), proc.stderr


@needs_mimalloc
def test_the_launcher_preloads_mimalloc_and_stops_the_page_faults_the_system_allocator_pays():
  system, system_log = _faults_per_call()
  mimalloc, mimalloc_log = _faults_per_call('-m', 'ssl_jax.launch')
  assert 'host allocator: system (start with `python -m ssl_jax.launch`' in system_log, system_log
  assert 'host allocator: mimalloc (mi_version ' in mimalloc_log, mimalloc_log
  assert 'MIMALLOC_PURGE_DELAY=-1' in mimalloc_log, mimalloc_log
  assert system > 0.5 * _PAGES_PER_CALL, f'the probe should fault on every page by default, got {system}'
  assert mimalloc < 0.02 * _PAGES_PER_CALL, f'mimalloc still faults {mimalloc} pages per call'


def test_the_launcher_becomes_the_command_same_pid_arguments_and_exit_status():
  child = subprocess.Popen([sys.executable, '-m', 'ssl_jax.launch', '-c',
                            'import os, sys; print(os.getpid(), sys.argv[1:]); sys.exit(3)', 'x', '--flag=1'],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_environment())
  out, err = child.communicate(timeout=120)
  assert child.returncode == 3, err
  assert out.strip() == f"{child.pid} ['x', '--flag=1']", (out, err)  # So signals reach the command itself.


def test_the_launcher_without_a_command_prints_its_usage_and_exits_2():
  proc = _python('-m', 'ssl_jax.launch', timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.startswith(launch.USAGE), proc.stderr


@needs_mimalloc
def test_an_inherited_ld_preload_is_kept_after_mimalloc():
  # libm is a harmless library to preload; it stays, after mimalloc, which serves malloc.
  script = f'import os; print(os.environ["LD_PRELOAD"]); {_DESCRIBE}'
  proc = _python('-m', 'ssl_jax.launch', '-c', script, timeout=120, LD_PRELOAD='libm.so.6')
  assert proc.returncode == 0, proc.stderr
  preload, described = proc.stdout.strip().splitlines()
  assert preload == f'{host_allocator.mimalloc_library()}:libm.so.6'
  assert described.startswith('host allocator: mimalloc (mi_version ')


@needs_mimalloc
def test_an_inherited_mimalloc_and_its_options_are_left_as_they_are(tmp_path):
  own = tmp_path / 'libmimalloc.so.3'  # The user's own mimalloc, preloaded by hand.
  own.symlink_to(host_allocator.mimalloc_library())
  script = f'import os; print(os.environ["LD_PRELOAD"]); {_DESCRIBE}'
  proc = _python('-m', 'ssl_jax.launch', '-c', script, timeout=120, LD_PRELOAD=str(own),
                 MIMALLOC_PURGE_DELAY='100')
  assert proc.returncode == 0, proc.stderr
  preload, described = proc.stdout.strip().splitlines()
  assert preload == str(own)  # No second mimalloc.
  assert described.startswith('host allocator: mimalloc (mi_version ') and 'MIMALLOC_PURGE_DELAY=100)' in described


def test_a_mimalloc_the_loader_refused_is_reported_with_the_system_allocator(tmp_path):
  missing = str(tmp_path / 'libmimalloc.so')  # The loader says it cannot preload it and goes on without.
  proc = _python('-c', _DESCRIBE, timeout=120, LD_PRELOAD=missing)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip() == (f'host allocator: system (LD_PRELOAD names {missing}, but the loader did not '
                                 'load it: see its message)')


@pytest.mark.parametrize('system, wheel, reason', [
    ('Linux', None, 'the cmeel-mimalloc package is not installed (pip install -e .)'),
    ('Darwin', '/lib/libmimalloc.so', 'preloading mimalloc needs Linux; this is Darwin'),
])
def test_where_mimalloc_cannot_be_preloaded_the_launcher_says_why_once_and_starts_the_command(
    monkeypatch, capsys, system, wheel, reason):
  monkeypatch.setattr(host_allocator.platform, 'system', lambda: system)
  monkeypatch.setattr(host_allocator, 'mimalloc_library', lambda: wheel)
  started = []
  monkeypatch.setattr(launch.os, 'execve', lambda *a: started.append(a))
  monkeypatch.setattr(launch.os, 'environ', {'HOME': '/h', 'LD_PRELOAD': '/a.so'})
  launch.main(['-m', 'ssl_jax.main', '--workdir=w'])
  assert started == [(sys.executable, [sys.executable, '-m', 'ssl_jax.main', '--workdir=w'],
                      {'HOME': '/h', 'LD_PRELOAD': '/a.so'})]  # The environment as it was.
  out, err = capsys.readouterr()
  assert out == '' and err == f'ssl_jax.launch: {reason}; starting with the system allocator.\n'
  monkeypatch.setattr(host_allocator, 'mimalloc_version', lambda: None)
  monkeypatch.setattr(host_allocator.os, 'environ', {})
  assert host_allocator.describe() == f'host allocator: system ({reason})'


def test_preload_environment_puts_mimalloc_first_and_keeps_what_was_set():
  env = host_allocator.preload_environment({'LD_PRELOAD': '/a.so /b.so', 'HOME': '/h'}, '/m/libmimalloc.so')
  assert env == {'LD_PRELOAD': '/m/libmimalloc.so:/a.so:/b.so', 'HOME': '/h', 'MIMALLOC_PURGE_DELAY': '-1'}
  assert host_allocator.preload_environment({'MIMALLOC_PURGE_DELAY': '100'}, '/m.so')['MIMALLOC_PURGE_DELAY'] == '100'
  own = {'LD_PRELOAD': '/a.so:/opt/libmimalloc.so.2'}
  assert host_allocator.preload_environment(own, '/m/libmimalloc.so')['LD_PRELOAD'] == own['LD_PRELOAD']
  assert host_allocator.without_mimalloc(env) == {'LD_PRELOAD': '/a.so:/b.so', 'HOME': '/h',
                                                  'MIMALLOC_PURGE_DELAY': '-1'}
  assert 'LD_PRELOAD' not in host_allocator.without_mimalloc({'LD_PRELOAD': '/m/libmimalloc.so'})


@pytest.mark.slow
@needs_mimalloc
def test_bench_times_each_allocator_in_its_own_process_side_by_side():
  allocators = ['system', 'mimalloc']
  proc = subprocess.run([sys.executable, 'experiments/bench_train_step.py', '--methods=simclr', '--batch_sizes=4',
                         '--length=64', '--steps=2', '--rounds=2', f'--host_allocators={",".join(allocators)}'],
                        cwd=REPO, capture_output=True, text=True, timeout=600, env=_environment())
  assert proc.returncode == 0, proc.stderr[-3000:]
  table = [line for line in proc.stdout.splitlines() if line.startswith('| simclr | 4 |')]
  assert [line.split(' | ')[3] for line in table] == allocators, proc.stdout  # The allocator in force in each.
  assert 'mimalloc / system step time' in proc.stdout
  assert 'peak RSS of the process with host allocator mimalloc' in proc.stdout
