"""The study's report: results.json, report.md (our tables beside the published ones) and PNG plots.

results.json layout: with one pretraining seed (`seeds` 1, or absent in results written before seeds
existed) each run's `eval` holds its scores as `{'mean', 'std', 'values'}` over probe seeds. With K >= 2
seeds (`experiments/study.py --seeds K`) each run (pretrained runs, `random_init` and `supervised`) also
holds `members`: `[{'member': k, 'seed': seed + k, 'eval': ...}]`, one plain `eval` per pairing index k,
and its `eval` is their summary (`ssl_jax.evaluation.intervals.summarize`: every score a
`{'mean', 'ci95', 'half_width', 'n', 'values'}` over the K seeds, each value a seed's probe-seed mean).
Pairing index k is pretraining seed `seed + k` (member k), probe label sets and heads of seed `seed + k`,
and the supervised baseline and random-init encoder of seed `seed + k`: the Conclusions compare runs
member k against member k.
"""

import json
import math
import os
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from ssl_jax.data import spec
from ssl_jax.evaluation import intervals

BUDGETS = (1, 10, 100, 200, 500)
# The study's published numbers on the real AoAM (docs/study.md), read from its figures.
PUBLISHED = {
    'aug': {
        'aoa': {'moco': (.396, .780, .893, .896, .898), 'simclr': (.483, .876, .944, .943, .949),
                'supervised': (.005, .392, .951, .952, .962)},
        'amc': {'moco': (.343, .743, 1.0, 1.0, 1.0), 'simclr': (.229, .771, 1.0, 1.0, 1.0),
                'supervised': (.200, .443, .991, 1.0, 1.0)},
    },
    'noaug': {
        'aoa': {'moco': (.018, .024, .049, .052, .060), 'simclr': (.010, .008, .012, .015, .019)},
        'amc': {'moco': (.229, .400, .581, .611, .640), 'simclr': (.143, .100, .230, .264, .270)},
    },
    'silhouette': {'simclr': {'aoa': 0.235, 'amc': 0.069}, 'moco': {'aoa': 0.158, 'amc': 0.104}},
}
TASK_TITLES = {'aoa': f'AoA ({spec.NUM_AOA_CLASSES} classes)', 'amc': f'AMC ({spec.NUM_MODULATIONS} classes)'}
# The methods a report knows, in table order, their labels and plot colours (with augmentation, MTC only).
# The published columns are the study's SimCLR and MoCo (v2); MoCo v3 is not in the study.
METHOD_LABELS = {'simclr': 'SimCLR', 'moco': 'MoCo', 'moco_v3': 'MoCo v3', 'memory_bank': 'Memory bank (Wu et al.)',
                 'fifo_bank': 'SimCLR, FIFO bank', 'mochi': 'MoCHi', 'debiased': 'SimCLR, debiased',
                 'hard_negative': 'SimCLR, hard negatives', 'dcl': 'DCL', 'dclw': 'DCLW', 'swav': 'SwAV',
                 'clip': 'CLIP (IQ tower)'}
_COLOURS = {'simclr': ('C0', 'C4'), 'moco': ('C1', 'C5'), 'moco_v3': ('C3', 'C6'), 'memory_bank': ('C8', 'khaki'),
            'fifo_bank': ('C9', 'paleturquoise'), 'mochi': ('saddlebrown', 'burlywood'),
            'debiased': ('navy', 'lightsteelblue'), 'hard_negative': ('teal', 'mediumaquamarine'),
            'dcl': ('olive', 'yellowgreen'), 'dclw': ('maroon', 'lightcoral'), 'swav': ('C2', 'C7'),
            'clip': ('darkviolet', 'plum')}
_SETTINGS = ('_aug', '_noaug', '_mtc')


def _method_of(run: str) -> str:
  """The method a run name belongs to ('moco_v3_aug' -> 'moco_v3'); other runs are their own key."""
  for setting in _SETTINGS:
    if run.endswith(setting):
      return run[:-len(setting)]
  return run


