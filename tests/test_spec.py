"""`ssl_jax.data.spec`: the AoAM facts, their consistency, the label <-> angle mapping, and no dependencies."""

import ast
import subprocess
import sys

import numpy as np

from configs import base
from ssl_jax.data import simulate
from ssl_jax.data import spec
from ssl_jax.evaluation import metrics


def test_the_datasets_facts():
  # Stated here independently of spec (docs/study.md, "The data: AoAM").
  assert spec.ANGLE_GRID_DEG == (-70, -60, -50, -40, -30, -20, -10, 0, 10, 20, 30, 40, 50, 60, 70)
  assert spec.NUM_AOA_CLASSES == 225
  assert spec.MODULATIONS == ('bpsk', 'cw', 'pam4', 'qam16', 'qam64', 'qpsk', 'sine')
  assert spec.NUM_ANTENNAS == 4 and spec.NUM_CHANNELS == 8
  assert spec.HDF5_DATASETS == ('iq_data', 'modulation', 'angles')
  assert spec.SILHOUETTE_EXAMPLES == 5850 and spec.TEST_EXAMPLES_PER_CLASS == 26


def test_counts_agree_with_the_grid_and_the_names():
  assert spec.NUM_ANGLES == len(spec.ANGLE_GRID_DEG) == len(set(spec.ANGLE_GRID_DEG))
  assert (spec.ANGLE_GRID_DEG[0], spec.ANGLE_GRID_DEG[-1]) == (spec.ANGLE_MIN_DEG, spec.ANGLE_MAX_DEG)
  assert set(np.diff(spec.ANGLE_GRID_DEG)) == {spec.ANGLE_STEP_DEG}
  assert spec.NUM_AOA_CLASSES == len(spec.ANGLE_GRID_DEG) ** 2
  assert spec.NUM_MODULATIONS == len(spec.MODULATIONS) == len(set(spec.MODULATIONS))
  assert spec.NUM_CHANNELS == spec.NUM_ANTENNAS * spec.NUM_IQ
  assert spec.TEST_EXAMPLES_PER_CLASS * spec.NUM_AOA_CLASSES == spec.SILHOUETTE_EXAMPLES
  assert spec.LENGTH >= max(base.STUDY_CROP_LENGTHS)  # every crop of the study fits in an example


def test_label_angle_mapping_round_trips():
  for aoa in range(spec.NUM_AOA_CLASSES):
    az_index, el_index = spec.axis_indices(aoa)
    assert 0 <= az_index < spec.NUM_ANGLES and 0 <= el_index < spec.NUM_ANGLES
    assert spec.aoa_class(az_index, el_index) == aoa
  for index, angle in enumerate(spec.ANGLE_GRID_DEG):
    assert spec.grid_index(angle) == index
  # Azimuth-major: the next azimuth is NUM_ANGLES classes on, the next elevation one.
  assert spec.aoa_class(1, 0) == spec.NUM_ANGLES and spec.aoa_class(0, 1) == 1
  assert spec.axis_indices(spec.NUM_AOA_CLASSES - 1) == (spec.NUM_ANGLES - 1, spec.NUM_ANGLES - 1)


def test_mapping_is_elementwise_on_arrays():
  classes = np.arange(spec.NUM_AOA_CLASSES)
  az_index, el_index = spec.axis_indices(classes)
  np.testing.assert_array_equal(az_index, [spec.axis_indices(int(c))[0] for c in classes])
  np.testing.assert_array_equal(el_index, [spec.axis_indices(int(c))[1] for c in classes])
  np.testing.assert_array_equal(spec.aoa_class(az_index, el_index), classes)
  np.testing.assert_array_equal(spec.grid_index(np.asarray(spec.ANGLE_GRID_DEG, np.float32)),
                                np.arange(spec.NUM_ANGLES))


def test_simulator_and_metrics_use_the_same_mapping():
  classes = np.arange(spec.NUM_AOA_CLASSES)
  expected = np.array([[spec.ANGLE_GRID_DEG[c // spec.NUM_ANGLES], spec.ANGLE_GRID_DEG[c % spec.NUM_ANGLES]]
                       for c in classes])
  np.testing.assert_array_equal(simulate.class_angles_deg(classes), expected)
  np.testing.assert_array_equal(metrics.aoa_class_to_angles_deg(classes), expected)
  np.testing.assert_array_equal(simulate.aoa_class(expected[:, 0], expected[:, 1]), classes)


def test_spec_has_no_dependencies():
  with open(spec.__file__) as f:
    tree = ast.parse(f.read())
  assert not [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
  # Importing it loads no third-party package (its parent packages' __init__ files included).
  code = ('import sys; import ssl_jax.data.spec; '
          'print(sorted(m for m in ("numpy", "jax", "tensorflow", "h5py") if m in sys.modules))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True, timeout=60)
  assert out.stdout.strip() == '[]'
