"""A hyperparameter sweep as members of one program: probe accuracy against the hyperparameter, 95% CIs.

  python -m ssl_jax.launch experiments/sweep.py --scale cpu --out DIR [--methods simclr,moco]
      [--param temperature] [--values 0.03,0.05,0.07,0.1,0.2,0.5] [--seeds 3] [--seed 0] [--steps N]
      [--reference 0.07]

For each method, one pretraining run (`configs/<method>.py:scale=<scale>`) trains V x S members
(`ssl_jax/members.py`): member `i * S + s` has the i-th value of `--param` and seed `--seed + s`. All members
read the same data order, so member (i, s) and member (j, s) differ only in the hyperparameter: the
comparison between values is paired over the seeds. Every member is probed (`configs/probe.py:scale=<scale>`)
with the label sets and heads of its seed `--seed + s`.

Writes, after each method, `DIR/results.json` (per method and value: each seed's evaluation and their
mean with a 95% t-interval), `DIR/report.md` (a table per method and, for every task and budget, the best
value against `--reference` as a paired difference with its CI and verdict) and `DIR/sweep.png` (accuracy
against the value, CI bands).
A rerun into the same DIR resumes: finished pretraining runs are reused (`ssl_jax.train.pretrain` refuses a
workdir trained with other settings, naming the keys), and the methods already in `DIR/results.json` are
kept, so a sweep can be run one method at a time (`previous_methods`). SIGTERM or SIGINT during a
pretraining run saves its checkpoint and stops the sweep there (exit status 128 + the signal's number,
`ssl_jax.train.PretrainingStopped`); the same command resumes it.

Memory: with many members (the default grid is 18 per method) the launcher's `MIMALLOC_PURGE_DELAY=-1`
keeps every crop pair's buffers, which at the cpu scale fills a 24 GB machine. Run it with
`MIMALLOC_PURGE_DELAY=10 MIMALLOC_PURGE_DECOMMITS=0` in the environment (the launcher keeps them): freed
pages stay in the process's RSS but the kernel may take them back (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any, Mapping, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ml_collections  # noqa: E402

from configs import METHOD_CONFIGS  # noqa: E402
from configs import scales  # noqa: E402
from experiments import study_report  # noqa: E402
from ssl_jax import members  # noqa: E402
from ssl_jax.evaluation import intervals  # noqa: E402

DEFAULT_METHODS = ('simclr', 'moco')  # the study's SimCLR and MoCo v2
DEFAULT_VALUES = {'temperature': (0.03, 0.05, 0.07, 0.1, 0.2, 0.5)}
STUDY_VALUES = {'temperature': 0.07}  # docs/study.md: the study's NT-Xent / InfoNCE temperature
SWEEPABLE = members.TRACED  # the member-valued hyperparameters (the seed is the sweep's other axis)


def check_sweep(methods: Sequence[str], param: str, values: Sequence[float], seeds: int,
                reference: float | None) -> None:
  """Raises ValueError naming the argument when the sweep cannot run as asked (each method's member config
  is checked after this by `config_checks`, e.g. a momentum sweep of a method without a momentum encoder)."""
  unknown = [m for m in methods if m not in METHOD_CONFIGS]
  if not methods or unknown or len(set(methods)) != len(methods):
    raise ValueError(f'--methods must name one or more of {sorted(METHOD_CONFIGS)}, each once; got '
                     f'{",".join(methods)!r}')
  if param not in SWEEPABLE:
    raise ValueError(f'--param must be one of {SWEEPABLE} (a hyperparameter members may differ in), got {param!r}')
  if len(values) < 2 or len(set(values)) != len(values) or not all(math.isfinite(v) for v in values):
    raise ValueError(f'--values must be two or more distinct finite numbers, got {list(values)}')
  if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 2:
    raise ValueError(f'--seeds must be an integer >= 2 (a confidence interval needs two seeds), got {seeds!r}')
  if reference is not None and reference not in values:
    raise ValueError(f'--reference {reference} must be one of --values {list(values)}')


def member_index(value_index: int, seed_index: int, seeds: int) -> int:
  """The member that trains value `value_index` with seed index `seed_index`."""
  return value_index * seeds + seed_index


def sweep_config(method: str, scale: str, param: str, values: Sequence[float], seed: int, seeds: int,
                 steps: int | None = None, data_dir: str = '') -> ml_collections.ConfigDict:
  """The pretraining config of one method's sweep: `len(values) * seeds` members, laid out by `member_index`."""
  config = METHOD_CONFIGS[method].get_config(f'scale={scale}')
  if steps is not None:
    scales.set_steps(config, steps)
  config.seed = seed
  config.data.data_dir = data_dir
  config.members.count = len(values) * seeds
  config.members.seed = tuple(seed + s for _ in values for s in range(seeds))
  config.members[param] = tuple(float(v) for v in values for _ in range(seeds))
  config.members.data_order = 'shared'
  return config


