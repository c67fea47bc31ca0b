"""Starts a Python command with mimalloc preloaded, so that XLA:CPU's per-step buffers stop page-faulting.

  python -m ssl_jax.launch -m ssl_jax.main --config=configs/simclr.py --workdir=runs/simclr
  python -m ssl_jax.launch experiments/study.py --scale cpu --out runs/study_cpu

Everything after `ssl_jax.launch` is passed to this interpreter, as `python` itself takes it (`-m MODULE`,
`SCRIPT`, `-c CODE`, with their arguments). The launcher replaces itself with that command (`execve`:
same PID, same open files, signals reach the command directly) in the environment of
`host_allocator.preload_environment`: the `cmeel-mimalloc` wheel's `libmimalloc.so` first in
`LD_PRELOAD` and `MIMALLOC_PURGE_DELAY=-1`. An `LD_PRELOAD` or `MIMALLOC_*` value already set is kept
(ssl_jax/host_allocator.py says how). Where mimalloc cannot be preloaded (not Linux, the wheel not
installed) it says why in one line on stderr and starts the command with the system allocator. Children
of the command inherit the environment, so they run on mimalloc too. Why a launcher, and what mimalloc
saves: docs/performance.md.
"""

import os
import sys
from typing import NamedTuple

from ssl_jax import host_allocator

USAGE = f'usage: {host_allocator.LAUNCH_COMMAND} (-m MODULE | SCRIPT | -c CODE) [ARG ...]'


class Launch(NamedTuple):
  """The command to exec: its argv (argv[0] the interpreter), its environment, and a note for stderr."""
  argv: list[str]
  env: dict[str, str]
  note: str | None


def plan(python_args: list[str], environ: dict[str, str], executable: str = sys.executable) -> Launch:
  """The launch of `executable python_args...` with mimalloc preloaded into `environ`, or without it and why."""
  argv = [executable, *python_args]
  reason = host_allocator.unavailable_reason()
  if reason is not None:
    return Launch(argv, dict(environ), f'ssl_jax.launch: {reason}; starting with the system allocator.')
  return Launch(argv, host_allocator.preload_environment(environ, host_allocator.mimalloc_library()), None)


def main(python_args: list[str]) -> None:
  """Execs the command; returns only for a usage error (exit status 2) or `--help`."""
  if not python_args or python_args[0] in ('-h', '--help'):
    print(f'{USAGE}\n\n{__doc__}', file=sys.stderr if not python_args else sys.stdout)
    sys.exit(2 if not python_args else 0)
  launch = plan(python_args, dict(os.environ))
  if launch.note:
    print(launch.note, file=sys.stderr)
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(launch.argv[0], launch.argv, launch.env)


if __name__ == '__main__':
  main(sys.argv[1:])
