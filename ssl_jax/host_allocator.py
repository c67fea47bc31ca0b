"""Keeps freed host memory mapped, so that XLA:CPU's per-step buffers stop costing page faults.

XLA:CPU mallocs the buffers of every step it runs (activations kept for the backward pass, gradients,
temporaries: ~0.9 GB for SimCLR at batch 256, L=512) and frees them when the step ends. glibc serves blocks
that large with `mmap` and returns them with `munmap` (XLA's worker threads have their own arenas, whose
64 MiB heaps cannot hold them, so they are mmapped even with mmap switched off). The next step touches
fresh pages, and the kernel zero-fills each 4 KiB page on a fault: on a 2-core CPU that was ~211,000 faults and 0.36 s of system time in a 0.43 s step.

`retain` sets three glibc `mallopt` options: one arena for all threads (no per-thread heaps to shrink),
no mmap for large blocks, and no trimming of the heap top. After the first step every page the step needs
stays mapped and is reused: no faults, and the same step runs in ~0.24 s (1,964-2,127 views/s against
1,172-1,250 with the defaults, bench and `ssl_jax.main` alike).

It is opt-in (`--host_allocator=retain`), not the default, because it costs elsewhere: every thread
shares one arena lock, so XLA compiles run ~15% slower; the heap only grows (peak RSS 2.5 -> 4-5 GB for
one pretraining run); and the whole `experiments/study.py --scale cpu --steps 600` (25 MTC programs per
method, probes, supervised baselines, all in one process) took 876 s with it against 588 s without.
Use it for long pretraining runs of large steps on CPU. Results are bit-identical either way.

It is process-wide and must run before JAX starts its CPU backend (the worker threads pick their arena
when they first allocate). Other C libraries (macOS, musl) are left alone. `system` changes nothing.
"""

import ctypes
import platform
import resource

from absl import logging

POLICIES = ('retain', 'system')

# glibc's <malloc.h> parameter numbers.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_INT_MAX = 2**31 - 1
_RETAIN_OPTIONS = ((_M_ARENA_MAX, 1, 'one arena'), (_M_MMAP_MAX, 0, 'no mmap'),
                   (_M_TRIM_THRESHOLD, _INT_MAX, 'no trim'))


def _jax_backend_started() -> bool:
  """Whether JAX has created its backends (and with them XLA's worker threads) in this process."""
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    return bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError):
    return False


def configure(policy: str) -> str:
  """Applies `policy` ('retain' or 'system') to this process; returns a one-line account of what it did.

  Raises ValueError for an unknown policy. Call it first thing in an entry point: once JAX's backend has
  started, 'retain' can no longer reach XLA's threads and only logs a warning.
  """
  if policy not in POLICIES:
    raise ValueError(f"host_allocator must be one of {POLICIES}, got {policy!r}")
  if policy == 'system':
    return 'host allocator: system (the C library defaults)'
  libc_name, _ = platform.libc_ver()
  if libc_name != 'glibc':
    return f'host allocator: system (retain needs glibc; this process runs on {libc_name or platform.system()})'
  if _jax_backend_started():
    logging.warning('host_allocator=retain was requested after JAX started its backend; XLA\'s threads '
                    'keep their own heaps and its step buffers still page-fault. Configure it first.')
  libc = ctypes.CDLL(None)
  failed = [name for param, value, name in _RETAIN_OPTIONS if libc.mallopt(param, value) != 1]
  if failed:
    raise RuntimeError(f'glibc mallopt refused: {", ".join(failed)}')
  return 'host allocator: retain (glibc: ' + ', '.join(name for _, _, name in _RETAIN_OPTIONS) + ')'


def minor_page_faults() -> int:
  """Minor page faults of this process so far (`getrusage`): the cost `retain` removes."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