def _methods(results: Mapping) -> list[str]:
  """The pretrained methods of a study, in table order."""
  return [m for m in METHOD_LABELS if f'{m}_aug' in results['runs']]


def _probe_scores(results: Mapping, run: str, task: str) -> dict[int, Mapping]:
  """{budget: scores} of a run's linear probes (or the supervised baseline) for a task, skipping skipped."""
  evaluation = results['runs'][run]['eval']['tasks'][task]
  table = evaluation['supervised'] if run == 'supervised' else evaluation['probe']
  return {int(b): s for b, s in table.items() if 'accuracy' in s}


def _spread(score: Mapping) -> float:
  """The ± of a score: the 95% CI half-width over seeds (K >= 2), else the std over probe seeds."""
  if score.get('half_width') is not None:
    return float(score['half_width'])
  return float(score.get('std', 0.0))


def _cell(scores: Mapping | None, key: str = 'accuracy', digits: int = 3) -> str:
  if scores is None or key not in scores:
    return '–'
  return f"{scores[key]['mean']:.{digits}f} ± {_spread(scores[key]):.{digits}f}"


def num_seeds(results: Mapping) -> int:
  """The pretraining seeds of a study (1 for results written before `--seeds` existed)."""
  return int(results.get('seeds', 1))


def cell_legend(results: Mapping) -> str:
  """What a table cell's `mean ± x` is."""
  k = num_seeds(results)
  if k == 1:
    return 'Cells: test accuracy, mean ± std over probe seeds (one pretraining seed: no confidence interval).'
  return (f'Cells: test accuracy, mean over {k} pretraining seeds ± the half-width of its 95% confidence '
          "interval (Student's t over the seeds; each seed's score is first averaged over its probe seeds).")


# --- Conclusions: the study's claims as paired comparisons over the same seeds and data. ---

HOLDS, REVERSED, NOT_RESOLVED = 'holds', 'reversed', 'not resolved at this scale'


def verdict(interval: Mapping[str, Any]) -> str:
  """The verdict on a claim 'A > B' from the t-interval of the paired differences A - B: 'holds' when the
  95% CI lies above 0, 'reversed' when it lies below 0, 'not resolved at this scale' when it includes 0
  (or there is no interval: one seed)."""
  ci = interval.get('ci95')
  if ci is None:
    return NOT_RESOLVED
  low, high = ci
  if low > 0:
    return HOLDS
  if high < 0:
    return REVERSED
  return NOT_RESOLVED


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
  """`intervals.t_interval` of the paired differences a[k] - b[k]; ValueError unless a and b pair up."""
  if len(a) != len(b) or not len(a):
    raise ValueError(f'paired comparison needs equal, non-empty lists of seeds; got {len(a)} and {len(b)}')
  diffs = [float(x) - float(y) for x, y in zip(a, b)]
  if not all(math.isfinite(d) for d in diffs):
    raise ValueError(f'paired comparison of non-finite scores: {list(a)} vs {list(b)}')
  return intervals.t_interval(diffs)


def seed_scores(results: Mapping, run: str, task: str, budget: int) -> list[float] | None:
  """Test accuracy of `run` at `budget` for `task`, one value per pairing index k (each a mean over probe
  seeds), or None when the run or budget did not run."""
  entry = results['runs'].get(run)
  if entry is None:
    return None
  evals = [m['eval'] for m in entry['members']] if 'members' in entry else [entry['eval']]
  values = []
  for evaluation in evals:
    table = evaluation['tasks'][task]['supervised' if run == 'supervised' else 'probe']
    score = table.get(str(budget), {})
    if 'accuracy' not in score:
      return None
    values.append(float(score['accuracy']['mean']))
  return values


