"""SimCLR with weighted decoupled contrastive learning (DCLW, Yeh et al. 2022) on AoAM: DCL with each
positive pair weighted by 2 - N softmax(cos / sigma) (`ssl_jax/losses/dcl.py`), sigma = 0.5 as the paper."""

import ml_collections

from configs import scales, simclr


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The full config, or with `arg` = 'scale=NAME' one of `configs/scales.py`'s scales."""
  config = simclr.get_config()
  config.loss.name = 'dclw'
  config.loss.dclw_sigma = 0.5
  return scales.apply_pretrain_scale(config, scales.parse_scale(arg, 'configs/dclw.py'))
