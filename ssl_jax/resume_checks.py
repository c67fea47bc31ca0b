"""What a resume may change: a workdir's stored `config.json` against the config a relaunch asks for.

Every leaf key of the two configs falls in one of three kinds:

- **run-defining** (everything not listed below: method, seed, data, model, batch size, temperature,
  augmentation, optimiser and schedule, MoCo): a difference is refused, every differing key named as
  `config.KEY: old -> new`. Resume with the stored values or start a new workdir.
- **free** (`FREE_KEYS`): where and how often the run logs and saves, the implementation of a step that
  where the data cache lives, the process layout, the online monitor (`config.monitor`). Applied and
  recorded.
- **on purpose** (`config_checks.RESUME_CHANGEABLE_KEYS`: `num_train_steps`, `num_epochs`): refused
  unless `config.allow_resume_changes` names the key, e.g. `--config.allow_resume_changes=num_train_steps`.

What a changed length means: the learning-rate schedule (and MoCo's momentum schedule) is a function of the
total step count. The steps already done keep the values they had; from the restored step S on, every
step takes the new schedule's value at its index, so the learning rate jumps at S (a 5-step run resumed
to 10 steps goes from the 5-step cosine's value to the 10-step cosine's value at step 5). The result is
well defined (a function of the stored checkpoint, S and the new config) but it is not the result of a
straight run of the new length; the record below says that it was changed. A total below S is refused
(the run has done more steps than asked for; evaluate it, or resume with at least S steps).

A key that configs gained later (`ABSENT_MEANS`: the IQ augmentations) reads, where a stored config lacks
it, as the value that trains what the stored run trained (off), so older runs resume unchanged.

Keys that cannot matter to either config are ignored: `num_epochs` while both configs train a fixed
`num_train_steps`, `data.manual_dir` while both read the simulated source, the simulator's settings
while both read the real one.

Records of an applied resume (`record_changes`): `config.json` is rewritten to the requested config with a
`config_changes` list that grows with every resume that changed something: `{'step': S, 'key': KEY,
'old': old, 'new': new}`; on-purpose changes also get a row at step S in `metrics.jsonl` (and TensorBoard):
`config_change/KEY` = the new value, `config_change/KEY/previous` = the old one.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterable, Mapping

import ml_collections
from flax import traverse_util

from ssl_jax import config_checks, config_keys
from ssl_jax.workdir import layout, metrics

# Keys (or key prefixes, ending in '.') whose change never changes what the run trains.
FREE_KEYS = (
    'log_every_steps', 'checkpoint_every_steps', 'keep_checkpoints', 'progress_bar', 'allow_resume_changes',
    'profile_first_step', 'profile_num_steps',
    'data.data_dir', 'data.prefetch',
    'distributed.', 'members.devices',
    'monitor.',  # the online monitor only watches: its cadence and subset never change what is trained
)
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
  if key in config_checks.RESUME_CHANGEABLE_KEYS:
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
  return set(config_checks.split_keys(config_keys.get(config, 'allow_resume_changes', '') or ''))


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