def _moco_run_method(results: Mapping) -> str | None:
  """The study's MoCo in this study: MoCo v2 ('moco') when it ran, else MoCo v3."""
  for method in ('moco', 'moco_v3'):
    if f'{method}_aug' in results['runs'] and f'{method}_noaug' in results['runs']:
      return method
  return None


def claims(results: Mapping) -> list[dict[str, Any]]:
  """The study's claims this study can test: `{'claim', 'said', 'a', 'b', 'budgets'}`, each 'a beats b'
  (budgets None: every budget both ran)."""
  moco = _moco_run_method(results)
  found = []
  if 'simclr_aug' in results['runs'] and 'simclr_noaug' in results['runs']:
    found.append({'claim': 'SimCLR with augmentation (MTC + AD) beats SimCLR without',
                  'said': 'augmentation is what makes the encoders useful (without it SimCLR falls to chance on '
                          'AoA: 0.010-0.019 published)', 'a': 'simclr_aug', 'b': 'simclr_noaug', 'budgets': None})
  if moco and 'simclr_aug' in results['runs']:
    label = METHOD_LABELS[moco]
    found.append({'claim': f'SimCLR beats {label}, with augmentation', 'a': 'simclr_aug', 'b': f'{moco}_aug',
                  'said': '"Overall, SimCLR gives the stronger downstream performance across the comparison"',
                  'budgets': None})
    found.append({'claim': f'{label} beats SimCLR, without augmentation', 'a': f'{moco}_noaug',
                  'b': 'simclr_noaug', 'budgets': None,
                  'said': '"the MoCo shared encoder outperforms the SimCLR shared encoder on both tasks"'})
  if 'simclr_aug' in results['runs'] and 'supervised' in results['runs']:
    found.append({'claim': 'Pretrained (SimCLR with augmentation) beats supervised at 1 and 10 labels per class',
                  'said': '"both pretrained models are competitive with the supervised baseline" (published AoA '
                          'at 1 and 10 labels: SimCLR 0.483, 0.876; supervised 0.005, 0.392)',
                  'a': 'simclr_aug', 'b': 'supervised', 'budgets': (1, 10)})
  return found


def conclusions(results: Mapping) -> list[dict[str, Any]]:
  """Each claim of `claims` per task and budget: `{'claim', 'task', 'budget', 'difference' (paired
  t-interval of a - b), 'verdict'}`, or `'verdict': None` with a `'missing'` reason where a side did not run
  that budget."""
  rows = []
  for claim in claims(results):
    for task in ('aoa', 'amc'):
      budgets = claim['budgets'] or sorted(set(_probe_scores(results, claim['a'], task)) &
                                           set(_probe_scores(results, claim['b'], task)))
      for budget in budgets:
        a = seed_scores(results, claim['a'], task, budget)
        b = seed_scores(results, claim['b'], task, budget)
        row = {'claim': claim['claim'], 'task': task, 'budget': budget}
        if a is None or b is None:
          absent = ' and '.join(run for run, scores in ((claim['a'], a), (claim['b'], b)) if scores is None)
          rows.append({**row, 'difference': None, 'verdict': None, 'missing': f'{absent}: no {budget}/class'})
          continue
        difference = paired_difference(a, b)
        rows.append({**row, 'difference': difference, 'verdict': verdict(difference)})
  return rows


