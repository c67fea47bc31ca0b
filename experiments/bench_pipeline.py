"""Input pipeline throughput: pretraining batches/s at batch 256, L=512 (target >= 10x the train step's rate,
i.e. >= 20-40 batches/s on the 2-core CPU), plus the one-off cost of preparing the shards.

Usage: python experiments/bench_pipeline.py [--data_dir /tmp/aoam_bench] [--examples_per_class 40]
"""

import argparse
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # for `configs`

from configs import base  # pylint: disable=g-import-not-at-top
from ssl_jax.data import aoam  # pylint: disable=g-import-not-at-top
from ssl_jax.data import pipeline  # pylint: disable=g-import-not-at-top


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--data_dir', default='/tmp/aoam_bench')
  parser.add_argument('--length', type=int, default=512)
  parser.add_argument('--examples_per_class', type=int, default=40)
  parser.add_argument('--batch_size', type=int, default=256)
  parser.add_argument('--steps', type=int, default=200)
  args = parser.parse_args()
  data = base.get_config().data
  data.data_dir, data.length, data.examples_per_class = args.data_dir, args.length, args.examples_per_class

  start = time.perf_counter()
  builder = aoam.get_builder(data)
  n = builder.info.splits['train'].num_examples
  print(f'get_builder (prepare or reuse): {time.perf_counter() - start:.1f} s, {n} train examples')

  for start_step in (0, 10_000):
    stream = pipeline.pretrain_batches(data, batch_size=args.batch_size, seed=0, start_step=start_step,
                                       process_index=0, process_count=1, num_local_devices=1)
    start = time.perf_counter()
    next(stream)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.steps):
      next(stream)
    rate = args.steps / (time.perf_counter() - start)
    print(f'pretrain_batches from step {start_step}: first batch {first:.2f} s, then {rate:.1f} batches/s '
          f'({rate * args.batch_size:.0f} examples/s), batch {args.batch_size}, L={args.length}')

  start = time.perf_counter()
  count = sum(len(b['aoa']) for b in pipeline.eval_batches(data, 'test', batch_size=args.batch_size))
  print(f'eval_batches test: {count / (time.perf_counter() - start):.0f} examples/s ({count} examples)')


if __name__ == '__main__':
  main()
