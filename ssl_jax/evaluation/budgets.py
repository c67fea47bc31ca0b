"""Label budgets: exactly `per_class` labelled train examples of every class, drawn with a seed.

For a fixed seed, each class's examples are drawn in one seeded order and the first `per_class` kept, so
budgets are nested: the 10-per-class sample contains the 1-per-class sample of the same seed. The probe
curve over budgets is then a curve over growing label sets, not over independent draws.
"""

from typing import Optional

import numpy as np


def sample_budget(labels: np.ndarray, per_class: int, seed: int,
                  num_classes: Optional[int] = None) -> np.ndarray:
  """Indices into `labels` holding exactly `per_class` examples of each class.

  Args:
    labels: `(n,)` integer class ids.
    per_class: examples to keep per class (>= 1).
    seed: draws the examples; the same seed gives the same indices.
    num_classes: classes 0..num_classes-1 must all be present; None: the classes present in `labels`.

  Returns:
    `(num_classes * per_class,)` int64 indices, sorted ascending.

  Raises:
    ValueError: a class has fewer than `per_class` examples (the message names the class).
  """
  labels = np.asarray(labels)
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f'labels must be integer (n,), got {labels.dtype} {labels.shape}')
  if per_class < 1:
    raise ValueError(f'per_class must be >= 1, got {per_class}')
  if num_classes is None:
    classes = np.unique(labels)
  else:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
      raise ValueError(f'labels must lie in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]')
    classes = np.arange(num_classes)
  if classes.size == 0:
    raise ValueError('labels is empty')
  order = np.argsort(labels, kind='stable')
  starts = np.searchsorted(labels[order], classes, side='left')
  ends = np.searchsorted(labels[order], classes, side='right')
  rng = np.random.default_rng(seed)
  chosen = []
  for label, start, end in zip(classes, starts, ends):
    if end - start < per_class:
      raise ValueError(f'class {label} has {end - start} examples, fewer than per_class={per_class}')
    members = order[start:end]
    chosen.append(members[rng.permutation(members.size)[:per_class]])
  return np.sort(np.concatenate(chosen)).astype(np.int64)


def max_per_class(labels: np.ndarray, num_classes: int) -> int:
  """The largest budget `sample_budget` can draw: the size of the smallest class (0 if one is absent)."""
  counts = np.bincount(np.asarray(labels), minlength=num_classes)[:num_classes]
  return int(counts.min())