def conclusions_section(results: Mapping) -> list[str]:
  """The report's Conclusions: each claim, what the study said, and per task and budget the mean paired
  difference, its 95% CI and the verdict."""
  k = num_seeds(results)
  lines = ['## Conclusions: the study\'s claims, tested', '',
           f'Each claim "A beats B" is tested as a paired comparison over the same {k} seed(s) and the same data: '
           'the difference is member k of A minus member k of B (pretraining seed `seed + k`, both probed on the '
           'label sets of seed `seed + k`); against the supervised baseline, supervised run k is trained with '
           'seed `seed + k` on those same label sets. Each side is first averaged over its probe seeds. '
           "Verdict: 'holds' when the 95% t-interval of the differences excludes 0 in the claimed direction, "
           "'reversed' when it excludes 0 the other way, 'not resolved at this scale' when it includes 0"
           + (' (always so with one seed: no interval; run `--seeds K`, K >= 2).' if k < 2 else '.'), '']
  rows = conclusions(results)
  by_claim: dict[str, list] = {}
  for row in rows:
    by_claim.setdefault(row['claim'], []).append(row)
  said = {c['claim']: c['said'] for c in claims(results)}
  if not by_claim:
    return lines + ['No claim could be tested: the study did not run the runs they compare.', '']
  for claim, claim_rows in by_claim.items():
    lines += [f'### {claim}', '', f'The study: {said[claim]}.', '',
              '| task | labels/class | mean difference | 95% CI | verdict |', '|---|---|---|---|---|']
    for row in claim_rows:
      task = {'aoa': 'AoA', 'amc': 'AMC'}[row['task']]
      if row['verdict'] is None:
        lines.append(f"| {task} | {row['budget']} | – | – | not measured ({row['missing']}) |")
        continue
      d = row['difference']
      ci = f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]" if d['ci95'] else 'none (one seed)'
      note = ' (every seed gave the same difference: a zero-width interval)' if d['half_width'] == 0 else ''
      lines.append(f"| {task} | {row['budget']} | {d['mean']:+.3f} | {ci} | {row['verdict']}{note} |")
    lines.append('')
  return lines


def previous_results(out_dir: str, results: Mapping[str, Any], settings: Sequence[str], kind: str) -> dict[str, Any]:
  """The `results.json` already in `out_dir` ({} when there is none), for a study or sweep (`kind`) that adds
  to it. Raises ValueError naming the first of `settings` in which it differs from `results` (what it holds
  would not pair with what this run adds)."""
  path = os.path.join(out_dir, 'results.json')
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    previous = json.load(f)
  for key in settings:
    if previous.get(key) != results[key]:
      raise ValueError(f'{path} holds a {kind} with {key}={previous.get(key)!r}, this one has {key}={results[key]!r}: '
                       f'a {kind} adds only to one of the same settings; use another --out')
  return previous


def _save_figure(fig, out_dir: str, name: str, dpi: int) -> str:
  """Lays out `fig`, writes it to `out_dir/name`, closes it; returns the path."""
  fig.tight_layout()
  path = os.path.join(out_dir, name)
  fig.savefig(path, dpi=dpi)
  plt.close(fig)
  return path


# --- Methods against SimCLR: every other method's augmented run, paired over the seeds. ---

COMPARISON_REFERENCE = 'simclr'  # in-batch negatives, the study's stronger method: the baseline of the comparison


def method_comparisons(results: Mapping, reference: str = COMPARISON_REFERENCE) -> list[dict[str, Any]]:
  """`{'method', 'task', 'budget', 'difference' (paired t-interval of method - reference), 'verdict'}` for
  each method's augmented run other than `reference`'s, per task and budget both probed ('holds' = the
  method beats the reference)."""
  rows = []
  ref = f'{reference}_aug'
  for method in _methods(results):
    if method == reference:
      continue
    for task in ('aoa', 'amc'):
      for budget in sorted(set(_probe_scores(results, ref, task)) & set(_probe_scores(results, f'{method}_aug', task))):
        a = seed_scores(results, f'{method}_aug', task, budget)
        b = seed_scores(results, ref, task, budget)
        difference = paired_difference(a, b)
        rows.append({'method': method, 'task': task, 'budget': budget, 'difference': difference,
                     'verdict': verdict(difference)})
  return rows


def _difference_cell(row: Mapping[str, Any]) -> str:
  d = row['difference']
  ci = f" [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]" if d['ci95'] else ''
  text = f"{d['mean']:+.3f}{ci}"
  text = f'**{text}**' if row['verdict'] in (HOLDS, REVERSED) else text
  return text + ' †' if d['half_width'] == 0 else text


