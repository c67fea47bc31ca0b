"""Whole-config checks that every entry point makes before any expensive work (data, compile, training).

`check_pretrain_config(config)` checks a pretraining config (`configs/base.py` and the method files) and
`check_probe_config(probe_config)` an evaluation config (`configs/probe.py`). Each collects every value
out of range and raises one `ConfigError` that lists them, one line per key, with the value and the
allowed range, e.g. `config.batch_size = 1: must be an integer >= 2 ...`. `check_pretrain_run(config,
workdir)` adds the run's paths (`ssl_jax.path_checks`: the workdir, the real recordings' directory).
Nothing here reads data or touches devices.

The rules that are not plain ranges:
- `num_train_steps`: >= 1 trains that many steps; -1 (the default) trains `num_epochs` epochs of the train
  split; any other value (0 above all) is refused rather than read as "use the epochs".
- `batch_size`: >= 2 wherever the loss takes its negatives from the batch (SimCLR, MoCo v3, CLIP: one
  example has no negative and its loss is exactly 0), spreads it over prototypes (SwAV) or standardises
  over it (`model.projection_norm='batch'`); MoCo v2 with the plain projection takes its negatives from the
  queue and may run with 1.
- `moco.queue_size` (MoCo v2, MoCHi): a positive multiple of `batch_size`, so that FIFO writes never wrap;
  `swav.queue_size` (SwAV): 0 (off) or such a multiple.
- `loss.*` (SimCLR, MoCo v2): `loss.tau_plus` and `loss.beta` are read only by `loss.name = 'debiased'`;
  any other loss with a non-zero value is refused (it would train without the correction asked for).
- `moco.key_bn` / `moco.bn_groups` (MoCo v2, MoCHi; `ssl_jax.methods.shuffle_bn`): 'global' or 'shuffle'
  (absent: 'global', a config from before the key). With 'shuffle', `bn_groups` >= 2 (one group is the
  whole batch) splitting `batch_size` into groups of >= 2 examples (a group of one normalises each example
  to the BatchNorm bias); the step refuses a group count that is not a multiple of the device count. MoCo
  v3 reads neither: a `key_bn` other than 'global' is refused there.
- `mochi.num_hard` (N): at most `moco.queue_size`, and >= 2 when `mochi.num_mix` > 0 (a mix needs two).
- `fifo_bank.size`: at least `batch_size` (the bank holds a whole global batch of second views).
- `memory_bank.num_negatives`: >= 1; the method caps it at the train split's size - 1.
- `augment.crop_lengths`: positive, and none above `data.length` (a longer crop could only be the whole
  example, which is what a crop of `data.length` says).
- `augment.iq.snr_db`: () for no added noise, or a (low, high) pair of finite dB values, low <= high.
- `allow_resume_changes`: keys a resume may change on purpose (`ssl_jax.workdir.resume.ON_PURPOSE_KEYS`).
- `members.*` (`ssl_jax.members`): `count` >= 1 (0 is an empty member list); each per-member list empty or
  `count` values, each in its key's range; `momentum` only for a method with a momentum encoder; `devices`
  divides `count`. Members cannot differ in a shape-defining key: the section lists none
  (`members.stack_configs` refuses configs that do, naming the key).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import ml_collections

from ssl_jax import config_keys, methods, models, path_checks
from ssl_jax.methods import moco, shuffle_bn, simclr
from ssl_jax.data import simulate, spec
from ssl_jax.evaluation import clustering, suite
from ssl_jax.workdir import resume

SOURCES = ('simulated', 'real')
LR_SCALINGS = ('none', 'linear')  # ssl_jax.optim.peak_learning_rate
LR_SCHEDULES = ('cosine', 'constant')  # ssl_jax.optim.learning_rate_schedule
MIN_LENGTH = 16  # the aoam builder's (and the simulator's) shortest example
# config.loss.name by method (ssl_jax.methods.simclr / moco).
LOSS_NAMES = {'simclr': simclr.BATCH_LOSSES, 'moco': moco.QUEUE_LOSSES}

_MISSING = config_keys.MISSING


class ConfigError(ValueError):
  """One or more config values are out of range; the message names each key, its value and the range."""

  def __init__(self, problems: Sequence[str], what: str = 'config'):
    self.problems = tuple(problems)
    super().__init__(f'invalid {what} ({len(self.problems)} problem{"s" if len(self.problems) > 1 else ""}):\n'
                     + '\n'.join(f'  {p}' for p in self.problems))


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class _Rules:
  """Collects problems of one config; `prefix` names it in messages (`config.` / `probe_config.`)."""

  def __init__(self, config: Any, prefix: str):
    self.config = config
    self.prefix = prefix
    self.problems: list[str] = []

  def value(self, key: str) -> Any:
    return config_keys.get(self.config, key)

  def fail(self, key: str, message: str) -> None:
    value = self.value(key)
    shown = '<missing>' if value is _MISSING else repr(value)
    self.problems.append(f'{self.prefix}{key} = {shown}: {message}')

  def present(self, key: str) -> bool:
    if self.value(key) is _MISSING:
      self.problems.append(f'{self.prefix}{key} is missing')
      return False
    return True

  def int_range(self, key: str, low: int | None = None, high: int | None = None, why: str = '') -> bool:
    """An int in [low, high] (either bound optional); True when it is."""
    if not self.present(key):
      return False
    value = self.value(key)
    ok = _is_int(value) and (low is None or value >= low) and (high is None or value <= high)
    if not ok:
      if low is None and high is None:
        bounds = 'an integer'
      elif high is None:
        bounds = f'an integer >= {low}'
      elif low is None:
        bounds = f'an integer <= {high}'
      else:
        bounds = f'an integer in [{low}, {high}]'
      self.fail(key, f'must be {bounds}{why}')
    return ok

  def number(self, key: str, *, low: float | None = None, high: float | None = None,
             low_open: bool = False, high_open: bool = False, why: str = '') -> bool:
    """A finite number in the interval given by the bounds (open or closed ends); True when it is."""
    if not self.present(key):
      return False
    value = self.value(key)
    ok = _is_number(value)
    if ok and low is not None:
      ok = value > low if low_open else value >= low
    if ok and high is not None:
      ok = value < high if high_open else value <= high
    if not ok:
      if low is not None and high is not None:
        interval = f'in {"(" if low_open else "["}{low:g}, {high:g}{")" if high_open else "]"}'
      elif low is not None:
        interval = f'{">" if low_open else ">="} {low:g}'
      elif high is not None:
        interval = f'{"<" if high_open else "<="} {high:g}'
      else:
        interval = 'finite'
      self.fail(key, f'must be a finite number {interval}{why}')
    return ok

  def choice(self, key: str, choices: Sequence[Any], required: bool = True) -> bool:
    if self.value(key) is _MISSING:
      return self.present(key) if required else True
    if self.value(key) not in choices:
      self.fail(key, f'must be one of {tuple(choices)}')
      return False
    return True

  def boolean(self, key: str) -> bool:
    if not self.present(key):
      return False
    if not isinstance(self.value(key), bool):
      self.fail(key, 'must be True or False')
      return False
    return True

  def int_sequence(self, key: str, *, low: int, count: int | None = None, high: int | None = None,
                   why: str = '') -> bool:
    """A non-empty list/tuple of ints, each in [low, high] (and exactly `count` of them if given)."""
    if not self.present(key):
      return False
    value = self.value(key)
    ok = (isinstance(value, (list, tuple)) and len(value) > 0 and (count is None or len(value) == count)
          and all(_is_int(v) and v >= low and (high is None or v <= high) for v in value))
    if not ok:
      what = f'{count} integers' if count is not None else 'a non-empty tuple of integers'
      bounds = f'>= {low}' if high is None else f'in [{low}, {high}]'
      self.fail(key, f'must be {what}, each {bounds}{why}')
    return ok


def _method_uses_batch_negatives(config: Any) -> bool:
  """SimCLR, MoCo v3 and CLIP take every negative from the batch, SwAV spreads the batch over its
  prototypes; MoCo (v2) takes its negatives from its queue."""
  return config_keys.get(config, 'method') in ('simclr', 'moco_v3', 'swav', 'clip')


def pretrain_config_problems(config: ml_collections.ConfigDict) -> list[str]:
  """Every out-of-range value of a pretraining config, as messages (empty: the config is valid)."""
  r = _Rules(config, 'config.')
  method_ok = r.choice('method', tuple(methods.METHODS))
  r.int_range('seed', 0)

  # Data.
  source_ok = r.choice('data.source', SOURCES)
  length_ok = r.int_range('data.length', MIN_LENGTH)
  if source_ok and r.value('data.source') == 'simulated':
    r.int_range('data.examples_per_class', 1)
    r.int_range('data.test_examples_per_class', 1)
    r.int_range('data.sim_seed', 0)
    if r.number('data.snr_db_low') and r.number('data.snr_db_high'):
      if r.value('data.snr_db_low') > r.value('data.snr_db_high'):
        r.fail('data.snr_db_low', f'must be <= config.data.snr_db_high = {r.value("data.snr_db_high")!r}')
    r.choice('data.environment', simulate.ENVIRONMENTS, required=False)
    r.choice('data.nuisances', simulate.NUISANCE_SCOPES, required=False)
  if source_ok and r.value('data.source') == 'real':
    manual_dir = r.value('data.manual_dir')
    if not manual_dir:
      r.fail('data.manual_dir', "must name the directory holding train.h5 and test.h5 when "
             "config.data.source = 'real'")
  r.int_range('data.prefetch', 1)

  # Model.
  r.choice('model.projection_norm', models.PROJECTION_NORMS, required=False)
  if r.choice('model.dtype', models.DTYPES) and r.value('model.dtype') == 'float64' and models.float64_needs_x64():
    r.fail('model.dtype', models.float64_needs_x64())
  if r.value('model.stage_repeats') is not _MISSING:
    r.int_sequence('model.stage_repeats', low=1, count=3)
  r.choice('model.stem_stride', (1, 2), required=False)
  if r.value('model.stem_pool') is not _MISSING:
    r.boolean('model.stem_pool')
  if r.value('model.dw_kernel') is not _MISSING and r.int_range('model.dw_kernel', 1) and \
      r.value('model.dw_kernel') % 2 == 0:
    r.fail('model.dw_kernel', 'must be odd (a centred kernel keeps the length)')
  r.choice('model.unit_downsample', models.DOWNSAMPLINGS, required=False)
  r.choice('model.input_scaling', models.INPUT_SCALINGS, required=False)
  r.int_range('model.output_dim', 1)
  r.int_range('model.hidden_dim', 1)

  r.number('temperature', low=0.0, low_open=True, why=' (the logits are similarities / temperature)')

  # Augmentation.
  r.boolean('augment.enabled')
  high = r.value('data.length') if length_ok else None
  r.int_sequence('augment.crop_lengths', low=1, high=high,
                 why=' (no crop can be longer than config.data.length)' if high is not None else '')
  r.number('augment.antenna_dropout', low=0.0, high=1.0, high_open=True,
           why=' (the probability of dropping each antenna)')
  for key in ('cyclic_shift', 'rotate_90', 'common_phase'):
    r.boolean(f'augment.iq.{key}')
  r.number('augment.iq.max_frequency_shift', low=0.0, high=0.5,
           why=' (cycles per sample; 0 is off, 0.5 the Nyquist limit)')
  if r.present('augment.iq.snr_db'):
    snr_db = r.value('augment.iq.snr_db')
    if not (isinstance(snr_db, (list, tuple)) and (
        len(snr_db) == 0 or (len(snr_db) == 2 and all(_is_number(v) for v in snr_db) and snr_db[0] <= snr_db[1]))):
      r.fail('augment.iq.snr_db', 'must be () (no added noise) or a (low, high) pair of finite dB values with '
             'low <= high')

  # Schedule: how long, in what batches.
  if r.present('num_train_steps'):
    steps = r.value('num_train_steps')
    if not (_is_int(steps) and (steps >= 1 or steps == -1)):
      r.fail('num_train_steps', 'must be >= 1 (train that many steps), or -1 to train config.num_epochs '
             'epochs; 0 is not a length')
    elif steps == -1:
      r.number('num_epochs', low=0.0, low_open=True,
               why=' (config.num_train_steps = -1 trains config.num_epochs epochs)')
  batch_low = 1
  why = ''
  if method_ok and _method_uses_batch_negatives(config):
    batch_low, why = 2, (' (the negatives come from the batch: with 1 example there are none and the loss is 0)')
  elif config_keys.get(config, 'model.projection_norm', 'none') == 'batch':
    batch_low, why = 2, " (model.projection_norm = 'batch' standardises over the batch)"
  batch_ok = r.int_range('batch_size', batch_low, why=why)

  # Optimiser.
  r.number('optim.learning_rate', low=0.0, low_open=True)
  r.choice('optim.lr_scaling', LR_SCALINGS)
  r.number('optim.momentum', low=0.0, high=1.0, high_open=True)
  r.number('optim.weight_decay', low=0.0)
  r.number('optim.warmup_epochs', low=0.0)
  r.choice('optim.schedule', LR_SCHEDULES)

  # MoCo.
  method = r.value('method') if method_ok else None
  queue_ok = False
  if method in ('moco', 'moco_v3', 'mochi'):
    r.number('moco.momentum', low=0.0, high=1.0, why=' (the EMA weight of the key encoder)')
    r.boolean('moco.momentum_cosine')
  if method in ('moco', 'mochi'):
    if r.int_range('moco.queue_size', 1) and batch_ok:
      queue_ok = True
      if r.value('moco.queue_size') % r.value('batch_size'):
        queue_ok = False
        r.fail('moco.queue_size', f'must be a multiple of config.batch_size = {r.value("batch_size")} '
               '(whole batches of keys enter and leave the queue)')
    _key_bn_problems(r, batch_ok)
  if method == 'moco_v3' and r.value('moco.key_bn') not in (_MISSING, 'global'):
    r.fail('moco.key_bn', "is read only by config.method = 'moco' and 'mochi' (MoCo v3's negatives are the "
           "batch's own keys, normalised with the positive's statistics): set it to 'global'")
  if method in LOSS_NAMES:
    _loss_problems(r, method)
  if method == 'mochi':
    _mochi_problems(r, queue_ok)
  if method == 'memory_bank':
    r.int_range('memory_bank.num_negatives', 1, why=' (K bank rows per query; capped at the train examples - 1)')
    r.number('memory_bank.momentum', low=0.0, high=1.0, high_open=True,
             why=' (mu in m_i <- normalize(mu m_i + (1 - mu) v_i))')
  if method == 'fifo_bank':
    batch = r.value('batch_size') if batch_ok else 1
    r.int_range('fifo_bank.size', batch, why=f' (config.batch_size = {batch}: the bank holds at least one '
                'global batch of second views)' if batch_ok else '')

  # SwAV.
  if method == 'swav':
    r.int_range('swav.num_prototypes', 2, why=' (the codes spread each batch over the prototypes)')
    r.number('swav.epsilon', low=0.0, low_open=True, why=" (Sinkhorn-Knopp's entropic regularisation)")
    r.int_range('swav.sinkhorn_iterations', 1, why=' (0 would leave the codes unnormalised)')
    r.int_range('swav.freeze_prototypes_steps', 0)
    r.int_range('swav.queue_start_step', 0)
    if r.int_range('swav.queue_size', 0, why=' (0: no queue)') and batch_ok:
      if r.value('swav.queue_size') % r.value('batch_size'):
        r.fail('swav.queue_size', f'must be 0 or a multiple of config.batch_size = {r.value("batch_size")} '
               '(whole batches of projections enter and leave the queue)')

  # Loop.
  r.int_range('log_every_steps', 1)
  r.int_range('checkpoint_every_steps', 1)
  r.int_range('keep_checkpoints', 0, why=' (how many of the newest checkpoints stay on disk; 0 keeps every one)')
  r.boolean('progress_bar')
  r.int_range('profile_first_step', 0, why=' (0: no profile)')
  r.int_range('profile_num_steps', 1)
  _monitor_problems(r)
  allowed = config_keys.get(config, 'allow_resume_changes', '')
  if not isinstance(allowed, str):
    r.fail('allow_resume_changes', f'must be a comma-separated string of keys from {resume.ON_PURPOSE_KEYS}')
  else:
    unknown = [k for k in config_keys.split_keys(allowed) if k not in resume.ON_PURPOSE_KEYS]
    if unknown:
      r.fail('allow_resume_changes', f'names {unknown}; a resume may change only {resume.ON_PURPOSE_KEYS} '
             '(everything else defines the run: start a new --workdir)')

  _member_problems(r, config)

  # Multi-host.
  if r.int_range('distributed.num_processes', 1):
    processes = r.value('distributed.num_processes')
    r.int_range('distributed.process_id', 0, processes - 1)
    if processes > 1 and not r.value('distributed.coordinator_address'):
      r.fail('distributed.coordinator_address',
             f'must be host:port of process 0 when config.distributed.num_processes = {processes}')
  return r.problems


def _monitor_problems(r: _Rules) -> None:
  """The online monitor's keys (`ssl_jax/monitor.py`), checked also while it is off."""
  r.int_range('monitor.every_steps', 0, why=' (0: the online monitor is off)')
  r.number('monitor.temperature', low=0.0, low_open=True, why=' (T of the kNN weights exp(cos / T))')
  r.int_range('monitor.query_per_class', 1, why=' (test examples of every AoA class the monitor classifies)')
  r.int_range('monitor.batch_size', 1, why=' (examples per encoder call)')
  r.int_range('monitor.seed', 0)
  if r.int_range('monitor.bank_per_class', 1, why=' (train examples of every AoA class in the kNN bank)'):
    bank = r.value('monitor.bank_per_class') * spec.NUM_AOA_CLASSES
    r.int_range('monitor.k', 1, bank, why=f' (neighbours among the bank\'s {bank} examples, '
                f'config.monitor.bank_per_class x {spec.NUM_AOA_CLASSES} AoA classes)')


