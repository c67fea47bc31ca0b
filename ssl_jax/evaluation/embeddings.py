"""Embeddings of a frozen encoder: `train=False` (running BatchNorm statistics), jitted, fixed-size batches.

Input batches of any size are re-cut into batches of exactly `batch_size` examples; the last one is
zero-padded and the padding rows dropped afterwards, so the encoder compiles once per (batch_size, time)
shape. In eval mode BatchNorm uses the running statistics, so every example's embedding is independent of
the others in its batch (padding cannot leak into real rows). Gradients never reach the variables.
"""

import functools
from typing import Any, Iterable, Iterator, Mapping, Optional, Union

import flax.linen as nn
import jax
import numpy as np
import tqdm

Batch = Union[np.ndarray, Mapping[str, np.ndarray]]


@functools.partial(jax.jit, static_argnums=0)
def _embed(encoder: nn.Module, variables, x):
  return encoder.apply(jax.lax.stop_gradient(variables), x, train=False)


def _iq_of(batch: Batch) -> np.ndarray:
  iq = batch['iq'] if isinstance(batch, Mapping) else batch
  iq = np.asarray(iq)
  if iq.ndim != 3:
    raise ValueError(f"batch iq must have shape (batch, time, 8), got {iq.shape}")
  return iq


def _fixed_size_batches(batches: Iterable[Batch], batch_size: int) -> Iterator[tuple[np.ndarray, int]]:
  """Yields `(x (batch_size, time, 8), num_valid)`; only the last one is padded."""
  buffer, buffered = [], 0
  for batch in batches:
    iq = _iq_of(batch)
    buffer.append(iq)
    buffered += iq.shape[0]
    while buffered >= batch_size:
      joined = np.concatenate(buffer) if len(buffer) > 1 else buffer[0]
      yield joined[:batch_size], batch_size
      rest = joined[batch_size:]
      buffer, buffered = ([rest] if rest.shape[0] else []), rest.shape[0]
  if buffered:
    joined = np.concatenate(buffer) if len(buffer) > 1 else buffer[0]
    padding = np.zeros((batch_size - buffered,) + joined.shape[1:], joined.dtype)
    yield np.concatenate([joined, padding]), buffered


def compute_embeddings(encoder: nn.Module, variables: Mapping[str, Any], batches: Iterable[Batch], *,
                       batch_size: int, total: Optional[int] = None,
                       progress: Optional[bool] = None, desc: str = 'embeddings') -> np.ndarray:
  """Embeds every example of `batches` with the frozen encoder.

  Args:
    encoder: the encoder module, `(batch, time, 8) -> (batch, dim)`.
    variables: `{'params': ..., 'batch_stats': ...}`; only read.
    batches: iterable of `(b, time, 8)` arrays or pipeline batch dicts with key 'iq' (any b).
    batch_size: examples per encoder call (the one compiled shape).
    total: number of examples, for the progress bar (optional).
    progress: show a tqdm bar; None: only when `total` is known and above 20 batches.
    desc: progress bar label.

  Returns:
    `(n, dim)` float32 embeddings in input order.
  """
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}')
  if progress is None:
    progress = total is not None and total > 20 * batch_size
  outputs = []
  with tqdm.tqdm(total=total, desc=desc, unit='ex', disable=not progress, leave=False) as bar:
    for x, num_valid in _fixed_size_batches(batches, batch_size):
      # Keep device arrays (async dispatch overlaps the next batch's host work); convert at the end.
      outputs.append((_embed(encoder, variables, x), num_valid))
      bar.update(num_valid)
  if not outputs:
    raise ValueError('batches is empty: no examples to embed')
  return np.concatenate([np.asarray(out)[:num_valid] for out, num_valid in outputs]).astype(
      np.float32, copy=False)
