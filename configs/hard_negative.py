"""SimCLR with hard-negative sampling (Robinson et al. 2021) on AoAM: the in-batch negatives reweighted
towards the most similar ones, w ∝ e^{beta cos/τ} (`ssl_jax/losses/debiased.py`).

Robinson et al. used beta = 1 at τ = 0.5, a weight e^{2 cos}; the same weight at the study's τ = 0.07 is
beta = 0.14 (beta multiplies the logit cos/τ here). Their runs also debias (tau+ = 0.1); here tau+ = 0, so
that this variant and `configs/debiased.py` each show one treatment of the negatives
(`--config.loss.tau_plus=0.1` combines them).
"""

import ml_collections

from configs import scales, simclr


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The full config, or with `arg` = 'scale=NAME' one of `configs/scales.py`'s scales."""
  config = simclr.get_config()
  config.loss.name = 'debiased'
  config.loss.beta = 0.14
  return scales.apply_pretrain_scale(config, scales.parse_scale(arg, 'configs/hard_negative.py'))
