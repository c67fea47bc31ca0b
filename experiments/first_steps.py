"""The first steps of SimCLR at the cpu scale, under treatments the field uses (issue 30, item 2).

For each treatment (`TREATMENTS`: overrides of SimCLR's cpu-scale config, on top of `--set`), pretrains 3 seeds as
members for `--steps` steps with every step logged and the kNN monitor every 50, into `OUT/<treatment>/`, and
prints per treatment (mean over the seeds): the cosine of positive and of negative pairs at step 1, the lowest
`embedding_std` (the collapse monitor; 1/sqrt(256) = 0.0625 for spread unit vectors) and its step, the loss, the
instance accuracy and the kNN accuracies at the last step. The warm-up is linear over `optim.warmup_epochs`
epochs of 175 steps, as in a cpu-scale run, so every step of it is the one a cpu-scale run takes; after it the
cosine decays over the short run. `ssl_jax.optim` caps a warm-up at the run's length, so a treatment whose
warm-up does not end before `--steps` is refused (it would test another warm-up than its name says). A rerun
reuses finished treatments.

  python -m ssl_jax.launch experiments/first_steps.py --out DIR [--steps 300] [--seeds 3]
      [--treatments base,warmup_3,...] [--set model.stem_stride=1 ...]
  python experiments/first_steps.py --report DIR[,DIR...]     # the table of finished runs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Mapping

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from configs import simclr  # noqa: E402
from experiments import study  # noqa: E402
from ssl_jax.workdir import layout  # noqa: E402

# name -> overrides of the cpu-scale SimCLR config (on top of --set).
TREATMENTS: dict[str, Mapping[str, Any]] = {
    'base': {},
    'input_rms': {'model.input_scaling': 'rms'},  # per-example input normalisation
    'projection_batch_norm': {'model.projection_norm': 'batch'},  # the projection standardised over the batch
    'warmup_0': {'optim.warmup_epochs': 0.0},
    'warmup_3': {'optim.warmup_epochs': 3.0},
    'lr_0.003': {'optim.learning_rate': 0.003},
    'lr_0.03': {'optim.learning_rate': 0.03},
}

def treatment_config(name: str, base: Mapping[str, Any], steps: int, seeds: int, data_dir: str):
  config = simclr.get_config('scale=cpu')
  study.apply_overrides(config, {**base, **TREATMENTS[name]})
  study.set_seeds(config, 0, seeds)
  config.data.data_dir = data_dir
  config.num_train_steps = steps
  config.log_every_steps = 1
  config.monitor.every_steps = 50
  config.checkpoint_every_steps = steps
  config.progress_bar = False
  from ssl_jax.data import pipeline
  warmup_steps = int(round(config.optim.warmup_epochs * pipeline.steps_per_epoch(config)))
  if warmup_steps >= steps:
    raise ValueError(f'treatment {name!r}: its warm-up of {warmup_steps} steps does not end within --steps {steps} '
                     '(ssl_jax.optim would shorten it to the run); run more steps')
  return config


def summarize(workdir: str, steps: int) -> dict[str, Any]:
  """The treatment's first-steps figures from `workdir/metrics.jsonl`, each the mean over members."""
  rows: dict[int, list[dict]] = {}
  with open(layout.metrics_path(workdir)) as f:
    for line in f:
      row = json.loads(line)
      rows.setdefault(row['step'], []).append(row)

  def mean(step, key):
    values = [r[key] for r in rows.get(step, []) if key in r]
    return float(np.mean(values)) if values else float('nan')

  train_steps = [s for s in sorted(rows) if 1 <= s <= steps and any('embedding_std' in r for r in rows[s])]
  stds = [mean(s, 'embedding_std') for s in train_steps]
  lowest = int(np.argmin(stds))
  return {'positive_similarity_step1': mean(1, 'positive_similarity'),
          'negative_similarity_step1': mean(1, 'negative_similarity'),
          'lowest_embedding_std': stds[lowest], 'lowest_embedding_std_step': train_steps[lowest],
          'embedding_std_last': stds[-1], 'loss_last': mean(train_steps[-1], 'loss'),
          'instance_accuracy_last': mean(train_steps[-1], 'instance_accuracy'),
          'knn_aoa_last': mean(train_steps[-1], 'monitor/knn_accuracy_aoa'),
          'knn_amc_last': mean(train_steps[-1], 'monitor/knn_accuracy_amc'),
          'knn_aoa_step0': mean(0, 'monitor/knn_accuracy_aoa'), 'knn_amc_step0': mean(0, 'monitor/knn_accuracy_amc'),
          'last_step': train_steps[-1]}


