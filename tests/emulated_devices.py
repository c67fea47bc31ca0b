"""Runs a Python script in a subprocess on N emulated CPU devices and reads the result it prints.

The device count is fixed when JAX starts, so every multi-device test runs its script in a fresh process
with `XLA_FLAGS=--xla_force_host_platform_device_count=N`. The script prints one line `RESULT<json>`.
"""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# XLA:CPU aborts the process (SIGABRT: "Termination timeout ... of 40 seconds exceeded ... Expected 4 threads
# to join the rendezvous, but only 3 of them arrived on time") when one emulated device reaches a collective
# more than 40 s after the others, which a loaded 2-core host can cause by starving one device's thread.
# Host scheduling is not under test: allow 600 s (a real deadlock still ends there, with XLA's message,
# inside the subprocess timeout).
_COLLECTIVE_TIMEOUT = '--xla_cpu_collective_call_terminate_timeout_seconds=600'


def run(script: str, args: list[str], num_devices: int, *, x64: bool = False, timeout: float = 900) -> dict:
  """`python -c script *args` from the repository root on `num_devices` CPU devices (float64 enabled with
  `x64`); returns the JSON of its last `RESULT` line. A failed run fails the test with the script's stderr,
  less the native stack of an abort (its '@ 0x...' lines), so that XLA's message stays in view."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO,
             XLA_FLAGS=f'--xla_force_host_platform_device_count={num_devices} {_COLLECTIVE_TIMEOUT}')
  if x64:
    env['JAX_ENABLE_X64'] = '1'
  env.pop('JAX_COMPILATION_CACHE_DIR', None)  # Multi-device programs loaded from the cache crashed (SIGSEGV).
  proc = subprocess.run([sys.executable, '-c', script, *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=timeout)
  messages = '\n'.join(l for l in proc.stderr.splitlines() if not l.lstrip().startswith('@ '))
  assert proc.returncode == 0, messages[-4000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith('RESULT')][-1]
  return json.loads(line[len('RESULT'):])
