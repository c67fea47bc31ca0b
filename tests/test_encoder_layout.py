"""experiments/encoder_layout.py and experiments/first_steps.py: the tables read what the runs wrote."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import encoder_layout, first_steps
from ssl_jax import models


def _run(candidate, seed, test, train=1.0):
  return {'candidate': candidate, 'task': 'amc', 'length': 128, 'seed': seed, 'per_class': 100, 'test_accuracy': test,
          'train_accuracy': train, 'encoder_params': 335_528, 'steps': 328, 'final_loss': 0.01, 'train_seconds': 10.0}


def test_screen_table_pairs_each_candidate_with_v1_over_the_seeds():
  runs = [_run('v1', k, t) for k, t in enumerate((0.40, 0.42, 0.41))]
  runs += [_run('stem_s1_pool', k, t) for k, t in enumerate((0.50, 0.53, 0.51))]  # +0.10, +0.11, +0.10
  runs += [_run('v1_dw9', k, t) for k, t in enumerate((0.45, 0.37, 0.41))]  # +0.05, -0.05, 0.00
  rows = {line.split(' | ')[0].lstrip('| '): line for line in encoder_layout.screen_table(runs)[2:]}
  assert set(rows) == {'v1', 'stem_s1_pool', 'v1_dw9'}
  assert '0.500 / 0.530 / 0.510' in rows['stem_s1_pool'] and '| +0.103 [' in rows['stem_s1_pool']
  assert '| holds |' in rows['stem_s1_pool']
  assert '| +0.000 [' in rows['v1_dw9'] and '| not resolved at this scale |' in rows['v1_dw9']



def _scores(simclr: dict, random: dict) -> dict:
  """`probe_scores` layout: {run: {task: {budget: [per seed]}}}, for budgets 10 and 100."""
  return {'simclr_aug': {t: {str(b): v for b, v in by_budget.items()} for t, by_budget in simclr.items()},
          'random_init': {t: {str(b): v for b, v in by_budget.items()} for t, by_budget in random.items()}}


def test_decision_table_compares_four_cell_margins_paired_with_the_largest():
  random = {'aoa': {10: [0.1, 0.1, 0.1], 100: [0.2, 0.2, 0.2]}, 'amc': {10: [0.3, 0.3, 0.3], 100: [0.4, 0.4, 0.4]}}
  plus = lambda margins: {t: {b: [v + m for v, m in zip(values, margins)] for b, values in by_budget.items()}
                          for t, by_budget in random.items()}
  scores = {'a': _scores(plus([0.40, 0.41, 0.39]), random),  # margin 0.40 in every cell
            'b': _scores(plus([0.20, 0.22, 0.21]), random),  # 0.19-0.20 below a in every seed
            'c': _scores(plus([0.45, 0.30, 0.44]), random)}  # +0.05, -0.11, +0.05: not resolved
  assert encoder_layout.four_cell_margins(scores['a']) == pytest.approx([0.40, 0.41, 0.39])
  rows = {line.split(' | ')[0].lstrip('| '): line for line in encoder_layout.decision_table(scores)[2:]}
  assert rows['a'].endswith('|  |  |')  # the largest mean margin: the reference
  assert '| +0.200 / +0.220 / +0.210 |' in rows['b'] and rows['b'].endswith('| below, resolved |')
  assert rows['c'].endswith('| not resolved at this scale |')

def test_every_candidate_keeps_shufflenet_v2_0_5s_parameters_within_15_percent():
  for name in encoder_layout.CANDIDATES:
    x = jax.ShapeDtypeStruct((2, 64, 8), jnp.float32)
    variables = jax.eval_shape(encoder_layout.build(name).init, jax.random.key(0), x)
    assert abs(models.count_params(variables['params']) / 341_792 - 1) < 0.15, name


def test_torchvisions_2d_view_reaches_height_one_after_its_stem():
  model = encoder_layout.TorchvisionView2D()
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 64, 8)), jnp.float32)
  variables = model.init(jax.random.key(0), x)
  assert variables['params']['stem_conv']['kernel'].shape == (3, 3, 2, 24)  # I/Q as the image's 2 channels
  assert model.apply(variables, x).shape == (2, 1024)


def test_first_steps_summary_reads_the_members_rows(tmp_path):
  rows = [{'step': 0, 'member': m, 'monitor/knn_accuracy_aoa': 0.1, 'monitor/knn_accuracy_amc': 0.3} for m in (0, 1)]
  for step, std in ((1, 0.05), (2, 0.02), (3, 0.04)):
    rows += [{'step': step, 'member': m, 'embedding_std': std + 0.01 * m, 'loss': 5.0 - step, 'instance_accuracy': 0.1,
              'positive_similarity': 0.8, 'negative_similarity': 0.7 + 0.02 * m} for m in (0, 1)]
  rows += [{'step': 3, 'member': m, 'monitor/knn_accuracy_aoa': 0.2 + 0.1 * m, 'monitor/knn_accuracy_amc': 0.5}
           for m in (0, 1)]
  (tmp_path / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  summary = first_steps.summarize(str(tmp_path), 3)
  assert summary['lowest_embedding_std'] == pytest.approx(0.025) and summary['lowest_embedding_std_step'] == 2
  assert summary['negative_similarity_step1'] == pytest.approx(0.71)
  assert summary['knn_aoa_last'] == pytest.approx(0.25) and summary['knn_amc_step0'] == pytest.approx(0.3)
  assert summary['loss_last'] == pytest.approx(2.0) and summary['last_step'] == 3


def test_committed_layout_tables_follow_from_their_numbers():
  """experiments/results/encoder_layout/README.md's screen and pretraining rows are those of its results.json."""
  import os
  from experiments import study_report
  import committed  # tests/committed.py
  results_dir, results = committed.committed_results('encoder_layout')
  readme = open(os.path.join(results_dir, 'README.md')).read()
  for length in (128, 1024):
    for line in encoder_layout.screen_table([r for r in results['screen'] if r['length'] == length])[2:]:
      assert line in readme, line
  for layout, study in results['pretraining'].items():
    scores = study['probe_accuracy_per_seed']
    for task in ('aoa', 'amc'):
      for budget, simclr in scores['simclr_aug'][task].items():
        interval = study_report.paired_difference(simclr, scores['random_init'][task][budget])
        per_seed = ' / '.join(f'{a - b:+.3f}' for a, b in zip(simclr, scores['random_init'][task][budget]))
        row = (f'| {layout} | {task} | {budget} | {encoder_layout._interval(simclr)} | '
               f"{encoder_layout._interval(scores['random_init'][task][budget])} | {per_seed} | "
               f'{encoder_layout._difference(interval)} | {study_report.verdict(interval)} |')
        assert row in readme, row
  # The decisions (section 6: the layout; section 5: the projection) are the rule's tables of these numbers.
  scores = {name: study['probe_accuracy_per_seed'] for name, study in results['pretraining'].items()}
  for names in (('v1', 'stem_s1_pool_unitpool', 'stem_s1_nopool_unitpool'),
                ('stem_s1_pool_unitpool', 'stem_s1_pool_unitpool_projection_batch')):
    for line in encoder_layout.decision_table({name: scores[name] for name in names})[2:]:
      assert line in readme, line
  # The default is the layout the rule chose.
  from configs import base
  chosen = dict(models.LEGACY_LAYOUT, **encoder_layout.CANDIDATES['stem_s1_pool_unitpool'])
  assert {key: base.get_config().model[key] for key in models.LAYOUT_KEYS} == chosen


def test_the_readmes_default_layout_rows_are_the_committed_means():
  """README.md's results rows for the default layout: the means over the seeds in encoder_layout/results.json."""
  import os
  import committed  # tests/committed.py
  _, results = committed.committed_results('encoder_layout')
  scores = results['pretraining']['stem_s1_pool_unitpool']['probe_accuracy_per_seed']
  readme = open(os.path.join(os.path.dirname(committed.RESULTS_ROOT), '..', 'README.md')).read().replace('**', '')
  for run, label in (('simclr_aug', 'SimCLR, MTC + AD, default layout'),
                     ('random_init', 'random-init encoder, default layout')):
    cells = [' / '.join(f'{np.mean(scores[run][task][b]):.3f}' for b in ('1', '10', '100')) for task in ('aoa', 'amc')]
    assert f'| {label} | {cells[0]} | {cells[1]} |' in readme, (label, cells)
