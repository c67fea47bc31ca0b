"""The study's scales: how far a run is shrunk from the study's setup, for a CPU, a demo or a test.

Every config file takes its scale as its argument (big_vision's `get_config(arg)`):

  --config=configs/simclr.py:scale=cpu     --config=configs/moco.py:scale=demo
  --probe_config=configs/probe.py:scale=cpu

No argument (or `scale=full`) is the study's own setup (`docs/study.md`): L = 1,024, 400 epochs at batch
256. `smoke` is a tiny model for tests and quick checks (seconds on a CPU, every code path: two crop
lengths, a checkpoint before the last); `demo` what `make demo` runs; `cpu` the real model at L = 128 for
3,000 steps (about 20 minutes of the study on 2 CPU cores). `experiments/study.py --scale NAME` takes its
pretraining and probe configs from here.
"""

from typing import Any

import ml_collections
from absl import flags

SCALES = ('smoke', 'demo', 'cpu', 'full')
FULL = 'full'

# Pretraining, per scale (full: the config file's own values). `queue` is MoCo v2's queue size. At smoke, one
# crop length (one step program per run: each program's trace costs seconds) and the online monitor off;
# tests set two crop lengths, or the monitor, where they test them.
_PRETRAIN: dict[str, dict[str, Any]] = {
    'smoke': dict(length=64, crops=(32,), train=2, test=1, batch=16, steps=6, repeats=(1, 1, 1), queue=64,
                  warmup_epochs=0.0, log_every=2, checkpoint_every=4, progress_bar=False, monitor_every=0,
                  monitor_bank=1, monitor_queries=1),
    # demo: the cpu scale's pretraining, for one run (SimCLR with MTC + AD; `experiments/study.py` runs no
    # MoCo and no ablation at this scale): fewer steps or examples left it below the random-init encoder.
    'demo': dict(length=128, crops=(32, 64, 128), train=100, test=26, batch=128, steps=3000, repeats=(4, 8, 4),
                 queue=4096, warmup_epochs=1.0, log_every=150, checkpoint_every=1500, progress_bar=True,
                 monitor_every=150, monitor_bank=10, monitor_queries=4),
    # cpu: short examples (the study's crops up to L), so that 3,000 steps fit: SimCLR with MTC+AD needs
    # them to beat a random encoder here (1,500 did not); at L=512 only ~600 would fit in the time.
    'cpu': dict(length=128, crops=(32, 64, 128), train=100, test=26, batch=128, steps=3000, repeats=(4, 8, 4),
                queue=4096, warmup_epochs=1.0, log_every=150, checkpoint_every=1500, progress_bar=True,
                monitor_every=150, monitor_bank=10, monitor_queries=4),
}

# Method-specific values per scale, set where a method's config has the key. At smoke: MoCHi's N within the
# 64-key queue, and every SwAV phase in 6 steps (frozen prototypes, then moving; the queue from step 3).
# Elsewhere SwAV's prototypes stay frozen for one epoch of the scale's data, as SwAV freezes them for its first.
_METHOD_PRETRAIN: dict[str, dict[str, Any]] = {
    'smoke': {'mochi.num_hard': 16, 'mochi.num_mix': 8, 'mochi.num_query_mix': 4, 'fifo_bank.size': 64,
              'swav.num_prototypes': 24, 'swav.freeze_prototypes_steps': 2, 'swav.queue_size': 32,
              'swav.queue_start_step': 3},
    'demo': {'fifo_bank.size': 4096, 'swav.freeze_prototypes_steps': 175},  # as cpu
    'cpu': {'fifo_bank.size': 4096, 'swav.freeze_prototypes_steps': 175},  # 100 x 225 / 128
}

