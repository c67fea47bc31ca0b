"""Files written through a temporary file and a rename get the mode the user's umask gives a new file."""

import os
import stat
import subprocess
import sys

import pytest

from ssl_jax import atomic_files
from ssl_jax.data import simulate
from ssl_jax.workdir import layout

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def umask():
  """`os.umask`, for the test to set the process umask with; the previous umask is restored afterwards."""
  previous = os.umask(0o022)
  yield os.umask
  os.umask(previous)


def _write_hdf5(path):
  simulate.write_hdf5(path, 'test', 1, simulate.SimConfig(length=16), seed=0)


def _write_json(path):
  layout.write_json_atomic(path, {'a': 1})


def _temp_file(path):
  os.replace(atomic_files.create_temp_beside(path), path)


WRITERS = {'simulate.write_hdf5': _write_hdf5, 'layout.write_json_atomic': _write_json,
           'atomic_files.create_temp_beside': _temp_file}


@pytest.mark.parametrize('mask, mode', [(0o022, 0o644), (0o077, 0o600)], ids=['umask022', 'umask077'])
@pytest.mark.parametrize('writer', sorted(WRITERS))
def test_written_file_follows_the_umask(tmp_path, umask, writer, mask, mode):
  path = str(tmp_path / 'out')
  umask(mask)
  WRITERS[writer](path)
  assert stat.S_IMODE(os.stat(path).st_mode) == mode
  assert os.listdir(tmp_path) == ['out']  # No temporary file left behind.


@pytest.mark.parametrize('mask, mode', [(0o022, 0o644), (0o077, 0o600)], ids=['umask022', 'umask077'])
def test_simulate_cli_output_follows_the_umask(tmp_path, mask, mode):
  out = tmp_path / 'f.h5'
  done = subprocess.run(
      [sys.executable, '-c', f'import os, runpy, sys; os.umask({mask}); sys.argv[0] = "simulate"; '
       'runpy.run_module("ssl_jax.data.simulate", run_name="__main__")',
       '--out', str(out), '--examples_per_class', '1', '--length', '16', '--split', 'test'],
      cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, check=False)
  assert done.returncode == 0, done.stderr
  assert stat.S_IMODE(os.stat(out).st_mode) == mode


def test_temp_files_are_distinct_and_beside_the_target(tmp_path):
  target = str(tmp_path / 'x.h5')
  first, second = atomic_files.create_temp_beside(target), atomic_files.create_temp_beside(target)
  assert first != second
  assert os.path.dirname(first) == str(tmp_path) and os.path.basename(first).startswith('.x.h5.')
  assert first.endswith('.tmp') and os.path.getsize(first) == 0
