"""Relaunching into a workdir that holds a run: what the relaunch may change, and how the run continues.

What a resume may change: a workdir's stored `config.json` against the config a relaunch asks for.
Every leaf key of the two configs falls in one of three kinds:

- **run-defining** (everything not listed below: method, seed, data, model, batch size, temperature,
  augmentation, optimiser and schedule, MoCo): a difference is refused, every differing key named as
  `config.KEY: old -> new`. Resume with the stored values or start a new workdir.
- **free** (`FREE_KEYS`): where and how often the run logs and saves, the implementation of a step that
  where the data cache lives, the process layout, the online monitor (`config.monitor`). Applied and
  recorded.
- **on purpose** (`ON_PURPOSE_KEYS`: `num_train_steps`, `num_epochs`): refused
  unless `config.allow_resume_changes` names the key, e.g. `--config.allow_resume_changes=num_train_steps`.

What a changed length means: the learning-rate schedule (and MoCo's momentum schedule) is a function of the
total step count. The steps already done keep the values they had; from the restored step S on, every
step takes the new schedule's value at its index, so the learning rate jumps at S (a 5-step run resumed
to 10 steps goes from the 5-step cosine's value to the 10-step cosine's value at step 5). The result is
well defined (a function of the stored checkpoint, S and the new config) but it is not the result of a
straight run of the new length; the record below says that it was changed. A total below S is refused
(the run has done more steps than asked for; evaluate it, or resume with at least S steps).

A key that configs gained later (`ABSENT_MEANS`: the IQ augmentations, the encoder's layout, MoCo's key BN) reads, where a stored config lacks
it, as the value that trains what the stored run trained (off), so older runs resume unchanged.

Keys that cannot matter to either config are ignored: `num_epochs` while both configs train a fixed
`num_train_steps`, `data.manual_dir` while both read the simulated source, the simulator's settings
while both read the real one.

Records of an applied resume (`record_changes`): `config.json` is rewritten to the requested config with a
`config_changes` list that grows with every resume that changed something: `{'step': S, 'key': KEY,
'old': old, 'new': new}`; on-purpose changes also get a row at step S in `metrics.jsonl` (and TensorBoard):
`config_change/KEY` = the new value, `config_change/KEY/previous` = the old one.

How a run continues (`ssl_jax.train.pretrain` calls these in this order): `lock_workdir` takes the writer
lock (`ssl_jax.workdir.lock`) on process 0 and tells every process whether it got it; `check_workdir_resume`
and `check_steps_left` refuse a relaunch before any data or compile; `resume_or_start` restores the newest
checkpoint that restores, sets the unreadable newer ones aside and, on a new run, writes `config.json`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterable, Mapping, Optional

import jax
import ml_collections
import numpy as np
from flax import traverse_util
from jax.experimental import multihost_utils

from ssl_jax import config_keys, console as console_lib
from ssl_jax.workdir import checkpoints, layout, lock, metrics

# Keys (or key prefixes, ending in '.') whose change never changes what the run trains.
FREE_KEYS = (
    'log_every_steps', 'checkpoint_every_steps', 'keep_checkpoints', 'progress_bar', 'allow_resume_changes',
    'profile_first_step', 'profile_num_steps',
    'data.data_dir', 'data.prefetch',
    'distributed.', 'members.devices',
    'monitor.',  # the online monitor only watches: its cadence and subset never change what is trained
)
# Keys a resume may change on purpose when `config.allow_resume_changes` names them (checked in config_checks).
ON_PURPOSE_KEYS = ('num_train_steps', 'num_epochs')
CHANGES_KEY = 'config_changes'  # the history list in config.json; not a config key
_SIMULATOR_KEYS = ('data.examples_per_class', 'data.test_examples_per_class', 'data.snr_db_low',
                   'data.snr_db_high', 'data.sim_seed', 'data.environment', 'data.nuisances')
_ABSENT = '<absent>'
# Keys that configs gained after runs were stored without them, each with the value that trains what those
# runs trained: a config without the key reads as that value, so an older run resumes when it is kept.
ABSENT_MEANS = {
    'augment.iq.cyclic_shift': False, 'augment.iq.rotate_90': False, 'augment.iq.common_phase': False,
    'augment.iq.max_frequency_shift': 0.0, 'augment.iq.snr_db': [],
    'data.order_seed': -1, 'augment.crop_length_seed': -1,
    'members.count': 1, 'members.seed': [], 'members.temperature': [], 'members.learning_rate': [],
    'members.weight_decay': [], 'members.momentum': [], 'members.antenna_dropout': [],
    'members.data_order': 'shared', 'members.devices': 1,
    # The encoder's layout before its keys existed (`ssl_jax.models.LEGACY_LAYOUT`; a test holds them equal).
    'model.stem_stride': 2, 'model.stem_pool': True, 'model.dw_kernel': 3, 'model.unit_downsample': 'stride',
    'model.input_scaling': 'none',
    'moco.key_bn': 'global', 'moco.bn_groups': 8,
}

RUN = 'run-defining'
FREE = 'free'
ON_PURPOSE = 'on purpose'


class ResumeError(ValueError):
  """The requested config cannot resume the run stored in a workdir; the message says what differs."""


@dataclasses.dataclass(frozen=True)
class Change:
  """One key whose value differs between the stored and the requested config."""
  key: str
  old: Any
  new: Any
  kind: str  # RUN, FREE or ON_PURPOSE

  def __str__(self) -> str:
    return f'config.{self.key}: {_show(self.old)} -> {_show(self.new)}'

  def as_record(self, step: int) -> dict:
    return {'step': int(step), 'key': self.key, 'old': self.old, 'new': self.new}


def _show(value: Any) -> str:
  return value if value is _ABSENT else json.dumps(value)


def _as_json(config: ml_collections.ConfigDict | Mapping) -> dict:
  return config_keys.to_json(config)


def _kind(key: str) -> str:
  if key in ON_PURPOSE_KEYS:
    return ON_PURPOSE
  if any(key == free or (free.endswith('.') and key.startswith(free)) for free in FREE_KEYS):
    return FREE
  return RUN


def _ignored(key: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
  """True for a key that neither config reads (see the module docstring)."""
  both = lambda k, pred: pred(old.get(k)) and pred(new.get(k))
  if key == 'num_epochs':
    return both('num_train_steps', lambda s: isinstance(s, int) and s >= 1)
  if key == 'data.manual_dir':
    return both('data.source', lambda s: s == 'simulated')
  if key in _SIMULATOR_KEYS:
    return both('data.source', lambda s: s == 'real')
  return False


def differences(saved: ml_collections.ConfigDict | Mapping,
                requested: ml_collections.ConfigDict | Mapping) -> list[Change]:
  """Every leaf key whose value differs (a key present in one only counts), in key order."""
  old, new = (traverse_util.flatten_dict(_as_json(c), sep='.') for c in (saved, requested))
  for flat in (old, new):
    for key in [k for k in flat if k == CHANGES_KEY or k.startswith(CHANGES_KEY + '.')]:
      del flat[key]
  changes = []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key, ABSENT_MEANS.get(key, _ABSENT)), new.get(key, ABSENT_MEANS.get(key, _ABSENT))
    if a != b and not _ignored(key, old, new):
      changes.append(Change(key, a, b, _kind(key)))
  return changes


def allowed_changes(config: ml_collections.ConfigDict) -> set[str]:
  return set(config_keys.split_keys(config_keys.get(config, 'allow_resume_changes', '') or ''))


def check_resume(saved: ml_collections.ConfigDict | Mapping, requested: ml_collections.ConfigDict, *,
                 workdir: str) -> list[Change]:
  """The changes a resume of `workdir` applies (free and allowed on-purpose ones), or ResumeError.

  `saved` is the workdir's stored config (`layout.read_config`), `requested` the relaunch's;
  `workdir` is named in the messages.
  """
  changes = differences(saved, requested)
  refused = [c for c in changes if c.kind == RUN]
  allowed = allowed_changes(requested)
  not_allowed = [c for c in changes if c.kind == ON_PURPOSE and c.key not in allowed]
  if not refused and not not_allowed:
    return changes
  lines = [f'{workdir!r} holds a run with other settings ({layout.config_path(workdir)}):']
  lines += [f'  {c}   (defines the run)' for c in refused]
  lines += [f'  {c}   (the length of the run)' for c in not_allowed]
  if refused:
    lines.append('Keys that define the run cannot change on resume: resume with the stored values, or start a '
                 'new --workdir.')
  if not_allowed:
    keys = ','.join(c.key for c in not_allowed)
    lines.append('A resume that changes the length follows the new learning-rate schedule from the restored '
                 'step on, which is not the same as a straight run of the new length. To apply it on purpose '
                 f'(recorded in config.json and metrics.jsonl), add --config.allow_resume_changes={keys}.')
  raise ResumeError('\n'.join(lines))


def check_steps_left(workdir: str, num_steps: int) -> None:
  """Raises ResumeError when the workdir's latest checkpoint is past `num_steps`, the run's total."""
  steps = layout.checkpoint_steps(workdir)
  if steps and steps[-1] > num_steps:
    raise ResumeError(
        f'{workdir!r} holds a checkpoint at step {steps[-1]}, past the {num_steps} steps this config '
        f'trains: nothing to resume. Evaluate the run as it is (python -m ssl_jax.evaluate '
        f'--workdir={workdir}), or resume with at least {steps[-1]} steps.')


def check_workdir_resume(workdir: str, requested: ml_collections.ConfigDict) -> list[Change]:
  """`check_resume` against the workdir's stored config when it holds a checkpoint; [] for a new run."""
  if not layout.checkpoint_steps(workdir):
    return []
  return check_resume(layout.read_config(workdir), requested, workdir=workdir)


