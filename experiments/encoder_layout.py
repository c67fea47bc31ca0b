"""The encoder's layout chosen by evidence (issue 30): the supervised screen of candidate layouts.

Trains every candidate layout of the 1-D ShuffleNetV2 0.5 (`CANDIDATES`: the stem, the depthwise kernels,
the input scaling; and torchvision's 2-D view of an example) plus the task's head end to end on 100 simulated
labels per class, with the supervised baseline's recipe (`configs/probe.py`: SGD, lr 0.03125, 30 epochs), for
every seed, and writes each run's train and test accuracy, its parameter count and its time to
`OUT/results.json` (after each run; a rerun skips the runs already there). The decision rule and the table:
docs/design.md ("The encoder's layout") and experiments/results/encoder_layout/README.md.

  python experiments/encoder_layout.py --out DIR [--length 128] [--seeds 0,1,2] [--task amc]
      [--candidates v1,stem_s1_pool,...]
  python experiments/encoder_layout.py --report SCREEN_DIR [--studies NAME=STUDY_DIR,...]
  python -m ssl_jax.launch experiments/encoder_layout.py --time [--candidates ...] [--rounds 5]

`--report` prints the tables of `experiments/results/encoder_layout/README.md`: per candidate, task and length the
mean test accuracy with its 95% t-interval and the paired difference from `v1`; with `--studies` (each a
`experiments/study.py --scale cpu --methods simclr --no_ablation --set ...` output, named by candidate) SimCLR
against the random-init encoder of the same layout per seed, and the online kNN monitor's curve.
`--time` times SimCLR's train step at the cpu scale's batch (128, both views of length 128) for each candidate
in one process, interleaved over `--rounds`, and prints each one's median step time and its ratio to `v1`'s.

Data: seed s simulates its train split (100 per class, generator seed 1000 + s) and test split (200 per
class for AMC, 20 for AoA; generator seed 2000 + s) with the default `SimConfig` at `--length`; every
candidate of seed s sees the same examples, so candidates are compared paired over the seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Mapping

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from configs import probe as probe_config  # noqa: E402
from ssl_jax import models  # noqa: E402
from ssl_jax.data import aoam, simulate  # noqa: E402
from ssl_jax.evaluation import supervised  # noqa: E402
from ssl_jax.models import layers, shufflenet  # noqa: E402
from ssl_jax.workdir import layout  # noqa: E402


class TorchvisionView2D(nn.Module):
  """ShuffleNetV2 0.5 as torchvision's 2-D network sees a 4 x 2 x L example: an image of height 4
  (antennas), width L (time), with I and Q as its 2 channels.

  The stem is a 3 x 3 conv of stride 2 and a 3 x 3 max-pool of stride 2, both padded by 1: the antenna axis
  goes 4 -> 2 -> 1. On a map of height 1 every later 3 x 3 depthwise kernel (padding 1) uses its middle row
  alone, so the units are the 1-D units with 3-tap kernels: after the stem this is the 1-D network.
  """

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    shufflenet.validate_input(x)
    batch, length, _ = x.shape
    image = x.reshape(batch, length, 4, 2).transpose(0, 2, 1, 3)  # (batch, antenna, time, I/Q)
    y = nn.Conv(shufflenet.STAGE_OUT_CHANNELS[0], (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                use_bias=False, name='stem_conv')(image)
    y = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, name='stem_bn')(y))
    y = nn.max_pool(jnp.pad(y, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf), (3, 3), (2, 2))
    if y.shape[1] != 1:
      raise AssertionError(f'the antenna axis should be 1 after the stem, got {y.shape}')
    y = y[:, 0]
    channels = shufflenet.STAGE_OUT_CHANNELS
    for stage_index, (repeats, out_channels) in enumerate(zip(shufflenet.STAGE_REPEATS, channels[1:4])):
      for unit_index in range(repeats):
        y = shufflenet.ShuffleUnit(out_channels, stride=2 if unit_index == 0 else 1,
                                   name=f'stage{stage_index + 2}_unit{unit_index}')(y, train)
    y = layers.Conv1D(channels[4], name='final_conv')(y)
    y = layers.BatchNorm(use_running_average=not train, relu=True, name='final_bn')(y)
    return jnp.mean(y, axis=1)


# name -> ShuffleNetV2Encoder attributes (None: TorchvisionView2D). The total stride before stage 2 and the
# depthwise taps are what differ; `v1` is the layout ssl_jax ran until issue 30.
CANDIDATES: dict[str, Mapping[str, Any] | None] = {
    'v1': {},  # stem conv k3 s2 + max-pool s2 (stride 4 before any unit), 3-tap depthwise
    'torchvision_2d': None,  # torchvision's 2-D view (above)
    'v1_dw9': {'dw_kernel': 9},  # 9 taps, as many as a 3 x 3 kernel
    'stem_s1_pool': {'stem_stride': 1},  # stem at full resolution, pooled after its first features (stride 2)
    'stem_s1_pool_dw9': {'stem_stride': 1, 'dw_kernel': 9},
    'stem_s1_pool_rms': {'stem_stride': 1, 'input_scaling': 'rms'},  # each example scaled to unit RMS
    'stem_s1_nopool': {'stem_stride': 1, 'stem_pool': False},  # no downsampling before stage 2
    'stem_s1_nopool_dw9': {'stem_stride': 1, 'stem_pool': False, 'dw_kernel': 9},
    # Second round, added after the first round's seeds 0 and 1 (docs/design.md): each stage's stride-2 unit
    # downsamples by a max-pool at the end of each branch instead of its strided depthwise convs.
    'v1_unitpool': {'unit_downsample': 'pool'},
    'stem_s1_pool_unitpool': {'stem_stride': 1, 'unit_downsample': 'pool'},
    'stem_s1_nopool_unitpool': {'stem_stride': 1, 'stem_pool': False, 'unit_downsample': 'pool'},
}

TASKS = {'amc': (simulate.NUM_MODULATIONS, 0, 200), 'aoa': (simulate.NUM_AOA_CLASSES, 512, 20)}  # classes,
# the probe head's hidden width (configs/probe.py), test examples per class


def build(name: str) -> nn.Module:
  attributes = CANDIDATES[name]
  return TorchvisionView2D() if attributes is None else shufflenet.ShuffleNetV2Encoder(**attributes)


def split(length: int, per_class: int, num_classes: int, seed: int, first: int, task: str):
  """`(x (n, length, 8), labels)`: `per_class` examples of each class of `task` from the default simulator."""
  config = simulate.SimConfig(length=length)
  total = per_class * num_classes
  aoa, modulation = simulate.label_schedule(first, total)
  iq = simulate.simulate_examples(np.random.default_rng(seed), aoa, modulation, config)
  labels = modulation if task == 'amc' else aoa
  return aoam.to_model_layout(iq), labels.astype(np.int32)


def run_one(name: str, task: str, length: int, seed: int, per_class: int) -> dict[str, Any]:
  num_classes, hidden_dim, test_per_class = TASKS[task]
  # AMC: 100 per class = 700 examples; label_schedule cycles modulations within AoA classes, so an AMC split
  # of n examples is the schedule's first n. AoA: 100 per class = 22,500 examples.
  n_train = per_class * num_classes
  x_train, y_train = split(length, per_class, num_classes, 1000 + seed, 0, task)
  x_test, y_test = split(length, test_per_class, num_classes, 2000 + seed, n_train, task)
  protocol = probe_config.get_config().supervised
  settings = supervised.SupervisedSettings.from_config(ml_collections.ConfigDict(
      {k: v for k, v in protocol.items() if k not in ('enabled', 'budgets', 'num_seeds')}))
  encoder = build(name)
  t0 = time.perf_counter()
  model, variables, info = supervised.train_supervised(encoder, x_train, y_train, num_classes=num_classes,
                                                       hidden_dim=hidden_dim, settings=settings, seed=seed)
  seconds = time.perf_counter() - t0
  train_pred = supervised.predict(model, variables, [x_train[:2000]], batch_size=256)
  test_pred = supervised.predict(model, variables, [x_test], batch_size=256)
  encoder_params = models.count_params(variables['params']['encoder'])
  return {'candidate': name, 'task': task, 'length': length, 'seed': seed, 'per_class': per_class,
          'train_accuracy': float(np.mean(train_pred == y_train[:2000])),
          'test_accuracy': float(np.mean(test_pred == y_test)), 'encoder_params': encoder_params,
          'steps': info['num_steps'], 'final_loss': info['final_loss'], 'train_seconds': seconds}


def _interval(values) -> str:
  from ssl_jax.evaluation import intervals
  summary = intervals.t_interval(values)
  low, high = summary['ci95']
  return f"{summary['mean']:.3f} [{low:.3f}, {high:.3f}]"


def _difference(interval: Mapping[str, Any]) -> str:
  low, high = interval['ci95']
  return f"{interval['mean']:+.3f} [{low:+.3f}, {high:+.3f}]"


def screen_table(runs: list[Mapping[str, Any]], reference: str = 'v1') -> list[str]:
  """Markdown rows: candidate x (task, length) -> test accuracy per seed, mean [95% CI], paired difference from
  `reference` [95% CI] with its verdict, train accuracy, encoder parameters, median train seconds."""
  from experiments import study_report
  lines = ['| candidate | task | L | test accuracy per seed | mean [95% CI] | minus v1 [95% CI] | verdict | train | '
           'params | s / run |', '|---|---|---|---|---|---|---|---|---|---|']
  groups = sorted({(r['task'], r['length'], r['per_class']) for r in runs})
  for task, length, per_class in groups:
    by_candidate: dict[str, dict[int, Mapping[str, Any]]] = {}
    for r in runs:
      if (r['task'], r['length'], r['per_class']) == (task, length, per_class):
        by_candidate.setdefault(r['candidate'], {})[r['seed']] = r
    base = by_candidate.get(reference, {})
    for name in [n for n in CANDIDATES if n in by_candidate]:
      seeds = sorted(by_candidate[name])
      tests = [by_candidate[name][k]['test_accuracy'] for k in seeds]
      paired = [k for k in seeds if k in base]
      difference, verdict = '', ''
      if name != reference and len(paired) >= 2:
        interval = study_report.paired_difference([by_candidate[name][k]['test_accuracy'] for k in paired],
                                                  [base[k]['test_accuracy'] for k in paired])
        difference = _difference(interval)
        verdict = study_report.verdict(interval)
      mean = _interval(tests) if len(tests) >= 2 else f'{tests[0]:.3f}'
      train = np.mean([by_candidate[name][k]['train_accuracy'] for k in seeds])
      seconds = np.median([by_candidate[name][k]['train_seconds'] for k in seeds])
      lines.append(f"| {name} | {task} | {length} | {' / '.join(f'{t:.3f}' for t in tests)} | {mean} | {difference} "
                   f"| {verdict} | {train:.3f} | {by_candidate[name][seeds[0]]['encoder_params']:,} | {seconds:.0f} |")
  return lines


def knn_curve(workdir: str) -> dict[int, dict[str, list[float]]]:
  """`{step: {task: [member values]}}` of the online kNN monitor in `workdir/metrics.jsonl`."""
  curve: dict[int, dict[str, list[float]]] = {}
  with open(layout.metrics_path(workdir)) as f:
    for line in f:
      row = json.loads(line)
      for task in ('aoa', 'amc'):
        key = f'monitor/knn_accuracy_{task}'
        if key in row:
          curve.setdefault(row['step'], {}).setdefault(task, []).append(row[key])
  return curve


def study_tables(studies: Mapping[str, str]) -> list[str]:
  """Markdown rows: per layout, SimCLR (MTC + AD) minus the random-init encoder of the same layout, per seed and
  paired [95% CI], at each budget of both tasks; then the kNN monitor at its first, middle and last steps."""
  from experiments import study_report
  lines = ['| layout | task | labels per class | SimCLR | random init | SimCLR minus random init, per seed | paired '
           '[95% CI] | verdict | pretraining s |', '|---|---|---|---|---|---|---|---|---|']
  curves = {}
  for name, out in studies.items():
    results = json.load(open(os.path.join(out, 'results.json')))
    seconds = results['timing_s'].get('pretrain_simclr_aug', float('nan'))
    for task in ('aoa', 'amc'):
      for budget in results['probe_config']['budgets']:
        simclr = study_report.seed_scores(results, 'simclr_aug', task, budget)
        random = study_report.seed_scores(results, 'random_init', task, budget)
        interval = study_report.paired_difference(simclr, random)
        lines.append(f"| {name} | {task} | {budget} | {_interval(simclr)} | {_interval(random)} | "
                     f"{' / '.join(f'{a - b:+.3f}' for a, b in zip(simclr, random))} | {_difference(interval)} | "
                     f"{study_report.verdict(interval)} | "
                     f'{seconds:.0f} |')
    curves[name] = knn_curve(os.path.join(out, 'runs', 'simclr_aug'))
  lines += ['', '| layout | kNN monitor, step: AoA (min..max over seeds) / AMC |', '|---|---|']
  for name, curve in curves.items():
    steps = sorted(curve)
    shown = [steps[0], steps[len(steps) // 4], steps[len(steps) // 2], steps[-1]]
    lines.append(f'| {name} | ' + '; '.join(
        f"{step}: {min(curve[step]['aoa']):.3f}..{max(curve[step]['aoa']):.3f} / "
        f"{min(curve[step]['amc']):.3f}..{max(curve[step]['amc']):.3f}" for step in shown) + ' |')
  return lines


# The cells of the decision rule (docs/design.md, "The encoder's layout"): both tasks at 10 and 100 per class.
DECISION_CELLS = (('aoa', 10), ('aoa', 100), ('amc', 10), ('amc', 100))


def probe_scores(results: Mapping[str, Any]) -> dict[str, dict[str, dict[str, list[float]]]]:
  """`{run: {task: {budget: [accuracy per seed]}}}` of SimCLR and the random-init encoder in a study's results."""
  from experiments import study_report
  return {run: {task: {str(b): study_report.seed_scores(results, run, task, b)
                       for b in results['probe_config']['budgets']} for task in ('aoa', 'amc')}
          for run in ('simclr_aug', 'random_init')}


