"""Train-step speed: views/s of SimCLR and MoCo steps, compile time and peak memory, side by side in one run.

  python experiments/bench_train_step.py [--batch_sizes 256,64] [--length 512] [--steps 5] [--methods simclr,moco]

For each method and batch size it times the jitted, state-donating step on all local devices
(`parallel.data_parallel`), at two view settings: both views uncropped (L each: the study's batch at full
length) and the study's MTC mix (crop lengths cycled over the pairs of the crop set, so the mean cost is
the expected cost under MTC). Reports median step time, views/s, first-call (compile) time and the
process's peak RSS. Target on a 2-core CPU: >= 2,000 views/s for SimCLR at batch 256 (512 views), L=512.
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


def bench(method_name: str, batch_size: int, length: int, crop_pairs: list, steps: int) -> dict:
  config = {'simclr': simclr_config, 'moco': moco_config}[method_name].get_config()
  method = {'simclr': simclr, 'moco': moco}[method_name]
  config.batch_size = batch_size
  config.data.length = length
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
  times = []
  for pair in itertools.islice(itertools.cycle(crop_pairs), max(steps, len(crop_pairs))):
    t0 = time.perf_counter()
    state, metrics = step(state, batch, pair)
    jax.block_until_ready(metrics['loss'])
    times.append(time.perf_counter() - t0)
  step_s = float(np.mean(times))
  return {'method': method_name, 'batch': batch_size, 'views': 2 * batch_size, 'step_ms': 1e3 * step_s,
          'views_per_s': 2 * batch_size / step_s, 'compile_s_per_program': float(np.median(compile_s)),
          'programs': len(crop_pairs)}


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument('--batch_sizes', default='256,64')
  parser.add_argument('--length', type=int, default=512)
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--methods', default='simclr,moco')
  parser.add_argument('--mtc', action='store_true', help='also time the study MTC mix (25 programs)')
  args = parser.parse_args()
  print(f'devices: {jax.devices()}  backend: {jax.default_backend()}')
  rows = []
  settings = [('full length', [(args.length, args.length)])]
  if args.mtc:
    crops = [min(c, args.length) for c in (32, 64, 128, 256, 512)]
    settings.append(('MTC mix', list(itertools.product(crops, crops))))
  for method in args.methods.split(','):
    for batch_size in (int(b) for b in args.batch_sizes.split(',')):
      for label, pairs in settings:
        row = bench(method, batch_size, args.length, pairs, args.steps)
        row['views'] = label
        rows.append(row)
        print(row, flush=True)
  peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print('\n| method | batch | views | step ms | views/s | compile s / program | programs |')
  print('|---|---|---|---|---|---|---|')
  for r in rows:
    print(f"| {r['method']} | {r['batch']} | {r['views']} | {r['step_ms']:.0f} | {r['views_per_s']:.0f} | "
          f"{r['compile_s_per_program']:.1f} | {r['programs']} |")
  print(f'\npeak RSS of the process: {peak_mb:.0f} MiB')


if __name__ == '__main__':
  main()
