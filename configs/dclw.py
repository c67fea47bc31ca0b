"""SimCLR with weighted decoupled contrastive learning (DCLW, Yeh et al. 2022) on AoAM: DCL with each
positive pair weighted by 2 - N softmax(cos / sigma) (`ssl_jax/losses_dcl.py`), sigma = 0.5 as the paper."""

import ml_collections

from configs import simclr


def get_config() -> ml_collections.ConfigDict:
  config = simclr.get_config()
  config.loss.name = 'dclw'
  config.loss.dclw_sigma = 0.5
  return config
