"""SimCLR with lightly's FIFO memory bank on AoAM (`ssl_jax/methods/fifo_bank.py`): NT-Xent whose negatives
are the last `fifo_bank.size` second views (lightly's `NTXentLoss(memory_bank_size=...)`), the study's
shared setup otherwise.
"""

import ml_collections

from configs import base, scales


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The full config, or with `arg` = 'scale=NAME' one of `configs/scales.py`'s scales."""
  config = base.get_config()
  config.method = 'fifo_bank'
  config.fifo_bank = ml_collections.ConfigDict()
  config.fifo_bank.size = 4096  # rows (past second views); at least one global batch
  return scales.apply_pretrain_scale(config, scales.parse_scale(arg, 'configs/fifo_bank.py'))
