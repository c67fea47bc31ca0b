"""Does a whole pretraining run in JAX give the results of the torch baseline? Outcomes, K seeds per method.

For each method (SimCLR, MoCo v2) and seed s = 0..K-1, both frameworks train from the same initial weights
(the Flax init of `config.seed = s`, converted to torch; MoCo's queue too) on the same data order
(`ssl_jax.data.pipeline.pretrain_batches` of seed s) and the same views (the ones ssl_jax's step makes,
`torch_baseline.side_by_side.jax_views`):

  jax    ssl_jax's own train loop (`ssl_jax.train.pretrain`), metrics with the online kNN monitor;
  torch  the torch baseline (`experiments/torch_baseline/train.py`) stepping through the same batches; its
         loss, collapse monitor (embedding std of view a's projections) and the same kNN monitor (its encoder
         converted to Flax at each measurement) logged at the same steps.

The torch encoder is then written as a Flax workdir (`torch_baseline/convert.py`) and both are probed by the
same code (`ssl_jax.evaluate.run`, the scale's probe config, probe seed 0: the same label sets for both).

Per method, task and budget the report gives the paired difference JAX - torch (seed by seed: same init,
same data), its mean and 95% t-interval over the K seeds, the seed-to-seed spread (the standard deviation
over seeds of one framework's accuracy, pooled over both), and a verdict: 'equivalent' when the whole
interval lies within +- that spread, 'different' when it excludes 0 and its mean is beyond the spread,
else 'inconclusive'. For MoCo v2, the step where each run's embedding std first falls below
`COLLAPSE_STD` (the study's MoCo v2 collapses from ~0.03 to ~0.005 within 100 steps at the cpu scale).

  python experiments/reproduce_torch.py --scale cpu --steps 300 --seeds 3 --out runs/reproduce_torch

Writes OUT/report.md, OUT/results.json, OUT/curves.png; the runs under OUT/runs/ (a rerun reuses the finished
ones).
"""

import argparse
import json
import math
import os
import sys
import time
import types
from typing import Any, Sequence

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from ssl_jax.workdir import layout  # noqa: E402

METHODS = ('simclr', 'moco')
COLLAPSE_STD = 0.01  # embedding std below this: collapsed (healthy ~1/sqrt(256) = 0.06 at init here)
CURVES = (('loss', 'loss'), ('embedding_std', 'embedding std (collapse monitor)'),
          ('monitor/knn_accuracy_aoa', 'kNN accuracy, AoA'), ('monitor/knn_accuracy_amc', 'kNN accuracy, AMC'))


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--scale', default='cpu', help='smoke, demo or cpu (configs/scales.py)')
  parser.add_argument('--steps', type=int, default=0, help='pretraining steps; 0: the scale\'s')
  parser.add_argument('--seeds', type=int, default=3, help='K: seeds per method and framework (>= 2)')
  parser.add_argument('--methods', default=','.join(METHODS), help='comma-separated: simclr, moco')
  parser.add_argument('--log_every', type=int, default=0, help='steps between logged losses; 0: steps / 50')
  parser.add_argument('--out', default='runs/reproduce_torch')
  parser.add_argument('--data_dir', default='', help='TFDS data dir; empty: ~/tensorflow_datasets')
  args = parser.parse_args(argv)
  methods = tuple(m for m in args.methods.split(',') if m)
  if not methods or any(m not in METHODS for m in methods):
    parser.error(f'--methods must name some of {METHODS}, got {args.methods!r}')
  if args.seeds < 2:
    parser.error(f'--seeds must be >= 2 (a spread needs two seeds), got {args.seeds}')
  if args.scale not in ('smoke', 'demo', 'cpu'):
    parser.error(f'--scale must be smoke, demo or cpu, got {args.scale!r}')
  if args.steps < 0 or args.log_every < 0:
    parser.error('--steps and --log_every must be >= 0')
  args.methods = methods
  return args


