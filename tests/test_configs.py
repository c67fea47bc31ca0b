"""The side-experiment configs: what each changes against the method config it starts from."""

import ml_collections

from configs import moco as moco_config
from configs import moco_short_run
from ssl_jax.methods import moco


def _flat(config: ml_collections.ConfigDict) -> dict:
  flat = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      flat.update({f'{key}.{k}': v for k, v in _flat(value).items()})
    else:
      flat[key] = value
  return flat


def test_moco_short_run_changes_the_projection_and_the_queue_only():
  short, study = _flat(moco_short_run.get_config()), _flat(moco_config.get_config())
  assert short.keys() == study.keys()
  changed = {k: (study[k], short[k]) for k in short if short[k] != study[k]}
  assert changed == {'model.projection_norm': ('none', 'batch'), 'moco.queue_size': (65_536, 256)}
  moco.check_queue(moco_short_run.get_config())  # a whole number of batches
