"""Pretraining methods. Each module offers `create_networks`, `init_state` and `make_train_step`."""

from types import ModuleType

from ssl_jax.methods import moco, simclr

METHODS = {'simclr': simclr, 'moco': moco}


def get_method(name: str) -> ModuleType:
  if name not in METHODS:
    raise ValueError(f'config.method must be one of {sorted(METHODS)}, got {name!r}')
  return METHODS[name]
