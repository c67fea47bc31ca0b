"""SimCLR on AoAM: NT-Xent with negatives from the global batch, the study's shared setup."""

import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
  config = base.get_config()
  config.method = 'simclr'
  return config
