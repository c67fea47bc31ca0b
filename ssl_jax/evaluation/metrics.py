"""Evaluation metrics: classification accuracy and the AoA angular error in degrees.

AoA classes index a grid of azimuth and elevation, each -70..70 deg in 10 deg steps:
`class = az_index * 15 + el_index` with `index = (angle_deg + 70) / 10` (`ssl_jax.data.spec`).

AoA MAE (`aoa_mae_deg`) is defined as the mean over examples of the mean of the absolute azimuth error
and the absolute elevation error, `mean_i (|az_pred - az_true| + |el_pred - el_true|) / 2`, where the
predicted angles are the grid angles of the predicted class and the true angles are the example's
recorded `(azimuth, elevation)`. This is the per-axis MAE of the project the study comes from; the
great-circle angle between the two directions is also available (`great_circle_deg`) but not reported.
"""

import numpy as np

from ssl_jax.data import spec

AOA_GRID_DEG = np.asarray(spec.ANGLE_GRID_DEG, np.float64)  # spec's grid as an array, for indexing


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
  """Fraction of `predictions == labels`; both integer `(n,)`."""
  predictions, labels = np.asarray(predictions), np.asarray(labels)
  if predictions.shape != labels.shape or predictions.ndim != 1:
    raise ValueError(f'predictions and labels must both have shape (n,), got {predictions.shape} and '
                     f'{labels.shape}')
  if labels.size == 0:
    raise ValueError('labels is empty')
  return float(np.mean(predictions == labels))


def aoa_class_to_angles_deg(classes: np.ndarray) -> np.ndarray:
  """AoA class ids `(n,)` in [0, 225) -> grid `(azimuth, elevation)` in degrees, `(n, 2)` float64."""
  classes = np.asarray(classes)
  if classes.ndim != 1 or not np.issubdtype(classes.dtype, np.integer):
    raise ValueError(f'classes must be integer (n,), got {classes.dtype} {classes.shape}')
  if classes.size and (classes.min() < 0 or classes.max() >= spec.NUM_AOA_CLASSES):
    raise ValueError(f'classes must lie in [0, {spec.NUM_AOA_CLASSES}), got range '
                     f'[{classes.min()}, {classes.max()}]')
  az_index, el_index = spec.axis_indices(classes)
  return np.stack([AOA_GRID_DEG[az_index], AOA_GRID_DEG[el_index]], axis=1)


def aoa_mae_deg(predicted_classes: np.ndarray, angles_deg: np.ndarray) -> float:
  """Mean over examples of the mean absolute (azimuth, elevation) error in degrees.

  Args:
    predicted_classes: `(n,)` AoA class ids.
    angles_deg: `(n, 2)` true (azimuth, elevation) in degrees.
  """
  angles_deg = np.asarray(angles_deg, np.float64)
  if angles_deg.ndim != 2 or angles_deg.shape[1] != 2 or angles_deg.shape[0] != len(predicted_classes):
    raise ValueError(f'angles_deg must have shape ({len(predicted_classes)}, 2), got {angles_deg.shape}')
  error_deg = np.abs(aoa_class_to_angles_deg(predicted_classes) - angles_deg)
  return float(np.mean(error_deg))


def great_circle_deg(angles_a_deg: np.ndarray, angles_b_deg: np.ndarray) -> np.ndarray:
  """Angle in degrees between directions given as `(n, 2)` (azimuth, elevation); `(n,)`."""
  az_a, el_a = np.deg2rad(np.asarray(angles_a_deg, np.float64)).T
  az_b, el_b = np.deg2rad(np.asarray(angles_b_deg, np.float64)).T
  cos = np.sin(el_a) * np.sin(el_b) + np.cos(el_a) * np.cos(el_b) * np.cos(az_a - az_b)
  return np.rad2deg(np.arccos(np.clip(cos, -1.0, 1.0)))


def mean_std(values) -> dict:
  """`{'mean', 'std', 'values'}` of a list of floats (population std, 0 for one value)."""
  values = [float(v) for v in values]
  return {'mean': float(np.mean(values)), 'std': float(np.std(values)), 'values': values}
