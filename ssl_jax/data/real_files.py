"""The real AoAM recordings in a manual dir: where they are, their structure, and a fingerprint of their content.

The `real` source reads `train.h5` and `test.h5` from `config.data.manual_dir` (layout: `validate.py`).
`inspect` checks that both exist and have the AoAM structure at the requested length (keys, ranks, shapes,
dtypes, counts; no example data is read) and fingerprints them, so that a TFDS build made from one set of
files is never read back for another.

Fingerprint of one file: a BLAKE2b digest of its size, its modification time (ns), the name, shape and
dtype of each dataset, the whole `modulation` and `angles` arrays and up to `IQ_SAMPLE_ROWS` rows of
`iq_data` spread evenly over the file (the first and last included). The fingerprint of a pair is a
digest of the length and the two files' digests in split order. Rewriting or replacing either file (other
examples, labels, count, size, or only a new mtime) gives another fingerprint; reading it costs the label
arrays and a few rows, whatever the file's size.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Mapping

import numpy as np

from ssl_jax.data import spec, validate

FILE_NAMES = spec.REAL_FILE_NAMES
IQ_SAMPLE_ROWS = 64
FINGERPRINT_HEX = 16  # 64 bits: the part of the pair's digest that goes into the TFDS config name


@dataclasses.dataclass(frozen=True)
class RealFile:
  """One checked and fingerprinted file: path, example count and length, stat values, content digest (hex)."""
  split: str
  path: str
  num_examples: int
  length: int
  size: int
  mtime_ns: int
  digest: str


@dataclasses.dataclass(frozen=True)
class RealFiles:
  """The checked train and test files of a manual dir, the pair's digest (hex) and its short fingerprint."""
  manual_dir: str
  length: int
  files: Mapping[str, RealFile]
  digest: str

  @property
  def fingerprint(self) -> str:
    """The first FINGERPRINT_HEX hex digits of the digest: the part that names the TFDS build."""
    return self.digest[:FINGERPRINT_HEX]


def file_paths(manual_dir: str) -> dict[str, str]:
  """split -> path of its file in `manual_dir`; raises ValueError if manual_dir is empty or not a directory."""
  if not manual_dir:
    raise ValueError(f"config.data.manual_dir is empty; the 'real' source reads {FILE_NAMES['train']} and "
                     f"{FILE_NAMES['test']} from it")
  if not os.path.isdir(manual_dir):
    raise ValueError(f'config.data.manual_dir = {manual_dir!r}: no such directory (the real source reads '
                     f"{FILE_NAMES['train']} and {FILE_NAMES['test']} from it)")
  return {split: os.path.join(manual_dir, name) for split, name in FILE_NAMES.items()}


def _sample_rows(n: int) -> np.ndarray:
  """Up to IQ_SAMPLE_ROWS distinct, increasing row indices spread over [0, n), first and last included."""
  return np.unique(np.rint(np.linspace(0, n - 1, min(n, IQ_SAMPLE_ROWS))).astype(np.int64))


def inspect_file(split: str, path: str, length: int | None) -> RealFile:
  """Checks one file's structure (and length, if given) and fingerprints it; ValueError names file and problem."""
  if not os.path.isfile(path):
    raise ValueError(f'{path}: file not found (the real source reads {FILE_NAMES["train"]} and '
                     f'{FILE_NAMES["test"]} from config.data.manual_dir = {os.path.dirname(path)!r})')
  stat = os.stat(path)
  digest = hashlib.blake2b(digest_size=16)
  digest.update(f'size={stat.st_size};mtime_ns={stat.st_mtime_ns};'.encode())
  with validate.open_file(path) as f:
    summary = validate.check_structure(path, f, length)
    for key in validate.REQUIRED_KEYS:
      digest.update(f'{key}:{f[key].shape}:{f[key].dtype.str};'.encode())
    for key in ('modulation', 'angles'):
      digest.update(np.ascontiguousarray(validate.read_dataset(path, f[key])).tobytes())
    rows = _sample_rows(summary.num_examples)
    digest.update(rows.tobytes())
    digest.update(np.ascontiguousarray(validate.read_dataset(path, f['iq_data'], rows)).tobytes())
  return RealFile(split=split, path=path, num_examples=summary.num_examples, length=summary.length,
                  size=stat.st_size, mtime_ns=stat.st_mtime_ns, digest=digest.hexdigest())


def inspect(manual_dir: str, length: int | None) -> RealFiles:
  """Checks the manual dir's train and test files (structure, counts, length if given) and fingerprints them.

  Raises ValueError naming the directory or file and the problem (missing file, missing key, wrong shape,
  dtype or length). Labels' ranges and NaNs are checked later, by `validate.iter_chunks` while the shards are
  written.
  """
  files = {split: inspect_file(split, path, length) for split, path in file_paths(manual_dir).items()}
  lengths = {split: f.length for split, f in files.items()}
  if len(set(lengths.values())) != 1:
    raise ValueError(f'{manual_dir}: train and test examples differ in length: '
                     + ', '.join(f'{files[s].path} has L = {n}' for s, n in lengths.items()))
  pair = hashlib.blake2b(digest_size=16)
  pair.update(f'length={files["train"].length};'.encode())
  for split in FILE_NAMES:
    pair.update(f'{split}={files[split].digest};'.encode())
  return RealFiles(manual_dir=manual_dir, length=files['train'].length, files=files, digest=pair.hexdigest())
