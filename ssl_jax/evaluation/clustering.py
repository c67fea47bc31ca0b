"""Clustering quality of embeddings: the silhouette score, as the study reports it (no tuning).

Embeddings are standardised per feature (zero mean, unit variance over the scored set; constant features
left at zero) and compared with the Euclidean distance. Standardising keeps a few large-variance
features from dominating the distances; it is a fixed choice, not tuned per encoder. `normalize='l2'`
(unit-norm rows, i.e. cosine geometry) and 'none' are available for comparison.
"""

import numpy as np
from sklearn import metrics as sk_metrics

NORMALIZATIONS = ('standardize', 'l2', 'none')


def normalize_embeddings(embeddings: np.ndarray, normalize: str = 'standardize') -> np.ndarray:
  """`(n, dim)` -> `(n, dim)` float64 standardised, L2-normalised or unchanged."""
  x = np.asarray(embeddings, np.float64)
  if x.ndim != 2:
    raise ValueError(f'embeddings must have shape (n, dim), got {x.shape}')
  if normalize == 'standardize':
    std = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
  if normalize == 'l2':
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)
  if normalize == 'none':
    return x
  raise ValueError(f'normalize must be one of {NORMALIZATIONS}, got {normalize!r}')


def silhouette(embeddings: np.ndarray, labels: np.ndarray, *, normalize: str = 'standardize') -> float:
  """Mean silhouette coefficient of `(n, dim)` embeddings under integer labels `(n,)`, in [-1, 1].

  Raises ValueError when fewer than 2 or more than n - 1 distinct labels are present (undefined score).
  """
  labels = np.asarray(labels)
  x = normalize_embeddings(embeddings, normalize)
  if labels.shape != (x.shape[0],):
    raise ValueError(f'labels must have shape ({x.shape[0]},), got {labels.shape}')
  num_labels = np.unique(labels).size
  if not 2 <= num_labels <= x.shape[0] - 1:
    raise ValueError(f'silhouette needs 2 <= distinct labels <= n - 1, got {num_labels} labels for '
                     f'n={x.shape[0]}')
  return float(sk_metrics.silhouette_score(x, labels, metric='euclidean'))
