"""The one checkpoint helper: orbax `CheckpointManager` over the whole train state of a workdir.

A pretraining workdir holds its checkpoints in `checkpoints/<step>/` (orbax; the names are
`ssl_jax.workdir.layout`'s). Orbax writes each step into a temporary directory and renames it only once
complete, so a crash or kill mid-save leaves at most a temporary directory that is never restored; the
last complete step is.

A finalized step can still be damaged afterwards (a truncated or deleted file). Restoring without a step
takes the newest step that restores and reports each newer one it skipped; the writer then moves those
to `unreadable_checkpoints/` (kept, out of orbax's sight). When no step restores it is an error, never a
silent fresh start. A read-only `Checkpointer` (evaluation, `ssl_jax.encoders`) sees finalized steps only.
This module knows orbax and JAX, not the methods or models whose state it stores.
"""

import dataclasses
import logging as logging_lib
import os
import re
import sys
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from ssl_jax.workdir import layout

PyTree = Any


def _restore_target(leaf: Any) -> jax.ShapeDtypeStruct:
  """Shape, dtype and placement to restore a leaf to; no placement given -> this process's first device.

  Placing explicitly lets a checkpoint written by another topology (e.g. 2 hosts) load into this one.
  """
  target = ocp.utils.to_shape_dtype_struct(leaf)
  if getattr(target, 'sharding', None) is None:
    target = jax.ShapeDtypeStruct(target.shape, target.dtype,
                                  sharding=jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))
  return target


@dataclasses.dataclass(frozen=True)
class Unreadable:
  """A finalized checkpoint step that failed to restore, and why (one line)."""
  step: int
  reason: str


@dataclasses.dataclass(frozen=True)
class Restored:
  """What `Checkpointer.restore_newest` restored: the state, its step, the newer steps it had to skip."""
  state: PyTree
  step: int
  skipped: tuple[Unreadable, ...] = ()


class UnreadableCheckpointError(ValueError):
  """A checkpoint step exists but cannot be restored (truncated or missing files, another run's state)."""


class NonFiniteStateError(ValueError):
  """A state with a NaN or an infinity was given to save; nothing was written."""


@jax.jit
def _all_finite(tree: PyTree) -> jax.Array:
  leaves = [jax.numpy.all(jax.numpy.isfinite(x)) for x in jax.tree.leaves(tree)
            if jax.numpy.issubdtype(x.dtype, jax.numpy.inexact)]
  return jax.numpy.all(jax.numpy.stack(leaves)) if leaves else jax.numpy.bool_(True)


def all_finite(tree: PyTree) -> bool:
  """True when no floating-point leaf of `tree` holds a NaN or an infinity (waits for the values)."""
  return bool(_all_finite(tree))


def _one_line(error: BaseException, limit: int = 400) -> str:
  """An orbax/TensorStore error on one line, without TensorStore's spec dump and driver nesting."""
  text = f'{error}'.split('[tensorstore_spec', 1)[0].split('See full TensorStore details', 1)[0]
  text = re.sub(r'Error opening "\w+" driver: ', '', ' '.join(text.split())) or type(error).__name__
  if len(text) > limit:
    text = f'{text[:limit // 3]} ... {text[-(2 * limit // 3):]}'
  return text


def _steps_text(steps) -> str:
  return ', '.join(str(s) for s in sorted(steps)) or 'none'


_quieted_closed_loop_echoes = False


def _quiet_closed_loop_echoes() -> None:
  """Drops the `RuntimeError('Event loop is closed')` echoes of a failed restore.

  When one TensorStore read of a restore fails, orbax closes its event loop while other reads are still in
  flight; their completions then fail to reach the closed loop and Python prints each as an unraisable
  exception's traceback (dozens of them), and a read whose failure lands after the first one's is logged by
  asyncio as "Task exception was never retrieved". The failure itself is reported; the echoes are noise.
  Installed once, before the first restore (the echoes come from other threads while the failure
  propagates); every other unraisable exception and asyncio record still gets through.
  """
  global _quieted_closed_loop_echoes
  if _quieted_closed_loop_echoes:
    return
  previous = sys.unraisablehook

  def hook(unraisable):
    if isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == 'Event loop is closed':
      return
    previous(unraisable)

  sys.unraisablehook = hook
  logging_lib.getLogger('asyncio').addFilter(_DropUnretrievedRestoreReads())
  _quieted_closed_loop_echoes = True


class _DropUnretrievedRestoreReads(logging_lib.Filter):
  """Drops asyncio's "Task exception was never retrieved" for orbax's restore reads (`async_deserialize`)."""

  def filter(self, record: logging_lib.LogRecord) -> bool:
    message = record.getMessage()
    return not (message.startswith('Task exception was never retrieved') and 'async_deserialize' in message)


class _DropReadOnlyNotice(logging_lib.Filter):
  """Drops orbax's warning that a read-only manager is read-only: a reader asks for that on purpose."""

  def filter(self, record: logging_lib.LogRecord) -> bool:
    return record.msg != 'Given directory is read only=%s'


def _quiet_read_only_notice() -> None:
  absl_logger = logging.get_absl_logger()
  if not any(isinstance(f, _DropReadOnlyNotice) for f in absl_logger.filters):
    absl_logger.addFilter(_DropReadOnlyNotice())


