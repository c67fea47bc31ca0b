"""Validation of AoAM HDF5 files (real recordings or simulator output), shared by the TFDS builder and a CLI.

Layout: `iq_data` float (n, 4, 2, L) (antenna, I/Q, time), `modulation` int (n,) in [0, 7),
`angles` numeric (n, 2) = (azimuth, elevation) in degrees on the -70..70 grid in 10 deg steps.
Every problem is a ValueError that names the file and what is wrong.

CLI: `python -m ssl_jax.data.validate FILE.h5 [FILE.h5 ...] [--length L]`, exit status 1 on the first bad file
(or one that is missing or a directory), 2 on a bad --length.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import h5py
import numpy as np

from ssl_jax.data import spec

REQUIRED_KEYS = spec.HDF5_DATASETS
ANGLE_TOLERANCE_DEG = 0.5  # how far an angle may sit from its grid point (servo readout rounding)


@dataclasses.dataclass(frozen=True)
class FileSummary:
  path: str
  num_examples: int
  length: int


def open_file(path: str) -> h5py.File:
  """Opens an HDF5 file read-only; ValueError naming the file if it is missing or unreadable."""
  try:
    return h5py.File(path, 'r')
  except FileNotFoundError:
    raise ValueError(f'{path}: file not found') from None
  except OSError as e:
    raise ValueError(f'{path}: not a readable HDF5 file (truncated or corrupt?): {e}') from None


def read_dataset(path: str, dataset: h5py.Dataset, selection=slice(None)) -> np.ndarray:
  """dataset[selection]; ValueError naming the file and dataset if the bytes cannot be read."""
  try:
    return dataset[selection]
  except (OSError, RuntimeError) as e:
    raise ValueError(f'{path}: cannot read {dataset.name!r} (truncated or corrupt?): {e}') from None


def check_labels(path: str, modulation: np.ndarray, angles: np.ndarray, start: int = 0) -> None:
  """Raises ValueError naming the first example whose modulation or angle is out of range or off the grid."""
  bad = np.flatnonzero((modulation < 0) | (modulation >= spec.NUM_MODULATIONS))
  if bad.size:
    i = bad[0]
    raise ValueError(f'{path}: modulation[{start + i}] = {modulation[i]} is out of range '
                     f'[0, {spec.NUM_MODULATIONS}) ({bad.size} such examples)')
  finite = np.isfinite(angles).all(axis=1)
  if not finite.all():
    i = np.flatnonzero(~finite)[0]
    raise ValueError(f'{path}: angles[{start + i}] = {angles[i].tolist()} is not finite')
  index = spec.grid_index(angles)
  off = ((np.abs(index - np.rint(index)) * spec.ANGLE_STEP_DEG > ANGLE_TOLERANCE_DEG) | (index < -0.05)
         | (index > spec.NUM_ANGLES - 1 + 0.05))
  if off.any():
    example, column = np.argwhere(off)[0]
    name = ('azimuth', 'elevation')[column]
    raise ValueError(f'{path}: angles[{start + example}] {name} = {angles[example, column]} deg is not on the AoA '
                     f'grid ({spec.ANGLE_MIN_DEG}..{spec.ANGLE_MAX_DEG} in {spec.ANGLE_STEP_DEG} deg steps, '
                     f'tolerance {ANGLE_TOLERANCE_DEG}) ({int(off.any(1).sum())} such examples)')


def check_iq(path: str, iq: np.ndarray, start: int = 0) -> None:
  """Raises ValueError naming the first example of a chunk (c, 4, 2, L) with a NaN or Inf."""
  finite = np.isfinite(iq).reshape(len(iq), -1).all(axis=1)
  if not finite.all():
    i = np.flatnonzero(~finite)[0]
    raise ValueError(f'{path}: iq_data[{start + i}] contains NaN or Inf ({int((~finite).sum())} such examples in '
                     f'[{start}, {start + len(iq)}))')


def check_structure(path: str, f: h5py.File, length: int | None = None) -> FileSummary:
  """Keys, ranks, shapes, dtypes and counts; reads no example data."""
  missing = [k for k in REQUIRED_KEYS if k not in f]
  if missing:
    raise ValueError(f'{path}: missing dataset(s) {missing}; found {sorted(f.keys())}, need {list(REQUIRED_KEYS)}')
  iq, modulation, angles = (f[k] for k in REQUIRED_KEYS)
  for name, ds in zip(REQUIRED_KEYS, (iq, modulation, angles)):
    if not isinstance(ds, h5py.Dataset):
      raise ValueError(f'{path}: {name!r} is a {type(ds).__name__}, not a dataset')
  if iq.ndim != 4 or iq.shape[1:3] != (spec.NUM_ANTENNAS, spec.NUM_IQ):
    raise ValueError(f'{path}: iq_data has shape {iq.shape}, expected (n, {spec.NUM_ANTENNAS}, {spec.NUM_IQ}, L)')
  if modulation.ndim != 1:
    raise ValueError(f'{path}: modulation has shape {modulation.shape}, expected (n,)')
  if angles.ndim != 2 or angles.shape[1] != 2:
    raise ValueError(f'{path}: angles has shape {angles.shape}, expected (n, 2)')
  if not np.issubdtype(iq.dtype, np.floating):
    raise ValueError(f'{path}: iq_data has dtype {iq.dtype}, expected a float type (float32)')
  if not np.issubdtype(modulation.dtype, np.integer):
    raise ValueError(f'{path}: modulation has dtype {modulation.dtype}, expected an integer type')
  if not (np.issubdtype(angles.dtype, np.floating) or np.issubdtype(angles.dtype, np.integer)):
    raise ValueError(f'{path}: angles has dtype {angles.dtype}, expected a numeric type')
  n = iq.shape[0]
  if n == 0:
    raise ValueError(f'{path}: empty file (iq_data has 0 examples)')
  if modulation.shape[0] != n or angles.shape[0] != n:
    raise ValueError(f'{path}: example counts differ: iq_data {n}, modulation {modulation.shape[0]}, '
                     f'angles {angles.shape[0]}')
  if length is not None and iq.shape[3] != length:
    raise ValueError(f'{path}: examples have length L = {iq.shape[3]}, the config asks for {length} '
                     f'(set config.data.length = {iq.shape[3]})')
  return FileSummary(path=path, num_examples=n, length=iq.shape[3])


def iter_chunks(path: str, length: int | None = None, chunk_size: int = 1024):
  """Validates a file and yields (start, iq (c, 4, 2, L) float32, modulation (c,) int64, angles (c, 2) float32).

  Structure and labels are checked before the first chunk; NaN/Inf per chunk, so memory stays bounded.
  """
  with open_file(path) as f:
    summary = check_structure(path, f, length)
    modulation = read_dataset(path, f['modulation']).astype(np.int64)
    angles = read_dataset(path, f['angles']).astype(np.float32)
    check_labels(path, modulation, angles)
    for start in range(0, summary.num_examples, chunk_size):
      stop = min(start + chunk_size, summary.num_examples)
      iq = read_dataset(path, f['iq_data'], slice(start, stop)).astype(np.float32, copy=False)
      check_iq(path, iq, start)
      yield start, iq, modulation[start:stop], angles[start:stop]


def validate_file(path: str, length: int | None = None) -> FileSummary:
  """Full check of one file (structure, labels, every value); returns its summary or raises ValueError."""
  summary = None
  for _ in iter_chunks(path, length):
    pass
  with open_file(path) as f:
    summary = check_structure(path, f, length)
  return summary


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description='Validate AoAM HDF5 files.')
  parser.add_argument('files', nargs='+')
  parser.add_argument('--length', type=int, default=None, help='required example length L')
  args = parser.parse_args(argv)
  if args.length is not None and args.length < 1:
    print(f'error: --length must be >= 1, got {args.length}', file=sys.stderr)
    return 2
  from ssl_jax import path_checks  # Local: the library functions above need no path checks.
  for path in args.files:
    try:
      path_checks.check_input_file(path, 'file')
      summary = validate_file(path, args.length)
    except ValueError as e:
      print(f'error: {e}', file=sys.stderr)
      return 1
    print(f'{path}: ok, {summary.num_examples} examples of length {summary.length}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
