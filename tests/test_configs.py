"""The configs: one per method, named as the method registry names them; the side-experiment configs, and
what each changes against the method config it starts from."""

import ml_collections
from absl import flags
import pytest

from configs import LOSS_VARIANTS, METHOD_CONFIGS, moco_short_run, scales, smoke
from configs import simclr as simclr_config
from configs import moco as moco_config
from configs import probe as probe_config_lib
from ssl_jax import methods
from ssl_jax.methods import moco


def test_every_method_has_its_config_and_a_smoke_preset():
  assert set(METHOD_CONFIGS) - set(LOSS_VARIANTS) == set(methods.METHODS)
  for name, module in METHOD_CONFIGS.items():
    method = 'simclr' if name in LOSS_VARIANTS else name
    assert module.get_config().method == method
    assert smoke.get_config(name).method == method
  assert 'queue_size' not in METHOD_CONFIGS['moco_v3'].get_config().moco  # v3 keeps no queue
  with pytest.raises(scales.ConfigArgError, match=r"configs/smoke.py: unknown preset 'mocov3'"):
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


def test_the_loss_variants_change_simclrs_loss_only():
  simclr = _flat(simclr_config.get_config())
  assert simclr['loss.name'] == 'nt_xent' and simclr['loss.tau_plus'] == simclr['loss.beta'] == 0.0
  changed = {}
  for name in LOSS_VARIANTS:
    variant = _flat(METHOD_CONFIGS[name].get_config())
    assert variant.keys() == simclr.keys(), name
    changed[name] = {k: variant[k] for k in variant if variant[k] != simclr[k]}
  assert changed == {'debiased': {'loss.name': 'debiased', 'loss.tau_plus': 0.1},
                     'hard_negative': {'loss.name': 'debiased', 'loss.beta': 0.14},
                     'dcl': {'loss.name': 'dcl'}, 'dclw': {'loss.name': 'dclw'}}


def test_mochi_is_moco_with_its_own_loss():
  mochi, moco_v2 = _flat(METHOD_CONFIGS['mochi'].get_config()), _flat(moco_config.get_config())
  assert {k for k in moco_v2 if not k.startswith('loss.')} <= mochi.keys()
  assert not any(k.startswith('loss.') for k in mochi)  # MoCHi's loss is its own
  assert {k: mochi[k] for k in mochi if k.startswith('mochi.')} == {
      'mochi.num_hard': 1024, 'mochi.num_mix': 512, 'mochi.num_query_mix': 256}


def test_no_argument_and_scale_full_are_the_studys_config():
  for module in METHOD_CONFIGS.values():
    assert module.get_config().to_dict() == module.get_config('scale=full').to_dict()


def test_each_scale_shrinks_every_method_alike():
  for scale in ('smoke', 'demo', 'cpu'):
    configs = {name: module.get_config(f'scale={scale}') for name, module in METHOD_CONFIGS.items()}
    shared = {(c.data.length, c.augment.crop_lengths, c.batch_size, c.num_train_steps, c.model.stage_repeats,
               c.data.examples_per_class, c.log_every_steps, c.checkpoint_every_steps) for c in configs.values()}
    assert len(shared) == 1, (scale, shared)
    (length, crops, batch, steps, _, _, log_every, checkpoint_every), = shared
    assert max(crops) <= length and steps % log_every == 0 and checkpoint_every < steps, scale
    assert configs['moco'].moco.queue_size % batch == 0, scale
    assert 'queue_size' not in configs['moco_v3'].moco, scale
  cpu = METHOD_CONFIGS['simclr'].get_config('scale=cpu')
  assert (cpu.data.length, cpu.augment.crop_lengths, cpu.num_train_steps) == (128, (32, 64, 128), 3000)


def test_the_smoke_preset_is_the_smoke_scale():
  for name, module in METHOD_CONFIGS.items():
    assert smoke.get_config(name).to_dict() == module.get_config('scale=smoke').to_dict()


@pytest.mark.parametrize('arg', ['scale=huge', 'size=cpu', 'cpu', 'scale='])
def test_a_bad_config_argument_names_the_file_and_the_scales(arg):
  expected = (rf"configs/moco.py: the config argument must be scale=NAME with NAME one of \('smoke', 'demo', "
              rf"'cpu', 'full'\), got '{arg}'")
  with pytest.raises(scales.ConfigArgError, match=expected):
    METHOD_CONFIGS['moco'].get_config(arg)
  with pytest.raises(scales.ConfigArgError, match=r"configs/probe.py: .*scale=NAME"):
    probe_config_lib.get_config(arg)


def test_probe_scales():
  assert probe_config_lib.get_config().to_dict() != probe_config_lib.get_config('scale=full').to_dict()
  assert probe_config_lib.get_config('scale=full').skip_unavailable_budgets  # 500 per class is not simulated
  for scale in ('smoke', 'demo', 'cpu'):
    probes = probe_config_lib.get_config(f'scale={scale}')
    per_class = METHOD_CONFIGS['simclr'].get_config(f'scale={scale}').data.examples_per_class
    assert max(probes.budgets) <= per_class and max(probes.supervised.budgets) <= per_class, scale
    assert not probes.supervised.enabled  # The study turns the (slow) supervised baseline on.
  assert probe_config_lib.get_config('scale=cpu').supervised.max_steps == 3000  # as many as pretraining


def test_the_studys_supervised_baseline_trains_every_budget_its_epochs():
  """At the full scale no budget of the protocol is cut short: 30 epochs even for AoA at 500 per class."""
  from ssl_jax.data import spec
  from ssl_jax.evaluation import supervised
  config = probe_config_lib.get_config('scale=full').supervised
  settings = supervised.SupervisedSettings.from_config(ml_collections.ConfigDict(
      {k: v for k, v in config.items() if k not in ('enabled', 'budgets', 'num_seeds')}))
  for budget in config.budgets:
    for num_classes in (spec.NUM_AOA_CLASSES, spec.NUM_MODULATIONS):
      examples = budget * num_classes
      assert settings.num_steps(examples) >= round(settings.epochs * examples / settings.batch_size), budget
