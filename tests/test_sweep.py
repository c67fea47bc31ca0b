"""experiments/sweep.py: the member layout, the paired comparisons, bad arguments, and a smoke sweep end to end."""

import json
import os

import numpy as np
import pytest

from experiments import study_report
from experiments import sweep
from ssl_jax import members

import committed  # tests/committed.py


def test_member_k_of_the_sweep_config_has_its_value_and_seed():
  values, seeds = (0.05, 0.1, 0.5), 2
  config = sweep.sweep_config('simclr', 'smoke', 'temperature', values, seed=7, seeds=seeds)
  singles = members.member_configs(config)
  assert len(singles) == 6
  for i, value in enumerate(values):
    for s in range(seeds):
      single = singles[sweep.member_index(i, s, seeds)]
      assert single.temperature == value and single.seed == 7 + s
      assert single.data.order_seed == 7  # every member reads the same data: the values pair up over seeds


def test_learning_rate_sweep_sets_the_optimiser_per_member():
  config = sweep.sweep_config('moco', 'smoke', 'learning_rate', (1e-3, 1e-2), seed=0, seeds=2)
  assert [c.optim.learning_rate for c in members.member_configs(config)] == [1e-3, 1e-3, 1e-2, 1e-2]


def _evaluation(accuracy: float) -> dict:
  """An `evaluate_encoder`-shaped result with one task and two budgets (budget '2' skipped)."""
  return {'tasks': {'aoa': {'probe': {'1': {'accuracy': {'mean': accuracy, 'std': 0.0, 'values': [accuracy]}},
                                      '2': {'skipped': 'too few examples'}},
                            'silhouette': None}}}