def record_changes(workdir: str, requested: ml_collections.ConfigDict, changes: Iterable[Change],
                   step: int) -> None:
  """Rewrites config.json to `requested` with the changes appended to its history; logs on-purpose ones.

  Call on the process that writes the workdir (process 0), after the restore at `step` succeeded.
  """
  changes = list(changes)
  if not changes:
    return
  path = layout.config_path(workdir)
  with open(path) as f:
    history = list(json.load(f).get(CHANGES_KEY, []))
  history += [c.as_record(step) for c in changes]
  payload = _as_json(requested)
  payload[CHANGES_KEY] = history
  layout.write_json_atomic(path, payload)
  scalars = {}
  for c in changes:
    if c.kind == ON_PURPOSE and isinstance(c.new, (int, float)) and isinstance(c.old, (int, float)):
      scalars[f'config_change/{c.key}'] = c.new
      scalars[f'config_change/{c.key}/previous'] = c.old
  if scalars:
    writer = metrics.MetricWriter(workdir)
    writer.write(step, scalars)
    writer.close()


def _agree_across_processes(value: int, what: str) -> None:
  """Raises RuntimeError unless every process holds the same `value` (a no-op on one process)."""
  if jax.process_count() == 1:
    return
  values = np.asarray(multihost_utils.process_allgather(np.int64(value))).reshape(-1)
  if np.any(values != values[0]):
    raise RuntimeError(f'the processes disagree on {what}: {dict(enumerate(values.tolist()))}; do they all '
                       'see the same workdir (a shared filesystem)?')


