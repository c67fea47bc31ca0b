"""CLIP-style cross-representation pretraining on AoAM: an IQ tower and a spectrum tower trained with CLIP's
symmetric InfoNCE over the global batch (ssl_jax/methods/clip.py).

Not the study's method; it shares the study's setup, temperature included (0.07, fixed: CLIP's initial
value). Evaluation (`ssl_jax.evaluate`) probes the IQ tower's encoder; `ssl_jax.methods.encoders.load_clip_tower(
workdir, representation='spectrum')` loads the spectrum tower's.
"""

import ml_collections

from configs import base, scales


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The full config, or with `arg` = 'scale=NAME' one of `configs/scales.py`'s scales."""
  config = base.get_config()
  config.method = 'clip'
  return scales.apply_pretrain_scale(config, scales.parse_scale(arg, 'configs/clip.py'))
