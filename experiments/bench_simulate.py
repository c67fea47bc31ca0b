"""Simulator throughput: examples/s at L=512 on one core (target >= 20,000), plus HDF5 write throughput.

Usage: python experiments/bench_simulate.py [--length 512] [--examples 20480]
Reports wall-clock and process-CPU rates (the CPU rate is the single-core figure when the machine is shared).
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault('OMP_NUM_THREADS', '1')  # one core: keep numpy's FFT/BLAS single-threaded


from ssl_jax.data import simulate  # pylint: disable=g-import-not-at-top
from ssl_jax.data import spec  # pylint: disable=g-import-not-at-top


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--length', type=int, default=512)
  parser.add_argument('--examples', type=int, default=10 * simulate.CHUNK_SIZE)
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args()
  config = simulate.SimConfig(length=args.length)
  per_class = -(-args.examples // spec.NUM_AOA_CLASSES)
  n = per_class * spec.NUM_AOA_CLASSES
  for _ in simulate.generate('train', 1, config, seed=0):  # warm the tables
    pass
  for rep in range(args.repeats):
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in simulate.generate('train', per_class, config, seed=rep):
      pass
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f'simulate L={args.length}: {n / wall:9.0f} examples/s wall, {n / cpu:9.0f} examples/s per CPU-second')
  for name, iq_imbalance, reflections in (('no IQ imbalance', False, 2), ('IQ imbalance', True, 2),
                                          ('no multipath', False, 0)):
    cfg = simulate.SimConfig(length=args.length, iq_imbalance=iq_imbalance, num_reflections=reflections)
    cpu = time.process_time()
    for _ in simulate.generate('train', per_class, cfg, seed=0):
      pass
    print(f'  variant {name:16s}: {n / (time.process_time() - cpu):9.0f} examples/s per CPU-second')
  with tempfile.TemporaryDirectory() as tmp:
    wall = time.perf_counter()
    simulate.write_hdf5(os.path.join(tmp, 'train.h5'), 'train', per_class, config, seed=0)
    wall = time.perf_counter() - wall
    print(f'write_hdf5: {n / wall:9.0f} examples/s wall ({n} examples)')


if __name__ == '__main__':
  main()