def points(evaluations: Sequence[Mapping], values: Sequence[float], seed: int, seeds: int) -> list[dict]:
  """Per value: its seeds' evaluations (`members`, in member order) and their summary (`eval`: mean and
  95% t-interval over the seeds, `intervals.summarize`)."""
  out = []
  for i, value in enumerate(values):
    runs = [{'member': member_index(i, s, seeds), 'seed': seed + s, 'eval': evaluations[member_index(i, s, seeds)]}
            for s in range(seeds)]
    out.append({'value': value, 'members': runs, 'eval': intervals.summarize([r['eval'] for r in runs])})
  return out


def _scores(point: Mapping, task: str, budget: str) -> list[float] | None:
  """Test accuracy at `budget` of each seed of `point` (each a mean over probe seeds); None when skipped."""
  values = []
  for run in point['members']:
    score = run['eval']['tasks'][task]['probe'].get(budget, {})
    if 'accuracy' not in score:
      return None
    values.append(float(score['accuracy']['mean']))
  return values


def comparisons(method_points: Sequence[Mapping], reference: float | None) -> dict[str, dict]:
  """Per `task@budget`: the value with the best mean accuracy and, when `reference` is given and is not the
  best, the paired difference best - reference over the seeds with its 95% CI and `study_report.verdict`
  (holds: the best value beats the reference at this scale)."""
  first = method_points[0]['members'][0]['eval']['tasks']
  out = {}
  for task, table in first.items():
    for budget in table['probe']:
      scores = {p['value']: _scores(p, task, budget) for p in method_points}
      if any(s is None for s in scores.values()):
        continue
      best = max(scores, key=lambda v: sum(scores[v]) / len(scores[v]))
      entry: dict[str, Any] = {'best': best, 'mean': {v: sum(s) / len(s) for v, s in scores.items()}}
      if reference is not None:
        entry['reference'] = reference
        if best == reference:
          entry['verdict'] = 'the reference is the best value'
        else:
          entry['difference'] = study_report.paired_difference(scores[best], scores[reference])
          entry['verdict'] = study_report.verdict(entry['difference'])
      out[f'{task}@{budget}'] = entry
  return out


def _cell(score: Mapping | None) -> str:
  if not score or 'mean' not in score:
    return '-'
  half = score.get('half_width')
  return f"{score['mean']:.3f}" + (f' ± {half:.3f}' if half is not None else '')


def report_lines(results: Mapping) -> list[str]:
  param, seeds = results['param'], results['seeds']
  lines = [f"# Sweep over {param} ({results['scale']} scale)", '',
           f"{len(results['values'])} values x {seeds} pretraining seeds per method, trained as members of one "
           f"program; cells: test accuracy, mean over the seeds ± the 95% CI half-width (probe seeds nested "
           f"inside).", '']
  for method, entry in results['methods'].items():
    keys = list(entry['comparisons'])
    lines += [f'## {method}', '', f"Command: `{entry.get('command') or results['command']}`.", '']
    lines += [f"| {param} | " + ' | '.join(keys) + ' |', '|' + '---|' * (len(keys) + 1)]
    for point in entry['points']:
      cells = []
      for key in keys:
        task, budget = key.split('@')
        cells.append(_cell(point['eval']['tasks'][task]['probe'].get(budget, {}).get('accuracy')))
      lines.append(f"| {point['value']:g} | " + ' | '.join(cells) + ' |')
    lines.append('')
    if results['reference'] is not None:
      lines += [f"Best value against the reference {param} = {results['reference']:g} (paired over seeds):", '']
      for key, c in entry['comparisons'].items():
        if 'difference' in c:
          d = c['difference']
          ci = f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]" if d['ci95'] else 'no CI'
          lines.append(f"- {key}: best {c['best']:g}, difference {d['mean']:+.3f}, 95% CI {ci}: {c['verdict']}")
        else:
          lines.append(f"- {key}: {c['verdict']}")
      lines.append('')
  return lines + ['![accuracy against the hyperparameter](sweep.png)', '']