# Probes and the supervised baseline, per scale: budgets capped by the examples each scale simulates.
_PROBE: dict[str, dict[str, Any]] = {
    'smoke': {'budgets': (1, 2), 'num_seeds': 2, 'probe.num_steps': 50, 'supervised.budgets': (1,),
              'supervised.num_seeds': 1, 'supervised.min_steps': 5, 'supervised.max_steps': 5},
    # demo: the budgets where the demo's comparison holds; the supervised baseline as at cpu (not cut short),
    # with 3 seeds for its spread (it is cheap at these budgets).
    'demo': {'budgets': (1, 10), 'probe.num_steps': 200, 'supervised.budgets': (1, 10), 'supervised.num_seeds': 3,
             'supervised.max_steps': 3000},
    'cpu': {'budgets': (1, 10, 100), 'supervised.budgets': (1, 10, 100), 'supervised.num_seeds': 1,
            'supervised.max_steps': 3000},  # as many steps as pretraining
    # The study's budgets; the simulated train split holds 200 per class, so 500 is reported skipped.
    'full': {'skip_unavailable_budgets': True},
}


class ConfigArgError(flags.IllegalFlagValueError):
  """A config file's argument (`--config=FILE:ARG`) it does not accept, e.g. not `scale=NAME` of a known scale.

  An absl flag error and not a ValueError, so that `--config=FILE:ARG` prints the message alone:
  ml_collections' config flag re-raises a ValueError from `get_config` with its traceback.
  """


def parse_scale(arg: str | None, config_file: str) -> str:
  """The scale a config argument names: '' or None -> 'full'; 'scale=NAME' -> NAME (one of SCALES)."""
  if not arg:
    return FULL
  key, _, value = arg.partition('=')
  if key.strip() != 'scale' or value.strip() not in SCALES:
    raise ConfigArgError(f'{config_file}: the config argument must be scale=NAME with NAME one of {SCALES}, got '
                     f'{arg!r} (e.g. --config={config_file}:scale=cpu)')
  return value.strip()


def set_steps(config: ml_collections.ConfigDict, steps: int) -> None:
  """Pretraining length and, with it, the cadence: 20 log lines, 2 checkpoints and (when on) 20 online-monitor
  measurements per run."""
  config.num_train_steps = steps
  config.log_every_steps = max(steps // 20, 1)
  if config.monitor.every_steps:
    config.monitor.every_steps = config.log_every_steps
  config.checkpoint_every_steps = max(steps // 2, 1)


def apply_pretrain_scale(config: ml_collections.ConfigDict, scale: str) -> ml_collections.ConfigDict:
  """Shrinks a pretraining config (`configs/base.py` and a method file) to `scale`, in place; returns it."""
  if scale not in SCALES:
    raise ConfigArgError(f'scale must be one of {SCALES}, got {scale!r}')
  if scale == FULL:
    return config
  settings = _PRETRAIN[scale]
  config.data.length = settings['length']
  config.augment.crop_lengths = settings['crops']
  config.data.examples_per_class = settings['train']
  config.data.test_examples_per_class = settings['test']
  config.batch_size = settings['batch']
  config.num_train_steps = settings['steps']
  config.log_every_steps = settings['log_every']
  config.checkpoint_every_steps = settings['checkpoint_every']
  config.model.stage_repeats = settings['repeats']
  config.optim.warmup_epochs = settings['warmup_epochs']
  config.progress_bar = settings['progress_bar']
  config.monitor.every_steps = settings['monitor_every']
  config.monitor.bank_per_class = settings['monitor_bank']
  config.monitor.query_per_class = settings['monitor_queries']
  if 'queue_size' in config.get('moco', {}):
    config.moco.queue_size = settings['queue']
  _set_present(config, _METHOD_PRETRAIN[scale])
  return config


def _set_present(config: ml_collections.ConfigDict, values: dict[str, Any]) -> None:
  """Sets each dotted key of `values` whose parent node `config` has (another method's keys are skipped)."""
  for dotted, value in values.items():
    section, key = dotted.split('.')
    if section in config:
      config[section][key] = value


def apply_probe_scale(config: ml_collections.ConfigDict, scale: str) -> ml_collections.ConfigDict:
  """Sets a probe config's (`configs/probe.py`) budgets and step counts for `scale`, in place; returns it."""
  if scale not in SCALES:
    raise ConfigArgError(f'scale must be one of {SCALES}, got {scale!r}')
  for dotted, value in _PROBE[scale].items():
    node = config
    *path, last = dotted.split('.')
    for part in path:
      node = node[part]
    node[last] = value
  return config
