"""Host allocator policy: 'retain' removes the page faults of XLA:CPU's per-step buffers; bad input is refused.

The policy is process-wide, so everything that calls `configure('retain')` runs in a subprocess.
"""

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from ssl_jax import host_allocator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLIBC = platform.libc_ver()[0] == 'glibc'

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


def _faults_per_call(policy: str) -> float:
  proc = subprocess.run([sys.executable, '-c', _FAULT_PROBE, policy], cwd=REPO, capture_output=True, text=True,
                        timeout=300, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr
  return float(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason='the retain policy needs glibc')
def test_retain_stops_the_page_faults_that_system_pays_for_every_fresh_buffer():
  system = _faults_per_call('system')
  retain = _faults_per_call('retain')
  assert system > 0.5 * _PAGES_PER_CALL, f'the probe should fault on every page by default, got {system}'
  assert retain < 0.02 * _PAGES_PER_CALL, f'retain still faults {retain} pages per call'


def test_unknown_policy_is_refused_with_the_choices():
  with pytest.raises(ValueError, match=r"host_allocator must be one of \('retain', 'system'\), got 'tcmalloc'"):
    host_allocator.configure('tcmalloc')


def test_system_policy_changes_nothing():
  assert host_allocator.configure('system') == 'host allocator: system (the C library defaults)'


def test_retain_is_skipped_without_glibc(monkeypatch):
  monkeypatch.setattr(host_allocator.platform, 'libc_ver', lambda: ('', ''))
  monkeypatch.setattr(host_allocator.ctypes, 'CDLL', lambda *a: pytest.fail('must not touch the C library'))
  assert 'retain needs glibc' in host_allocator.configure('retain')


@pytest.mark.skipif(not GLIBC, reason='the retain policy needs glibc')
def test_retain_after_jax_started_warns_that_it_comes_too_late():
  script = ('import jax, jax.numpy as jnp; jnp.ones(3).block_until_ready()\n'
            'from ssl_jax import host_allocator; print(host_allocator.configure("retain"))')
  proc = subprocess.run([sys.executable, '-c', script], cwd=REPO, capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr
  assert 'after JAX started its backend' in proc.stderr
  assert proc.stdout.strip().startswith('host allocator: retain')


def test_main_refuses_an_unknown_host_allocator(tmp_path):
  proc = subprocess.run([sys.executable, '-m', 'ssl_jax.main', '--config=configs/smoke.py',
                         f'--workdir={tmp_path}', '--host_allocator=jemalloc'], cwd=REPO, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode != 0
  assert 'host_allocator' in proc.stderr and 'jemalloc' in proc.stderr
  assert not os.listdir(tmp_path)


@pytest.mark.slow
def test_bench_times_each_allocator_in_its_own_process_side_by_side():
  proc = subprocess.run([sys.executable, 'experiments/bench_train_step.py', '--methods=simclr', '--batch_sizes=4',
                         '--length=64', '--steps=2', '--rounds=2', '--host_allocators=system,retain'],
                        cwd=REPO, capture_output=True, text=True, timeout=600, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr[-3000:]
  table = [line for line in proc.stdout.splitlines() if line.startswith('| simclr | 4 |')]
  assert [line.split(' | ')[4] for line in table] == ['system', 'retain'], proc.stdout
  assert 'fused, retain / fused, system step time' in proc.stdout
  assert 'peak RSS of the process with host allocator retain' in proc.stdout
