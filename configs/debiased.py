"""SimCLR with the debiased contrastive loss (Chuang et al. 2020) on AoAM: the in-batch negative term
corrected for negatives that share the anchor's class, with class prior tau+ (`ssl_jax/losses/debiased.py`).

tau+ = 0.1, Chuang et al.'s value for 10 classes. On AoAM a random other example shares the anchor's
modulation with probability 1/7 and its AoA class with 1/225; the prior is a guess either way.
"""

import ml_collections

from configs import scales, simclr


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The full config, or with `arg` = 'scale=NAME' one of `configs/scales.py`'s scales."""
  config = simclr.get_config()
  config.loss.name = 'debiased'
  config.loss.tau_plus = 0.1
  return scales.apply_pretrain_scale(config, scales.parse_scale(arg, 'configs/debiased.py'))
