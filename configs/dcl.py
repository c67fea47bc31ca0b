"""SimCLR with decoupled contrastive learning (Yeh et al. 2022) on AoAM: NT-Xent without the positive in
the denominator (`ssl_jax/losses/dcl.py`)."""

import ml_collections

from configs import scales, simclr


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The full config, or with `arg` = 'scale=NAME' one of `configs/scales.py`'s scales."""
  config = simclr.get_config()
  config.loss.name = 'dcl'
  return scales.apply_pretrain_scale(config, scales.parse_scale(arg, 'configs/dcl.py'))
