"""Pretraining methods, by `config.method`. Each module offers `create_networks`, `init_state` and
`make_train_step`; the methods that train a momentum key encoder (MoCo, MoCo v3, MoCHi) also
`momentum_schedule`, and a method that encodes other than two views per example `VIEWS_PER_EXAMPLE`.
SwAV (`swav.py`) and CLIP (`clip.py`, two towers) extend `common.Networks` with their extra modules."""

from types import ModuleType

from ssl_jax.methods import clip, fifo_bank, memory_bank, mochi, moco, moco_v3, simclr, swav

METHODS = {'simclr': simclr, 'moco': moco, 'moco_v3': moco_v3, 'memory_bank': memory_bank,
           'fifo_bank': fifo_bank, 'mochi': mochi, 'swav': swav, 'clip': clip}


def get_method(name: str) -> ModuleType:
  if name not in METHODS:
    raise ValueError(f'config.method must be one of {sorted(METHODS)}, got {name!r}')
  return METHODS[name]
