"""The one place that knows the file names of a pretraining workdir, and its `config.json`.

  WORKDIR/
    config.json              the run's config, written at the start (`write_config`); a resume that changes
                             it on purpose rewrites it with the history (`ssl_jax.workdir.resume`)
    checkpoints/<step>/      orbax's finalized checkpoint steps (`ssl_jax.workdir.checkpoints`)
    unreadable_checkpoints/  finalized steps that failed to restore, moved there by the writer
    metrics.jsonl            one JSON row per logged step (`ssl_jax.workdir.metrics`)
    tensorboard/             the same rows as TensorBoard event files
    writer.lock              the writer lock and its holder's record (`ssl_jax.workdir.lock`)
    profile/                 JAX profiler traces (`config.profile_first_step`)
    eval/results.json        the probes' results (`python -m ssl_jax.evaluate`)

Each path is a pure function of the workdir (`config_path(workdir)`, ...); the names are joined here and
nowhere else. `write_json_atomic` writes a file whole or not at all (a synced temporary file beside it,
then a rename), with the mode the process umask gives a new file (`ssl_jax.atomic_files`).
"""

import json
import os

import ml_collections

from ssl_jax import atomic_files

CONFIG = 'config.json'
CHECKPOINTS = 'checkpoints'
UNREADABLE_CHECKPOINTS = 'unreadable_checkpoints'
METRICS = 'metrics.jsonl'
TENSORBOARD = 'tensorboard'
LOCK = 'writer.lock'
PROFILE = 'profile'
EVAL_RESULTS = os.path.join('eval', 'results.json')


def config_path(workdir: str) -> str:
  return os.path.join(workdir, CONFIG)


def checkpoints_dir(workdir: str) -> str:
  return os.path.join(workdir, CHECKPOINTS)


def checkpoint_dir(workdir: str, step: int) -> str:
  """The directory of the finalized checkpoint step `step`."""
  return os.path.join(checkpoints_dir(workdir), str(step))


def unreadable_checkpoints_dir(workdir: str) -> str:
  return os.path.join(workdir, UNREADABLE_CHECKPOINTS)


def metrics_path(workdir: str) -> str:
  return os.path.join(workdir, METRICS)


def tensorboard_dir(workdir: str) -> str:
  return os.path.join(workdir, TENSORBOARD)


def lock_path(workdir: str) -> str:
  return os.path.join(workdir, LOCK)


def profile_dir(workdir: str) -> str:
  return os.path.join(workdir, PROFILE)


def eval_results_path(workdir: str) -> str:
  return os.path.join(workdir, EVAL_RESULTS)


def checkpoint_steps(workdir: str) -> list[int]:
  """The finalized checkpoint steps of a workdir, ascending (orbax's own listing; nothing is created)."""
  import orbax.checkpoint as ocp  # Local: reading the layout stays free of orbax's import.
  directory = checkpoints_dir(workdir)
  if not os.path.isdir(directory):
    return []
  return sorted(ocp.utils.checkpoint_steps(directory))


def write_json_atomic(path: str, payload: dict) -> None:
  """Writes `payload` as JSON to `path` via a synced temporary file beside it and a rename (never a partial
  file). Creates the folder of `path`; the file's mode is `0o666` less the process umask."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = atomic_files.create_temp_beside(path)
  try:
    with open(tmp, 'w') as f:
      json.dump(payload, f, indent=2, sort_keys=True)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Writes `workdir/config.json` atomically (`write_json_atomic`)."""
  write_json_atomic(config_path(workdir), json.loads(config.to_json_best_effort()))


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's config from `workdir/config.json` (JSON lists read as tuples).

  Raises FileNotFoundError naming the file when `workdir` holds none (it is not a pretraining workdir).
  """
  path = config_path(workdir)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} does not exist: {workdir!r} is not a pretraining workdir.')
  with open(path) as f:
    return ml_collections.ConfigDict(_lists_to_tuples(json.load(f)))


def _lists_to_tuples(tree):
  if isinstance(tree, dict):
    return {k: _lists_to_tuples(v) for k, v in tree.items()}
  if isinstance(tree, list):
    return tuple(_lists_to_tuples(v) for v in tree)
  return tree
