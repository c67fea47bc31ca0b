"""Times the encoder with each depthwise-conv form ('shift' vs 'grouped'), side by side in one run.

The encoder runs `layers.depthwise_form(backend)`; this bench forces each form in turn, to check that
the dispatch picks the faster one on the backend at hand.

For each time length: forward (train mode, batch statistics updated) and forward + backward (gradient of
a scalar of the embedding w.r.t. the parameters), jitted, median wall time over repeats after a warm-up.
Prints a table in ms and the grouped / shift ratio.

Usage: python experiments/bench_depthwise.py [--batch 256] [--lengths 512,128] [--repeats 5]
"""

import argparse
import statistics
import time
from typing import Callable
from unittest import mock

import jax
import jax.numpy as jnp

from ssl_jax.data import spec
from ssl_jax.models import ShuffleNetV2Encoder, layers

IMPLS = {'shift': layers.depthwise_conv1d_shift, 'grouped': layers.depthwise_conv1d_grouped}


def median_ms(fn: Callable[[], object], repeats: int) -> float:
  jax.block_until_ready(fn())  # Compile and warm up.
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append((time.perf_counter() - start) * 1e3)
  return statistics.median(times)


def bench_one(impl: str, batch: int, length: int, repeats: int) -> tuple[float, float]:
  """(forward ms, forward+backward ms) for one depthwise form at `(batch, length, 8)`."""
  model = ShuffleNetV2Encoder()
  x = jax.random.normal(jax.random.key(0), (batch, length, spec.NUM_CHANNELS), jnp.float32)
  with mock.patch.object(layers, 'depthwise_form', lambda backend: IMPLS[impl]):  # Traced with this form.
    variables = jax.jit(model.init)(jax.random.key(1), x[:2])
    params, batch_stats = variables['params'], variables['batch_stats']

    def loss(params, batch_stats, x):
      z, updates = model.apply({'params': params, 'batch_stats': batch_stats}, x, train=True,
                               mutable=['batch_stats'])
      return jnp.mean(z ** 2), updates

    forward = jax.jit(loss)
    backward = jax.jit(jax.grad(loss, has_aux=True))
    return (median_ms(lambda: forward(params, batch_stats, x), repeats),
            median_ms(lambda: backward(params, batch_stats, x), repeats))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--lengths', default='512,128')
  parser.add_argument('--repeats', type=int, default=5)
  args = parser.parse_args()
  lengths = [int(s) for s in args.lengths.split(',')]
  print(f'backend={jax.default_backend()} devices={jax.devices()} batch={args.batch}')
  header = f'{"L":>5} {"pass":>9} ' + ' '.join(f'{impl + " ms":>12}' for impl in IMPLS) + f' {"grouped/shift":>14}'
  print(header)
  for length in lengths:
    results = {impl: bench_one(impl, args.batch, length, args.repeats) for impl in IMPLS}
    for index, name in enumerate(('fwd', 'fwd+bwd')):
      row = [results[impl][index] for impl in IMPLS]
      print(f'{length:>5} {name:>9} ' + ' '.join(f'{ms:>12.1f}' for ms in row) + f' {row[1] / row[0]:>14.2f}',
            flush=True)


if __name__ == '__main__':
  main()
