"""Whole-config checks (ssl_jax.config_checks) and path checks (ssl_jax.path_checks): no false alarms on the
shipped configs, and every out-of-range value named with its key and range, all at once."""

import os
import re

import jax
import pytest
from absl import flags

from configs import METHOD_CONFIGS, moco_short_run
from configs import probe as probe_config_lib
from configs import smoke
from experiments import study
from ssl_jax import config_checks, path_checks


def _set(config, dotted, value):
  node = config
  *path, last = dotted.split('.')
  for part in path:
    node = node[part]
  node[last] = value
  return config


def _problems(preset='simclr', **overrides):
  config = smoke.get_config(preset)
  for key, value in overrides.items():
    _set(config, key.replace('__', '.'), value)
  return config_checks.pretrain_config_problems(config)


def test_shipped_configs_are_valid():
  configs = [smoke.get_config(method) for method in METHOD_CONFIGS]
  configs += [module.get_config() for module in METHOD_CONFIGS.values()] + [moco_short_run.get_config()]
  for scale in study.SCALES:
    for method, augment, antenna_dropout in study.runs_for(tuple(METHOD_CONFIGS), mtc_only=True):
      configs.append(study.pretrain_config(method, augment, scale, antenna_dropout))
  for config in configs:
    assert config_checks.pretrain_config_problems(config) == [], config.method
  for scale in study.SCALES:
    assert config_checks.probe_config_problems(study.probe_config(scale)) == [], scale
  assert config_checks.probe_config_problems(probe_config_lib.get_config()) == []


