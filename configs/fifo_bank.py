"""SimCLR with lightly's FIFO memory bank on AoAM (`ssl_jax/methods/fifo_bank.py`): NT-Xent whose negatives
are the last `fifo_bank.size` second views (lightly's `NTXentLoss(memory_bank_size=...)`), the study's
shared setup otherwise.
"""

import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
  config = base.get_config()
  config.method = 'fifo_bank'
  config.fifo_bank = ml_collections.ConfigDict()
  config.fifo_bank.size = 4096  # rows (past second views); at least one global batch
  return config