def pretrain_config(method: str, scale: str, seed: int, steps: int, log_every: int, data_dir: str = ''):
  """The method's config at `scale` (seed, length, cadence set); the same for both frameworks."""
  from configs import METHOD_CONFIGS, scales
  config = METHOD_CONFIGS[method].get_config(f'scale={scale}')
  config.seed = seed
  config.data.data_dir = data_dir
  if steps:
    scales.set_steps(config, steps)
  config.log_every_steps = log_every or max(config.num_train_steps // 50, 1)
  config.monitor.every_steps = config.log_every_steps  # the kNN curves are part of the comparison, at any scale
  config.checkpoint_every_steps = config.num_train_steps
  config.progress_bar = False
  return config


def probe_config(scale: str):
  from configs import probe
  config = probe.get_config(f'scale={scale}')
  config.random_init = False
  config.supervised.enabled = False
  return config


# --- the torch run ---------------------------------------------------------------------------------------


def _embedding_std(z: np.ndarray) -> float:
  """`ssl_jax.methods.common.embedding_std` in NumPy: the mean per-dimension std of the unit projections."""
  u = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
  return float(np.mean(np.sqrt(np.maximum(np.mean(u * u, 0) - np.mean(u, 0) ** 2, 0.0))))


def train_torch(config, workdir: str) -> dict:
  """Trains the torch baseline as `ssl_jax.train.pretrain` trains JAX (same init, batches, views); writes
  WORKDIR/metrics.jsonl at the same steps and WORKDIR/flax (the encoder as a Flax workdir)."""
  import jax
  import torch
  from experiments.torch_baseline import convert, side_by_side
  from ssl_jax import monitor, parallel, periodic
  from ssl_jax.workdir import metrics
  from ssl_jax.data import pipeline
  from ssl_jax.methods import common

  os.makedirs(workdir, exist_ok=True)
  steps_per_epoch = pipeline.steps_per_epoch(config)
  num_steps = common.total_steps(config, steps_per_epoch)
  run = side_by_side.build_jax(config, num_steps, steps_per_epoch)  # the initial state ssl_jax.train builds
  trainer = side_by_side.build_torch(run, num_steps, steps_per_epoch)
  outputs: list[torch.Tensor] = []
  trainer.model.register_forward_hook(lambda module, inputs, output: outputs.append(output.detach()))
  online = monitor.OnlineMonitor.for_run(config, run_encoder(config), parallel.create_mesh())

  def watch(step: int) -> dict:
    if online is None:
      return {}
    params, stats = convert.model_to_flax(trainer.model.state_dict())
    state = types.SimpleNamespace(params=jax.tree.map(np.asarray, params),
                                  batch_stats=jax.tree.map(np.asarray, stats))
    return online.measure(step, state, num_steps)

  writer = metrics.MetricWriter(workdir, tensorboard=False)
  writer.write(0, watch(0))
  batches = pipeline.pretrain_batches(config.data, batch_size=config.batch_size, seed=config.seed, start_step=0,
                                      process_index=0, process_count=1, num_local_devices=1)
  start = time.perf_counter()
  for step in range(num_steps):
    x = next(batches)['iq']
    outputs.clear()
    loss, _ = side_by_side.torch_step(trainer, run, x, step)
    done = step + 1
    row = watch(done)
    if periodic.is_log_step(done, config.log_every_steps, num_steps):
      row.update(loss=loss, embedding_std=_embedding_std(outputs[0].numpy().astype(np.float64)))
    if row:
      writer.write(done, row)
    if not math.isfinite(loss):
      raise RuntimeError(f'torch run {workdir}: non-finite loss at step {done}')
  writer.close()
  convert.state_dict_to_workdir(trainer.model.encoder.state_dict(), config, os.path.join(workdir, 'flax'),
                                seed=config.seed)
  return {'seconds': time.perf_counter() - start, 'num_steps': num_steps}


def run_encoder(config):
  from ssl_jax import methods
  return methods.get_method(config.method).create_networks(config, bn_axis_name=None).encoder


# --- runs and probes -------------------------------------------------------------------------------------


def run_pair(args, method: str, seed: int) -> dict[str, dict]:
  """Trains (unless finished) and probes (unless probed) seed `seed` of `method` in both frameworks."""
  from ssl_jax import evaluate, train
  from ssl_jax.workdir import metrics
  config = pretrain_config(method, args.scale, seed, args.steps, args.log_every, args.data_dir)
  out = {}
  for framework in ('jax', 'torch'):
    workdir = os.path.join(args.out, 'runs', f'{method}_seed{seed}_{framework}')
    flax_workdir = workdir if framework == 'jax' else os.path.join(workdir, 'flax')
    if not os.path.exists(layout.eval_results_path(flax_workdir)):
      if framework == 'jax':
        train.pretrain(config, workdir)
      else:
        if os.path.exists(workdir):  # an unfinished torch run: start it again
          import shutil
          shutil.rmtree(workdir)
        train_torch(config, workdir)
      print(f'[reproduce_torch] probing {flax_workdir}', flush=True)
      evaluate.run(flax_workdir, probe_config(args.scale), seed=0)
    with open(layout.eval_results_path(flax_workdir)) as f:
      results = json.load(f)
    out[framework] = {'metrics': [r for r in metrics.read_metrics(workdir)],
                      'probe': {task: {budget: scores['accuracy']['mean'] for budget, scores in t['probe'].items()
                                       if 'accuracy' in scores}
                                for task, t in results['pretrained']['tasks'].items()}}
  return out


# --- statistics ------------------------------------------------------------------------------------------


def compare(jax_values: Sequence[float], torch_values: Sequence[float]) -> dict[str, Any]:
  """Paired JAX - torch comparison over seeds (module docstring): mean, 95% t-interval, spread, verdict."""
  from scipy import stats
  a, b = np.asarray(jax_values, np.float64), np.asarray(torch_values, np.float64)
  if a.shape != b.shape or a.size < 2:
    raise ValueError(f'need the same number (>= 2) of seeds per framework, got {a.size} and {b.size}')
  d = a - b
  k = d.size
  mean = float(d.mean())
  half = float(stats.t.ppf(0.975, k - 1) * d.std(ddof=1) / math.sqrt(k))
  spread = float(math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2))
  low, high = mean - half, mean + half
  if -spread <= low and high <= spread and spread > 0:
    verdict = 'equivalent'
  elif (low > 0 or high < 0) and abs(mean) > spread:
    verdict = 'different'
  else:
    verdict = 'inconclusive'
  return {'jax': a.tolist(), 'torch': b.tolist(), 'difference': mean, 'ci95': [low, high],
          'seed_spread': spread, 'verdict': verdict}


