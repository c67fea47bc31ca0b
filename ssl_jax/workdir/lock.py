"""One writer per workdir: an exclusive OS file lock on `WORKDIR/writer.lock` for the life of a run.

The lock is `fcntl.flock` on an open file, so the kernel drops it however its holder ends (return,
exception, `kill -9`, crash): nothing a dead run leaves behind blocks the next launch. The file itself
stays (removing a lock file races with a process that has just opened it); after taking the lock the
holder writes its pid, host, start time and command line into it, so a refused launch can name the
process it collided with.

Who takes it: the process that writes (`ssl_jax.main`'s training, one lock per study output directory in
`experiments/study.py`). Readers (`ssl_jax.evaluate`) do not: they read only finalized checkpoints.
Multi-host: process 0 alone takes the lock of a run (it alone writes config.json and the metrics; orbax
coordinates the checkpoint writes of all processes) and tells the others whether it got it
(`ssl_jax.workdir.resume.lock_workdir`). One lock file per process would let two jobs with different
process counts write the same workdir, and one lock file taken by every process would make a job's
processes refuse each other.

Filesystems: flock excludes across processes on local disks, and across hosts on NFS (Linux maps it to
NFS byte-range locks). A filesystem that refuses locks (ENOLCK, EOPNOTSUPP: e.g. Lustre without
`-o flock`) gets a warning and no guarantee; the run goes on.
"""

import dataclasses
import errno
import fcntl
import json
import os
import socket
import sys
import time
from typing import Optional

from absl import logging

from ssl_jax.workdir import layout

_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class WorkdirBusyError(RuntimeError):
  """Another process holds the workdir's writer lock."""


@dataclasses.dataclass(frozen=True)
class Holder:
  """What the lock file says about the process that holds (or last held) the lock."""
  pid: Optional[int] = None
  host: Optional[str] = None
  started: Optional[str] = None
  command: Optional[str] = None

  def describe(self) -> str:
    if self.pid is None:
      return 'a process that has not recorded itself in the lock file yet'
    text = f'pid {self.pid} on host {self.host}'
    if self.started:
      text += f', started {self.started}'
    if self.command:
      text += f': {self.command}'
    if self.host == socket.gethostname() and not _alive(self.pid):
      text += (' (that pid is gone: a child process it forked may still hold the lock file open; '
               f'`fuser {layout.LOCK}` in the workdir names it)')
    return text


def read_holder(workdir: str) -> Holder:
  """The holder recorded in `workdir`'s lock file (empty fields when there is none or it is unreadable)."""
  try:
    with open(layout.lock_path(workdir)) as f:
      record = json.loads(f.read() or '{}')
  except (OSError, ValueError):
    return Holder()
  fields = {f.name for f in dataclasses.fields(Holder)}
  return Holder(**{k: v for k, v in record.items() if k in fields})


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class WorkdirLock:
  """The writer lock of one workdir; `acquire` raises WorkdirBusyError naming the holder when taken.

  Use as a context manager, or `acquire()` ... `release()`. Creates the workdir if needed.
  """

  def __init__(self, workdir: str):
    self.workdir = os.path.abspath(workdir)
    self._fd: Optional[int] = None

  @property
  def held(self) -> bool:
    return self._fd is not None

  def acquire(self) -> 'WorkdirLock':
    if self._fd is not None:
      return self
    if os.path.exists(self.workdir) and not os.path.isdir(self.workdir):
      raise ValueError(f'workdir {self.workdir!r} exists and is not a directory; give a directory path.')
    os.makedirs(self.workdir, exist_ok=True)
    fd = os.open(layout.lock_path(self.workdir), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(fd)
      raise WorkdirBusyError(
          f'workdir {self.workdir!r} is in use: another run is writing there ({read_holder(self.workdir).describe()}). '
          'Wait for it to end or stop it, or give another --workdir.') from None
    except OSError as e:
      if e.errno not in _UNSUPPORTED:
        os.close(fd)
        raise
      logging.warning('the filesystem of %s does not support file locks (%s): nothing stops a second run '
                      'from writing into this workdir at the same time.', self.workdir, e.strerror)
    self._fd = fd
    self._record_holder()
    return self

  def _record_holder(self) -> None:
    record = {'pid': os.getpid(), 'host': socket.gethostname(),
              'started': time.strftime('%Y-%m-%d %H:%M:%S %Z'), 'command': ' '.join(sys.argv)}
    payload = (json.dumps(record) + '\n').encode()
    os.ftruncate(self._fd, 0)
    os.pwrite(self._fd, payload, 0)

  def release(self) -> None:
    """Drops the lock (the file stays, with the last holder's record)."""
    if self._fd is None:
      return
    fd, self._fd = self._fd, None
    try:
      fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError:
      pass
    os.close(fd)

  def __enter__(self) -> 'WorkdirLock':
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()