def lock_workdir(workdir: str) -> Optional[lock.WorkdirLock]:
  """Process 0 takes the workdir's writer lock and tells the others whether it got it.

  Returns the held lock on process 0, None elsewhere; raises WorkdirBusyError on every process when the
  workdir is in use (ValueError when it is not a directory).
  """
  held, error = None, None
  if jax.process_index() == 0:
    try:
      held = lock.WorkdirLock(workdir).acquire()
    except (lock.WorkdirBusyError, ValueError) as e:
      error = e
  if jax.process_count() > 1:
    locked = bool(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
    if not locked and error is None:
      raise lock.WorkdirBusyError(
          f'process 0 could not take the writer lock of workdir {workdir!r} (its message names the run '
          'that holds it); this process stops too.')
  if error is not None:
    raise error
  return held


def resume_or_start(checkpointer: checkpoints.Checkpointer, state, config: ml_collections.ConfigDict,
                    workdir: str, console: console_lib.Console, is_chief: bool) -> tuple[Any, str]:
  """(state, 'how the run starts') from the newest checkpoint that restores; `state` (the fresh one) when
  there is none, after process 0 (`is_chief`) wrote `config` to the workdir's config.json.

  Unreadable newer steps are reported on `console` and, by process 0, moved out of the checkpoints
  directory. Every process calls this; raises RuntimeError when they restored different steps.
  """
  if not checkpointer.steps():
    if is_chief:
      layout.write_config(workdir, config)
    return state, 'new run'
  restored = checkpointer.restore_newest(state)
  _agree_across_processes(restored.step, 'the checkpoint step they restored')
  for unreadable in restored.skipped:
    where = checkpointer.set_aside(unreadable.step) if is_chief else f'{layout.UNREADABLE_CHECKPOINTS}/'
    message = (f'checkpoint {checkpointer.directory}/{unreadable.step} is unreadable ({unreadable.reason}); '
               f'resuming from step {restored.step} instead; the unreadable step is moved to {where}')
    console.line(f'WARNING: {message}')
  if restored.skipped:
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('ssl_jax: unreadable checkpoints set aside')
    checkpointer.reload()
  return restored.state, f'resuming from step {restored.step}'