def collapse_step(metrics: Sequence[dict], threshold: float = COLLAPSE_STD) -> int | None:
  """The first logged step whose embedding std is below `threshold`, or None."""
  for row in metrics:
    if 'embedding_std' in row and row['embedding_std'] < threshold:
      return int(row['step'])
  return None


def summarize(args, runs: dict[str, list[dict]]) -> dict:
  summary = {'scale': args.scale, 'seeds': args.seeds, 'methods': {}}
  for method, pairs in runs.items():
    entry = {'comparisons': {}, 'collapse_step': {}, 'final': {}}
    tasks = pairs[0]['jax']['probe']
    for task, budgets in tasks.items():
      for budget in budgets:
        entry['comparisons'][f'{task}@{budget}'] = compare([p['jax']['probe'][task][budget] for p in pairs],
                                                           [p['torch']['probe'][task][budget] for p in pairs])
    for framework in ('jax', 'torch'):
      entry['collapse_step'][framework] = [collapse_step(p[framework]['metrics']) for p in pairs]
      finals = {}
      for key, _ in CURVES:
        values = [[r[key] for r in p[framework]['metrics'] if key in r][-1] for p in pairs]
        finals[key] = values
      entry['final'][framework] = finals
    summary['methods'][method] = entry
  return summary


# --- report ----------------------------------------------------------------------------------------------


