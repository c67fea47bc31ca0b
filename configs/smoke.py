"""The smoke preset of each method by name: `--config=configs/smoke.py:moco` is `configs/moco.py:scale=smoke`.

The part after ':' picks the preset, a name of `configs.METHOD_CONFIGS`: simclr (default), moco, moco_v3,
memory_bank, fifo_bank, mochi, swav, clip, or a SimCLR loss variant. The values are the `smoke` scale of
`configs/scales.py`: seconds on a CPU, every code path exercised.
"""

import ml_collections

from configs import METHOD_CONFIGS, scales


def get_config(method: str = 'simclr') -> ml_collections.ConfigDict:
  """`METHOD_CONFIGS[method].get_config('scale=smoke')`; an unknown method raises ConfigArgError naming the
  choices."""
  if method not in METHOD_CONFIGS:
    raise scales.ConfigArgError(
        f'configs/smoke.py: unknown preset {method!r}; choose one of {sorted(METHOD_CONFIGS)} '
        '(e.g. --config=configs/smoke.py:moco)')
  return METHOD_CONFIGS[method].get_config('scale=smoke')
