"""The report from a results dict alone: tables for the methods and runs present, the MTC-only section when
it ran, the published numbers beside the study's methods only."""

import os

import numpy as np

from experiments import study_report


def _scores(accuracy):
  return {'accuracy': {'mean': accuracy, 'std': 0.01}, 'mae_deg': {'mean': 30.0 * (1 - accuracy), 'std': 0.5}}


def _results(run_names):
  runs = {}
  for i, name in enumerate(run_names):
    tasks = {task: {'probe': {str(b): _scores(0.1 * i + 0.001 * b) for b in (1, 10)}, 'silhouette': 0.01 * i}
             for task in ('aoa', 'amc')}
    runs[name] = {'eval': {'tasks': tasks}}
  runs['supervised'] = {'eval': {'tasks': {t: {'supervised': {'1': _scores(0.05), '10': _scores(0.2)}}
                                           for t in ('aoa', 'amc')}}}
  return {'scale': 'test', 'runs': runs, 'timing_s': {'total': 1.0}}


def _labels(n=30):
  rng = np.random.default_rng(0)
  return {'modulation': rng.integers(0, 7, n), 'angles_deg': rng.uniform(-70, 70, (n, 2))}


def test_report_with_and_without_the_mtc_only_runs(tmp_path):
  study_runs = ['simclr_aug', 'moco_aug', 'simclr_noaug', 'moco_noaug', 'random_init']
  projections = {'simclr_aug': np.random.default_rng(1).normal(size=(30, 8))}
  for extra, expect_mtc in (([], False), (['simclr_mtc', 'moco_mtc'], True)):
    out = tmp_path / str(expect_mtc)
    os.makedirs(out)
    study_report.write(str(out), _results(study_runs + extra), projections, _labels())
    report = (out / 'report.md').read_text()
    assert ('MTC only (AD off)' in report) == expect_mtc
    assert report.count('| SimCLR |') == 6 and '0.483, 0.876' in report
    if expect_mtc:
      assert '| SimCLR, MTC only | 0.501 ± 0.010 | 0.510 ± 0.010 |' in report
      assert report.count('| SimCLR, MTC only |') == 2 + 1  # two accuracy tables and the silhouette table
    assert os.path.getsize(out / 'accuracy_vs_budget.png') > 0


def test_report_names_moco_v3_and_compares_only_the_studys_methods_with_the_published_numbers(tmp_path):
  runs = ['simclr_aug', 'moco_v3_aug', 'simclr_noaug', 'moco_v3_noaug', 'random_init']
  results = _results(runs)
  results['runs']['moco_v3_aug']['config'] = {
      'method': 'moco_v3', 'temperature': 0.07, 'model': {'projection_norm': 'none'},
      'moco': {'momentum': 0.996, 'momentum_cosine': True}}
  study_report.write(str(tmp_path), results, {'simclr_aug': np.random.default_rng(1).normal(size=(30, 8))},
                     _labels())
  report = (tmp_path / 'report.md').read_text()
  assert report.count('| MoCo v3 |') == 6 and '| MoCo |' not in report
  assert '| MoCo v3 | 0.101 ± 0.010 | 0.110 ± 0.010 | – |' in report  # no published MoCo v3
  assert '0.483, 0.876' in report  # SimCLR's published row stays
  assert 'MoCo v3 here: the symmetric loss with a predictor and the batch as negatives (no queue)' in report


def test_every_named_config_has_a_label_and_its_runs_are_reported(tmp_path):
  from configs import METHOD_CONFIGS
  assert set(study_report.METHOD_LABELS) == set(METHOD_CONFIGS) == set(study_report._COLOURS)
  runs = ['simclr_aug', 'memory_bank_aug', 'dcl_aug', 'simclr_noaug', 'memory_bank_noaug', 'dcl_noaug',
          'random_init']
  study_report.write(str(tmp_path), _results(runs), {'simclr_aug': np.random.default_rng(1).normal(size=(30, 8))},
                     _labels())
  report = (tmp_path / 'report.md').read_text()
  assert report.count('| Memory bank (Wu et al.) |') == 6 and report.count('| DCL |') == 6