def four_cell_margins(scores: Mapping[str, Any]) -> list[float]:
  """Per seed, SimCLR's mean margin over the random-init encoder across `DECISION_CELLS` (`probe_scores`)."""
  per_cell = [np.subtract(scores['simclr_aug'][task][str(budget)], scores['random_init'][task][str(budget)])
              for task, budget in DECISION_CELLS]
  return [float(v) for v in np.mean(per_cell, axis=0)]


def decision_table(scores: Mapping[str, Mapping[str, Any]]) -> list[str]:
  """Markdown rows: per study (`{name: probe_scores}`) its four-cell margin per seed and mean [95% CI], and its
  paired difference [95% CI] from the study with the largest mean: the decision rule's comparisons."""
  from experiments import study_report
  margins = {name: four_cell_margins(study) for name, study in scores.items()}
  lines = ['| study | four-cell margin per seed | mean [95% CI] | minus the largest [95% CI] | verdict |',
           '|---|---|---|---|---|']
  best = max(margins, key=lambda name: np.mean(margins[name]))
  for name, values in margins.items():
    difference = verdict = ''
    if name != best:
      interval = study_report.paired_difference(values, margins[best])
      low, high = interval['ci95']
      difference = _difference(interval)
      verdict = 'below, resolved' if high < 0 else 'not resolved at this scale' if low <= 0 else 'above'
    lines.append(f"| {name} | {' / '.join(f'{v:+.3f}' for v in values)} | {_interval(values)} | {difference} | "
                 f'{verdict} |')
  return lines


