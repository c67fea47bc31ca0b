"""Config files, loaded by path (`--config=configs/moco.py`) or imported. `METHOD_CONFIGS`: the config module
of each pretraining method, by `config.method` (the names of `ssl_jax.methods.METHODS`)."""

from configs import clip, moco, moco_v3, simclr, swav

METHOD_CONFIGS = {'simclr': simclr, 'moco': moco, 'moco_v3': moco_v3, 'swav': swav, 'clip': clip}
