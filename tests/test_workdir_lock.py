"""One writer per workdir: the OS file lock refuses a second holder, names the first, and dies with it."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from ssl_jax.workdir import layout, lock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_HOLD = ('import sys, time; from ssl_jax.workdir import lock; lock.WorkdirLock(sys.argv[1]).acquire(); '
         'print("held", flush=True); time.sleep(600)')


def _holder(workdir):
  """A separate process that takes the lock of `workdir` and sleeps; returns once it holds the lock."""
  proc = subprocess.Popen([sys.executable, '-c', _HOLD, str(workdir)], cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == 'held'
  return proc


def test_second_holder_is_refused_with_the_first_named(tmp_path):
  workdir = tmp_path / 'run'
  proc = _holder(workdir)
  try:
    with pytest.raises(lock.WorkdirBusyError) as raised:
      lock.WorkdirLock(str(workdir)).acquire()
    message = str(raised.value)
    assert str(workdir) in message
    assert f'pid {proc.pid} on host {socket.gethostname()}' in message
  finally:
    proc.kill()
    proc.wait()


def test_lock_of_a_killed_holder_is_free(tmp_path):
  workdir = tmp_path / 'run'
  proc = _holder(workdir)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  with lock.WorkdirLock(str(workdir)) as taken:
    assert taken.held
    assert lock.read_holder(str(workdir)).pid == os.getpid()
  with open(layout.lock_path(str(workdir))) as f:
    assert json.load(f)['pid'] == os.getpid()  # The file stays after release, with the last holder.


def test_one_process_cannot_hold_a_workdir_twice(tmp_path):
  with lock.WorkdirLock(str(tmp_path)):
    with pytest.raises(lock.WorkdirBusyError, match=f'pid {os.getpid()}'):
      lock.WorkdirLock(str(tmp_path)).acquire()
  lock.WorkdirLock(str(tmp_path)).acquire().release()  # Released: free again.


def test_workdir_that_is_a_file_is_refused(tmp_path):
  path = tmp_path / 'file'
  path.write_text('x')
  with pytest.raises(ValueError, match='not a directory'):
    lock.WorkdirLock(str(path)).acquire()


def test_holder_record_that_is_empty_still_gives_a_message(tmp_path):
  with open(layout.lock_path(str(tmp_path)), 'w'):
    pass
  assert 'not recorded itself' in lock.read_holder(str(tmp_path)).describe()


def test_study_refuses_an_output_directory_in_use(tmp_path):
  sys.path.insert(0, REPO)
  from experiments import study
  out = tmp_path / 'study'
  proc = _holder(out)
  try:
    started = time.perf_counter()
    with pytest.raises(lock.WorkdirBusyError, match=f'pid {proc.pid}'):
      study.run_study('smoke', str(out))
    assert time.perf_counter() - started < 30  # Refused before any data or training work.
    assert sorted(os.listdir(out)) == [layout.LOCK]
  finally:
    proc.kill()
    proc.wait()