def collect(path: str, runs: list[Mapping[str, Any]], studies: Mapping[str, str], first_steps_dirs: list[str]) -> None:
  """Writes `path` (results.json): the screen's runs, per pretraining study its per-seed probe accuracies of
  SimCLR and of the random-init encoder, its supervised baseline, timing and kNN curve, and the first-steps
  summaries (`experiments/first_steps.py`'s summary.json, by directory name)."""
  from experiments import study_report
  pretraining = {}
  for name, out in studies.items():
    results = json.load(open(os.path.join(out, 'results.json')))
    scores = probe_scores(results)
    supervised = {task: {str(b): study_report.seed_scores(results, 'supervised', task, b)
                         for b in results['probe_config']['supervised']['budgets']} for task in ('aoa', 'amc')}
    pretraining[name] = {'overrides': results.get('overrides'), 'probe_accuracy_per_seed': scores,
                         'supervised_accuracy_per_seed': supervised, 'timing_s': results['timing_s'],
                         'knn_monitor': {str(step): v for step, v in knn_curve(os.path.join(out, 'runs', 'simclr_aug')).items()}}
  first = {os.path.basename(os.path.normpath(d)): json.load(open(os.path.join(d, 'summary.json'))) for d in first_steps_dirs}
  with open(path, 'w') as f:
    json.dump({'screen': runs, 'pretraining': pretraining, 'first_steps': first}, f, indent=1)