def methods_section(results: Mapping, reference: str = COMPARISON_REFERENCE) -> list[str]:
  """The report's table of every method against `reference` (with augmentation), one per task."""
  k = num_seeds(results)
  label = METHOD_LABELS[reference]
  lines = [f'## Methods against {label}, with augmentation (paired over {k} seeds)', '',
           f'Each cell: the mean over the {k} pretraining seeds of (method member k) - ({label} member k), both '
           f'probed on the label sets of seed `seed + k`, and its 95% t-interval. **Bold**: resolved (the interval '
           f'excludes 0): above {label} when positive, below when negative; otherwise not resolved at this scale. '
           '†: every seed gave the same difference (a zero-width interval).', '']
  rows = method_comparisons(results, reference)
  for task in ('aoa', 'amc'):
    task_rows = [r for r in rows if r['task'] == task]
    budgets = sorted({r['budget'] for r in task_rows})
    lines += [f'### {TASK_TITLES[task]}', '', '| method | ' + ' | '.join(f'{b}/class' for b in budgets) + ' |',
              '|---' * (len(budgets) + 1) + '|']
    for method in dict.fromkeys(r['method'] for r in task_rows):
      cells = {r['budget']: _difference_cell(r) for r in task_rows if r['method'] == method}
      lines.append(f'| {METHOD_LABELS[method]} | ' + ' | '.join(cells.get(b, '–') for b in budgets) + ' |')
    lines.append('')
  return lines


def plot_methods(out_dir: str, results: Mapping, reference: str = COMPARISON_REFERENCE) -> str:
  """Each method's paired difference to `reference` with its 95% CI, per task, one marker per budget."""
  rows = method_comparisons(results, reference)
  methods = list(dict.fromkeys(r['method'] for r in rows))
  budgets = sorted({r['budget'] for r in rows})
  fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(methods) + 1.8), sharey=True)
  for ax, task in zip(axes, ('aoa', 'amc')):
    for j, budget in enumerate(budgets):
      offset = (j - (len(budgets) - 1) / 2) * 0.8 / max(len(budgets), 1)
      points = [(methods.index(r['method']) + offset, r['difference']) for r in rows
                if r['task'] == task and r['budget'] == budget]
      if not points:
        continue
      y = np.array([p[0] for p in points])
      mean = np.array([p[1]['mean'] for p in points])
      err = np.array([[p[1]['mean'] - p[1]['ci95'][0], p[1]['ci95'][1] - p[1]['mean']] if p[1]['ci95'] else [0, 0]
                      for p in points]).T
      ax.errorbar(mean, y, xerr=err, fmt='o', color=f'C{j}', capsize=2, markersize=4, label=f'{budget}/class')
    ax.axvline(0, color='k', linewidth=0.8)
    ax.set_yticks(range(len(methods)))
    ax.set_yticklabels([METHOD_LABELS[m] for m in methods])
    ax.set_xlabel(f'test accuracy minus {METHOD_LABELS[reference]} (paired, 95% CI)')
    ax.set_title(TASK_TITLES[task])
    ax.grid(alpha=0.3, axis='x')
  axes[0].invert_yaxis()  # the first method on top (the axes share y: once inverts both)
  axes[1].legend(loc='best', fontsize=8)
  return _save_figure(fig, out_dir, 'methods_vs_simclr.png', 110)


def _accuracy_table(results: Mapping, task: str, runs: list[tuple[str, str]], published: Mapping) -> list[str]:
  budgets = sorted({b for run, _ in runs for b in _probe_scores(results, run, task)})
  lines = ['| model | ' + ' | '.join(f'{b}/class' for b in budgets) + ' | study (1, 10, 100, 200, 500) |',
           '|---' * (len(budgets) + 2) + '|']
  for run, label in runs:
    scores = _probe_scores(results, run, task)
    study = published.get(_method_of(run))
    study_cell = ', '.join(f'{v:.3f}' for v in study) if study else '–'
    lines.append(f'| {label} | ' + ' | '.join(_cell(scores.get(b)) for b in budgets) + f' | {study_cell} |')
  return lines


