"""Pretraining methods, by `config.method`. Each module offers `create_networks`, `init_state` and
`make_train_step`; the two MoCo methods, which train a momentum key encoder, also `momentum_schedule`.
SwAV (`swav.py`) and CLIP (`clip.py`, two towers) extend `common.Networks` with their extra modules."""

from types import ModuleType

from ssl_jax.methods import clip, moco, moco_v3, simclr, swav

METHODS = {'simclr': simclr, 'moco': moco, 'moco_v3': moco_v3, 'swav': swav, 'clip': clip}


def get_method(name: str) -> ModuleType:
  if name not in METHODS:
    raise ValueError(f'config.method must be one of {sorted(METHODS)}, got {name!r}')
  return METHODS[name]
