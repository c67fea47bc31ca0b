"""Input pipeline: tf.data streams of AoAM batches read by index from the `aoam` builder's array_record shards.

A batch is a dict of numpy arrays: {'iq': float32 (B, L, 8), 'aoa': int32 (B,), 'modulation': int32 (B,),
'angles_deg': float32 (B, 2), 'index': int32 (B,)}. 'index' is each example's position in its split, the
builder's file order (the simulator's order, or the row of the real HDF5 file): a stable id per example,
which the memory-bank method uses as its bank row. Augmentation is not done here (it runs in the JAX train
step).

Pretraining order (exactly resumable by construction): the stream is a sequence of example positions
p = 0, 1, 2, ... ; position p belongs to epoch e = p // N at offset p % N and reads example
perm(seed, e)[p % N], where perm(seed, e) is a permutation drawn from SeedSequence([seed, e]). Global step s
covers positions [s * B, (s + 1) * B) (a batch may straddle two epochs), and process i of P reads the i-th
contiguous slice of B / P of them. Every batch is therefore a pure function of (seed, step, process), read
by random access: starting at step s computes step s's indices directly, without touching steps < s, and
the P processes' slices are disjoint and together form the global batch. Only indices (8 bytes per
example per cached epoch) are held in memory, never the data.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from ssl_jax.data import aoam
from ssl_jax.data import spec

LABEL_KEYS = ('aoa', 'modulation', 'angles_deg')
_MAX_STEPS = 1 << 62


def num_examples(data_config: Any, split: str) -> int:
  """Number of examples in a split of the builder for config.data."""
  builder = aoam.get_builder(data_config)
  if split not in builder.info.splits:
    raise ValueError(f'split {split!r} not in {sorted(builder.info.splits)}')
  return builder.info.splits[split].num_examples


def steps_per_epoch(config: Any) -> int:
  """Pretraining steps per pass over config.data's train split at config.batch_size (at least 1)."""
  return max(num_examples(config.data, 'train') // config.batch_size, 1)


def _raw_source(data_config: Any, split: str):
  builder = aoam.get_builder(data_config)
  if split not in builder.info.splits:
    raise ValueError(f'split {split!r} not in {sorted(builder.info.splits)}')
  return builder.as_data_source(split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)


def _parse_fn(length: int, keys: Sequence[str]) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
  """Serialized tf.Examples (b,) -> batch dict, with the contract dtypes."""
  features_spec = {
      'iq': tf.io.FixedLenFeature([], tf.string),
      'aoa': tf.io.FixedLenFeature([], tf.int64),
      'modulation': tf.io.FixedLenFeature([], tf.int64),
      'angles_deg': tf.io.FixedLenFeature([2], tf.float32),
  }
  features_spec = {k: features_spec[k] for k in keys}

  def parse(serialized):
    features = tf.io.parse_example(serialized, features_spec)
    out = {}
    if 'iq' in features:
      out['iq'] = tf.reshape(tf.io.decode_raw(features['iq'], tf.float32), [-1, length, spec.NUM_CHANNELS])
    for key in ('aoa', 'modulation'):
      if key in features:
        out[key] = tf.cast(features[key], tf.int32)
    if 'angles_deg' in features:
      out['angles_deg'] = features['angles_deg']
    return out

  return parse


def _stream(source, indices_of_step: Callable[[int], np.ndarray], start: int, stop: int, length: int,
            prefetch: int, keys: Sequence[str] = ('iq',) + LABEL_KEYS) -> Iterator[dict[str, np.ndarray]]:
  """tf.data: step -> indices -> records (random access) -> parsed batch + 'index', in step order, prefetched."""

  def read(step):
    indices = indices_of_step(int(step))
    return np.array(source.__getitems__(indices.tolist()), dtype=object), indices.astype(np.int32)

  parse = _parse_fn(length, keys)
  ds = tf.data.Dataset.range(start, stop)
  ds = ds.map(lambda step: tf.numpy_function(read, [step], (tf.string, tf.int32), stateful=False),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.map(lambda records, index: dict(parse(records), index=index), num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=True)
  ds = ds.prefetch(max(int(prefetch), 1))
  return ds.as_numpy_iterator()


@functools.lru_cache(maxsize=4)
def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  """The order of epoch `epoch` for a seed: a permutation of range(n), int64 (n,)."""
  return np.random.default_rng(np.random.SeedSequence([seed, epoch])).permutation(n)


def step_indices(step: int, *, seed: int, n: int, batch_size: int, process_index: int,
                 process_count: int) -> np.ndarray:
  """Example indices of one process's slice of global step `step`, int64 (batch_size // process_count,)."""
  per_process = batch_size // process_count
  positions = step * batch_size + process_index * per_process + np.arange(per_process, dtype=np.int64)
  epochs, offsets = np.divmod(positions, n)
  out = np.empty(per_process, np.int64)
  for epoch in np.unique(epochs):
    mask = epochs == epoch
    out[mask] = epoch_permutation(seed, int(epoch), n)[offsets[mask]]
  return out


def pretrain_batches(data_config: Any, *, batch_size: int, seed: int, start_step: int = 0,
                     process_index: int | None = None, process_count: int | None = None,
                     num_local_devices: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Infinite, seeded, exactly resumable stream of this process's batches of the train split.

  Yields batches of batch_size // process_count examples: this process's slice of global step
  start_step, start_step + 1, ... (see the module docstring). Defaults come from jax.
  """
  if process_index is None or process_count is None or num_local_devices is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    num_local_devices = jax.local_device_count() if num_local_devices is None else num_local_devices
  if batch_size < 1 or process_count < 1 or num_local_devices < 1:
    raise ValueError(f'batch_size ({batch_size}), process_count ({process_count}) and num_local_devices '
                     f'({num_local_devices}) must be >= 1')
  if batch_size % (process_count * num_local_devices):
    raise ValueError(f'batch_size {batch_size} is not divisible by process_count ({process_count}) x local '
                     f'devices ({num_local_devices}) = {process_count * num_local_devices}')
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} not in [0, {process_count})')
  if start_step < 0:
    raise ValueError(f'start_step must be >= 0, got {start_step}')
  source = _raw_source(data_config, 'train')
  indices = functools.partial(step_indices, seed=seed, n=len(source), batch_size=batch_size,
                              process_index=process_index, process_count=process_count)
  yield from _stream(source, indices, start_step, _MAX_STEPS, data_config.length, data_config.prefetch)


def eval_batches(data_config: Any, split: str, *, batch_size: int,
                 max_examples: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """The first max_examples (default all) examples of a split in file order; the last batch may be smaller."""
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}')
  source = _raw_source(data_config, split)
  n = len(source) if max_examples is None else min(len(source), int(max_examples))
  indices = lambda step: np.arange(step * batch_size, min((step + 1) * batch_size, n), dtype=np.int64)
  yield from _stream(source, indices, 0, -(-n // batch_size), data_config.length, data_config.prefetch)


def examples_at(data_config: Any, split: str, indices: np.ndarray, *,
                batch_size: int = 256) -> dict[str, np.ndarray]:
  """The examples of a split at `indices` (file positions), read by random access, in the order given:
  {'iq': float32 (k, L, 8), 'aoa', 'modulation', 'angles_deg', 'index'}. Raises ValueError for an index
  outside the split."""
  indices = np.asarray(indices, np.int64).reshape(-1)
  source = _raw_source(data_config, split)
  if indices.size and (indices.min() < 0 or indices.max() >= len(source)):
    raise ValueError(f'indices must lie in [0, {len(source)}) for split {split!r}; got range '
                     f'[{indices.min()}, {indices.max()}]')
  if indices.size == 0:
    raise ValueError(f'no indices given to read from split {split!r}')
  of_step = lambda step: indices[step * batch_size:(step + 1) * batch_size]
  parts = list(_stream(source, of_step, 0, -(-indices.size // batch_size), data_config.length,
                       data_config.prefetch))
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def load_labels(data_config: Any, split: str) -> dict[str, np.ndarray]:
  """All labels of a split in file order (the order of eval_batches): aoa, modulation int32 (n,), angles_deg (n, 2)."""
  source = _raw_source(data_config, split)
  n, chunk = len(source), 4096
  indices = lambda step: np.arange(step * chunk, min((step + 1) * chunk, n), dtype=np.int64)
  parts = list(_stream(source, indices, 0, -(-n // chunk), data_config.length, 2, keys=LABEL_KEYS))
  return {k: np.concatenate([p[k] for p in parts]) for k in LABEL_KEYS}
