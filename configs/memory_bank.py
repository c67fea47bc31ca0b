"""Instance discrimination with a memory bank (Wu et al. 2018) on AoAM, the study's shared setup otherwise.

A bank of one embedding per train example; K negatives drawn from it per query (Wu et al.: 4,096, capped
at the train split's size - 1), the positive the example's own row, updated after each step with momentum
0.5 (`ssl_jax/methods/memory_bank.py`).
"""

import ml_collections

from configs import base, scales


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The full config, or with `arg` = 'scale=NAME' one of `configs/scales.py`'s scales."""
  config = base.get_config()
  config.method = 'memory_bank'
  config.memory_bank = ml_collections.ConfigDict()
  config.memory_bank.num_negatives = 4096  # K per query, capped at the train examples - 1
  config.memory_bank.momentum = 0.5  # mu in m_i <- normalize(mu m_i + (1 - mu) v_i)
  return scales.apply_pretrain_scale(config, scales.parse_scale(arg, 'configs/memory_bank.py'))
