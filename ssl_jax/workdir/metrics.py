"""The one metrics writer: JSON lines (`workdir/metrics.jsonl`) and TensorBoard event files.

A resumed run continues from its checkpoint at step S, but a run that was killed may have logged steps
past S. `drop_after(workdir, S)` removes those from both places before the resumed run logs them again,
so every step appears once: the rows of `metrics.jsonl` are filtered, and every TensorBoard event file is
rewritten without its events past S (each file via a temporary file and a rename). Rewriting is chosen
over a run subdirectory per resume (TensorBoard would draw the repeated steps as a second run) and over
TensorBoard's purge on a restart event (SessionLog.START: TF2's `tf.summary` does not write it, and
whether a reader applies it is up to the reader): the event files hold one value per step for any
reader, TensorBoard or `tf.compat.v1.train.summary_iterator`.
"""

import glob
import json
import math
import os
from typing import Mapping

import numpy as np

from ssl_jax.workdir import layout


class MetricWriter:
  """Appends one JSON object per logged step and mirrors scalars to TensorBoard (`workdir/tensorboard`).

  Only process 0 writes; other processes get a writer that does nothing.
  """

  def __init__(self, workdir: str, *, enabled: bool = True, tensorboard: bool = True):
    self._enabled = enabled
    self._path = layout.metrics_path(workdir)
    self._tb = None
    if enabled and tensorboard:
      import tensorflow as tf  # TensorBoard events via tf.summary; tf is already a dependency (tf.data).
      self._tb = tf.summary.create_file_writer(layout.tensorboard_dir(workdir))

  def write(self, step: int, scalars: Mapping[str, float], member: int | None = None) -> None:
    """One row of `scalars` at `step`; a member run's rows carry `member` (JSONL field `member`, TensorBoard
    tags `KEY/member_K`, so that TensorBoard groups the members of each metric)."""
    if not self._enabled:
      return
    record = {'step': int(step)}
    if member is not None:
      record['member'] = int(member)
    for key, value in scalars.items():
      value = float(np.asarray(value))
      record[key] = value if math.isfinite(value) else str(value)
    with open(self._path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    if self._tb is not None:
      import tensorflow as tf
      suffix = '' if member is None else f'/member_{int(member)}'
      with self._tb.as_default(step=int(step)):
        for key, value in scalars.items():
          tf.summary.scalar(key + suffix, float(np.asarray(value)))
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def _parse_rows(text: str) -> tuple[list[dict], int]:
  """(complete rows, number of lines that are not JSON objects) of a metrics.jsonl text."""
  rows, bad = [], 0
  for line in text.splitlines():
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except ValueError:
      bad += 1
      continue
    if isinstance(row, dict) and 'step' in row:
      rows.append(row)
    else:
      bad += 1
  return rows, bad


def read_metrics(workdir: str) -> list[dict]:
  """All records of `workdir/metrics.jsonl`, in order.

  A last line that is not yet complete (a writer still writing it, or killed while writing it) is left
  out; any other line that is not a JSON record is an error naming the file and line.
  """
  path = layout.metrics_path(workdir)
  with open(path) as f:
    text = f.read()
  lines = text.split('\n')
  if not text.endswith('\n'):
    lines = lines[:-1]  # Unterminated: being written, or cut short by a kill.
  records = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except ValueError as e:
      raise ValueError(f'{path}, line {number}: not a JSON record ({e})') from None
  return records


def _drop_jsonl_after(workdir: str, step: int) -> int:
  path = layout.metrics_path(workdir)
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    text = f.read()
  rows, bad = _parse_rows(text)
  kept = [row for row in rows if row['step'] <= step]
  dropped = len(rows) - len(kept) + bad
  if dropped:
    tmp = f'{path}.tmp.{os.getpid()}'
    with open(tmp, 'w') as f:
      f.writelines(json.dumps(row) + '\n' for row in kept)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  return dropped


def _drop_events_after(path: str, step: int) -> int:
  """Rewrites one TensorBoard event file without its events past `step`; returns how many it dropped.

  A record cut short at the end of the file (a writer killed mid-write) is dropped too.
  """
  import tensorflow as tf
  from tensorboard.compat.proto import event_pb2
  kept, dropped = [], 0
  try:
    for raw in tf.data.TFRecordDataset(path):
      record = raw.numpy()
      if event_pb2.Event.FromString(record).step > step:
        dropped += 1
      else:
        kept.append(record)
  except tf.errors.DataLossError:  # A truncated last record.
    dropped += 1
  if dropped:
    tmp = os.path.join(os.path.dirname(path), f'.rewrite.{os.getpid()}.tmp')  # Not an event file name.
    with tf.io.TFRecordWriter(tmp) as writer:
      for record in kept:
        writer.write(record)
    os.replace(tmp, path)
  return dropped


def drop_after(workdir: str, step: int) -> dict[str, int]:
  """Removes every metric of a step past `step` from metrics.jsonl and the TensorBoard event files.

  Called by the writing process before a run continues from its checkpoint at `step` (0 for a run that
  starts over before its first checkpoint). Returns how many JSONL rows and TensorBoard events it removed.
  """
  dropped = {'jsonl_rows': _drop_jsonl_after(workdir, step), 'tensorboard_events': 0}
  for path in sorted(glob.glob(os.path.join(layout.tensorboard_dir(workdir), '*tfevents*'))):
    dropped['tensorboard_events'] += _drop_events_after(path, step)
  return dropped
