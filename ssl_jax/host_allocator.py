"""Which C allocator serves this process's malloc, and the environment that preloads mimalloc.

XLA:CPU mallocs the buffers of every step it runs (activations kept for the backward pass, gradients,
temporaries) and frees them when the step ends. glibc serves such large blocks with `mmap` and returns
them with `munmap`, so the next step touches fresh pages and the kernel zero-fills each 4 KiB page on a
fault. mimalloc (the pinned `cmeel-mimalloc` wheel) with `MIMALLOC_PURGE_DELAY=-1` keeps freed pages
mapped for reuse, so those faults go away (figures: docs/performance.md). Results are bit-identical
under either allocator.

malloc is bound when a program loads, so mimalloc must be in `LD_PRELOAD` before the process starts:
`python -m ssl_jax.launch` (ssl_jax/launch.py) starts a command that way. This module builds that
environment (`preload_environment`, `without_mimalloc`) and tells an entry point what is in force
(`describe`); nothing here changes the running process.
"""

import ctypes
import importlib.metadata
import os
import platform
import resource

# mimalloc's own option: never hand freed pages back to the OS (its default, 10 ms, faulted again).
MIMALLOC_ENV = {'MIMALLOC_PURGE_DELAY': '-1'}
LAUNCH_COMMAND = 'python -m ssl_jax.launch'


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


def preloaded(environ: dict[str, str]) -> list[str]:
  """The libraries of `environ`'s LD_PRELOAD (the loader splits on colons and spaces)."""
  return [p for p in environ.get('LD_PRELOAD', '').replace(' ', ':').split(':') if p]


def _is_mimalloc(library: str) -> bool:
  return 'libmimalloc' in os.path.basename(library)


def unavailable_reason() -> str | None:
  """Why mimalloc cannot be preloaded here (not Linux, the wheel not installed); None when it can."""
  if platform.system() != 'Linux':
    return f'preloading mimalloc needs Linux; this is {platform.system()}'
  if mimalloc_library() is None:
    return 'the cmeel-mimalloc package is not installed (pip install -e .)'
  return None


def preload_environment(environ: dict[str, str], library: str) -> dict[str, str]:
  """`environ` with `library` first in LD_PRELOAD and mimalloc's options, each unless `environ` has its own.

  What `environ` sets is kept: its LD_PRELOAD libraries stay (after `library`), a mimalloc it already
  preloads is left alone (no second one is added), and its MIMALLOC_* values win over ours.
  """
  inherited = preloaded(environ)
  preload = inherited if any(map(_is_mimalloc, inherited)) else [library] + inherited
  return {**MIMALLOC_ENV, **environ, 'LD_PRELOAD': ':'.join(preload)}


def without_mimalloc(environ: dict[str, str]) -> dict[str, str]:
  """`environ` without mimalloc in LD_PRELOAD: for a child that must run on the system allocator."""
  env = {k: v for k, v in environ.items() if k != 'LD_PRELOAD'}
  preload = [p for p in preloaded(environ) if not _is_mimalloc(p)]
  if preload:
    env['LD_PRELOAD'] = ':'.join(preload)
  return env


def in_force() -> str:
  """'mimalloc' when mimalloc serves this process's malloc, else 'system'."""
  return 'mimalloc' if mimalloc_version() is not None else 'system'


def describe() -> str:
  """One line for an entry point's log: the allocator in force and, for the system one, why and what to do."""
  version = mimalloc_version()
  if version is not None:
    purge = os.environ.get('MIMALLOC_PURGE_DELAY')
    return (f'host allocator: mimalloc (mi_version {version}, preloaded; '
            f'MIMALLOC_PURGE_DELAY={purge if purge else "unset: freed pages go back to the OS"})')
  refused = [p for p in preloaded(dict(os.environ)) if _is_mimalloc(p)]
  if refused:
    return f'host allocator: system (LD_PRELOAD names {refused[0]}, but the loader did not load it: see its message)'
  reason = unavailable_reason()
  if reason is not None:
    return f'host allocator: system ({reason})'
  return (f'host allocator: system (start with `{LAUNCH_COMMAND}` to preload mimalloc, which removes '
          "XLA:CPU's per-step page faults: docs/performance.md)")


def minor_page_faults() -> int:
  """Minor page faults of this process so far (`getrusage`): the cost mimalloc removes."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