def test_points_and_comparisons_pair_the_seeds():
  values, seeds = (0.07, 0.2), 3
  # member i * seeds + s; value 0.2 beats 0.07 by 0.1 at every seed, with seed-to-seed offsets of 0.3.
  accuracy = {(0, s): 0.2 + 0.3 * s for s in range(seeds)} | {(1, s): 0.3 + 0.3 * s + 0.001 * s for s in range(seeds)}
  evaluations = [_evaluation(accuracy[(k // seeds, k % seeds)]) for k in range(len(values) * seeds)]
  pts = sweep.points(evaluations, values, seed=10, seeds=seeds)
  assert [p['value'] for p in pts] == [0.07, 0.2]
  assert [r['seed'] for r in pts[1]['members']] == [10, 11, 12]
  assert pts[0]['eval']['tasks']['aoa']['probe']['1']['accuracy']['mean'] == pytest.approx(0.5)
  comparison = sweep.comparisons(pts, reference=0.07)
  assert set(comparison) == {'aoa@1'}  # the skipped budget is not compared
  c = comparison['aoa@1']
  assert c['best'] == 0.2 and c['difference']['mean'] == pytest.approx(0.101)
  # Unpaired, the seed offsets (std 0.3) would swamp the 0.1 gain; paired, the CI is narrow and above 0.
  assert c['verdict'] == study_report.HOLDS and c['difference']['ci95'][0] > 0.09
  assert sweep.comparisons(pts, reference=0.2)['aoa@1']['verdict'] == 'the reference is the best value'
  lines = '\n'.join(sweep.report_lines({'param': 'temperature', 'seeds': seeds, 'values': list(values),
                                        'scale': 'smoke', 'command': 'x', 'reference': 0.07,
                                        'methods': {'simclr': {'points': pts, 'comparisons': comparison}}}))
  assert '| 0.07 | 0.500 ± ' in lines and 'aoa@1: best 0.2, difference +0.101' in lines


@pytest.mark.parametrize('kwargs, message', [
    ({'methods': ('simclr', 'nope')}, '--methods must name'),
    ({'param': 'seed'}, '--param must be one of'),
    ({'param': 'batch_size'}, '--param must be one of'),
    ({'values': (0.1,)}, '--values must be two or more distinct'),
    ({'values': (0.1, 0.1)}, '--values must be two or more distinct'),
    ({'values': (0.1, float('nan'))}, '--values must be two or more distinct'),
    ({'seeds': 1}, '--seeds must be an integer >= 2'),
    ({'reference': 0.3}, '--reference 0.3 must be one of --values'),
])
def test_bad_arguments_are_named(kwargs, message):
  args = {'methods': ('simclr',), 'param': 'temperature', 'values': (0.07, 0.2), 'seeds': 2, 'reference': None}
  args.update(kwargs)
  with pytest.raises(ValueError, match=message):
    sweep.check_sweep(**args)


def test_bad_member_values_are_refused_before_any_work(tmp_path):
  with pytest.raises(ValueError, match='temperature'):
    sweep.run_sweep('smoke', str(tmp_path / 'out'), methods=('simclr',), values=(0.1, -0.5), seeds=2)
  with pytest.raises(ValueError, match='momentum'):  # SimCLR has no momentum encoder
    sweep.run_sweep('smoke', str(tmp_path / 'out'), methods=('simclr',), param='momentum', values=(0.9, 0.99),
                    seeds=2)
  assert not os.path.exists(tmp_path / 'out' / 'runs')


@pytest.mark.slow
def test_smoke_sweep_end_to_end(tmp_path):
  out = str(tmp_path / 'out')
  argv = ['--scale', 'smoke', '--out', out, '--methods', 'simclr', '--values', '0.07,0.5', '--seeds', '2',
          '--steps', '2', '--data_dir', str(tmp_path / 'tfds')]
  assert sweep.main(argv) == 0
  for name in ('results.json', 'report.md', 'sweep.png'):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  with open(os.path.join(out, 'results.json')) as f:
    results = json.load(f)
  assert results['reference'] == 0.07 and results['seeds'] == 2
  entry = results['methods']['simclr']
  assert [p['value'] for p in entry['points']] == [0.07, 0.5]
  with open(os.path.join(out, 'runs', 'simclr', 'config.json')) as f:
    stored = json.load(f)
  assert stored['members']['temperature'] == [0.07, 0.07, 0.5, 0.5] and stored['members']['seed'] == [0, 1, 0, 1]
  for point in entry['points']:
    for task in ('aoa', 'amc'):
      accuracy = point['eval']['tasks'][task]['probe']['1']['accuracy']
      assert 0.0 <= accuracy['mean'] <= 1.0 and accuracy['ci95'] is not None
  assert np.isfinite(entry['pretrain']['final_loss'])
  assert sweep.main(argv) == 0  # a rerun reuses the finished run


def test_committed_cpu_temperature_sweep_ran_the_defaults_and_its_report_follows_from_its_numbers():
  """experiments/results/sweep_temperature/ is what `sweep.py --scale cpu` runs now (the default grid, 3
  seeds, every member probed), and its report's table and verdicts are those its numbers give.

  Guards the committed sweep against drifting from the code: rerun it when the cpu scale's defaults change.
  """
  results_dir, results = committed.committed_results('sweep_temperature')
  values = sweep.DEFAULT_VALUES['temperature']
  assert results['scale'] == 'cpu' and results['param'] == 'temperature' and results['steps'] is None
  assert tuple(results['values']) == values and results['seeds'] == 3 and results['reference'] == 0.07
  assert list(results['methods']) == list(sweep.DEFAULT_METHODS)  # SimCLR's and MoCo v2's
  for method, entry in results['methods'].items():
    # The config that ran (the run's own config.json, copied) is the sweep's config of this code.
    with open(os.path.join(results_dir, f'config_{method}.json')) as f:
      ran = json.load(f)
    expected = members.json_of(sweep.sweep_config(method, 'cpu', 'temperature', values, results['seed'], 3))
    for key in ('method', 'batch_size', 'num_train_steps', 'temperature'):
      assert ran[key] == expected[key], (method, key)
    for section in ('members', 'model', 'optim'):
      stored, expected_section = committed.sections_that_ran('sweep_temperature', section, ran[section],
                                                             expected[section])
      for key, value in expected_section.items():
        assert stored[key] == value, (method, section, key)
    assert ran['data']['length'] == expected['data']['length']
    assert entry['pretrain']['final_step'] == expected['num_train_steps']
    # Every member probed with its seed's label sets, laid out value-major.
    for i, point in enumerate(entry['points']):
      assert point['value'] == values[i]
      assert [(r['member'], r['seed']) for r in point['members']] == [
          (sweep.member_index(i, s, 3), results['seed'] + s) for s in range(3)]
    # The stored verdicts are the ones the numbers give.
    recomputed = sweep.comparisons(entry['points'], results['reference'])
    assert recomputed.keys() == entry['comparisons'].keys()
    for key, c in recomputed.items():
      assert c['best'] == entry['comparisons'][key]['best'] and c['verdict'] == entry['comparisons'][key]['verdict']
  report = open(os.path.join(results_dir, 'report.md')).read()
  assert report == '\n'.join(sweep.report_lines(results))
  assert os.path.getsize(os.path.join(results_dir, 'sweep.png')) > 0


def test_a_sweep_adds_methods_to_one_of_the_same_settings_and_refuses_another(tmp_path):
  settings = {'scale': 'cpu', 'param': 'temperature', 'values': [0.07, 0.5], 'seed': 0, 'seeds': 3,
              'steps': None, 'reference': 0.07}
  assert sweep.previous_methods(str(tmp_path), settings) == {}
  with open(tmp_path / 'results.json', 'w') as f:
    json.dump(dict(settings, command='x', methods={'simclr': {'points': []}}), f)
  assert sweep.previous_methods(str(tmp_path), settings) == {'simclr': {'points': []}}
  with pytest.raises(ValueError, match=r"values=\[0.07, 0.5\], this one has values=\[0.07, 0.2\]"):
    sweep.previous_methods(str(tmp_path), dict(settings, values=[0.07, 0.2]))
  with pytest.raises(ValueError, match='seeds=3, this one has seeds=2'):
    sweep.previous_methods(str(tmp_path), dict(settings, seeds=2))
