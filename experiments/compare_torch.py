"""ssl_jax vs the PyTorch baseline on the same config, side by side: loss curves, step time, views/s, memory.

Both frameworks start from the same weights (Flax init converted to torch) and see the same views: the
parent process makes the batches (simulated AoAM examples) and the views ssl_jax's step makes from them
(`torch_baseline.side_by_side.jax_views`), then runs each framework in its own child process so peak RSS
is that framework's alone:

  jax            ssl_jax's real train step (single device, jitted; makes its views inside the step)
  torch          the torch baseline in eager mode (views precomputed, fed as NCW tensors)
  torch_compile  the same with `torch.compile` on the networks (if it compiles here)

Step time is the median wall time of steps after `--warmup` (the first steps compile); views/s =
2 * batch_size / step time. Writes `<out>/compare_torch.md`, `<out>/compare_torch.png`, `<out>/results.json`.

  python experiments/compare_torch.py --batch_size 256 --length 512 --steps 20 --out runs/compare_torch
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

BACKENDS = ('jax', 'torch', 'torch_compile')


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--methods', default='simclr,moco', help='comma-separated: simclr, moco')
  parser.add_argument('--batch_size', type=int, default=256, help='examples per step (2x views)')
  parser.add_argument('--length', type=int, default=512, help='samples per example')
  parser.add_argument('--crop_length', type=int, default=0, help='fixed MTC crop length; 0 = --length (no crop)')
  parser.add_argument('--antenna_dropout', type=float, default=0.2)
  parser.add_argument('--stage_repeats', default='4,8,4', help='encoder depth; 1,1,1 for a quick look')
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--warmup', type=int, default=3, help='steps left out of the timing (compilation)')
  parser.add_argument('--learning_rate', type=float, default=0.03)
  parser.add_argument('--backends', default=','.join(BACKENDS))
  parser.add_argument('--out', default='runs/compare_torch')
  parser.add_argument('--child', default='', help=argparse.SUPPRESS)
  parser.add_argument('--child_dir', default='', help=argparse.SUPPRESS)
  parser.add_argument('--child_method', default='', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.steps <= args.warmup:
    raise SystemExit(f'--steps ({args.steps}) must exceed --warmup ({args.warmup})')
  return args


def make_config(args: argparse.Namespace, method: str):
  """The study config of `method` at the requested size; the same in every process."""
  from configs import moco, simclr
  config = {'simclr': simclr, 'moco': moco}[method].get_config()
  config.batch_size = args.batch_size
  config.data.length = args.length
  config.model.stage_repeats = tuple(int(r) for r in args.stage_repeats.split(','))
  config.augment.crop_lengths = (args.crop_length or args.length,)
  config.augment.antenna_dropout = args.antenna_dropout
  config.optim.learning_rate = args.learning_rate
  config.optim.lr_scaling = 'none'
  config.optim.warmup_epochs = 0.0
  config.num_train_steps = args.steps
  if method == 'moco':
    config.moco.queue_size = 16 * args.batch_size
  return config


# Flag -> the config key it sets (make_config), to name the flag in a config error.
_FLAG_OF_KEY = {'batch_size': '--batch_size', 'data.length': '--length', 'augment.crop_lengths': '--crop_length',
                'augment.antenna_dropout': '--antenna_dropout', 'model.stage_repeats': '--stage_repeats',
                'optim.learning_rate': '--learning_rate', 'num_train_steps': '--steps'}


def check_args(args: argparse.Namespace) -> None:
  """Every flag before any work; raises SystemExit with a message naming the flag."""
  methods = [m for m in args.methods.split(',') if m]
  unknown = [m for m in methods if m not in ('simclr', 'moco')]
  if not methods or unknown:
    raise SystemExit(f'error: --methods {args.methods!r}: choose from simclr, moco (comma-separated)')
  try:
    tuple(int(r) for r in args.stage_repeats.split(','))
  except ValueError:
    raise SystemExit(f'error: --stage_repeats must be 3 comma-separated integers, got {args.stage_repeats!r}') from None
  if args.warmup < 0:
    raise SystemExit(f'error: --warmup must be >= 0, got {args.warmup}')
  if args.crop_length < 0:
    raise SystemExit(f'error: --crop_length must be >= 0 (0: no crop), got {args.crop_length}')
  from ssl_jax import config_checks, path_checks
  for method in methods:
    problems = config_checks.pretrain_config_problems(make_config(args, method))
    if problems:
      named = [next((f'{flag}: {p}' for key, flag in _FLAG_OF_KEY.items() if p.startswith(f'config.{key} ')), p)
               for p in problems]
      raise SystemExit(f'error: the flags give an invalid {method} config:\n' + '\n'.join(f'  {p}' for p in named))
  try:
    path_checks.check_workdir(args.out, '--out')
  except path_checks.PathError as e:
    raise SystemExit(f'error: {e}') from None


def simulated_batches(config, steps: int) -> np.ndarray:
  """`(steps, batch, length, 8)` simulated AoAM examples (random classes)."""
  from ssl_jax.data import simulate
  from ssl_jax.data import spec
  rng = np.random.default_rng(0)
  n = steps * config.batch_size
  aoa = rng.integers(0, spec.NUM_AOA_CLASSES, n)
  modulation = rng.integers(0, spec.NUM_MODULATIONS, n)
  iq = simulate.simulate_examples(rng, aoa, modulation, simulate.SimConfig(length=config.data.length))
  iq = iq.transpose(0, 3, 1, 2).reshape(n, config.data.length, spec.NUM_CHANNELS).astype(np.float32)
  return iq.reshape(steps, config.batch_size, config.data.length, spec.NUM_CHANNELS)


def peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def prepare(args, method: str, work: str) -> None:
  """Batches, views, schedules and initial torch weights of one method, written to `work`."""
  import torch
  from experiments.torch_baseline import side_by_side, train
  config = make_config(args, method)
  batches = simulated_batches(config, args.steps)
  run = side_by_side.build_jax(config, args.steps, args.steps)
  views = [side_by_side.jax_views(run, batches[s], s) for s in range(args.steps)]
  learning_rate, momentum = train.schedules(config, args.steps, args.steps)
  np.savez(os.path.join(work, 'data.npz'), batches=batches, view_a=np.stack([v[0] for v in views]),
           view_b=np.stack([v[1] for v in views]),
           learning_rate=np.array([learning_rate(s) for s in range(args.steps)]),
           momentum=np.array([momentum(s) if momentum else 0.0 for s in range(args.steps)]))
  trainer = side_by_side.build_torch(run, args.steps, args.steps)
  init = {'model': trainer.model.state_dict()}
  if method == 'moco':
    init.update(key_model=trainer.key_model.state_dict(), queue=trainer.queue.clone())
  torch.save(init, os.path.join(work, 'init.pt'))


def run_jax(args, method: str, work: str) -> dict:
  import jax
  from experiments.torch_baseline import side_by_side
  config = make_config(args, method)
  batches = np.load(os.path.join(work, 'data.npz'))['batches']
  run = side_by_side.build_jax(config, args.steps, args.steps)
  losses, times = [], []
  for step in range(args.steps):
    start = time.perf_counter()
    run.state, metrics = run.step_fn(run.state, {'iq': batches[step]}, side_by_side.crop_lengths(run, step))
    losses.append(float(jax.block_until_ready(metrics['loss'])))
    times.append(time.perf_counter() - start)
  return {'losses': losses, 'times': times, 'device': str(jax.devices()[0].device_kind)}


def run_torch(args, method: str, work: str, compile_model: bool) -> dict:
  import torch
  from experiments.torch_baseline import models, train
  config = make_config(args, method)
  data = np.load(os.path.join(work, 'data.npz'))
  init = torch.load(os.path.join(work, 'init.pt'), weights_only=True)
  model = models.from_config(config.model)
  model.load_state_dict(init['model'])
  learning_rate = lambda step: float(data['learning_rate'][step])
  if method == 'simclr':
    trainer = train.SimCLR(config, learning_rate, model)
  else:
    trainer = train.MoCo(config, learning_rate, lambda step: float(data['momentum'][step]), model)
    trainer.key_model.load_state_dict(init['key_model'])
    trainer.set_queue(init['queue'])
  if compile_model:
    trainer.model = torch.compile(trainer.model)
    if method == 'moco':
      trainer.key_model = torch.compile(trainer.key_model)
  to_ncw = lambda v: torch.from_numpy(np.ascontiguousarray(v.transpose(0, 2, 1)))
  losses, times = [], []
  for step in range(args.steps):
    view_a, view_b = to_ncw(data['view_a'][step]), to_ncw(data['view_b'][step])
    start = time.perf_counter()
    losses.append(trainer.step(view_a, view_b, step))
    times.append(time.perf_counter() - start)
  return {'losses': losses, 'times': times, 'threads': torch.get_num_threads()}


def child_main(args) -> None:
  work, method = args.child_dir, args.child_method
  if args.child == 'jax':
    result = run_jax(args, method, work)
  else:
    result = run_torch(args, method, work, compile_model=args.child == 'torch_compile')
  result['peak_rss_mib'] = peak_rss_mib()
  with open(os.path.join(work, f'{args.child}.json'), 'w') as f:
    json.dump(result, f)


def summarize(result: dict, args) -> dict:
  step_s = statistics.median(result['times'][args.warmup:])
  return {'step_ms': 1e3 * step_s, 'views_per_s': 2 * args.batch_size / step_s,
          'first_step_s': result['times'][0], 'peak_rss_mib': result['peak_rss_mib']}


def write_report(args, results: dict) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  os.makedirs(args.out, exist_ok=True)
  crop = args.crop_length or args.length
  lines = [f'# ssl_jax vs PyTorch baseline', '',
           f'batch {args.batch_size} examples ({2 * args.batch_size} views), examples of {args.length} samples, '
           f'fixed crop {crop}, antenna dropout {args.antenna_dropout}, stage_repeats ({args.stage_repeats}), '
           f'{args.steps} steps (timing: median of steps {args.warmup}..{args.steps - 1}), CPU, '
           f'{os.cpu_count()} cores.', '',
           '| method | backend | step (ms) | views/s | JAX speed-up | first step (s) | peak RSS (MiB) | '
           'max loss rel. diff vs JAX |',
           '|---|---|---:|---:|---:|---:|---:|---:|']
  fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
  for ax, (method, by_backend) in zip(axes[0], results.items()):
    jax_loss = np.array(by_backend['jax']['losses']) if 'jax' in by_backend else None
    jax_step = by_backend['jax']['summary']['step_ms'] if 'jax' in by_backend else None
    for backend, result in by_backend.items():
      if 'error' in result:
        lines.append(f'| {method} | {backend} | failed: {result["error"][:80]} | | | | | |')
        continue
      s = result['summary']
      speedup = f'{s["step_ms"] / jax_step:.2f}x' if jax_step and backend != 'jax' else ''
      diff = ''
      if jax_loss is not None and backend != 'jax':
        diff = f'{np.max(np.abs(np.array(result["losses"]) - jax_loss) / np.abs(jax_loss)):.1e}'
      lines.append(f'| {method} | {backend} | {s["step_ms"]:.0f} | {s["views_per_s"]:.0f} | {speedup} | '
                   f'{s["first_step_s"]:.1f} | {s["peak_rss_mib"]:.0f} | {diff} |')
      ax.plot(result['losses'], label=f'{backend} ({s["step_ms"]:.0f} ms/step)',
              linestyle='-' if backend == 'jax' else '--', marker='.' if backend == 'jax' else None)
    ax.set_title(f'{method}: loss per step (same weights, same views)')
    ax.set_xlabel('step')
    ax.set_ylabel('loss')
    ax.legend()
  lines += ['', 'JAX speed-up = torch step time / JAX step time (> 1: JAX is faster). Peak RSS is per process '
            '(each backend runs alone in a child process).']
  fig.tight_layout()
  fig.savefig(os.path.join(args.out, 'compare_torch.png'), dpi=110)
  with open(os.path.join(args.out, 'compare_torch.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  with open(os.path.join(args.out, 'results.json'), 'w') as f:
    json.dump({'args': vars(args), 'results': results}, f, indent=1)
  print('\n'.join(lines))


def main() -> None:
  args = parse_args()
  if args.child:
    child_main(args)
    return
  backends = [b for b in args.backends.split(',') if b]
  for backend in backends:
    if backend not in BACKENDS:
      raise SystemExit(f'--backends: unknown {backend!r}; choose from {BACKENDS}')
  check_args(args)
  results = {}
  for method in args.methods.split(','):
    results[method] = {}
    with tempfile.TemporaryDirectory() as work:
      prepare(args, method, work)
      for backend in backends:
        command = [sys.executable, os.path.abspath(__file__), *sys.argv[1:], '--child', backend,
                   '--child_dir', work, '--child_method', method]
        proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        path = os.path.join(work, f'{backend}.json')
        if proc.returncode != 0 or not os.path.exists(path):
          tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ['no output']
          results[method][backend] = {'error': tail[0]}
          print(f'{method}/{backend} failed:\n{proc.stderr[-2000:]}', file=sys.stderr)
          continue
        with open(path) as f:
          result = json.load(f)
        result['summary'] = summarize(result, args)
        results[method][backend] = result
        print(f'{method}/{backend}: {result["summary"]}', flush=True)
  write_report(args, results)


if __name__ == '__main__':
  main()
