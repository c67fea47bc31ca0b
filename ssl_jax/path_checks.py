"""Checks of the files and directories an entry point reads or writes, made before any expensive work.

Each raises `PathError` (a ValueError) whose message names the path and what is wrong with it: a workdir
that is a file, an output file that is a directory or sits where nothing can be written, an input that is
missing, the real recordings' directory that does not exist or lacks its files. They read only directory
entries and permissions, never data.
"""

from __future__ import annotations

import os
from typing import Any

from ssl_jax.data import spec
from ssl_jax.workdir import layout


class PathError(ValueError):
  """A path given to an entry point cannot be used; the message names it and why."""


def _nearest_existing(path: str) -> str:
  path = os.path.abspath(path)
  while not os.path.exists(path):
    parent = os.path.dirname(path)
    if parent == path:
      break
    path = parent
  return path


def _check_creatable(path: str, what: str) -> None:
  """`path` does not exist: its nearest existing ancestor must be a writable directory."""
  ancestor = _nearest_existing(path)
  if not os.path.isdir(ancestor):
    raise PathError(f'{what} {path!r} cannot be created: {ancestor!r} is a file, not a directory')
  if not os.access(ancestor, os.W_OK | os.X_OK):
    raise PathError(f'{what} {path!r} cannot be created: no write permission in {ancestor!r}')


def check_workdir(workdir: str, what: str = 'workdir') -> None:
  """A directory to write a run into: it exists as a writable directory or can be created."""
  if not workdir:
    raise PathError(f'{what} is empty: give a directory')
  if os.path.exists(workdir):
    if not os.path.isdir(workdir):
      raise PathError(f'{what} {workdir!r} is a file, not a directory')
    if not os.access(workdir, os.W_OK | os.X_OK):
      raise PathError(f'{what} {workdir!r} is not writable')
    return
  _check_creatable(workdir, what)


def check_nothing_to_overwrite(workdir: str, what: str = 'workdir') -> None:
  """`workdir` does not exist, or is an empty directory: writing a new run there overwrites nothing."""
  if not os.path.exists(workdir):
    return
  if not os.path.isdir(workdir):
    raise PathError(f'{what} {workdir!r} is a file, not a directory')
  held = sorted(os.listdir(workdir))
  if held:
    shown = ', '.join(held[:6]) + (', ...' if len(held) > 6 else '')
    raise PathError(f'{what} {workdir!r} is not empty (it holds {shown}); a new run is written only into an '
                    'empty or new directory, so that no run is overwritten')


def check_new_workdir(workdir: str, what: str = 'workdir') -> None:
  """A directory to write a new run into: `check_workdir` and `check_nothing_to_overwrite`."""
  check_workdir(workdir, what)
  check_nothing_to_overwrite(workdir, what)


def check_existing_dir(path: str, what: str) -> None:
  """A directory to read from: it exists and is a directory."""
  if not path:
    raise PathError(f'{what} is empty: give a directory')
  if not os.path.exists(path):
    raise PathError(f'{what} {path!r} does not exist')
  if not os.path.isdir(path):
    raise PathError(f'{what} {path!r} is a file, not a directory')


def check_output_file(path: str, what: str = '--out') -> None:
  """A file to (over)write: not a directory, and its directory exists writable or can be created."""
  if not path:
    raise PathError(f'{what} is empty: give a file path')
  if os.path.isdir(path):
    raise PathError(f'{what} {path!r} is a directory; give a file path inside it')
  if os.path.exists(path):
    if not os.access(path, os.W_OK) or not os.access(os.path.dirname(os.path.abspath(path)), os.W_OK | os.X_OK):
      raise PathError(f'{what} {path!r} exists and cannot be replaced (no write permission)')
    return
  folder = os.path.dirname(os.path.abspath(path))
  if os.path.isdir(folder):
    if not os.access(folder, os.W_OK | os.X_OK):
      raise PathError(f'{what} {path!r} cannot be written: no write permission in {folder!r}')
    return
  _check_creatable(folder, f'the directory of {what}')


def check_input_file(path: str, what: str) -> None:
  """A file to read: it exists and is not a directory."""
  if not path:
    raise PathError(f'{what} is empty: give a file path')
  if not os.path.exists(path):
    raise PathError(f'{what} {path!r} does not exist')
  if os.path.isdir(path):
    raise PathError(f'{what} {path!r} is a directory, not a file')
  if not os.access(path, os.R_OK):
    raise PathError(f'{what} {path!r} is not readable')


def check_data_inputs(data_config: Any) -> None:
  """`config.data` with `source='real'`: `manual_dir` is a directory holding train.h5 and test.h5."""
  if data_config.source != 'real':
    return
  real_files = list(spec.REAL_FILE_NAMES.values())
  manual_dir = data_config.manual_dir
  check_existing_dir(manual_dir, "config.data.manual_dir (the real recordings' directory)")
  missing = [name for name in real_files if not os.path.isfile(os.path.join(manual_dir, name))]
  if missing:
    present = sorted(os.listdir(manual_dir))[:10]
    raise PathError(f'config.data.manual_dir {manual_dir!r} lacks {missing} (the real source reads '
                    f'{real_files} from it; it holds {present or "nothing"})')


def check_trained_workdir(workdir: str, step: int | None = None) -> int:
  """A pretraining workdir to read: config.json and a finished checkpoint at `step` (default: the latest).

  Returns the step to read.
  """
  check_existing_dir(workdir, 'workdir')
  if not os.path.isfile(layout.config_path(workdir)):
    raise PathError(f'{layout.config_path(workdir)} does not exist: {workdir!r} is not a pretraining workdir')
  steps = layout.checkpoint_steps(workdir)
  if not steps:
    raise PathError(f'no checkpoint under {layout.checkpoints_dir(workdir)}: has {workdir!r} been trained?')
  if step is None:
    return steps[-1]
  if step not in steps:
    raise PathError(f'no step {step} under {layout.checkpoints_dir(workdir)} (have '
                    f'{", ".join(str(s) for s in steps)})')
  return step