def time_pretraining(names: list[str], rounds: int, steps: int = 5) -> list[str]:
  """Markdown rows: candidate -> SimCLR step ms at batch 128, views of 128 (median over `rounds` interleaved
  rounds of `steps` steps each, with the range of the rounds' medians) and the ratio to `v1`'s median."""
  from experiments import bench_train_step
  timers = {}
  for name in names:
    if CANDIDATES[name] is None:
      continue  # the 2-D view is a screening model only, not a config.model layout
    timers[name] = bench_train_step.prepare('simclr', 128, 128, [(128, 128)], dict(CANDIDATES[name]))[0]
  medians: dict[str, list[float]] = {name: [] for name in timers}
  for _ in range(rounds):
    for name, timer in timers.items():
      medians[name].append(float(np.median(timer(steps)[0])))
  base = np.median(medians['v1']) if 'v1' in medians else float('nan')
  lines = ['| candidate | SimCLR step ms (batch 128, views of 128) | range of rounds | ratio to v1 |', '|---|---|---|---|']
  for name, values in medians.items():
    lines.append(f'| {name} | {1e3 * np.median(values):.0f} | {1e3 * min(values):.0f}-{1e3 * max(values):.0f} | '
                 f'{np.median(values) / base:.2f} |')
  return lines


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', help='the screen\'s output directory (results.json)')
  parser.add_argument('--report', default='', help='print the tables of this screen directory and --studies')
  parser.add_argument('--studies', default='', help='NAME=STUDY_DIR,... for --report')
  parser.add_argument('--first_steps', default='', help='first_steps.py output dirs, comma-separated, for --write')
  parser.add_argument('--write', default='', help='with --report: also write every number to this results.json')
  parser.add_argument('--time', action='store_true', help="time SimCLR's step for each of --candidates")
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--length', type=int, default=128)
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--task', choices=tuple(TASKS), default='amc')
  parser.add_argument('--per_class', type=int, default=100)
  parser.add_argument('--candidates', default=','.join(CANDIDATES))
  args = parser.parse_args()
  if args.report:
    runs = [r for d in args.report.split(',') for r in json.load(open(os.path.join(d, 'results.json')))['runs']]
    studies = dict(pair.split('=', 1) for pair in args.studies.split(',')) if args.studies else {}
    print('\n'.join(screen_table(runs)))
    if studies:
      print()
      print('\n'.join(study_tables(studies)))
      print()
      print('\n'.join(decision_table({name: probe_scores(json.load(open(os.path.join(out, 'results.json'))))
                                       for name, out in studies.items()})))
    if args.write:
      collect(args.write, runs, studies, [d for d in args.first_steps.split(',') if d])
    return
  names = args.candidates.split(',')
  unknown = [n for n in names if n not in CANDIDATES]
  if unknown:
    parser.error(f'unknown --candidates {unknown}; known: {list(CANDIDATES)}')
  if args.time:
    print('\n'.join(time_pretraining(names, args.rounds)))
    return
  if not args.out:
    parser.error('--out DIR is required (or --report DIR, or --time)')
  seeds = [int(s) for s in args.seeds.split(',')]
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, 'results.json')
  runs = json.load(open(path))['runs'] if os.path.exists(path) else []
  done = {(r['candidate'], r['task'], r['length'], r['seed'], r['per_class']) for r in runs}
  for seed in seeds:
    for name in names:
      if (name, args.task, args.length, seed, args.per_class) in done:
        continue
      run = run_one(name, args.task, args.length, seed, args.per_class)
      runs.append(run)
      print(f"{name:22s} {args.task} L={args.length} seed {seed}: train {run['train_accuracy']:.3f} test "
            f"{run['test_accuracy']:.3f} ({run['encoder_params']} params, {run['train_seconds']:.0f} s)", flush=True)
      tmp = path + '.tmp'
      with open(tmp, 'w') as f:
        json.dump({'runs': runs}, f, indent=1)
      os.replace(tmp, path)


if __name__ == '__main__':
  main()
