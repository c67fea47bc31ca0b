"""MoCo v2 on AoAM: InfoNCE against a queue of momentum-encoder keys (MoCo v3: `configs/moco_v3.py`).

Study values: hidden_dim 1024, momentum 0.996 rising to 1 on a cosine schedule, base lr 0.03 scaled by
batch_size / 256. The study does not give the queue size; MoCo v2 uses 65,536. `config.loss`: InfoNCE (the
study's) or the debiased / hard-negative estimate over the queue.
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
  # The BatchNorm statistics of the two encoders (ssl_jax/methods/shuffle_bn.py). 'global': each forward pass
  # normalises with its view's global batch. 'shuffle': MoCo's Shuffle-BN, bn_groups groups of the global
  # batch normalised separately, the keys' groups drawn from a permutation of it, so that a query and its
  # positive key are not normalised with the same examples' statistics (moco.py: the batch's signature).
  config.moco.key_bn = 'global'  # 'global' | 'shuffle'
  config.moco.bn_groups = 8  # 'shuffle': groups of the global batch (MoCo's 8 GPUs); divides batch_size
  config.loss = ml_collections.ConfigDict()  # the loss against the queue (ssl_jax/methods/moco.py)
  config.loss.name = 'info_nce'  # 'info_nce' | 'debiased'
  config.loss.tau_plus = 0.0  # 'debiased': class prior tau+ in [0, 1) (Chuang et al. 2020)
  config.loss.beta = 0.0  # 'debiased': hardness concentration beta >= 0 (Robinson et al. 2021)
  return scales.apply_pretrain_scale(config, scales.parse_scale(arg, 'configs/moco.py'))
