"""SwAV on AoAM: swapped prediction of Sinkhorn-Knopp codes over learnable prototypes (ssl_jax/methods/swav.py).

Not the study's method; it shares the study's setup (encoder, head, optimiser, MTC + AD views). SwAV's own
values where AoAM gives no reason to differ: softmax temperature 0.1, Sinkhorn ε 0.05 with 3 iterations,
prototypes frozen for the first epoch. The number of prototypes is ours: above the 225 AoA classes (SwAV
uses 3,000 for ImageNet's 1,000 and reports little sensitivity to it) and near the batch size, so that
each batch's equipartition spreads ~1 example per prototype. SwAV's queue (for batches below 256) is off.
"""

import ml_collections

from configs import base, scales


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The full config, or with `arg` = 'scale=NAME' one of `configs/scales.py`'s scales."""
  config = base.get_config()
  config.method = 'swav'
  config.temperature = 0.1  # τ of the prediction softmax (SwAV's)
  config.swav = ml_collections.ConfigDict()
  config.swav.num_prototypes = 300  # K
  config.swav.epsilon = 0.05  # Sinkhorn-Knopp's entropic regularisation ε
  config.swav.sinkhorn_iterations = 3
  # Steps during which the prototypes do not move; 175 = one epoch of the default data (45,000 examples)
  # at batch 256, as SwAV freezes them for its first epoch.
  config.swav.freeze_prototypes_steps = 175
  # Past projections in Sinkhorn's sums: 0 = off, else a multiple of batch_size (SwAV: 3,840 at batch 256).
  config.swav.queue_size = 0
  # The queue enters the sums from this step on (and once it is full); 2,625 = 15 epochs, SwAV's start.
  config.swav.queue_start_step = 2625
  return scales.apply_pretrain_scale(config, scales.parse_scale(arg, 'configs/swav.py'))
