"""A side experiment, not the study's method: MoCo v2 with two changes meant for short runs.

The study's MoCo v2 (its projection MLP, a large queue) did not learn in a few thousand steps on a
2-core CPU: its queries bunched into one point early and stayed there. Two changes stop that collapse:
  - `model.projection_norm = 'batch'`: the projection standardised over the global batch (no affine, no
    running statistics), the BatchNorm that ends MoCo v3's projector;
  - `moco.queue_size = 256`: as many negatives as SimCLR's batch.
What they do at the cpu scale: experiments/results/README.md, "MoCo in short runs".

  python -m ssl_jax.main --config=configs/moco_short_run.py[:scale=cpu] --workdir=DIR
"""

import ml_collections

from configs import moco


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """MoCo v2's config (at the scale `arg` names, see `configs/scales.py`) with the two changes above."""
  config = moco.get_config(arg)
  config.model.projection_norm = 'batch'
  config.moco.queue_size = 256  # a multiple of batch_size, as every queue must be
  return config