def _mae_table(results: Mapping, runs: list[tuple[str, str]]) -> list[str]:
  budgets = sorted({b for run, _ in runs for b in _probe_scores(results, run, 'aoa')})
  lines = ['| model | ' + ' | '.join(f'{b}/class' for b in budgets) + ' |', '|---' * (len(budgets) + 1) + '|']
  for run, label in runs:
    scores = _probe_scores(results, run, 'aoa')
    lines.append(f'| {label} | ' + ' | '.join(_cell(scores.get(b), 'mae_deg', 2) for b in budgets) + ' |')
  return lines


def moco_settings_line(config: Mapping[str, Any]) -> str:
  """One sentence on a MoCo run (v2 or v3): negatives, momentum schedule, projection normalisation."""
  moco = config['moco']
  schedule = 'rising to 1 on a cosine' if moco.get('momentum_cosine', True) else 'constant'
  norm = config['model'].get('projection_norm', 'none')
  head = ("the study's projection MLP" if norm == 'none'
          else 'the projection standardised over the batch (`projection_norm=batch`)')
  if config['method'] == 'moco_v3':
    what = 'MoCo v3 here: the symmetric loss with a predictor and the batch as negatives (no queue)'
  else:
    what = f"MoCo here: v2, a queue of {moco['queue_size']:,} keys"
  return f"{what}, momentum {moco['momentum']} {schedule}, {head}, τ = {config['temperature']}."


def data_line(data: Mapping[str, Any]) -> str:
  """The report's sentence on the data the study ran on (results['data'])."""
  if data['source'] == 'real':
    counts = data['num_examples']
    return (f"Data: real AoAM recordings from `{data['manual_dir']}` ({counts['train']:,} train and "
            f"{counts['test']:,} test examples of length {data['length']}, fingerprint {data['fingerprint']}).")
  return ('Data: the ssl_jax AoAM simulator (the real recordings are not public), so the numbers are not '
          "expected to equal the study's; the comparison of interest is the ordering between methods and "
          'between settings.')


# What a scale's report can show, in one line at its top (the scales without a line show the whole study).
SCALE_LINES = {
    'demo': ('**What the demo shows:** SimCLR pretrained with MTC + AD above a random-init encoder on AoA and '
             'AMC at 1 and 10 labels per class, and above supervised training at 1 label per class. Only the '
             'cpu or full scale shows MoCo, the no-augmentation ablation, budgets of 100 labels per class and '
             "more, and (full) the study's length L = 1,024."),
}


def _clearly_above(a: Mapping, b: Mapping) -> bool:
  """a's mean accuracy above b's by more than the larger of their spreads (`_spread`: the 95% CI half-width
  over pretraining seeds, or with one seed the std over probe seeds)."""
  return a['accuracy']['mean'] > b['accuracy']['mean'] + max(_spread(a['accuracy']), _spread(b['accuracy']))


def demo_checks(results: Mapping, run: str = 'simclr_aug') -> list[str]:
  """The demo's comparisons that fail in `results` (empty when the demo shows what it claims).

  Clearly above = mean above by more than the larger spread: `run` over the random-init encoder at every
  probe budget of both tasks, and over the supervised baseline at 1 label per class.
  """
  failures = []
  for task in ('aoa', 'amc'):
    ours, random = _probe_scores(results, run, task), _probe_scores(results, 'random_init', task)
    for budget in sorted(random):
      if budget not in ours or not _clearly_above(ours[budget], random[budget]):
        failures.append(f'{task} at {budget}/class: not clearly above the random-init encoder')
    supervised = _probe_scores(results, 'supervised', task)
    if 1 not in ours or 1 not in supervised or not _clearly_above(ours[1], supervised[1]):
      failures.append(f'{task} at 1/class: not clearly above the supervised baseline')
  return failures


