"""The report from a results dict alone: tables for the methods and runs present, the MTC-only section when
it ran, the published numbers beside the study's methods only."""

import os

import numpy as np

from experiments import study_report


def _scores(accuracy):
  """Scores as `evaluate_encoder` writes them: mean, std and the probe seeds' values."""
  return {'accuracy': {'mean': accuracy, 'std': 0.01, 'values': [accuracy - 0.01, accuracy + 0.01]},
          'mae_deg': {'mean': 30.0 * (1 - accuracy), 'std': 0.5, 'values': [30.0 * (1 - accuracy)] * 2}}


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
  # six tables of the study, and the two of every method against SimCLR
  assert report.count('| Memory bank (Wu et al.) |') == 6 + 2 and report.count('| DCL |') == 6 + 2
  assert '## Methods against SimCLR' in report and os.path.getsize(tmp_path / 'methods_vs_simclr.png') > 0


def _interval(values):
  from ssl_jax.evaluation import intervals
  return intervals.t_interval(values)


def test_verdicts_on_hand_made_differences():
  # Differences 0.10, 0.12, 0.08: mean 0.10, s = 0.02, t_{.975,2} = 4.303 -> CI 0.10 +- 0.0497, above 0.
  holds = study_report.paired_difference([0.60, 0.62, 0.58], [0.50, 0.50, 0.50])
  assert abs(holds['mean'] - 0.10) < 1e-12 and abs(holds['half_width'] - 4.302652729911275 * 0.02 / 3 ** 0.5) < 1e-9
  assert study_report.verdict(holds) == study_report.HOLDS
  reversed_ = study_report.paired_difference([0.50, 0.50, 0.50], [0.60, 0.62, 0.58])
  assert study_report.verdict(reversed_) == study_report.REVERSED
  # Differences +0.10, -0.10, +0.02: the CI includes 0.
  unresolved = study_report.paired_difference([0.6, 0.4, 0.52], [0.5, 0.5, 0.5])
  assert unresolved['ci95'][0] < 0 < unresolved['ci95'][1]
  assert study_report.verdict(unresolved) == study_report.NOT_RESOLVED
  # One seed: no interval, never a verdict either way.
  assert study_report.verdict(study_report.paired_difference([0.9], [0.1])) == study_report.NOT_RESOLVED
  # Pairing: the same seeds, not means of unrelated runs. Paired, a consistent +0.01 holds although the
  # seeds spread far more than 0.01 (unpaired, the two CIs would overlap).
  paired = study_report.paired_difference([0.31, 0.61, 0.91], [0.30, 0.60, 0.90])
  assert study_report.verdict(paired) == study_report.HOLDS
  assert study_report.verdict({'ci95': [-0.2, -1e-9]}) == study_report.REVERSED
  assert study_report.verdict({'ci95': [0.0, 0.3]}) == study_report.NOT_RESOLVED  # touching 0 does not exclude it


def test_paired_difference_refuses_unpaired_or_non_finite_scores():
  import pytest
  with pytest.raises(ValueError, match='equal, non-empty'):
    study_report.paired_difference([0.1, 0.2], [0.1])
  with pytest.raises(ValueError, match='non-finite'):
    study_report.paired_difference([0.1, float('nan')], [0.1, 0.2])


def _member_results(run_accuracy, seeds=3):
  """A member-run results dict (the layout `study.py --seeds K` writes): `run_accuracy[run]` lists each
  seed's accuracy at budgets 1 and 10 (budget 10 adds 0.1)."""
  from experiments import study
  runs = {}
  for name, per_seed in run_accuracy.items():
    key = 'supervised' if name == 'supervised' else 'probe'

    def one(k, probe_seed, per_seed=per_seed, key=key):
      tasks = {t: {key: {'1': _scores(per_seed[k]), '10': _scores(per_seed[k] + 0.1)}, 'silhouette': 0.1 * k}
               for t in ('aoa', 'amc')}
      return {'tasks': tasks, 'seed': probe_seed}

    runs[name] = study.paired_evaluations(one, 0, seeds)
  return {'scale': 'test', 'seeds': seeds, 'runs': runs, 'timing_s': {'total': 1.0}}


