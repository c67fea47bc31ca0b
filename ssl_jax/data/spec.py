"""The AoAM dataset's facts in one place: label sets, receive array, layouts, the study's sizes.

Pure Python without imports, so that every part of ssl_jax (data, models, evaluation), the configs and
the scripts can depend on it. Sources: `docs/study.md` ("The data: AoAM").

AoA labels
  Azimuth and elevation each take the `NUM_ANGLES` values of `ANGLE_GRID_DEG`, -70..70 deg in 10 deg
  steps; an angle's axis index is `grid_index(angle_deg)`. The class of a direction is azimuth-major,
  `aoa_class(az_index, el_index) = az_index * NUM_ANGLES + el_index`, in [0, NUM_AOA_CLASSES).
Modulation labels
  The index into `MODULATIONS`.
HDF5 layout (the recordings, and what `ssl_jax.data.simulate` writes)
  The datasets `HDF5_DATASETS`: iq_data float (n, NUM_ANTENNAS, NUM_IQ, L) (antenna, (I, Q), time);
  modulation int (n,); angles (n, 2) = (azimuth, elevation) in degrees.
Model layout
  (n, L, NUM_CHANNELS) float32, channel = NUM_IQ * antenna + (0 for I, 1 for Q): a0-I, a0-Q, ..., a3-Q.

The functions below use only arithmetic and `divmod`, so they apply to Python numbers and elementwise to
numpy or jax arrays alike.
"""

ANGLE_MIN_DEG = -70
ANGLE_STEP_DEG = 10
NUM_ANGLES = 15  # grid points per axis
ANGLE_GRID_DEG = tuple(ANGLE_MIN_DEG + ANGLE_STEP_DEG * i for i in range(NUM_ANGLES))  # (-70, ..., 70)
ANGLE_MAX_DEG = ANGLE_GRID_DEG[-1]
NUM_AOA_CLASSES = NUM_ANGLES * NUM_ANGLES  # 225

MODULATIONS = ('bpsk', 'cw', 'pam4', 'qam16', 'qam64', 'qpsk', 'sine')
NUM_MODULATIONS = len(MODULATIONS)

NUM_ANTENNAS = 4
NUM_IQ = 2  # I and Q
NUM_CHANNELS = NUM_ANTENNAS * NUM_IQ  # 8, the model layout's channels

HDF5_DATASETS = ('iq_data', 'modulation', 'angles')

# The study's sizes. The study does not state the example length; 1024 is ssl_jax's default (related work
# slices 256 or 1024 samples, and the crops up to 512 need L >= 512). The silhouette is computed on 5,850
# test examples, 26 per AoA class.
LENGTH = 1024
SILHOUETTE_EXAMPLES = 5850
TEST_EXAMPLES_PER_CLASS = SILHOUETTE_EXAMPLES // NUM_AOA_CLASSES  # 26


def grid_index(angle_deg):
  """Angle in degrees -> its (unrounded) axis index on the AoA grid: 0 at -70, 14 at 70."""
  return (angle_deg - ANGLE_MIN_DEG) / ANGLE_STEP_DEG


def aoa_class(az_index, el_index):
  """Axis indices (azimuth, elevation), each in [0, NUM_ANGLES) -> AoA class in [0, NUM_AOA_CLASSES)."""
  return az_index * NUM_ANGLES + el_index


def axis_indices(aoa):
  """AoA class -> (az_index, el_index); the inverse of `aoa_class`."""
  return divmod(aoa, NUM_ANGLES)

# The real recordings' file in `config.data.manual_dir` for each split.
REAL_FILE_NAMES = {'train': 'train.h5', 'test': 'test.h5'}
