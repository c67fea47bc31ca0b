"""SimCLR on AoAM: NT-Xent with negatives from the global batch, the study's shared setup.

`config.loss` picks the loss over the in-batch negatives (`ssl_jax/methods/simclr.py`); the study's is
'nt_xent'. The named variants `configs/debiased.py`, `hard_negative.py`, `dcl.py` and `dclw.py` set it.
"""

import ml_collections

from configs import base, scales


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The study's config, or with `arg` = 'scale=NAME' one of `configs/scales.py`'s scales."""
  config = base.get_config()
  config.method = 'simclr'
  config.loss = ml_collections.ConfigDict()
  config.loss.name = 'nt_xent'  # 'nt_xent' | 'debiased' | 'dcl' | 'dclw'
  config.loss.tau_plus = 0.0  # 'debiased': class prior tau+ in [0, 1) (Chuang et al. 2020)
  config.loss.beta = 0.0  # 'debiased': hardness concentration beta >= 0 (Robinson et al. 2021)
  config.loss.dclw_sigma = 0.5  # 'dclw': sigma of the positive pairs' weights (Yeh et al. 2022)
  return scales.apply_pretrain_scale(config, scales.parse_scale(arg, 'configs/simclr.py'))
