"""The one checkpoint helper: orbax `CheckpointManager` over the whole train state, plus the run config.

A pretraining workdir holds `config.json` (the run's config, written once at the start) and
`checkpoints/<step>/` (orbax). Orbax writes each step into a temporary directory and renames it only once
complete, so a crash or kill mid-save leaves at most a temporary directory that is never restored; the
last complete step is. Resuming refuses a workdir whose config differs in anything that shapes the state
(method, model, queue, optimiser), naming the key.
"""

import json
import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

PyTree = Any

# Keys whose values fix the structure or shapes of the train state: a checkpoint is only compatible with
# a config that agrees on all of them.
STATE_DEFINING_KEYS = ('method', 'model', 'moco.queue_size', 'temperature')


def config_path(workdir: str) -> str:
  return os.path.join(workdir, 'config.json')


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Writes `workdir/config.json` atomically."""
  os.makedirs(workdir, exist_ok=True)
  tmp = config_path(workdir) + '.tmp'
  with open(tmp, 'w') as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  os.replace(tmp, config_path(workdir))


def read_config(workdir: str) -> ml_collections.ConfigDict:
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


def _lookup(config: Any, dotted: str) -> Any:
  node = config
  for part in dotted.split('.'):
    if isinstance(node, (dict, ml_collections.ConfigDict)) and part in node:
      node = node[part]
    else:
      return None
  return node.to_dict() if isinstance(node, ml_collections.ConfigDict) else node


def check_compatible(saved: ml_collections.ConfigDict, requested: ml_collections.ConfigDict,
                     workdir: str) -> None:
  """Raises ValueError naming the first state-defining key where the two configs differ."""
  saved_json = json.loads(saved.to_json_best_effort())
  requested_json = json.loads(requested.to_json_best_effort())
  for key in STATE_DEFINING_KEYS:
    a, b = _lookup(saved_json, key), _lookup(requested_json, key)
    if a != b:
      raise ValueError(f'{workdir!r} holds a checkpoint of another run: config.{key} is {a!r} there but '
                       f'{b!r} now. Use a new --workdir, or the same config to resume.')


def _restore_target(leaf: Any) -> jax.ShapeDtypeStruct:
  """Shape, dtype and placement to restore a leaf to; no placement given -> this process's first device.

  Placing explicitly lets a checkpoint written by another topology (e.g. 2 hosts) load into this one.
  """
  target = ocp.utils.to_shape_dtype_struct(leaf)
  if getattr(target, 'sharding', None) is None:
    target = jax.ShapeDtypeStruct(target.shape, target.dtype,
                                  sharding=jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))
  return target


class Checkpointer:
  """Saves and restores the train state of one workdir (process 0 writes; all processes restore)."""

  def __init__(self, workdir: str, *, keep: int = 2):
    self.directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: PyTree) -> None:
    """Saves `state` at `step` (asynchronously; `wait` or `close` blocks until it is on disk)."""
    if step in self._manager.all_steps():
      return
    self._manager.save(int(step), args=ocp.args.StandardSave(state), force=True)

  def restore(self, like: PyTree, step: int | None = None) -> PyTree:
    """The state at `step` (default: latest) with the structure, shapes and shardings of `like`."""
    step = self._manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'no checkpoint under {self.directory}')
    abstract = jax.tree.map(_restore_target, like)
    try:
      return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except (ValueError, KeyError, TypeError) as e:
      raise ValueError(f'checkpoint {self.directory}/{step} does not match this run\'s state '
                       f'(structure or shapes differ): {e}') from e

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def load_encoder(workdir: str, step: int | None = None) -> tuple[ml_collections.ConfigDict, Any, dict]:
  """(config, encoder module, {'params', 'batch_stats'}) of the query/online encoder of a workdir."""
  from ssl_jax import methods, optim  # Local import: methods import models, which import this module's users.
  config = read_config(workdir)
  method = methods.get_method(config.method)
  networks = method.create_networks(config, bn_axis_name=None)
  tx = optim.create_optimizer(config.optim, lambda step: 0.0)
  like = jax.eval_shape(lambda: method.init_state(config, networks, tx, jax.random.PRNGKey(0)))
  checkpointer = Checkpointer(workdir)
  if checkpointer.latest_step() is None:
    raise FileNotFoundError(f'no checkpoint under {checkpointer.directory}: has {workdir!r} been trained?')
  state = checkpointer.restore(like, step)
  checkpointer.close()
  variables = {'params': state.params['encoder'], 'batch_stats': state.batch_stats['encoder']}
  return config, networks.encoder, variables
