"""The console summary of an evaluation, on hand-written results dicts."""

from ssl_jax.evaluation import intervals
from ssl_jax.evaluation.summary import summary_table


def _score(mean, std, seeds=2):
  return {'mean': mean, 'std': std, 'values': [mean] * seeds}


def _encoder(aoa, amc):
  """evaluate_encoder's layout: aoa/amc are {budget: (accuracy, std, mae_deg) or 'skipped'}."""
  def probes(table, with_error):
    out = {}
    for budget, value in table.items():
      if value == 'skipped':
        out[str(budget)] = {'skipped': 'probe aoa: budget 10 per class exceeds the smallest train class'}
        continue
      accuracy, std, error = value
      out[str(budget)] = {'accuracy': _score(accuracy, std), 'final_train_loss': _score(1.0, 0.1)}
      if with_error:
        out[str(budget)]['mae_deg'] = _score(error, 1.25)
    return out
  return {'tasks': {'aoa': {'probe': probes(aoa, True), 'silhouette': 0.1},
                    'amc': {'probe': probes(amc, False), 'silhouette': None}},
          'num_seeds': 2, 'num_test': 100, 'embedding_dim': 8, 'seed': 0}


def test_table_of_a_plain_run_with_the_random_init_baseline():
  results = {
      'method': 'simclr', 'step': 300,
      'pretrained': _encoder({1: (0.25, 0.0125, 30.04), 10: (0.5, 0.02, 12.5)}, {10: (0.75, 0.01, None),
                                                                                 1: (0.4, 0.05, None)}),
      'random_init': _encoder({1: (0.01, 0.002, 60.0), 10: (0.02, 0.003, 55.0)}, {1: (0.2, 0.01, None),
                                                                                   10: (0.3, 0.02, None)}),
  }
  assert summary_table(results) == [
      'linear probes on the test split: simclr at step 300',
      'task  labels/class  pretrained     random init    AoA error (deg)',
      'AoA              1  0.250 ± 0.013  0.010 ± 0.002  30.0 ± 1.2',
      'AoA             10  0.500 ± 0.020  0.020 ± 0.003  12.5 ± 1.2',
      'AMC              1  0.400 ± 0.050  0.200 ± 0.010  -',
      'AMC             10  0.750 ± 0.010  0.300 ± 0.020  -',
      'cells: mean ± std over 2 probe seeds',
  ]


def test_without_random_init_a_skipped_budget_reads_skipped():
  results = {'method': 'moco', 'step': 3,
             'pretrained': _encoder({1: (0.25, 0.0, 30.0), 10: 'skipped'}, {1: (0.4, 0.05, None)})}
  assert summary_table(results) == [
      'linear probes on the test split: moco at step 3',
      'task  labels/class  pretrained     AoA error (deg)',
      'AoA              1  0.250 ± 0.000  30.0 ± 1.2',
      'AoA             10  skipped        skipped',
      'AMC              1  0.400 ± 0.050  -',
      'cells: mean ± std over 2 probe seeds',
  ]


def test_a_member_run_shows_the_confidence_interval_of_its_members():
  members = [_encoder({1: (accuracy, 0.01, 20.0 + accuracy)}, {1: (0.5, 0.01, None)}) for accuracy in (0.2, 0.3, 0.4)]
  results = {'method': 'simclr', 'step': 10, 'num_members': 3, 'pretrained': intervals.summarize(members),
             'random_init': _encoder({1: (0.01, 0.002, 60.0)}, {1: (0.2, 0.01, None)})}
  half = intervals.t_interval([0.2, 0.3, 0.4])['half_width']
  lines = summary_table(results)
  assert lines[2] == f'AoA              1  0.300 ± {half:.3f}  0.010 ± 0.002  20.3 ± 0.2'
  assert lines[-1] == ('cells: pretrained: mean of 3 members ± the half-width of its 95% confidence interval; '
                       'random init: mean ± std over 2 probe seeds')


def test_results_without_probes_give_no_table():
  assert summary_table({'method': 'simclr', 'step': 1}) == []


def test_tasks_follow_the_probe_config_not_the_key_order():
  """results.json is written with sorted keys ('amc' before 'aoa'); the table keeps the probe config's order."""
  encoder = _encoder({1: (0.25, 0.0, 30.0)}, {1: (0.4, 0.05, None)})
  encoder['tasks'] = {'amc': encoder['tasks']['amc'], 'aoa': encoder['tasks']['aoa']}
  lines = summary_table({'pretrained': encoder, 'probe_config': {'tasks': ['aoa', 'amc']}})
  assert lines[0] == 'linear probes on the test split'
  assert [line.split()[0] for line in lines[2:4]] == ['AoA', 'AMC']
