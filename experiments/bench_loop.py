"""Step-loop speed of `python -m ssl_jax.main`: steps/s of whole runs, checkouts side by side.

  python experiments/bench_loop.py --checkouts OLD,NEW [--config configs/smoke.py:simclr] [--steps 400]
      [--log_every 50] [--rounds 3] [--data_dir DIR] [-- --config.KEY=VALUE ...]

Where `bench_train_step.py` times the compiled step alone, this times the loop around it as a user runs it:
data, the step, metrics, checkpoints (none but the last), through the command line (each run in its own
process, on mimalloc: through `ssl_jax.launch` where a checkout has it, else its self-relaunching entry
point). The steps/s of a run
count the log windows after the first (which holds the compile): steps over their summed wall time, read
from the run's `metrics.jsonl` (`views_per_second` of each window). Runs of the checkouts alternate over
`--rounds` so that this machine's drift hits them alike. The first round's logged losses of each checkout
are compared with the first checkout's: bit-identical losses mean the same computation. Arguments after `--` go to every run.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ssl_jax.workdir import layout  # noqa: E402


def losses(metrics_file: str) -> dict[int, float]:
  """{step: loss} of a run's log rows."""
  with open(metrics_file) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return {r['step']: r['loss'] for r in rows if 'loss' in r}


def window_rate(metrics_file: str, views_per_step: int) -> tuple[float, int]:
  """(steps/s over the log windows after the first, steps counted) from a run's metrics.jsonl."""
  with open(metrics_file) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  rows = [r for r in rows if 'views_per_second' in r]
  if len(rows) < 2:
    raise ValueError(f'{metrics_file}: {len(rows)} log rows; need >= 2 (raise --steps or lower --log_every)')
  steps, seconds = 0, 0.0
  for previous, row in zip(rows, rows[1:]):
    n = row['step'] - previous['step']
    steps += n
    seconds += n * views_per_step / row['views_per_second']
  return steps / seconds, steps


def run_once(checkout: str, config: str, steps: int, log_every: int, data_dir: str, extra: list[str],
             workdir: str) -> dict:
  env = dict(os.environ, PYTHONPATH=os.path.abspath(checkout))
  # The entry point as the README starts it: through the launcher (mimalloc) where the checkout has one;
  # older checkouts' entry points relaunched themselves on mimalloc.
  launch = ['-m', 'ssl_jax.launch'] if os.path.exists(os.path.join(checkout, 'ssl_jax', 'launch.py')) else []
  args = [sys.executable, *launch, '-m', 'ssl_jax.main', f'--config={config}', f'--workdir={workdir}',
          f'--config.num_train_steps={steps}', f'--config.log_every_steps={log_every}',
          f'--config.checkpoint_every_steps={10 * steps}', '--config.progress_bar=false',
          f'--config.data.data_dir={data_dir}', *extra]
  proc = subprocess.run(args, cwd=os.path.abspath(checkout), env=env, capture_output=True, text=True)
  if proc.returncode != 0:
    raise RuntimeError(f'{checkout}: exit {proc.returncode}\n{proc.stderr[-3000:]}')
  with open(layout.config_path(workdir)) as f:
    batch_size = json.load(f)['batch_size']
  rate, counted = window_rate(layout.metrics_path(workdir), 2 * batch_size)
  return {'steps_per_second': rate, 'steps_counted': counted, 'losses': losses(layout.metrics_path(workdir))}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--checkouts', required=True, help='comma-separated checkout directories to compare')
  parser.add_argument('--config', default='configs/smoke.py:simclr')
  parser.add_argument('--steps', type=int, default=400)
  parser.add_argument('--log_every', type=int, default=50)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--data_dir', default='', help='TFDS data dir shared by every run (default: a temporary one)')
  args, extra = parser.parse_known_args()
  extra = [a for a in extra if a != '--']
  checkouts = args.checkouts.split(',')
  data_dir = args.data_dir or tempfile.mkdtemp(prefix='bench_loop_tfds_')
  rates: dict[str, list[float]] = {c: [] for c in checkouts}
  trajectories: dict[str, dict[int, float]] = {}
  with tempfile.TemporaryDirectory(prefix='bench_loop_') as tmp:
    for r in range(args.rounds):
      for i, checkout in enumerate(checkouts):
        result = run_once(checkout, args.config, args.steps, args.log_every, data_dir, extra,
                          os.path.join(tmp, f'{r}_{i}'))
        rates[checkout].append(result['steps_per_second'])
        trajectories.setdefault(checkout, result['losses'])
        print(f"round {r} {checkout}: {result['steps_per_second']:.1f} steps/s "
              f"({result['steps_counted']} steps)", flush=True)
  reference = trajectories[checkouts[0]]
  for checkout in checkouts[1:]:
    other = trajectories[checkout]
    if other.keys() != reference.keys():
      print(f'{checkout}: logged steps differ from {checkouts[0]}')
      continue
    worst = max(abs(other[s] - reference[s]) / max(abs(reference[s]), 1e-30) for s in reference)
    print(f'{checkout}: losses at {len(reference)} log steps '
          f"{'bit-identical to' if worst == 0 else f'within {worst:.2e} relative of'} {checkouts[0]}'s")
  first = statistics.median(rates[checkouts[0]])
  for checkout in checkouts:
    median = statistics.median(rates[checkout])
    print(f'{checkout}: median {median:.1f} steps/s over {args.rounds} runs '
          f"({', '.join(f'{x:.1f}' for x in rates[checkout])}); x{median / first:.3f} of {checkouts[0]}")
  return 0


if __name__ == '__main__':
  sys.exit(main())
