"""SimCLR on AoAM: NT-Xent with negatives from the global batch, the study's shared setup."""

import ml_collections

from configs import base, scales


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The study's config, or with `arg` = 'scale=NAME' one of `configs/scales.py`'s scales."""
  config = base.get_config()
  config.method = 'simclr'
  return scales.apply_pretrain_scale(config, scales.parse_scale(arg, 'configs/simclr.py'))
