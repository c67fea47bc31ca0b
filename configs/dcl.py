"""SimCLR with decoupled contrastive learning (Yeh et al. 2022) on AoAM: NT-Xent without the positive in
the denominator (`ssl_jax/losses_dcl.py`)."""

import ml_collections

from configs import simclr


def get_config() -> ml_collections.ConfigDict:
  config = simclr.get_config()
  config.loss.name = 'dcl'
  return config