def test_a_member_study_is_reported_with_intervals_and_conclusions(tmp_path):
  results = _member_results({
      'simclr_aug': [0.60, 0.62, 0.58], 'simclr_noaug': [0.50, 0.50, 0.50],  # aug beats noaug: holds
      'moco_aug': [0.70, 0.72, 0.68],  # SimCLR beats MoCo with aug: reversed
      'moco_noaug': [0.6, 0.4, 0.52],  # MoCo beats SimCLR without aug: not resolved
      'random_init': [0.1, 0.1, 0.1], 'supervised': [0.2, 0.25, 0.3]})
  assert [m['seed'] for m in results['runs']['simclr_aug']['members']] == [0, 1, 2]
  study_report.write(str(tmp_path), results, {'simclr_aug': np.random.default_rng(1).normal(size=(30, 8))},
                     _labels())
  with open(tmp_path / 'results.json') as f:  # What the report reads back is what it wrote.
    import json
    assert json.load(f)['runs']['moco_aug']['members'][2]['eval']['seed'] == 2
  report = (tmp_path / 'report.md').read_text()
  assert 'mean over 3 pretraining seeds ± the half-width of its 95% confidence interval' in report
  half = 4.302652729911275 * 0.02 / 3 ** 0.5
  assert f'| SimCLR | 0.600 ± {half:.3f} | 0.700 ± {half:.3f} | 0.483, 0.876' in report
  assert '## Conclusions' in report
  rows = study_report.conclusions(results)
  verdicts = {(r['claim'].split(',')[0], r['task'], r['budget']): r['verdict'] for r in rows}
  aug = 'SimCLR with augmentation (MTC + AD) beats SimCLR without'
  assert verdicts[(aug, 'aoa', 1)] == verdicts[(aug, 'amc', 10)] == 'holds'
  assert verdicts[('SimCLR beats MoCo', 'aoa', 1)] == 'reversed'
  assert verdicts[('MoCo beats SimCLR', 'amc', 10)] == 'not resolved at this scale'
  supervised = [r for r in rows if r['claim'].startswith('Pretrained')]
  assert [(r['task'], r['budget']) for r in supervised] == [('aoa', 1), ('aoa', 10), ('amc', 1), ('amc', 10)]
  assert all(r['verdict'] == 'holds' for r in supervised)  # 0.60 - 0.20 ... paired
  assert abs(supervised[0]['difference']['mean'] - (0.6 - 0.25)) < 1e-12
  assert f"| AoA | 1 | +0.100 | [{0.1 - half:+.3f}, {0.1 + half:+.3f}] | holds |" in report
  assert '| AoA | 1 | -0.100 |' in report and 'reversed |' in report and 'not resolved at this scale |' in report
  assert '"the MoCo shared encoder outperforms the SimCLR shared encoder on both tasks"' in report


def test_one_seed_studies_read_as_before_and_their_claims_stay_unresolved(tmp_path):
  results = _results(['simclr_aug', 'moco_aug', 'simclr_noaug', 'moco_noaug', 'random_init'])
  assert 'seeds' not in results  # written before --seeds existed
  study_report.write(str(tmp_path), results, {'simclr_aug': np.random.default_rng(1).normal(size=(30, 8))},
                     _labels())
  report = (tmp_path / 'report.md').read_text()
  assert 'mean ± std over probe seeds (one pretraining seed' in report and '| SimCLR | 0.001 ± 0.010 |' in report
  rows = study_report.conclusions(results)
  assert rows and all(r['verdict'] == 'not resolved at this scale' for r in rows)
  assert '| AoA | 1 | -0.200 | none (one seed) | not resolved at this scale |' in report  # aug (run 0) - noaug (run 2)


def test_a_budget_one_side_did_not_run_is_reported_not_measured():
  results = _member_results({'simclr_aug': [0.6, 0.62, 0.58], 'supervised': [0.2, 0.25, 0.3]})
  for member in results['runs']['supervised']['members']:
    for task in member['eval']['tasks'].values():
      del task['supervised']['10']
  rows = {(r['task'], r['budget']): r for r in study_report.conclusions(results)}
  assert rows[('aoa', 10)]['verdict'] is None and rows[('aoa', 10)]['missing'] == 'supervised: no 10/class'
  assert rows[('aoa', 1)]['verdict'] == 'holds'
  lines = study_report.conclusions_section(results)
  assert '| AMC | 10 | – | – | not measured (supervised: no 10/class) |' in lines


def test_equal_differences_over_every_seed_are_flagged_as_a_zero_width_interval():
  # Small test splits give discrete accuracies: two seeds can differ by exactly the same amount.
  results = _member_results({'simclr_aug': [0.6, 0.5], 'supervised': [0.5, 0.4]}, seeds=2)
  row = study_report.conclusions(results)[0]
  assert row['verdict'] == 'holds' and row['difference']['half_width'] == 0.0
  assert any('holds (every seed gave the same difference: a zero-width interval)' in line
             for line in study_report.conclusions_section(results))
