"""MoCo v2 on AoAM: InfoNCE against a queue of momentum-encoder keys (MoCo v3: `configs/moco_v3.py`).

Study values: hidden_dim 1024, momentum 0.996 rising to 1 on a cosine schedule, base lr 0.03 scaled by
batch_size / 256. The study does not give the queue size; MoCo v2 uses 65,536.
"""

import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
  config = base.get_config()
  config.method = 'moco'
  config.optim.learning_rate = 0.03  # base_lr; the effective lr is base_lr * batch_size / 256
  config.optim.lr_scaling = 'linear'
  config.moco = ml_collections.ConfigDict()
  config.moco.momentum = 0.996
  config.moco.momentum_cosine = True  # m rises from momentum to 1 over training
  config.moco.queue_size = 65_536
  return config
