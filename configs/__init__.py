"""Config files, loaded by path (`--config=configs/moco.py`) or imported.


`METHOD_CONFIGS`: the named configs that the study (`--methods`) and the smoke presets
(`configs/smoke.py:NAME`) offer, by name. One per pretraining method, named as `config.method` (the names
of `ssl_jax.methods.METHODS`), and the SimCLR loss variants (`LOSS_VARIANTS`: `config.method` is 'simclr',
`config.loss` differs).
"""

from configs import (clip, dcl, dclw, debiased, fifo_bank, hard_negative, memory_bank, mochi, moco, moco_v3,
                     simclr, swav)

METHOD_CONFIGS = {'simclr': simclr, 'moco': moco, 'moco_v3': moco_v3, 'memory_bank': memory_bank,
                  'fifo_bank': fifo_bank, 'mochi': mochi, 'debiased': debiased, 'hard_negative': hard_negative,
                  'dcl': dcl, 'dclw': dclw, 'swav': swav, 'clip': clip}
LOSS_VARIANTS = ('debiased', 'hard_negative', 'dcl', 'dclw')