def table(summaries: Mapping[str, Mapping[str, Any]]) -> list[str]:
  """Markdown rows, one per `{label: summary}` (`summarize`'s figures)."""
  lines = ['| run | cosine at step 1: positives / negatives | lowest embedding_std (step) | embedding_std, last | '
           'loss, last | instance accuracy, last | kNN AoA / AMC: step 0 -> last |', '|---|---|---|---|---|---|---|']
  for label, s in summaries.items():
    lines.append(f"| {label} | {s['positive_similarity_step1']:.3f} / {s['negative_similarity_step1']:.3f} | "
                 f"{s['lowest_embedding_std']:.4f} ({s['lowest_embedding_std_step']}) | {s['embedding_std_last']:.4f} | "
                 f"{s['loss_last']:.2f} | {s['instance_accuracy_last']:.3f} | {s['knn_aoa_step0']:.3f} / "
                 f"{s['knn_amc_step0']:.3f} -> {s['knn_aoa_last']:.3f} / {s['knn_amc_last']:.3f} |")
  return lines


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', help='output directory (one workdir per treatment, summary.json)')
  parser.add_argument('--report', default='', help='print the table of these output directories and stop')
  parser.add_argument('--steps', type=int, default=300)
  parser.add_argument('--seeds', type=int, default=3)
  parser.add_argument('--treatments', default=','.join(TREATMENTS))
  parser.add_argument('--data_dir', default='', help='TFDS data dir (default: OUT/tfds)')
  parser.add_argument('--set', action='append', metavar='KEY=VALUE', dest='overrides',
                      help='a config key for every treatment (the encoder layout, say), as experiments/study.py')
  args = parser.parse_args()
  if args.report:
    rows = {}
    for out in args.report.split(','):
      saved = json.load(open(os.path.join(out, 'summary.json')))
      settings = ', '.join(f'{k}={v}' for k, v in (saved['overrides'] or {}).items()) or 'defaults'
      rows.update({f'{name} ({settings})': summary for name, summary in saved['treatments'].items()})
    print('\n'.join(table(rows)))
    return
  if not args.out:
    parser.error('--out DIR is required (or --report DIR)')
  names = args.treatments.split(',')
  unknown = [n for n in names if n not in TREATMENTS]
  if unknown:
    parser.error(f'unknown --treatments {unknown}; known: {list(TREATMENTS)}')
  base = study.parse_overrides(args.overrides)
  from ssl_jax import console, train
  console.quiet_libraries()
  data_dir = args.data_dir or os.path.join(args.out, 'tfds')
  summaries = {}
  for name in names:
    workdir = os.path.join(args.out, name)
    config = treatment_config(name, base, args.steps, args.seeds, data_dir)
    if not os.path.exists(layout.checkpoint_dir(workdir, args.steps)):
      train.pretrain(config, workdir)
    summaries[name] = summarize(workdir, args.steps)
    print(f'{name}: ' + ', '.join(f'{k} {v:.4g}' for k, v in summaries[name].items()), flush=True)
  with open(os.path.join(args.out, 'summary.json'), 'w') as f:
    json.dump({'overrides': base, 'steps': args.steps, 'seeds': args.seeds, 'treatments': summaries}, f, indent=1)


if __name__ == '__main__':
  main()