def plot(path: str, results: Mapping) -> None:
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  methods = list(results['methods'])
  tasks = list(results['methods'][methods[0]]['points'][0]['eval']['tasks'])
  fig, axes = plt.subplots(len(methods), len(tasks), figsize=(5 * len(tasks), 3.4 * len(methods)), squeeze=False)
  for row, method in enumerate(methods):
    pts = results['methods'][method]['points']
    for col, task in enumerate(tasks):
      ax = axes[row][col]
      for n, budget in enumerate(pts[0]['eval']['tasks'][task]['probe']):
        scores = [p['eval']['tasks'][task]['probe'][budget].get('accuracy') for p in pts]
        if any(s is None for s in scores):
          continue
        x = [p['value'] for p in pts]
        ax.plot(x, [s['mean'] for s in scores], 'o-', color=f'C{n}', label=f'{budget} per class')
        if all(s.get('ci95') for s in scores):
          ax.fill_between(x, [s['ci95'][0] for s in scores], [s['ci95'][1] for s in scores], color=f'C{n}', alpha=0.2)
      if results['reference'] is not None:
        ax.axvline(results['reference'], color='gray', ls=':', lw=1)
      ax.set_xscale('log')
      ax.set_xticks([p['value'] for p in pts], [f"{p['value']:g}" for p in pts])
      ax.minorticks_off()
      ax.set_xlabel(results['param'])
      ax.set_ylabel('test accuracy')
      ax.set_title(f'{method}: {task}')
      ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def run_sweep(scale: str, out_dir: str, *, methods: Sequence[str] = DEFAULT_METHODS, param: str = 'temperature',
              values: Sequence[float] | None = None, seeds: int = 3, seed: int = 0, steps: int | None = None,
              reference: float | None = None, data_dir: str = '', command: str = '') -> dict[str, Any]:
  """Runs the sweep into `out_dir` (see the module docstring); returns what results.json holds."""
  values = tuple(DEFAULT_VALUES.get(param, ())) if values is None else tuple(values)
  if reference is None and STUDY_VALUES.get(param) in values:
    reference = STUDY_VALUES[param]
  if scale not in scales.SCALES:
    raise ValueError(f'--scale must be one of {scales.SCALES}, got {scale!r}')
  check_sweep(methods, param, values, seeds, reference)
  if steps is not None and steps < 1:
    raise ValueError(f'--steps must be >= 1, got {steps}')
  from ssl_jax import config_checks, encoders, path_checks, train  # heavy imports after the checks
  from ssl_jax.workdir import lock
  from ssl_jax.evaluation import suite
  from configs import probe as probe_config_lib
  path_checks.check_workdir(out_dir, '--out')
  data_dir = data_dir or os.path.join(out_dir, 'tfds')
  configs = {m: sweep_config(m, scale, param, values, seed, seeds, steps, data_dir) for m in methods}
  for method, config in configs.items():
    try:
      config_checks.check_pretrain_config(config)
    except config_checks.ConfigError as e:
      raise ValueError(f'method {method}: {e}') from None
  probes = probe_config_lib.get_config(f'scale={scale}')
  probes.random_init = False
  probes.supervised.enabled = False
  config_checks.check_probe_config(probes)

  results: dict[str, Any] = {'scale': scale, 'param': param, 'values': list(values), 'seed': seed, 'seeds': seeds,
                             'steps': steps, 'reference': reference, 'command': command, 'methods': {}}
  with lock.WorkdirLock(out_dir):
    results['methods'] = {m: entry for m, entry in previous_methods(out_dir, results).items() if m not in configs}
    for method, config in configs.items():
      workdir = os.path.join(out_dir, 'runs', method)
      print(f'[sweep] pretraining {method}: {config.members.count} members -> {workdir}', flush=True)
      summary = train.pretrain(config, workdir)
      train.check_completed(method, workdir, summary)
      data = suite.PipelineData(config.data, probes.embed_batch_size)
      evaluations = []
      for k in range(config.members.count):
        print(f'[sweep] probing {method} member {k + 1}/{config.members.count}', flush=True)
        loaded = encoders.load_encoder(workdir, member=k)
        evaluations.append(suite.evaluate_encoder(loaded.module, loaded.variables, config.data, probes,
                                                  seed=seed + k % seeds, data=data))
      method_points = points(evaluations, values, seed, seeds)
      results['methods'][method] = {'pretrain': summary, 'points': method_points, 'command': command,
                                    'comparisons': comparisons(method_points, reference)}
      write_outputs(out_dir, results)  # after each method: a long sweep's first results need not wait
  return results


