"""MoCo v3 on AoAM: a symmetric InfoNCE between a query network with a predictor and a momentum key
encoder, the other keys of the global batch as negatives (no queue).

Not the study's method (its MoCo is v2, `configs/moco.py`); it shares the study's setup and MoCo's
momentum schedule (0.996 rising to 1 on a cosine) and lr rule (base lr 0.03 scaled by batch_size / 256).
"""

import ml_collections

from configs import base, scales


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The study's config, or with `arg` = 'scale=NAME' one of `configs/scales.py`'s scales."""
  config = base.get_config()
  config.method = 'moco_v3'
  config.optim.learning_rate = 0.03  # base_lr; the effective lr is base_lr * batch_size / 256
  config.optim.lr_scaling = 'linear'
  config.moco = ml_collections.ConfigDict()  # the momentum encoder, as in configs/moco.py
  config.moco.momentum = 0.996
  config.moco.momentum_cosine = True  # m rises from momentum to 1 over training
  return scales.apply_pretrain_scale(config, scales.parse_scale(arg, 'configs/moco_v3.py'))