def plot(args, runs: dict[str, list[dict]], path: str) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(len(runs), len(CURVES), figsize=(4.2 * len(CURVES), 3.2 * len(runs)), squeeze=False)
  for row, (method, pairs) in enumerate(runs.items()):
    for col, (key, title) in enumerate(CURVES):
      ax = axes[row][col]
      for seed, pair in enumerate(pairs):
        for framework, style in (('jax', '-'), ('torch', '--')):
          points = [(r['step'], r[key]) for r in pair[framework]['metrics'] if key in r]
          if points:
            steps, values = zip(*points)
            ax.plot(steps, values, style, color=f'C{seed}', lw=1.2,
                    label=f'{framework} seed {seed}' if row == 0 and col == 0 else None)
      if key == 'embedding_std':
        ax.axhline(COLLAPSE_STD, color='grey', lw=0.8, ls=':')
      ax.set_title(f'{method}: {title}', fontsize=9)
      ax.set_xlabel('step', fontsize=8)
  axes[0][0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write_report(args, summary: dict, path: str, command: str) -> None:
  lines = [f'# JAX vs the torch baseline on outcomes ({args.scale} scale, {summary["steps"]} steps, '
           f'{args.seeds} seeds)', '', f'`{command}`', '',
           'Same initial weights, data order and views per seed; both encoders probed by `ssl_jax.evaluate` '
           '(linear probe accuracy, probe seed 0). Difference = JAX - torch, paired by seed; 95% t-interval '
           'over the seeds; spread = seed-to-seed std of one framework (pooled); equivalent = the interval '
           'within +- spread.', '']
  for method, entry in summary['methods'].items():
    lines += [f'## {method}', '', '| task @ labels/class | JAX (per seed) | torch (per seed) | JAX - torch '
              '[95% CI] | spread | verdict |', '|---|---|---|---|---|---|']
    for name, c in entry['comparisons'].items():
      show = lambda v: ' / '.join(f'{x:.3f}' for x in v)  # noqa: E731
      lines.append(f"| {name} | {show(c['jax'])} | {show(c['torch'])} | {c['difference']:+.3f} "
                   f"[{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}] | {c['seed_spread']:.3f} | {c['verdict']} |")
    lines += ['', f"Final logged values (per seed): " + '; '.join(
        f"{key} JAX {' / '.join(f'{v:.4g}' for v in entry['final']['jax'][key])}, torch "
        f"{' / '.join(f'{v:.4g}' for v in entry['final']['torch'][key])}" for key, _ in CURVES), '']
    lines += [f"Collapse (embedding std < {COLLAPSE_STD}) first logged at step: JAX "
              f"{entry['collapse_step']['jax']}, torch {entry['collapse_step']['torch']} (None: never).", '']
  lines += ['![loss and collapse-monitor curves](curves.png)', '']
  with open(path, 'w') as f:
    f.write('\n'.join(lines))


def main(argv=None) -> dict:
  args = parse_args(argv)
  from ssl_jax import console
  console.quiet_libraries()
  os.makedirs(args.out, exist_ok=True)
  runs = {method: [run_pair(args, method, seed) for seed in range(args.seeds)] for method in args.methods}
  summary = summarize(args, runs)
  summary['steps'] = pretrain_config(args.methods[0], args.scale, 0, args.steps, args.log_every).num_train_steps
  command = 'python experiments/reproduce_torch.py ' + ' '.join(sys.argv[1:] if argv is None else argv)
  summary['command'] = command
  with open(os.path.join(args.out, 'results.json'), 'w') as f:
    json.dump({'summary': summary, 'curves': {m: [{fw: p[fw]['metrics'] for fw in ('jax', 'torch')} for p in pairs]
                                              for m, pairs in runs.items()}}, f)
  plot(args, runs, os.path.join(args.out, 'curves.png'))
  write_report(args, summary, os.path.join(args.out, 'report.md'), command)
  print(os.path.join(args.out, 'report.md'))
  return summary


if __name__ == '__main__':
  main()