class Checkpointer:
  """Saves and restores the train state of one workdir (process 0 writes; all processes restore).

  Only finalized steps are ever listed or restored: orbax writes a step into a temporary directory and
  renames it when complete. `keep` is how many of the newest steps to keep; 0 keeps every step.
  `every`: the cadence `should_save` answers, orbax's `FixedIntervalPolicy` (every `every`-th step);
  None: only explicit saves. `read_only` (evaluation, which may read a workdir while its run writes it)
  never writes, deletes or cleans up anything, not even the writer's temporary directories of a save in
  progress. `save` refuses a state with a NaN or an infinity: a checkpoint never holds a diverged run.
  """

  def __init__(self, workdir: str, *, keep: int = 2, every: int | None = None, read_only: bool = False):
    if keep < 0:
      raise ValueError(f'config.keep_checkpoints={keep}: give how many of the newest checkpoints to keep '
                       '(>= 1), or 0 to keep every checkpoint.')
    self.workdir = os.path.abspath(workdir)
    self.directory = layout.checkpoints_dir(self.workdir)
    if read_only:
      _quiet_read_only_notice()
      options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
    else:
      if every is not None and every < 1:
        raise ValueError(f'config.checkpoint_every_steps={every}: must be >= 1.')
      # Orbax's policies, not its default (which would also save the first step it is asked about).
      if every is None:
        policy = ocp.checkpoint_managers.SpecificStepsPolicy(steps=())
      else:
        policy = ocp.checkpoint_managers.FixedIntervalPolicy(every)
      options = ocp.CheckpointManagerOptions(max_to_keep=keep or None, create=True,
                                             cleanup_tmp_directories=True, save_decision_policy=policy,
                                             enable_should_save_is_saving_in_progress_check=False)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def steps(self) -> list[int]:
    """The finalized steps, oldest first."""
    return sorted(self._manager.all_steps())

  def should_save(self, step: int) -> bool:
    """Whether `step` is a checkpoint step of the cadence (`every`) and newer than the latest checkpoint.

    On several processes every process must ask at every step: orbax asks JAX's preemption service too
    (`multihost_utils.reached_preemption_sync_point(step)`), with the step as its counter.
    """
    return self._manager.should_save(int(step))

  def save(self, step: int, state: PyTree) -> None:
    """Saves `state` at `step` (asynchronously; `wait` or `close` blocks until it is on disk).

    Raises NonFiniteStateError, writing nothing, when a floating-point leaf of `state` holds a NaN or an
    infinity (checking waits for the state's values). A step already saved is left as it is.
    """
    if step in self._manager.all_steps():
      return
    if not all_finite(state):
      raise NonFiniteStateError(f'the state of step {step} holds a NaN or an infinity; not saved to '
                                f'{self.directory}')
    self._manager.save(int(step), args=ocp.args.StandardSave(state), force=True)

  def _restore_step(self, like: PyTree, step: int) -> PyTree:
    abstract = jax.tree.map(_restore_target, like)
    _quiet_closed_loop_echoes()
    try:
      return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # TensorStore raises bare Exceptions; orbax ValueError/KeyError/TypeError.
      raise UnreadableCheckpointError(
          f'checkpoint {self.directory}/{step} cannot be restored into this run\'s state (its files are '
          f'damaged or it holds another structure): {_one_line(e)}') from e

  def restore(self, like: PyTree, step: int | None = None) -> PyTree:
    """The state at `step` with the structure, shapes and shardings of `like`.

    `step=None`: the newest step that restores (see `restore_newest`). A given step must exist
    (FileNotFoundError naming the steps there are) and be readable (UnreadableCheckpointError).
    """
    if step is None:
      return self.restore_newest(like).state
    if step not in self._manager.all_steps():
      raise FileNotFoundError(f'no step {step} in {self.workdir} (have {_steps_text(self.steps())})')
    return self._restore_step(like, step)

  def restore_newest(self, like: PyTree) -> Restored:
    """The newest step that restores, trying older ones when newer ones are unreadable.

    Raises FileNotFoundError when there is no finalized step, and UnreadableCheckpointError (listing every
    step and why) when none restores: a run never starts over silently from a workdir with checkpoints.
    """
    steps = self.steps()
    if not steps:
      raise FileNotFoundError(f'no checkpoint under {self.directory}')
    skipped: list[Unreadable] = []
    for step in reversed(steps):
      try:
        return Restored(self._restore_step(like, step), step, tuple(skipped))
      except UnreadableCheckpointError as e:
        skipped.append(Unreadable(step, _one_line(e.__cause__ or e)))
    reasons = '; '.join(f'step {u.step}: {u.reason}' for u in skipped)
    raise UnreadableCheckpointError(
        f'no checkpoint in {self.directory} can be restored into this run\'s state ({reasons}). Nothing was '
        'overwritten. If the files are damaged, move the checkpoints directory away to start over.')

  def set_aside(self, step: int) -> str:
    """Moves an unreadable step out of the checkpoints directory (to `WORKDIR/unreadable_checkpoints/`).

    Kept for inspection, not deleted; out of orbax's sight, so that it neither counts as the latest step
    nor blocks saving that step again. Returns the new path. Only the writing process calls this.
    """
    target_dir = layout.unreadable_checkpoints_dir(self.workdir)
    os.makedirs(target_dir, exist_ok=True)
    target = os.path.join(target_dir, str(step))
    suffix = 1
    while os.path.exists(target):
      target = os.path.join(target_dir, f'{step}.{suffix}')
      suffix += 1
    os.rename(layout.checkpoint_dir(self.workdir, step), target)
    return target

  def reload(self) -> None:
    """Re-reads the list of steps from disk (after `set_aside`, or to see a writer's new steps)."""
    self._manager.reload()

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
