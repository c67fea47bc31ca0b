"""CLIP-style cross-representation pretraining on AoAM: an IQ tower and a spectrum tower trained with CLIP's
symmetric InfoNCE over the global batch (ssl_jax/methods/clip.py).

Not the study's method; it shares the study's setup, temperature included (0.07, fixed: CLIP's initial
value). Evaluation (`ssl_jax.evaluate`) probes the IQ tower's encoder; `ssl_jax.methods.clip.restore_encoder(
workdir, representation='spectrum')` loads the spectrum tower's.
"""

import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
  config = base.get_config()
  config.method = 'clip'
  return config