@pytest.mark.parametrize('method, overrides, expected', [
    # The probe list: each of these ran (or crashed after compiling) before.
    ('simclr', {'batch_size': 1}, 'config.batch_size = 1: must be an integer >= 2'),
    ('simclr', {'log_every_steps': 0}, 'config.log_every_steps = 0: must be an integer >= 1'),
    ('simclr', {'checkpoint_every_steps': 0}, 'config.checkpoint_every_steps = 0: must be an integer >= 1'),
    ('simclr', {'num_train_steps': 0}, 'config.num_train_steps = 0: must be >= 1'),
    ('simclr', {'keep_checkpoints': -1}, 'config.keep_checkpoints = -1: must be an integer >= 0'),
    # And the rest of the config.
    ('simclr', {'num_train_steps': -2}, 'config.num_train_steps = -2: must be >= 1'),
    ('simclr', {'num_train_steps': -1, 'num_epochs': 0}, 'config.num_epochs = 0: must be a finite number > 0'),
    ('simclr', {'temperature': 0.0}, 'config.temperature = 0.0: must be a finite number > 0'),
    ('simclr', {'temperature': float('nan')}, 'config.temperature = nan: must be a finite number > 0'),
    ('simclr', {'augment__crop_lengths': (32, 128)}, 'config.augment.crop_lengths = (32, 128): must be a '
     'non-empty tuple of integers, each in [1, 64]'),
    ('simclr', {'augment__crop_lengths': ()}, 'config.augment.crop_lengths = ()'),
    ('simclr', {'augment__antenna_dropout': 1.0}, 'config.augment.antenna_dropout = 1.0: must be a finite number '
     'in [0, 1)'),
    ('simclr', {'data__length': 8}, 'config.data.length = 8: must be an integer >= 16'),
    ('simclr', {'data__examples_per_class': 0}, 'config.data.examples_per_class = 0'),
    ('simclr', {'data__snr_db_low': 40.0}, 'config.data.snr_db_low = 40.0: must be <= config.data.snr_db_high'),
    ('simclr', {'data__source': 'real'}, "config.data.manual_dir = '': must name the directory"),
    ('simclr', {'data__source': 'file'}, "config.data.source = 'file': must be one of ('simulated', 'real')"),
    ('simclr', {'seed': -1}, 'config.seed = -1: must be an integer >= 0'),
    ('simclr', {'method': 'byol'}, "config.method = 'byol': must be one of"),
    ('simclr', {'model__stage_repeats': (1, 0, 1)}, 'config.model.stage_repeats = (1, 0, 1): must be 3 integers'),
    ('simclr', {'model__stem_stride': 4}, 'config.model.stem_stride = 4: must be one of (1, 2)'),
    ('simclr', {'model__stem_pool': None}, 'config.model.stem_pool = None: must be True or False'),
    ('simclr', {'model__dw_kernel': 4}, 'config.model.dw_kernel = 4: must be odd'),
    ('simclr', {'model__dw_kernel': 0}, 'config.model.dw_kernel = 0: must be an integer >= 1'),
    ('simclr', {'model__unit_downsample': 'conv'}, "config.model.unit_downsample = 'conv': must be one of"),
    ('simclr', {'model__input_scaling': 'per_channel'}, "config.model.input_scaling = 'per_channel': must be one of"),
    ('simclr', {'model__dtype': 'float128'}, "config.model.dtype = 'float128': must be one of"),
    ('simclr', {'model__dtype': 'float64'}, "config.model.dtype = 'float64': needs JAX's 64-bit mode: set "
     'JAX_ENABLE_X64=1'),  # (this test process runs without it)
    ('simclr', {'model__output_dim': 0}, 'config.model.output_dim = 0'),
    ('simclr', {'optim__learning_rate': 0.0}, 'config.optim.learning_rate = 0.0: must be a finite number > 0'),
    ('simclr', {'optim__momentum': 1.0}, 'config.optim.momentum = 1.0: must be a finite number in [0, 1)'),
    ('simclr', {'optim__weight_decay': -1e-4}, 'config.optim.weight_decay = -0.0001: must be a finite number >= 0'),
    ('simclr', {'optim__warmup_epochs': -1.0}, 'config.optim.warmup_epochs = -1.0'),
    ('simclr', {'optim__schedule': 'step'}, "config.optim.schedule = 'step': must be one of"),
    ('simclr', {'allow_resume_changes': 'batch_size'}, "config.allow_resume_changes = 'batch_size': names "
     "['batch_size']; a resume may change only ('num_train_steps', 'num_epochs')"),
    ('simclr', {'distributed__num_processes': 2, 'distributed__process_id': 2},
     'config.distributed.process_id = 2: must be an integer in [0, 1]'),
    ('simclr', {'distributed__num_processes': 2}, "config.distributed.coordinator_address = '': must be host:port"),
    ('moco', {'moco__queue_size': 40}, 'config.moco.queue_size = 40: must be a multiple of config.batch_size = 16'),
    ('moco', {'moco__momentum': 1.5}, 'config.moco.momentum = 1.5: must be a finite number in [0, 1]'),
    ('moco_v3', {'batch_size': 1}, 'config.batch_size = 1: must be an integer >= 2'),
    ('moco_v3', {'moco__momentum': -0.1}, 'config.moco.momentum = -0.1: must be a finite number in [0, 1]'),
    ('moco', {'model__projection_norm': 'batch', 'batch_size': 1, 'moco__queue_size': 64},
     "config.batch_size = 1: must be an integer >= 2 (model.projection_norm = 'batch'"),
    # MoCo v2's BatchNorm mode (ssl_jax/methods/shuffle_bn.py): the smoke batch is 16.
    ('moco', {'moco__key_bn': 'sync'}, "config.moco.key_bn = 'sync': must be one of ('global', 'shuffle')"),
    ('moco', {'moco__key_bn': 'shuffle', 'moco__bn_groups': 1}, "config.moco.bn_groups = 1: must be an integer "
     ">= 2 (config.moco.key_bn = 'shuffle': one group is the whole batch"),
    ('moco', {'moco__key_bn': 'shuffle', 'moco__bn_groups': 6}, 'config.moco.bn_groups = 6: must split '
     'config.batch_size = 16 into equal groups of >= 2 examples'),
    ('mochi', {'moco__key_bn': 'shuffle', 'moco__bn_groups': 16}, 'config.moco.bn_groups = 16: must split '
     'config.batch_size = 16 into equal groups of >= 2 examples'),
    ('moco', {'moco__bn_groups': 0}, 'config.moco.bn_groups = 0: must be an integer >= 1'),
    ('moco_v3', {'moco__key_bn': 'shuffle'}, "config.moco.key_bn = 'shuffle': is read only by config.method = "
     "'moco' and 'mochi'"),
    # The loss options, and the methods on other negatives.
    ('simclr', {'loss__name': 'info_nce'}, "config.loss.name = 'info_nce': must be one of ('nt_xent', 'debiased', "
     "'dcl', 'dclw')"),
    ('moco', {'loss__name': 'dcl'}, "config.loss.name = 'dcl': must be one of ('info_nce', 'debiased')"),
    ('simclr', {'loss__tau_plus': 0.1}, "config.loss.tau_plus = 0.1: is read only by config.loss.name = "
     "'debiased', not 'nt_xent'"),
    ('dcl', {'loss__beta': 1.0}, "config.loss.beta = 1.0: is read only by config.loss.name = 'debiased', not 'dcl'"),
    ('moco', {'loss__beta': 0.5}, "config.loss.beta = 0.5: is read only by config.loss.name = 'debiased', not "
     "'info_nce'"),
    ('debiased', {'loss__tau_plus': 1.0}, 'config.loss.tau_plus = 1.0: must be a finite number in [0, 1)'),
    ('hard_negative', {'loss__beta': -1.0}, 'config.loss.beta = -1.0: must be a finite number >= 0'),
    ('dclw', {'loss__dclw_sigma': 0.0}, 'config.loss.dclw_sigma = 0.0: must be a finite number > 0'),
    ('mochi', {'mochi__num_hard': 65}, 'config.mochi.num_hard = 65: must be an integer in [2, 64] (N: the hardest '
     'queue negatives of each query; config.moco.queue_size = 64 holds them'),
    ('mochi', {'mochi__num_hard': 1}, 'config.mochi.num_hard = 1: must be an integer in [2, 64]'),
    ('mochi', {'mochi__num_mix': 0, 'mochi__num_hard': 0}, 'config.mochi.num_hard = 0: must be an integer in [1, 64]'),
    ('mochi', {'mochi__num_query_mix': -1}, 'config.mochi.num_query_mix = -1: must be an integer >= 0'),
    ('mochi', {'moco__queue_size': 40}, 'config.moco.queue_size = 40: must be a multiple of config.batch_size'),
    ('fifo_bank', {'fifo_bank__size': 8}, 'config.fifo_bank.size = 8: must be an integer >= 16 (config.batch_size '
     '= 16: the bank holds at least one global batch'),
    ('memory_bank', {'memory_bank__num_negatives': 0}, 'config.memory_bank.num_negatives = 0: must be an integer '
     '>= 1'),
    ('memory_bank', {'memory_bank__momentum': 1.0}, 'config.memory_bank.momentum = 1.0: must be a finite number '
     'in [0, 1)'),
])
def test_each_bad_value_is_named_with_its_range(method, overrides, expected):
  problems = _problems(method, **overrides)
  assert any(p.startswith(expected) for p in problems), problems


