"""MoCHi on AoAM: MoCo v2 (`configs/moco.py`, its queue and momentum encoder) with hard negatives mixed per
query from the queue (`ssl_jax/methods/mochi.py`).

Kalantidis et al.'s MoCHi (N, s, s') = (1024, 512, 256); N must not exceed `moco.queue_size`.
"""

import ml_collections

from configs import moco, scales


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The full config, or with `arg` = 'scale=NAME' one of `configs/scales.py`'s scales."""
  config = moco.get_config()
  config.method = 'mochi'
  del config.loss  # MoCHi's loss is its own (InfoNCE with the synthetic negatives)
  config.mochi = ml_collections.ConfigDict()
  config.mochi.num_hard = 1024  # N: each query's hardest queue negatives, mixed from
  config.mochi.num_mix = 512  # s: synthetic negatives mixing two of them
  config.mochi.num_query_mix = 256  # s': synthetic negatives mixing the query into one of them
  return scales.apply_pretrain_scale(config, scales.parse_scale(arg, 'configs/mochi.py'))