def write(out_dir: str, results: Mapping[str, Any], projections: Mapping[str, np.ndarray],
          test_labels: Mapping[str, np.ndarray]) -> None:
  """Writes results.json, report.md and the plots into `out_dir`."""
  tmp = os.path.join(out_dir, 'results.json.tmp')
  with open(tmp, 'w') as f:
    json.dump(results, f, indent=2)
  os.replace(tmp, os.path.join(out_dir, 'results.json'))
  figures = [plot_accuracy(out_dir, results)]
  if projections:  # the augmented runs whose encoders are at hand (`runs/` of an added-to study may be gone)
    figures.append(plot_projections(out_dir, projections, test_labels))

  methods = _methods(results)
  method_runs = [(f'{m}_aug', METHOD_LABELS[m]) for m in methods]
  baselines = [(run, label) for run, label in (('supervised', 'Supervised'), ('random_init', 'Random-init encoder'))
               if run in results['runs']]  # absent while a study's first runs are written
  aug_runs = method_runs + baselines
  random_init = [(run, label) for run, label in baselines if run == 'random_init']
  noaug_runs = [(f'{m}_noaug', METHOD_LABELS[m]) for m in methods if f'{m}_noaug' in results['runs']]
  lines = [f"# ssl_jax study report (scale `{results['scale']}`)", '',
           data_line(results.get('data', {'source': 'simulated'})) + ' ' + cell_legend(results) + ' The study '
           'column lists the published figures at 1, 10, 100, 200 and 500 labels per class.', '']
  if results['scale'] in SCALE_LINES:
    lines += [SCALE_LINES[results['scale']], '']
  if results['scale'] == 'demo' and all(r in results['runs'] for r in ('simclr_aug', 'random_init', 'supervised')):
    failures = demo_checks(results)
    lines += [('In this run it holds: every comparison clearly (by more than the larger spread).' if not failures
               else 'In this run it does not hold: ' + '; '.join(failures) + '.'), '']
  for method in ('moco', 'moco_v3'):
    moco_config = results['runs'].get(f'{method}_aug', {}).get('config')
    if moco_config:
      lines += [moco_settings_line(moco_config), '']
  for task in ('aoa', 'amc'):
    lines += [f'## Linear probe accuracy with augmentation (MTC + AD): {TASK_TITLES[task]}', '']
    lines += _accuracy_table(results, task, aug_runs, PUBLISHED['aug'][task]) + ['']
  lines += ['## AoA mean absolute angular error (degrees), with augmentation', '']
  lines += _mae_table(results, aug_runs) + ['']
  lines += ['## Silhouette of the test embeddings', '', '| model | AoA | AMC | study AoA | study AMC |',
            '|---|---|---|---|---|']
  mtc_runs = [(f'{m}_mtc', f'{METHOD_LABELS[m]}, MTC only') for m in methods if f'{m}_mtc' in results['runs']]
  for run, label in method_runs + mtc_runs + random_init:
    tasks = results['runs'][run]['eval']['tasks']
    cells = [_silhouette_cell(tasks[t].get('silhouette')) for t in ('aoa', 'amc')]
    study = PUBLISHED['silhouette'].get(_method_of(run)) if run.endswith('_aug') else None
    study_cells = [f'{study[t]:.3f}' for t in ('aoa', 'amc')] if study else ['–', '–']
    lines.append(f'| {label} | ' + ' | '.join(cells + study_cells) + ' |')
  lines.append('')
  for task in ('aoa', 'amc') if noaug_runs else ():
    lines += [f'## No augmentation during pretraining: {TASK_TITLES[task]}', '']
    lines += _accuracy_table(results, task, noaug_runs, PUBLISHED['noaug'][task]) + ['']
  if mtc_runs:
    for task in ('aoa', 'amc'):
      lines += [f'## Ours, not in the study: MTC only (AD off) during pretraining: {TASK_TITLES[task]}', '']
      lines += _accuracy_table(results, task, mtc_runs + random_init, {}) + ['']
  if len(methods) >= 3 and 'simclr' in methods:
    lines += methods_section(results)
    figures.append(plot_methods(out_dir, results))
  lines += conclusions_section(results)
  lines += ['## Figures', ''] + [f'![{os.path.basename(p)}]({os.path.basename(p)})' for p in figures] + ['']
  lines += ['## Timing (seconds)', '', '| stage | s |', '|---|---|']
  lines += [f'| {k} | {v:.0f} |' for k, v in results['timing_s'].items()] + ['']
  with open(os.path.join(out_dir, 'report.md'), 'w') as f:
    f.write('\n'.join(lines))


