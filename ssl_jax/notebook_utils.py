"""Helpers for the notebooks in `experiments/notebooks/`: devices, batch sharding, loss plot, tables, report.

The notebooks stay thin: they take their configs from `configs/` (`configs/<method>.py:scale=<scale>`, the
study's scales), run `ssl_jax.train.pretrain` or `experiments/study.py`, and call these helpers to show
what happened. Nothing here imports the checkout's `configs/` or `experiments/`.
"""

import os
import re
from typing import Any, Mapping, Sequence


def device_summary() -> dict[str, Any]:
  """The accelerators JAX sees: backend ('tpu', 'gpu' or 'cpu'), counts and one line per device."""
  import jax  # Local: importing this module must not initialise a backend.
  return {
      'backend': jax.default_backend(),
      'device_count': jax.device_count(),
      'local_device_count': jax.local_device_count(),
      'process_count': jax.process_count(),
      'devices': [f'{d.platform}:{d.id} {d.device_kind}' for d in jax.devices()],
  }


def format_devices(summary: Mapping[str, Any]) -> str:
  """`device_summary()` as a few printable lines."""
  lines = [f"backend {summary['backend']}: {summary['device_count']} device(s) over "
           f"{summary['process_count']} process(es)"]
  lines += [f'  {d}' for d in summary['devices']]
  return '\n'.join(lines)


def round_up_to_multiple(value: int, multiple: int) -> int:
  """The smallest multiple of `multiple` that is >= `value` (both >= 1)."""
  if value < 1:
    raise ValueError(f'value must be >= 1, got {value}')
  if multiple < 1:
    raise ValueError(f'multiple must be >= 1, got {multiple}')
  return -(-value // multiple) * multiple


def loss_curve(records: Sequence[Mapping[str, Any]]) -> tuple[list[int], list[float]]:
  """(steps, losses) of the records of `ssl_jax.workdir.metrics.read_metrics` that carry a loss."""
  steps, losses = [], []
  for record in records:
    if 'loss' in record:
      steps.append(int(record['step']))
      losses.append(float(record['loss']))
  if not steps:
    raise ValueError('no record with a "loss" key: has the run logged any step?')
  return steps, losses


def plot_loss(records: Sequence[Mapping[str, Any]], *, title: str = '', ax=None):
  """Line plot of the pretraining loss over steps; returns the matplotlib Axes."""
  import matplotlib.pyplot as plt
  steps, losses = loss_curve(records)
  if ax is None:
    _, ax = plt.subplots(figsize=(6, 3.5))
  ax.plot(steps, losses, marker='o', markersize=3)
  ax.set_xlabel('step')
  ax.set_ylabel('contrastive loss')
  ax.set_title(title or 'pretraining loss')
  ax.grid(alpha=0.3)
  return ax


def _cell(scores: Mapping[str, Any], key: str, percent: bool) -> str:
  if 'skipped' in scores:
    return 'skipped'
  value = scores[key]
  scale = 100.0 if percent else 1.0
  return f"{value['mean'] * scale:.1f} ± {value['std'] * scale:.1f}"


def probe_table(evaluations: Mapping[str, Mapping[str, Any]]) -> str:
  """A markdown table of probe results: one row per (task, budget), one column per encoder.

  Args:
    evaluations: `{encoder name: evaluate_encoder(...) result}`.

  Returns:
    Markdown; cells are accuracy % mean ± std over seeds (AoA also mean absolute error in degrees).
  """
  if not evaluations:
    raise ValueError('evaluations is empty')
  names = list(evaluations)
  first = evaluations[names[0]]
  header = ['task', 'labels / class', 'metric'] + names
  rows = []
  for task, task_results in first['tasks'].items():
    metrics = [('accuracy', 'accuracy %', True)] + ([('mae_deg', 'MAE deg', False)] if task == 'aoa' else [])
    for budget in task_results['probe']:
      for key, label, percent in metrics:
        cells = [_cell(evaluations[n]['tasks'][task]['probe'][budget], key, percent) for n in names]
        rows.append([task, budget, label] + cells)
    silhouettes = [evaluations[n]['tasks'][task].get('silhouette') for n in names]
    rows.append([task, 'test', 'silhouette'] +
                ['undefined' if s is None else f'{s:.3f}' for s in silhouettes])
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
  return '\n'.join(lines)


def report_markdown(out_dir: str) -> str:
  """`out_dir/report.md` without its image lines (a notebook shows the PNGs itself: relative links break)."""
  path = os.path.join(out_dir, 'report.md')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} does not exist: has the study run into {out_dir!r}?')
  with open(path) as f:
    lines = f.read().splitlines()
  return '\n'.join(line for line in lines if not re.match(r'\s*!\[[^\]]*\]\([^)]*\)\s*$', line))


def report_figures(out_dir: str) -> list[str]:
  """The PNG files the study wrote into `out_dir`, sorted by name."""
  if not os.path.isdir(out_dir):
    raise FileNotFoundError(f'{out_dir!r} is not a directory')
  return sorted(os.path.join(out_dir, f) for f in os.listdir(out_dir) if f.endswith('.png'))
