"""The study at the smoke scale, end to end: four runs, probes, baselines, results.json, report and plots."""

import json
import os

import pytest

from experiments import study


@pytest.mark.slow
def test_smoke_study_writes_the_report(tmp_path):
  out = str(tmp_path / 'study')
  results = study.run_study('smoke', out)
  for name in ('results.json', 'report.md', 'accuracy_vs_budget.png', 'embeddings_pca.png'):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  with open(os.path.join(out, 'results.json')) as f:
    saved = json.load(f)
  assert set(saved['runs']) == {'simclr_aug', 'moco_aug', 'simclr_noaug', 'moco_noaug', 'random_init',
                                'supervised'}
  for run in ('simclr_aug', 'moco_aug', 'simclr_noaug', 'moco_noaug'):
    assert saved['runs'][run]['pretrain']['final_step'] == 6
    for task in ('aoa', 'amc'):
      accuracy = saved['runs'][run]['eval']['tasks'][task]['probe']['1']['accuracy']['mean']
      assert 0.0 <= accuracy <= 1.0
  report = open(os.path.join(out, 'report.md')).read()
  assert report.count('| SimCLR |') == 6 and '0.483, 0.876' in report  # ours beside the published row
  assert results['scale'] == 'smoke'
  moco_config = saved['runs']['moco_aug']['config']  # the study's MoCo, and the report says which
  assert moco_config['model']['projection_norm'] == 'none' and moco_config['moco']['queue_size'] == 64
  assert "MoCo here: v2, a queue of 64 keys, momentum 0.996 rising to 1 on a cosine, the study's" in report


def test_unknown_scale_and_bad_steps_are_refused(tmp_path):
  with pytest.raises(ValueError, match='--scale'):
    study.run_study('huge', str(tmp_path))
  with pytest.raises(ValueError, match='--steps'):
    study.run_study('smoke', str(tmp_path), steps=0)


def test_cpu_scale_and_the_mtc_only_pair():
  names = [study.run_name(*run) for run in study.runs_for(mtc_only=True)]
  assert names == ['simclr_aug', 'moco_aug', 'simclr_noaug', 'moco_noaug', 'simclr_mtc', 'moco_mtc']
  assert study.runs_for() == study.STUDY_RUNS
  config = study.pretrain_config('moco', True, 'cpu', antenna_dropout=False)
  assert config.augment.antenna_dropout == 0.0 and config.augment.enabled
  assert config.num_train_steps == 3000 and config.moco.queue_size % config.batch_size == 0
  assert study.probe_config('cpu').supervised.max_steps == config.num_train_steps
  study.set_steps(config, 6000)
  assert (config.num_train_steps, config.log_every_steps, config.checkpoint_every_steps) == (6000, 300, 3000)


def test_short_run_moco_only_on_request_and_never_at_the_full_scale():
  for scale in ('smoke', 'demo', 'cpu'):
    config = study.pretrain_config('moco', True, scale, short_run_moco=True)
    assert config.model.projection_norm == 'batch', scale
    assert (config.moco.momentum, config.moco.momentum_cosine) == (0.996, True), scale
    assert config.moco.queue_size <= 256 and config.moco.queue_size % config.batch_size == 0, scale
    assert study.pretrain_config('moco', True, scale).model.projection_norm == 'none', scale
    assert study.pretrain_config('simclr', True, scale, short_run_moco=True).model.projection_norm == 'none'
  assert study.pretrain_config('moco', True, 'cpu').moco.queue_size == 4096
  full = study.pretrain_config('moco', True, 'full', short_run_moco=True)  # the study's MoCo, untouched
  assert (full.model.projection_norm, full.moco.momentum, full.moco.queue_size) == ('none', 0.996, 65_536)


def test_moco_variant_is_chosen_per_study_and_checked(tmp_path):
  for scale in ('smoke', 'cpu', 'full'):
    assert study.pretrain_config('moco', True, scale).moco.variant == 'v2', scale
    assert study.pretrain_config('moco', False, scale, moco_variant='v3').moco.variant == 'v3', scale
  assert 'moco' not in study.pretrain_config('simclr', True, 'cpu', moco_variant='v3')
  with pytest.raises(ValueError, match='--moco_variant'):
    study.pretrain_config('moco', True, 'cpu', moco_variant='v4')
  with pytest.raises(ValueError, match='--moco_variant'):
    study.run_study('smoke', str(tmp_path), moco_variant='v1')


def test_the_report_says_which_moco_ran():
  from experiments import study_report
  for variant, expected in (('v2', 'a queue of 4,096 keys'), ('v3', 'no queue')):
    config = json.loads(study.pretrain_config('moco', True, 'cpu', moco_variant=variant).to_json_best_effort())
    assert expected in study_report.moco_settings_line(config), variant
