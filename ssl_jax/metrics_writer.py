"""The one metrics writer: JSON lines (`workdir/metrics.jsonl`) and TensorBoard event files."""

import json
import math
import os
from typing import Mapping

import numpy as np


class MetricWriter:
  """Appends one JSON object per logged step and mirrors scalars to TensorBoard (`workdir/tensorboard`).

  Only process 0 writes; other processes get a writer that does nothing.
  """

  def __init__(self, workdir: str, *, enabled: bool = True, tensorboard: bool = True):
    self._enabled = enabled
    self._path = os.path.join(workdir, 'metrics.jsonl')
    self._tb = None
    if enabled and tensorboard:
      import tensorflow as tf  # TensorBoard events via tf.summary; tf is already a dependency (tf.data).
      self._tb = tf.summary.create_file_writer(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self._enabled:
      return
    record = {'step': int(step)}
    for key, value in scalars.items():
      value = float(np.asarray(value))
      record[key] = value if math.isfinite(value) else str(value)
    with open(self._path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    if self._tb is not None:
      import tensorflow as tf
      with self._tb.as_default(step=int(step)):
        for key, value in scalars.items():
          tf.summary.scalar(key, float(np.asarray(value)))
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
  """All records of `workdir/metrics.jsonl`, in order."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f if line.strip()]
