"""The read side of a pretraining workdir: its query/online encoder, ready to embed data.

`load_encoder(workdir, step=None, member=None)` rebuilds the run's networks from its `config.json`, restores
the train state of a checkpoint (`ssl_jax.workdir.checkpoints`) and returns the encoder module with its variables.
A member run's workdir (`ssl_jax.members`, K >= 2) holds K encoders: `member` picks one (required there),
and the returned config is that member's plain config (`members.config_of`).
Evaluation (`ssl_jax.evaluate`), the study, the notebooks and the torch converter read workdirs through it.
"""

import dataclasses
import os
from typing import Any

import flax.linen as nn
import jax
import ml_collections
from absl import logging

from ssl_jax import members, methods, optim
from ssl_jax.workdir import checkpoints, layout


@dataclasses.dataclass(frozen=True)
class PretrainedEncoder:
  """The query/online encoder of a workdir's checkpoint.

  `module.apply(variables, x, train=False)` embeds `x` `(batch, time, 8)`; `variables` holds 'params' and
  'batch_stats'; `config` is the run's config; `step` the checkpoint step it was restored from.
  """
  config: ml_collections.ConfigDict
  module: nn.Module
  variables: dict[str, Any]
  step: int


@dataclasses.dataclass(frozen=True)
class RestoredRun:
  """A workdir's run as restored for reading: its config, networks and the train state at `step`."""
  config: ml_collections.ConfigDict
  networks: Any
  state: Any
  step: int


def member_count(workdir: str) -> int:
  """K, the members a workdir's run trains (1: a plain run). FileNotFoundError without a config."""
  return members.count(layout.read_config(workdir))


def load_run(workdir: str, step: int | None = None, member: int | None = None) -> RestoredRun:
  """The train state at `step` (default: the newest step that restores) of a pretraining workdir.

  Reads without the writer lock and writes nothing, so it may run while the workdir's run is writing:
  it sees only finalized steps. A newer step that cannot be restored is reported (one warning line) and
  skipped. Raises FileNotFoundError when `workdir` holds no config or no checkpoint, or not the requested
  step (naming the steps there are), and `checkpoints.UnreadableCheckpointError` when the requested step
  (or, without a step, every step) cannot be restored. `member`: the member of a member run (required
  there; ValueError naming the members there are when it is missing or not one of them); a plain run
  takes None or 0.
  """
  run_config = layout.read_config(workdir)
  config = members.config_of(run_config, member)
  method = methods.get_method(config.method)
  networks = method.create_networks(config, bn_axis_name=None)
  tx = optim.create_optimizer(config.optim, lambda step: 0.0)
  like = jax.eval_shape(lambda: method.init_state(config, networks, tx, jax.random.PRNGKey(0)))
  k_members = members.count(run_config)
  if k_members >= 2:
    stacked = jax.tree.map(lambda s: jax.ShapeDtypeStruct((k_members,) + s.shape, s.dtype), like)
    like = members.MemberState(state=stacked, alive=jax.ShapeDtypeStruct((k_members,), bool))
  directory = layout.checkpoints_dir(workdir)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'no checkpoint under {directory}: has {workdir!r} been trained?')
  checkpointer = checkpoints.Checkpointer(workdir, read_only=True)
  try:
    if not checkpointer.steps():
      raise FileNotFoundError(f'no checkpoint under {directory}: has {workdir!r} been trained?')
    if step is None:
      restored = checkpointer.restore_newest(like)
      for unreadable in restored.skipped:
        logging.warning('checkpoint %s/%d is unreadable, using step %d instead: %s', directory,
                        unreadable.step, restored.step, unreadable.reason)
      state, step = restored.state, restored.step
    else:
      state = checkpointer.restore(like, step)
  finally:
    checkpointer.close()
  if k_members >= 2:
    state = members.select(state, member)
  return RestoredRun(config, networks, state, int(step))


def load_encoder(workdir: str, step: int | None = None, member: int | None = None) -> PretrainedEncoder:
  """The query/online encoder of `load_run(workdir, step, member)` (the same errors)."""
  run = load_run(workdir, step, member)
  variables = {'params': run.state.params['encoder'], 'batch_stats': run.state.batch_stats['encoder']}
  return PretrainedEncoder(run.config, run.networks.encoder, variables, run.step)


def load_clip_tower(workdir: str, step: int | None = None, representation: str = 'iq'):
  """The encoder of one tower of a CLIP workdir, as a `PretrainedEncoder` (config, module,
  variables, step): 'iq' is what `load_encoder(workdir, step)` gives, 'spectrum' the other.

  Raises ValueError for another representation or a workdir of another method; FileNotFoundError without
  a checkpoint (the messages of `load_run`).
  """
  if representation not in methods.clip.REPRESENTATIONS:
    raise ValueError(f'representation must be one of {methods.clip.REPRESENTATIONS}; got {representation!r}')
  if representation == 'iq':
    return load_encoder(workdir, step)
  config = layout.read_config(workdir)
  if config.method != 'clip':
    raise ValueError(f'{workdir!r} holds a {config.method!r} run; only a clip run has a spectrum encoder')
  run = load_run(workdir, step)
  module, variables = methods.clip.tower_encoder(run.networks, run.state.params, run.state.batch_stats,
                                                 representation)
  return PretrainedEncoder(run.config, module, variables, run.step)