SETTINGS = ('scale', 'param', 'values', 'seed', 'seeds', 'steps', 'reference')  # what makes two sweeps one


def previous_methods(out_dir: str, results: Mapping) -> dict[str, Any]:
  """The methods of the sweep already in `out_dir/results.json` (none when there is none), so that a run of
  other methods adds to it (`--methods moco` after `--methods simclr`); a method run again replaces its
  entry. Raises ValueError naming the setting when that sweep was run with other `SETTINGS`."""
  return dict(study_report.previous_results(out_dir, results, SETTINGS, 'sweep').get('methods', {}))


def write_outputs(out_dir: str, results: Mapping) -> None:
  """`results.json`, `report.md` and `sweep.png` of the methods in `results` so far, each replaced whole."""
  for name, text in (('results.json', json.dumps(results, indent=1)), ('report.md', '\n'.join(report_lines(results)))):
    path = os.path.join(out_dir, name)
    with open(path + '.tmp', 'w') as f:
      f.write(text)
    os.replace(path + '.tmp', path)
  plot(os.path.join(out_dir, 'sweep.png'), results)


def _floats(text: str) -> tuple[float, ...]:
  try:
    return tuple(float(v) for v in text.split(',') if v.strip())
  except ValueError:
    raise argparse.ArgumentTypeError(f'expected comma-separated numbers, got {text!r}') from None


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--scale', choices=scales.SCALES, default='smoke')
  parser.add_argument('--out', required=True, help='output directory (results.json, report.md, sweep.png, runs/)')
  parser.add_argument('--methods', default=','.join(DEFAULT_METHODS), help=f'comma-separated, from {list(METHOD_CONFIGS)}')
  parser.add_argument('--param', default='temperature', help=f'the hyperparameter swept, one of {SWEEPABLE}')
  parser.add_argument('--values', type=_floats, default=None,
                      help='comma-separated values; default for temperature: ' + ','.join(map(str, DEFAULT_VALUES['temperature'])))
  parser.add_argument('--seeds', type=int, default=3, help='pretraining seeds per value (>= 2)')
  parser.add_argument('--seed', type=int, default=0, help='the first seed: seeds SEED..SEED+K-1')
  parser.add_argument('--steps', type=int, default=None, help="pretraining steps instead of the scale's")
  parser.add_argument('--reference', type=float, default=None,
                      help="the value the others are compared with; default the study's (temperature 0.07)")
  parser.add_argument('--data_dir', default='', help='TFDS data dir (default: OUT/tfds)')
  args = parser.parse_args(argv)
  if args.param not in DEFAULT_VALUES and args.values is None:
    parser.error(f'--param {args.param} needs --values')
  from ssl_jax import console, train
  from ssl_jax.workdir import lock
  console.quiet_libraries()
  import matplotlib
  matplotlib.use('Agg')
  command = 'python experiments/sweep.py ' + ' '.join(argv if argv is not None else sys.argv[1:])
  try:
    run_sweep(args.scale, args.out, methods=tuple(m for m in args.methods.split(',') if m), param=args.param,
              values=args.values, seeds=args.seeds, seed=args.seed, steps=args.steps, reference=args.reference,
              data_dir=args.data_dir, command=command)
  except train.PretrainingStopped as e:
    print(f'[sweep] stopped: {e}', file=sys.stderr)
    return e.exit_code
  except (ValueError, FileNotFoundError, lock.WorkdirBusyError) as e:
    print(f'[sweep] error: {e}', file=sys.stderr)
    return 1
  print(f"[sweep] report: {os.path.join(os.path.abspath(args.out), 'report.md')}")
  return 0


if __name__ == '__main__':
  sys.exit(main())