def _silhouette_cell(silhouette: Any) -> str:
  """A silhouette: a number (one seed), a t-interval over seeds, or None (undefined)."""
  if silhouette is None:
    return 'undefined'
  if isinstance(silhouette, Mapping):
    return _cell({'s': silhouette}, 's')
  return f'{silhouette:.3f}'


def plot_accuracy(out_dir: str, results: Mapping) -> str:
  """Accuracy against labels per class, per task: each method (with and without aug), supervised, random."""
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
  styles = {}
  for method, label in METHOD_LABELS.items():
    colour, mtc_colour = _COLOURS[method]
    styles.update({f'{method}_aug': (label, colour, '-'), f'{method}_noaug': (f'{label}, no aug', colour, ':'),
                   f'{method}_mtc': (f'{label}, MTC only', mtc_colour, '-')})
  styles.update({'supervised': ('Supervised', 'C2', '--'), 'random_init': ('Random-init encoder', 'C7', '-.')})
  for ax, task in zip(axes, ('aoa', 'amc')):
    for run, (label, color, style) in styles.items():
      if run not in results['runs']:
        continue
      scores = _probe_scores(results, run, task)
      if not scores:
        continue
      budgets = sorted(scores)
      mean = np.array([scores[b]['accuracy']['mean'] for b in budgets])
      spread = np.array([_spread(scores[b]['accuracy']) for b in budgets])
      ax.errorbar(budgets, mean, yerr=spread, label=label, color=color, linestyle=style, marker='o', capsize=3)
    ax.set_xscale('log')
    ax.set_xlabel('labelled examples per class')
    ax.set_ylabel('test accuracy')
    ax.set_title(TASK_TITLES[task])
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
  axes[1].legend(loc='lower right', fontsize=8)
  return _save_figure(fig, out_dir, 'accuracy_vs_budget.png', 120)


def plot_projections(out_dir: str, projections: Mapping[str, np.ndarray],
                     test_labels: Mapping[str, np.ndarray]) -> str:
  """2-D PCA of the test embeddings of each augmented run, coloured by modulation and by azimuth."""
  runs = sorted(projections)
  row_height, dpi = (4.5, 110) if len(runs) <= 4 else (3.2, 80)  # a many-method study stays a few MB
  fig, axes = plt.subplots(len(runs), 2, figsize=(11, row_height * len(runs)), squeeze=False)
  for row, run in enumerate(runs):
    x = projections[run]
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    xy = x @ vt[:2].T
    for col, (key, title, cmap) in enumerate([('modulation', 'modulation', 'tab10'),
                                              ('angles_deg', 'azimuth (deg)', 'viridis')]):
      colour = test_labels[key][:, 0] if key == 'angles_deg' else test_labels[key]
      ax = axes[row, col]
      points = ax.scatter(xy[:, 0], xy[:, 1], c=colour, cmap=cmap, s=6, alpha=0.7)
      fig.colorbar(points, ax=ax)
      ax.set_title(f'{run}: PCA of test embeddings, colour = {title}')
      ax.set_xticks([])
      ax.set_yticks([])
  return _save_figure(fig, out_dir, 'embeddings_pca.png', dpi)
