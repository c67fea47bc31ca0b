"""The configs: one per method, named as the method registry names them; the side-experiment configs, and
what each changes against the method config it starts from."""

import ml_collections
import pytest
from absl import flags

from configs import METHOD_CONFIGS, moco_short_run, smoke
from configs import moco as moco_config
from ssl_jax import methods
from ssl_jax.methods import moco


def test_every_method_has_its_config_and_a_smoke_preset():
  assert set(METHOD_CONFIGS) == set(methods.METHODS)
  for name, module in METHOD_CONFIGS.items():
    assert module.get_config().method == name
    assert smoke.get_config(name).method == name
  assert 'queue_size' not in METHOD_CONFIGS['moco_v3'].get_config().moco  # v3 keeps no queue
  with pytest.raises(flags.IllegalFlagValueError, match=r"configs/smoke.py: unknown preset 'mocov3'"):
    smoke.get_config('mocov3')


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