def test_float64_is_accepted_with_64_bit_jax():
  with jax.enable_x64(True):
    assert _problems('simclr', model__dtype='float64') == []


def test_moco_v2_takes_negatives_from_its_queue_and_may_run_one_example_per_step():
  assert _problems('moco', batch_size=1) == []


def test_shuffle_bn_groups_and_configs_from_before_the_key():
  # 'global' reads no group count: 8 groups of a batch of 1 is not a problem there.
  assert _problems('moco', batch_size=1) == [] and smoke.get_config('moco').moco.key_bn == 'global'
  for method in ('moco', 'mochi'):
    assert _problems(method, moco__key_bn='shuffle', moco__bn_groups=8) == []  # 8 groups of 2
    config = smoke.get_config(method)
    del config.moco['key_bn'], config.moco['bn_groups']  # a config written before the keys: 'global'
    assert config_checks.pretrain_config_problems(config) == []


def test_the_bank_methods_take_negatives_from_their_banks_and_may_run_one_example_per_step():
  assert _problems('memory_bank', batch_size=1) == [] and _problems('fifo_bank', batch_size=1) == []
  assert _problems('mochi', batch_size=1) == []
  assert _problems('debiased', batch_size=1)  # SimCLR's loss variants take their negatives from the batch


def test_every_problem_is_reported_at_once():
  config = smoke.get_config('simclr')
  for key, value in {'batch_size': 1, 'log_every_steps': 0, 'checkpoint_every_steps': 0, 'num_train_steps': 0,
                     'keep_checkpoints': -1}.items():
    config[key] = value
  with pytest.raises(config_checks.ConfigError) as info:
    config_checks.check_pretrain_config(config)
  assert len(info.value.problems) == 5
  for key in ('batch_size', 'log_every_steps', 'checkpoint_every_steps', 'num_train_steps', 'keep_checkpoints'):
    assert f'config.{key} = ' in str(info.value)
  assert isinstance(info.value, ValueError)  # Entry points turn ValueErrors into messages.


