"""What the notebooks in `experiments/notebooks/` need beyond the library: the checkout, devices, configs, tables.

The notebooks stay thin: they call these helpers, `ssl_jax.train.train_and_evaluate` and
`ssl_jax.evaluation.evaluate_encoder`. Scales (`smoke`, `demo`, `cpu`, `full`) are the study's
(`experiments/study.py`), so a notebook run at a scale pretrains exactly what the study would; the only
change is the global batch, rounded up to a multiple of `jax.device_count()` so it shards over every
device (8 TPU cores on a Colab TPU runtime, 1 CPU locally).
"""

import importlib
import os
import re
import sys
from types import ModuleType
from typing import Any, Mapping, Sequence

import ml_collections

# Where the notebooks' Colab cell clones ssl_jax from; replace with the repository's address.
REPO_URL_PLACEHOLDER = 'https://github.com/YOUR_ORG/ssl_jax.git'


def in_colab() -> bool:
  """True inside a Google Colab runtime (its module is imported before any user code)."""
  return 'google.colab' in sys.modules


def _is_checkout(path: str) -> bool:
  return all(os.path.exists(os.path.join(path, p)) for p in ('configs', 'experiments', 'ssl_jax'))


def repo_root(start: str | None = None) -> str:
  """The ssl_jax checkout (holds configs/, experiments/, ssl_jax/).

  Looked for at the installed package's parent (an editable install, as the notebooks' Colab cell makes)
  and then from `start` (default: the working directory) upwards.

  Raises:
    FileNotFoundError: no checkout found; the message says how to get one.
  """
  candidates = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
  path = os.path.abspath(start or os.getcwd())
  while True:
    candidates.append(path)
    parent = os.path.dirname(path)
    if parent == path:
      break
    path = parent
  for candidate in candidates:
    if _is_checkout(candidate):
      return candidate
  raise FileNotFoundError(
      f'no ssl_jax checkout (configs/, experiments/, ssl_jax/) at the installed package or above '
      f'{os.path.abspath(start or os.getcwd())!r}; clone the repository and `pip install -e` it.')


def import_study(root: str | None = None) -> ModuleType:
  """`experiments/study.py` of the checkout, imported as `experiments.study` (scales, `run_study`)."""
  root = root or repo_root()
  if root not in sys.path:
    sys.path.insert(0, root)
  import matplotlib
  chosen = matplotlib.rcParams._get_backend_or_none() or os.environ.get('MPLBACKEND')  # pylint: disable=protected-access
  module = importlib.import_module('experiments.study')
  if chosen and matplotlib.get_backend().lower() != chosen.lower():
    _restore_backend(chosen)  # If an import switched backends (the study CLI picks Agg), a notebook keeps its own.
  return module


def _restore_backend(backend: str) -> None:
  """Switches matplotlib back to `backend`; in IPython, inline plotting is re-enabled through its magic."""
  import matplotlib
  try:
    from IPython import get_ipython
    shell = get_ipython()
  except ImportError:
    shell = None
  if shell is not None and 'inline' in backend:
    shell.run_line_magic('matplotlib', 'inline')  # Also registers the PNG display of figures.
  else:
    matplotlib.use(backend)


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


def pretrain_config(method: str, scale: str, *, data_dir: str = '', augment: bool = True,
                    device_count: int | None = None) -> ml_collections.ConfigDict:
  """The study's pretraining config of `method` at `scale`, its batch sharding over every device.

  Args:
    method: 'simclr', 'moco' (v2, the study's) or 'moco_v3'.
    scale: one of the study's scales ('smoke', 'demo', 'cpu', 'full').
    data_dir: TFDS data dir for the simulated AoAM ('' -> ~/tensorflow_datasets).
    augment: False gives the study's no-augmentation ablation.
    device_count: devices the batch is split over (default `jax.device_count()`).
  """
  study = import_study()
  if method not in study.METHOD_CONFIGS:
    raise ValueError(f'method must be one of {sorted(study.METHOD_CONFIGS)}, got {method!r}')
  if scale not in study.SCALES:
    raise ValueError(f'scale must be one of {study.SCALES}, got {scale!r}')
  if device_count is None:
    import jax
    device_count = jax.device_count()
  config = study.pretrain_config(method, augment, scale)
  config.data.data_dir = data_dir
  config.batch_size = round_up_to_multiple(config.batch_size, device_count)
  return config


def probe_config(scale: str) -> ml_collections.ConfigDict:
  """The study's probe settings at `scale`, without the (slow) supervised baseline."""
  study = import_study()
  if scale not in study.SCALES:
    raise ValueError(f'scale must be one of {study.SCALES}, got {scale!r}')
  config = study.probe_config(scale)
  config.supervised.enabled = False
  return config


def loss_curve(records: Sequence[Mapping[str, Any]]) -> tuple[list[int], list[float]]:
  """(steps, losses) of the records of `metrics_writer.read_metrics` that carry a loss."""
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