def _loss_problems(r: _Rules, method: str) -> None:
  """`config.loss` of SimCLR and MoCo v2: the name, and hyperparameters only where the loss reads them."""
  if not r.choice('loss.name', LOSS_NAMES[method]):
    return
  name = r.value('loss.name')
  tau_ok = r.number('loss.tau_plus', low=0.0, high=1.0, high_open=True,
                    why=" (the class prior: the probability that a negative shares the anchor's class)")
  beta_ok = r.number('loss.beta', low=0.0, why=' (the concentration on hard negatives; 0: uniform)')
  if name != 'debiased':
    for key, ok in (('loss.tau_plus', tau_ok), ('loss.beta', beta_ok)):
      if ok and r.value(key) != 0:
        r.fail(key, f"is read only by config.loss.name = 'debiased', not {name!r}: set it to 0, or choose "
               "'debiased'")
  if method == 'simclr':
    r.number('loss.dclw_sigma', low=0.0, low_open=True, why=" (the temperature of DCLW's weights)")


def _key_bn_problems(r: _Rules, batch_ok: bool) -> None:
  """MoCo v2's BatchNorm mode and, for 'shuffle', its group count (`ssl_jax.methods.shuffle_bn`)."""
  if r.value('moco.key_bn') is _MISSING:  # a config from before the key trains 'global'
    return
  if not r.choice('moco.key_bn', shuffle_bn.KEY_BN_MODES):
    return
  if r.value('moco.key_bn') != 'shuffle':
    if r.value('moco.bn_groups') is not _MISSING:
      r.int_range('moco.bn_groups', 1)
    return
  if not r.int_range('moco.bn_groups', 2, why=" (config.moco.key_bn = 'shuffle': one group is the whole batch, "
                     'whose statistics a query and its positive key share)'):
    return
  groups = r.value('moco.bn_groups')
  if batch_ok and (r.value('batch_size') % groups or r.value('batch_size') // groups < 2):
    r.fail('moco.bn_groups', f'must split config.batch_size = {r.value("batch_size")} into equal groups of >= 2 '
           'examples (a group of one normalises its example to the BatchNorm bias); it must also be a multiple '
           'of the device count')


def _mochi_problems(r: _Rules, queue_ok: bool) -> None:
  """MoCHi's counts: N hardest (within the queue), s and s' synthetic negatives."""
  mix_ok = r.int_range('mochi.num_mix', 0, why=' (s: negatives mixing two hard ones)')
  r.int_range('mochi.num_query_mix', 0, why=" (s': negatives mixing the query into a hard one)")
  high = r.value('moco.queue_size') if queue_ok else None
  low = 2 if mix_ok and r.value('mochi.num_mix') > 0 else 1
  why = ' (N: the hardest queue negatives of each query'
  why += f'; config.moco.queue_size = {high} holds them' if high is not None else ''
  why += '; a mix of two needs 2)' if low == 2 else ')'
  r.int_range('mochi.num_hard', low, high, why=why)


# config.members.<name>: (check of one value, what it must be).
_MEMBER_VALUE_RULES = {
    'seed': (lambda v: _is_int(v) and v >= 0, 'an integer >= 0'),
    'temperature': (lambda v: _is_number(v) and v > 0, 'a number > 0'),
    'learning_rate': (lambda v: _is_number(v) and v > 0, 'a number > 0'),
    'weight_decay': (lambda v: _is_number(v) and v >= 0, 'a number >= 0'),
    'momentum': (lambda v: _is_number(v) and 0 <= v < 1, 'a number in [0, 1)'),
    'antenna_dropout': (lambda v: _is_number(v) and 0 <= v < 1, 'a number in [0, 1)'),
}


def _member_problems(r: _Rules, config: Any) -> None:
  """`config.members` (ssl_jax/members.py): K >= 1, each list empty or K valid values, K a multiple of the
  member axis's devices; a momentum list only for a method with a momentum encoder."""
  if config_keys.get(config, 'data.order_seed', _MISSING) is not _MISSING:
    r.int_range('data.order_seed', -1, why=' (-1: config.seed orders the data)')
  if config_keys.get(config, 'augment.crop_length_seed', _MISSING) is not _MISSING:
    r.int_range('augment.crop_length_seed', -1, why=" (-1: the run's key draws the crop lengths)")
  if config_keys.get(config, 'members', _MISSING) is _MISSING:
    return  # a config from before members: one run
  if not r.int_range('members.count', 1, why=' (the number of members: an empty member list trains nothing)'):
    return
  count = r.value('members.count')
  for name, (ok, what) in _MEMBER_VALUE_RULES.items():
    key = f'members.{name}'
    values = config_keys.get(config, key, ())
    if not isinstance(values, (tuple, list)):
      r.fail(key, f'must be a list of {count} values (one per member), or () for the config\'s own value')
      continue
    if not values:
      continue
    if len(values) != count:
      r.fail(key, f'holds {len(values)} values but config.members.count = {count}: give one per member, or () '
             'for every member to take the config\'s own value')
    bad = [v for v in values if not ok(v)]
    if bad:
      r.fail(key, f'each value must be {what}; {bad[0]!r} is not')
    if name == 'momentum' and config_keys.get(config, 'moco.momentum', _MISSING) is _MISSING:
      r.fail(key, f'is the EMA momentum base of a momentum encoder; method {config_keys.get(config, "method", "?")!r} has '
             'none (no config.moco.momentum)')
  r.choice('members.data_order', ('shared', 'member'))
  if r.int_range('members.devices', 1, why=' (devices along the member axis of the mesh)'):
    devices = r.value('members.devices')
    if count % devices:
      r.fail('members.devices', f'must divide config.members.count = {count}: each of the {devices} device '
             'rows of the member axis holds the same number of members')


def check_pretrain_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError listing every out-of-range value of a pretraining config."""
  problems = pretrain_config_problems(config)
  if problems:
    raise ConfigError(problems)


def check_pretrain_run(config: ml_collections.ConfigDict, workdir: str) -> None:
  """`check_pretrain_config`, then the run's paths: the workdir and the real recordings' directory."""
  check_pretrain_config(config)
  path_checks.check_data_inputs(config.data)
  path_checks.check_workdir(workdir)


def probe_config_problems(probe_config: ml_collections.ConfigDict) -> list[str]:
  """Every out-of-range value of an evaluation config (`configs/probe.py`)."""
  r = _Rules(probe_config, 'probe_config.')
  if r.present('tasks'):
    tasks = r.value('tasks')
    if not (isinstance(tasks, (list, tuple)) and tasks and all(t in suite.TASKS for t in tasks)):
      r.fail('tasks', f'must be a non-empty tuple of tasks from {tuple(suite.TASKS)}')
  r.int_sequence('budgets', low=1, why=' (labelled train examples per class)')
  r.int_range('num_seeds', 1)
  r.boolean('skip_unavailable_budgets')
  r.int_range('embed_batch_size', 1)
  r.int_range('probe.num_steps', 1)
  r.int_range('probe.batch_size', 1)
  r.number('probe.learning_rate', low=0.0, low_open=True)
  r.number('probe.weight_decay', low=0.0)
  r.number('probe.std_floor', low=0.0)
  for task in suite.TASKS:
    if r.value(f'heads.{task}') is not _MISSING:
      r.int_range(f'heads.{task}.hidden_dim', 0, why=' (0: a linear head)')
  r.choice('clustering.normalize', clustering.NORMALIZATIONS)
  r.int_range('clustering.max_examples', why=' (<= 0: all test examples)')
  r.boolean('random_init')
  if r.boolean('supervised.enabled') and r.value('supervised.enabled'):
    r.int_sequence('supervised.budgets', low=1)
    r.int_range('supervised.num_seeds', 1)
    r.number('supervised.learning_rate', low=0.0, low_open=True)
    r.number('supervised.weight_decay', low=0.0)
    r.int_range('supervised.batch_size', 1)
    r.number('supervised.epochs', low=0.0, low_open=True)
    if r.int_range('supervised.min_steps', 1) and r.int_range('supervised.max_steps', 1):
      if r.value('supervised.min_steps') > r.value('supervised.max_steps'):
        r.fail('supervised.min_steps', f'must be <= probe_config.supervised.max_steps = '
               f'{r.value("supervised.max_steps")}')
    r.int_range('supervised.warmup_steps', 0)
  return r.problems


def check_probe_config(probe_config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError listing every out-of-range value of an evaluation config."""
  problems = probe_config_problems(probe_config)
  if problems:
    raise ConfigError(problems, what='probe_config')
