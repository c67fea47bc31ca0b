"""Means over pretraining seeds (members) with 95% confidence intervals: Student's t over the members.

Each member's score is itself a mean over probe seeds (nested inside); the interval is over the members'
scores: mean +- t_{0.975, K-1} * s / sqrt(K), s the sample standard deviation of the K scores. K = 1 has
no interval (None).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> dict[str, Any]:
  """`{'mean', 'ci95': [low, high] or None (fewer than 2 values), 'half_width', 'n', 'values'}` of `values`."""
  x = np.asarray(values, np.float64)
  if x.ndim != 1 or x.size == 0:
    raise ValueError(f'need a non-empty list of numbers, got {values!r}')
  mean = float(np.mean(x))
  if x.size < 2:
    return {'mean': mean, 'ci95': None, 'half_width': None, 'n': int(x.size), 'values': x.tolist()}
  half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * np.std(x, ddof=1) / math.sqrt(x.size))
  return {'mean': mean, 'ci95': [mean - half, mean + half], 'half_width': half, 'n': int(x.size),
          'values': x.tolist()}


def _is_score(node: Any) -> bool:
  return isinstance(node, dict) and 'mean' in node and 'values' in node


def summarize(trees: Sequence[Any]) -> Any:
  """The member results `trees` (equal structures, e.g. `evaluate_encoder`'s) as one tree: every score
  (a `{'mean', 'std', 'values'}` over probe seeds) and every number becomes `t_interval` of the members'
  values; other leaves (strings, None, skipped budgets) are taken from the first member."""
  first = trees[0]
  if _is_score(first):
    return t_interval([t['mean'] for t in trees])
  if isinstance(first, dict):
    return {key: summarize([t[key] for t in trees]) for key in first}
  if isinstance(first, (int, float)) and not isinstance(first, bool) and all(
      isinstance(t, (int, float)) for t in trees):
    return t_interval([float(t) for t in trees])
  return first
