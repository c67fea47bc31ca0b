"""MoCo v2 on AoAM: InfoNCE against a queue of momentum-encoder keys (MoCo v3: `configs/moco_v3.py`).

Study values: hidden_dim 1024, momentum 0.996 rising to 1 on a cosine schedule, base lr 0.03 scaled by
batch_size / 256. The study does not give the queue size; MoCo v2 uses 65,536.
"""

import ml_collections

from configs import base, scales


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The study's config, or with `arg` = 'scale=NAME' one of `configs/scales.py`'s scales."""
  config = base.get_config()
  config.method = 'moco'
  config.optim.learning_rate = 0.03  # base_lr; the effective lr is base_lr * batch_size / 256
  config.optim.lr_scaling = 'linear'
  config.moco = ml_collections.ConfigDict()
  config.moco.momentum = 0.996
  config.moco.momentum_cosine = True  # m rises from momentum to 1 over training
  config.moco.queue_size = 65_536
  return scales.apply_pretrain_scale(config, scales.parse_scale(arg, 'configs/moco.py'))
