"""A tiny preset for tests and quick checks: seconds on a CPU, every code path exercised.

Usage: `--config=configs/smoke.py:moco` (the part after ':' picks the preset, a name of
`configs.METHOD_CONFIGS`: simclr (default), moco, moco_v3, memory_bank, fifo_bank, mochi, swav,
clip, or a SimCLR loss variant).
"""

from absl import flags
import ml_collections

from configs import METHOD_CONFIGS


def get_config(method: str = 'simclr') -> ml_collections.ConfigDict:
  """The smoke config of `method`; an unknown one raises absl's IllegalFlagValueError naming the choices.

  (Not a ValueError: the config flag would print a ValueError with its traceback instead of the message.)
  """
  if method not in METHOD_CONFIGS:
    raise flags.IllegalFlagValueError(
        f'configs/smoke.py: unknown preset {method!r}; choose one of {sorted(METHOD_CONFIGS)} '
        '(e.g. --config=configs/smoke.py:moco)')
  config = METHOD_CONFIGS[method].get_config()
  config.data.length = 64
  config.model.stage_repeats = (1, 1, 1)  # same block types, a fraction of the compile time
  config.data.examples_per_class = 2
  config.data.test_examples_per_class = 1
  config.augment.crop_lengths = (32, 64)
  config.batch_size = 16
  config.num_train_steps = 6
  config.optim.warmup_epochs = 0.0
  config.log_every_steps = 2
  config.checkpoint_every_steps = 4
  config.progress_bar = False
  if 'queue_size' in config.get('moco', {}):  # MoCo v2 and MoCHi
    config.moco.queue_size = 64
  if method == 'swav':  # every phase in 6 steps: frozen prototypes, then moving; the queue from step 3
    config.swav.num_prototypes = 24
    config.swav.freeze_prototypes_steps = 2
    config.swav.queue_size = 2 * config.batch_size
    config.swav.queue_start_step = 3
  if config.method == 'mochi':
    config.mochi.num_hard, config.mochi.num_mix, config.mochi.num_query_mix = 16, 8, 4
  if config.method == 'fifo_bank':
    config.fifo_bank.size = 64
  return config