@pytest.mark.parametrize('overrides, expected', [
    ({'budgets': (1, 0)}, 'probe_config.budgets = (1, 0): must be a non-empty tuple of integers, each >= 1'),
    ({'tasks': ('snr',)}, "probe_config.tasks = ('snr',): must be a non-empty tuple of tasks from ('aoa', 'amc')"),
    ({'num_seeds': 0}, 'probe_config.num_seeds = 0'),
    ({'embed_batch_size': 0}, 'probe_config.embed_batch_size = 0'),
    ({'probe.num_steps': 0}, 'probe_config.probe.num_steps = 0'),
    ({'probe.learning_rate': -1.0}, 'probe_config.probe.learning_rate = -1.0'),
    ({'heads.aoa.hidden_dim': -1}, 'probe_config.heads.aoa.hidden_dim = -1'),
    ({'clustering.normalize': 'cosine'}, "probe_config.clustering.normalize = 'cosine'"),
    ({'supervised.enabled': True, 'supervised.min_steps': 70_000}, 'probe_config.supervised.min_steps = 70000: '
     'must be <= probe_config.supervised.max_steps = 60000'),
])
def test_probe_config_values_are_named(overrides, expected):
  config = probe_config_lib.get_config()
  for key, value in overrides.items():
    _set(config, key, value)
  problems = config_checks.probe_config_problems(config)
  assert any(p.startswith(expected) for p in problems), problems


def test_unknown_smoke_preset_is_a_flag_error_naming_the_choices():
  choices = re.escape(f"unknown preset 'byol'; choose one of {sorted(METHOD_CONFIGS)}")
  with pytest.raises(flags.IllegalFlagValueError, match=choices):
    smoke.get_config('byol')


def test_workdir_paths(tmp_path):
  a_file = tmp_path / 'file'
  a_file.write_text('x')
  with pytest.raises(path_checks.PathError, match='is a file, not a directory'):
    path_checks.check_workdir(str(a_file))
  with pytest.raises(path_checks.PathError, match='cannot be created: .* is a file'):
    path_checks.check_workdir(str(a_file / 'run'))
  path_checks.check_workdir(str(tmp_path / 'new' / 'run'))  # Creatable: fine.
  (tmp_path / 'run').mkdir()
  path_checks.check_new_workdir(str(tmp_path / 'run'))  # Empty: fine.
  (tmp_path / 'run' / 'config.json').write_text('{}')
  with pytest.raises(path_checks.PathError, match=r"is not empty \(it holds config.json\)"):
    path_checks.check_new_workdir(str(tmp_path / 'run'))


@pytest.mark.skipif(hasattr(os, 'geteuid') and os.geteuid() == 0, reason='root writes anywhere')
def test_unwritable_paths_are_named(tmp_path):
  locked = tmp_path / 'locked'
  locked.mkdir()
  locked.chmod(0o500)
  try:
    with pytest.raises(path_checks.PathError, match='no write permission'):
      path_checks.check_output_file(str(locked / 'x.h5'))
    with pytest.raises(path_checks.PathError, match='no write permission'):
      path_checks.check_workdir(str(locked / 'run'))
  finally:
    locked.chmod(0o700)


def test_output_and_input_files(tmp_path):
  with pytest.raises(path_checks.PathError, match='is a directory; give a file path'):
    path_checks.check_output_file(str(tmp_path))
  (tmp_path / 'f').write_text('x')
  with pytest.raises(path_checks.PathError, match='cannot be created: .* is a file'):
    path_checks.check_output_file(str(tmp_path / 'f' / 'out.h5'))
  path_checks.check_output_file(str(tmp_path / 'new' / 'out.h5'))
  with pytest.raises(path_checks.PathError, match='does not exist'):
    path_checks.check_input_file(str(tmp_path / 'missing.pt'), '--state_dict')
  with pytest.raises(path_checks.PathError, match='is a directory, not a file'):
    path_checks.check_input_file(str(tmp_path), '--state_dict')


def test_real_data_directory(tmp_path):
  data = smoke.get_config('simclr').data
  data.source = 'real'
  data.manual_dir = str(tmp_path / 'missing')
  with pytest.raises(path_checks.PathError, match=r"manual_dir .* '.*missing' does not exist"):
    path_checks.check_data_inputs(data)
  data.manual_dir = str(tmp_path)
  (tmp_path / 'train.h5').write_text('')
  with pytest.raises(path_checks.PathError, match=r"lacks \['test.h5'\]"):
    path_checks.check_data_inputs(data)


def test_trained_workdir_and_its_steps(tmp_path):
  with pytest.raises(path_checks.PathError, match='does not exist'):
    path_checks.check_trained_workdir(str(tmp_path / 'nope'))
  with pytest.raises(path_checks.PathError, match='not a pretraining workdir'):
    path_checks.check_trained_workdir(str(tmp_path))
  (tmp_path / 'config.json').write_text('{}')
  with pytest.raises(path_checks.PathError, match='no checkpoint under'):
    path_checks.check_trained_workdir(str(tmp_path))
