"""Keeps freed host memory mapped, so that XLA:CPU's per-step buffers stop costing page faults.

XLA:CPU mallocs the buffers of every step it runs (activations kept for the backward pass, gradients,
temporaries) and frees them when the step ends. glibc serves such large blocks
with `mmap` and returns them with `munmap` (XLA's worker threads have their own arenas, whose
64 MiB heaps cannot hold them, so they are mmapped even with mmap switched off). The next step touches
fresh pages, and the kernel zero-fills each 4 KiB page on a fault. Whether a given process falls into
this depends on glibc's dynamic mmap threshold, so the same run can be fast once and slow the next.
What it costs and what each policy saves: docs/performance.md.

Two policies, process-wide, applied by `configure(policy)` first thing in an entry point:
- `mimalloc` (the default of `ssl_jax.main`, `experiments/study.py` and the bench): the process relaunches
  itself once with mimalloc (the pinned `cmeel-mimalloc` wheel) in `LD_PRELOAD` and
  `MIMALLOC_PURGE_DELAY=-1`. mimalloc keeps a heap per thread (no shared lock) and, with purging off,
  keeps freed pages mapped for reuse (figures: docs/performance.md).
- `system`: the C library's defaults.

mimalloc cannot be switched on inside a running process (malloc is bound when the program loads), hence
the relaunch: `os.execve` of the same interpreter and command line (`sys.orig_argv`), same PID, same
open files and pipes. Where it cannot work (not Linux, the wheel not installed, the loader refused the
library, or `relaunch=False` for a process that must not be replaced, such as a notebook kernel) the
process goes on with the system allocator and says why. Children inherit `LD_PRELOAD`, so they run on
mimalloc too. Results are bit-identical under every policy.
"""

import ctypes
import dataclasses
import importlib.metadata
import os
import platform
import resource
import sys

from absl import logging

POLICIES = ('mimalloc', 'system')
DEFAULT_POLICY = 'mimalloc'
# Set in the relaunched process's environment: a second relaunch would loop.
RELAUNCH_MARK = 'SSL_JAX_MIMALLOC_RELAUNCHED'
# mimalloc's own option: never hand freed pages back to the OS (its default, 10 ms, faulted again).
MIMALLOC_ENV = {'MIMALLOC_PURGE_DELAY': '-1'}


@dataclasses.dataclass(frozen=True)
class Applied:
  """What `configure` did: the policy in force (which may differ from the one asked for) and why."""
  policy: str
  detail: str

  def __str__(self) -> str:
    return f'host allocator: {self.policy} ({self.detail})'


def mimalloc_library() -> str | None:
  """Path of `libmimalloc.so` in the installed `cmeel-mimalloc` wheel; None when it is not installed."""
  try:
    path = str(importlib.metadata.distribution('cmeel-mimalloc').locate_file('cmeel.prefix/lib/libmimalloc.so'))
  except importlib.metadata.PackageNotFoundError:
    return None
  return path if os.path.isfile(path) else None


def mimalloc_version() -> int | None:
  """mimalloc's `mi_version()` when it is loaded globally in this process (preloaded); else None."""
  try:
    return int(ctypes.CDLL(None).mi_version())
  except (AttributeError, OSError):
    return None


def _preloaded(environ: dict[str, str]) -> list[str]:
  """The libraries of `environ`'s LD_PRELOAD (the loader splits on colons and spaces)."""
  return [p for p in environ.get('LD_PRELOAD', '').replace(' ', ':').split(':') if p]


def preload_environment(environ: dict[str, str], library: str) -> dict[str, str]:
  """`environ` with `library` first in LD_PRELOAD, mimalloc's options (unless already set) and the mark."""
  preload = [library] + [p for p in _preloaded(environ) if p != library]
  return {**MIMALLOC_ENV, **environ, 'LD_PRELOAD': ':'.join(preload), RELAUNCH_MARK: '1'}


def without_mimalloc(environ: dict[str, str]) -> dict[str, str]:
  """`environ` without mimalloc in LD_PRELOAD nor the mark: for a child that must run another policy."""
  env = {k: v for k, v in environ.items() if k not in (RELAUNCH_MARK, 'LD_PRELOAD')}
  preload = [p for p in _preloaded(environ) if 'libmimalloc' not in p]
  if preload:
    env['LD_PRELOAD'] = ':'.join(preload)
  return env


def _configure_mimalloc(relaunch: bool) -> Applied:
  version = mimalloc_version()
  relaunched = os.environ.pop(RELAUNCH_MARK, None) is not None  # Not passed on: children check for themselves.
  if version is not None:
    purge = os.environ.get('MIMALLOC_PURGE_DELAY')
    return Applied('mimalloc', f'mi_version {version}, preloaded{", relaunched" if relaunched else ""}; '
                               f'MIMALLOC_PURGE_DELAY={purge if purge else "unset: pages go back to the OS"}')
  library = mimalloc_library()
  if platform.system() != 'Linux':
    reason = f'preloading needs Linux; this is {platform.system()}'
  elif library is None:
    reason = 'the cmeel-mimalloc package is not installed (pip install -e .)'
  elif relaunched:
    reason = (f'relaunched with LD_PRELOAD={os.environ.get("LD_PRELOAD", "")} but the loader did not load '
              f'{library} (its message is above)')
  elif not relaunch:
    reason = 'it must be preloaded and this process may not relaunch itself'
  else:
    env = preload_environment(dict(os.environ), library)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)  # Does not return.
  logging.warning('host_allocator=mimalloc: %s; going on with the system allocator.', reason)
  return Applied('system', f'mimalloc unavailable: {reason}')


def configure(policy: str, relaunch: bool = True) -> Applied:
  """Applies `policy` to this process; returns what it did (its str is a one-line account).

  'mimalloc' relaunches the process with mimalloc preloaded unless it already is (or `relaunch` is
  False); where that cannot work it goes on with the system allocator and says why. Raises ValueError
  for an unknown policy. Call it first thing in an entry point, before JAX starts.
  """
  if policy not in POLICIES:
    raise ValueError(f"host_allocator must be one of {POLICIES}, got {policy!r}")
  if policy == 'mimalloc':
    return _configure_mimalloc(relaunch)
  if mimalloc_version() is not None:
    logging.warning('host_allocator=%s, but mimalloc is preloaded (LD_PRELOAD=%s) and serves malloc: '
                    'clear LD_PRELOAD for the %s allocator.', policy, os.environ.get('LD_PRELOAD', ''), policy)
    return Applied('mimalloc', f'inherited LD_PRELOAD; {policy} was asked for and cannot apply')
  return Applied('system', 'the C library defaults')


def minor_page_faults() -> int:
  """Minor page faults of this process so far (`getrusage`): the cost `mimalloc` removes."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
