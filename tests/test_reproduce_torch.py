"""experiments/reproduce_torch.py: its statistics, and the whole comparison at the smoke scale (slow)."""

import json
import os

import numpy as np
import pytest

pytest.importorskip('torch')
pytest.importorskip('lightly')

from experiments import reproduce_torch  # noqa: E402

import committed  # noqa: E402  tests/committed.py


def test_paired_difference_interval_and_verdicts():
  # d = (0.1, 0.2, 0.3): mean 0.2, sd 0.1, t(0.975, 2) = 4.3027: half-width 0.2484.
  c = reproduce_torch.compare([0.6, 0.7, 0.8], [0.5, 0.5, 0.5])
  assert c['difference'] == pytest.approx(0.2)
  assert c['ci95'] == pytest.approx([0.2 - 0.24841, 0.2 + 0.24841], abs=1e-5)
  assert c['seed_spread'] == pytest.approx(np.sqrt((0.01 + 0.0) / 2))
  assert c['verdict'] == 'inconclusive'  # the interval holds 0 but reaches past the spread
  assert reproduce_torch.compare([0.5, 0.6, 0.7], [0.51, 0.6, 0.69])['verdict'] == 'equivalent'
  assert reproduce_torch.compare([0.9, 0.91, 0.93], [0.1, 0.12, 0.11])['verdict'] == 'different'
  with pytest.raises(ValueError, match='same number'):
    reproduce_torch.compare([0.5], [0.5])


def test_collapse_step_is_the_first_logged_step_below_the_threshold():
  rows = [{'step': 0}, {'step': 5, 'embedding_std': 0.05}, {'step': 10, 'embedding_std': 0.004},
          {'step': 15, 'embedding_std': 0.02}]
  assert reproduce_torch.collapse_step(rows) == 10
  assert reproduce_torch.collapse_step(rows[:2]) is None


@pytest.mark.slow
def test_smoke_comparison_end_to_end(tmp_path):
  out = str(tmp_path / 'out')
  summary = reproduce_torch.main(['--scale', 'smoke', '--steps', '4', '--seeds', '2', '--log_every', '1',
                                  '--out', out, '--data_dir', str(tmp_path / 'tfds')])
  for name in ('report.md', 'results.json', 'curves.png'):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  for method in ('simclr', 'moco'):
    entry = summary['methods'][method]
    assert set(entry['comparisons']) == {'aoa@1', 'aoa@2', 'amc@1', 'amc@2'}
    for c in entry['comparisons'].values():
      assert c['verdict'] in ('equivalent', 'different', 'inconclusive') and len(c['jax']) == 2
  with open(os.path.join(out, 'results.json')) as f:
    curves = json.load(f)['curves']
  for method in ('simclr', 'moco'):
    for pair in curves[method]:
      losses = {fw: {r['step']: r['loss'] for r in pair[fw] if 'loss' in r} for fw in ('jax', 'torch')}
      assert sorted(losses['jax']) == sorted(losses['torch']) == [1, 2, 3, 4]
      # Step 1 from the same weights on the same views: float32 losses agree to rounding (the parity
      # tests' single-step bound is ~1e-5 relative; 1e-4 leaves room, a wrong setup moves it by percents).
      assert losses['torch'][1] == pytest.approx(losses['jax'][1], rel=1e-4)
      knn = [r['step'] for r in pair['torch'] if 'monitor/knn_accuracy_aoa' in r]
      assert knn == [r['step'] for r in pair['jax'] if 'monitor/knn_accuracy_aoa' in r]


def test_committed_cpu_scale_comparison_follows_from_its_runs():
  """experiments/results/reproduce_torch/: the cpu-scale run, its verdicts and collapse steps recomputed."""
  _, results = committed.committed_results('reproduce_torch')
  summary, curves = results['summary'], results['curves']
  assert summary['scale'] == 'cpu' and summary['seeds'] >= 3 and summary['steps'] >= 300
  assert set(summary['methods']) == set(reproduce_torch.METHODS)
  for method, entry in summary['methods'].items():
    assert len(curves[method]) == summary['seeds']
    for c in entry['comparisons'].values():
      again = reproduce_torch.compare(c['jax'], c['torch'])
      assert again['verdict'] == c['verdict']
      assert again['ci95'] == pytest.approx(c['ci95'], abs=1e-12)
    for framework in ('jax', 'torch'):
      assert entry['collapse_step'][framework] == [reproduce_torch.collapse_step(pair[framework])
                                                   for pair in curves[method]]
      assert all(pair[framework][-1]['step'] == summary['steps'] for pair in curves[method])
    for pair in curves[method]:
      # Step 0 measures the same initial weights (the torch run's converted back to Flax) with the same kNN
      # monitor: identical, not merely close. Later steps diverge (the report says why), so no bound there.
      start = {fw: pair[fw][0] for fw in ('jax', 'torch')}
      assert start['jax']['step'] == start['torch']['step'] == 0
      for key in ('monitor/knn_accuracy_aoa', 'monitor/knn_accuracy_amc'):
        assert start['torch'][key] == start['jax'][key], key
