"""Train-step speed: views/s of SimCLR and MoCo steps, compile time and peak memory, side by side in one run.

  python experiments/bench_train_step.py [--batch_sizes 256,64] [--length 512] [--steps 5] [--methods simclr,moco]
      [--batch_norm_impls fused,flax --rounds 5] [--mtc]

For each method and batch size it times the jitted, state-donating step on all local devices
(`parallel.data_parallel`), at two view settings: both views uncropped (L each: the study's batch at full
length) and the study's MTC mix (crop lengths cycled over the pairs of the crop set, so the mean cost is
the expected cost under MTC). Reports mean step time, views/s, first-call (compile) time and the
process's peak RSS. With several `--batch_norm_impls` it times each form side by side, interleaving the
cases over `--rounds` so that this machine's drift hits them alike, and prints step-time ratios.
Target on a 2-core CPU: >= 2,000 views/s for SimCLR at batch 256 (512 views), L=512.
"""

import argparse
import itertools
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from configs import moco as moco_config  # noqa: E402
from configs import simclr as simclr_config  # noqa: E402
from ssl_jax import optim, parallel  # noqa: E402
from ssl_jax.methods import common, moco, simclr  # noqa: E402


def prepare(method_name: str, batch_size: int, length: int, crop_pairs: list, batch_norm_impl: str):
  """Compiles one step program per crop pair; returns `(time_steps(n) -> [seconds per step], row)`."""
  config = {'simclr': simclr_config, 'moco': moco_config}[method_name].get_config()
  method = {'simclr': simclr, 'moco': moco}[method_name]
  config.batch_size = batch_size
  config.data.length = length
  config.model.batch_norm_impl = batch_norm_impl
  if method_name == 'moco':
    config.moco.queue_size = 16 * batch_size
  lr = optim.learning_rate_schedule(config.optim, batch_size=batch_size, steps_per_epoch=100, total_steps=1000)
  mom = moco.momentum_schedule(config.moco.momentum, 1000) if method_name == 'moco' else None
  tx = optim.create_optimizer(config.optim, lr)
  mesh = parallel.create_mesh()
  state = method.init_state(config, method.create_networks(config, None), tx, jax.random.PRNGKey(0))
  state = parallel.replicate(jax.device_get(state), mesh)
  step = parallel.data_parallel(method.make_train_step(
      config, method.create_networks(config, parallel.AXIS), tx, common.Schedules(lr, mom),
      axis_name=parallel.AXIS), mesh)
  batch = parallel.shard_batch(
      {'iq': np.random.default_rng(0).normal(size=(batch_size, length, 8)).astype(np.float32)}, mesh)
  compile_s = []
  for pair in crop_pairs:  # First call per pair: compile + one step.
    t0 = time.perf_counter()
    state, metrics = step(state, batch, pair)
    jax.block_until_ready(metrics['loss'])
    compile_s.append(time.perf_counter() - t0)
  pairs = itertools.cycle(crop_pairs)

  def time_steps(n: int) -> list[float]:
    nonlocal state  # The step donates its input state, so each call continues from the last one's.
    times = []
    for pair in itertools.islice(pairs, n):
      t0 = time.perf_counter()
      state, metrics = step(state, batch, pair)
      jax.block_until_ready(metrics['loss'])
      times.append(time.perf_counter() - t0)
    return times

  row = {'method': method_name, 'batch': batch_size, 'views': 2 * batch_size, 'batch_norm': batch_norm_impl,
         'compile_s_per_program': float(np.median(compile_s)), 'programs': len(crop_pairs)}
  return time_steps, row


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument('--batch_sizes', default='256,64')
  parser.add_argument('--length', type=int, default=512)
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--methods', default='simclr,moco')
  parser.add_argument('--batch_norm_impls', default='fused',
                      help="comma-separated BN forms to time side by side, e.g. 'fused,flax'")
  parser.add_argument('--rounds', type=int, default=1,
                      help='interleave the cases over this many rounds of steps / rounds steps each')
  parser.add_argument('--mtc', action='store_true', help='also time the study MTC mix (25 programs)')
  args = parser.parse_args()
  print(f'devices: {jax.devices()}  backend: {jax.default_backend()}')
  rows = []
  settings = [('full length', [(args.length, args.length)])]
  if args.mtc:
    crops = [min(c, args.length) for c in (32, 64, 128, 256, 512)]
    settings.append(('MTC mix', list(itertools.product(crops, crops))))
  cases = []
  for method in args.methods.split(','):
    for batch_size in (int(b) for b in args.batch_sizes.split(',')):
      for label, pairs in settings:
        for impl in args.batch_norm_impls.split(','):
          time_steps, row = prepare(method, batch_size, args.length, pairs, impl)
          row['setting'] = label
          cases.append((time_steps, row, []))
  # Interleaved rounds: every case runs a few steps per round, so machine drift hits all cases alike.
  for _ in range(args.rounds):
    for time_steps, row, times in cases:  # At least one step per compiled crop pair in all.
      times.extend(time_steps(-(-max(args.steps, row['programs']) // args.rounds)))
  rows = []
  for _, row, times in cases:
    step_s = float(np.mean(times))
    row.update(step_ms=1e3 * step_s, views_per_s=2 * row['batch'] / step_s, steps_timed=len(times))
    rows.append(row)
    print(row, flush=True)
  peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print('\n| method | batch | views | BN | step ms | views/s | compile s / program | programs |')
  print('|---|---|---|---|---|---|---|---|')
  for r in rows:
    print(f"| {r['method']} | {r['batch']} | {r['setting']} | {r['batch_norm']} | {r['step_ms']:.0f} | "
          f"{r['views_per_s']:.0f} | {r['compile_s_per_program']:.1f} | {r['programs']} |")
  first = {}
  for r in rows:  # Ratios against the first BN form of the same method, batch and setting.
    key = (r['method'], r['batch'], r['setting'])
    if key in first:
      print(f"{key}: {r['batch_norm']} / {first[key]['batch_norm']} step time = "
            f"{r['step_ms'] / first[key]['step_ms']:.2f}")
    else:
      first[key] = r
  print(f'\npeak RSS of the process: {peak_mb:.0f} MiB')


if __name__ == '__main__':
  main()
