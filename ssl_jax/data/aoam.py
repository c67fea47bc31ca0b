"""TFDS builder `aoam`: the AoAM dataset, simulated (embedded default) or read from real HDF5 recordings.

Configs (made from `config.data` by `builder_config`; the class lists none, since their parameters are
open-ended, and TFDS refuses a new config object named like a listed one)
  simulated: generates through `ssl_jax.data.simulate`; needs no files. Its name encodes every parameter
    that changes the bytes (length, examples per class for train/test, SNR range, seed), e.g.
    `simulated_l1024_e200_t26_snr0to30_s0`, so different settings are cached side by side.
  real: reads `train.h5` and `test.h5` (the AoAM layout, see `validate.py`) from the manual dir
    (`config.data.manual_dir`), validating keys, shapes, dtypes, label ranges and NaNs; errors name the
    file and the problem. Name `real_l{L}_{fingerprint}`: the fingerprint of the two files' content
    (`real_files.py`), so another set of files, or the same files rewritten, gets its own build and shards
    made from other files are never read. The build records the files it was made from (paths, sizes,
    mtimes, counts, digests) in its `metadata.json`, and a reuse checks it.

Features per example: 'iq' float32 (L, 8) in the model layout (channels a0-I, a0-Q, ..., a3-Q, i.e.
`iq_data.transpose(0, 3, 1, 2).reshape(n, L, 8)`), 'aoa' int (225 classes), 'modulation' int (7 classes),
'angles_deg' float32 (2,) = (azimuth, elevation).

Storage: shards are written once under `data_dir/aoam/<config name>/<version>/` in the order the
examples are generated (no TFDS shuffling) and reused by every later call. The file format is
array_record because it gives random access by global index (`builder.as_data_source(split)`): the input
pipeline reads any batch of any step directly, so a resumed run sees exactly the batches of an
uninterrupted one without reading through the steps before it (tfrecord would need a sequential skip).
'iq' is stored as raw bytes so writing and parsing cost one memcpy, not a float list.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from ssl_jax.data import real_files
from ssl_jax.data import simulate
from ssl_jax.data import spec
from ssl_jax.data import validate

REAL_FILES = real_files.FILE_NAMES
FILE_FORMAT = 'array_record'


def _number(x: float) -> str:
  """Float -> config-name-safe text: 2.5 -> '2p5', -5.0 -> 'm5'."""
  text = f'{float(x):g}'.replace('-', 'm').replace('.', 'p')
  return text


class AoamConfig(tfds.core.BuilderConfig):
  """A builder config: source 'simulated' or 'real' plus the parameters that define its bytes."""

  def __init__(self, *, source: str, length: int, examples_per_class: int = 200,
               test_examples_per_class: int = spec.TEST_EXAMPLES_PER_CLASS,
               snr_db_low: float = 0.0, snr_db_high: float = 30.0, sim_seed: int = 0,
               environment: str = 'static', nuisances: str = 'recording',
               real: real_files.RealFiles | None = None, **kwargs):
    """`real` (source 'real' only, required there): the checked, fingerprinted files the build reads."""
    if source not in ('simulated', 'real'):
      raise ValueError(f"source must be 'simulated' or 'real', got {source!r}")
    if length < 16:
      raise ValueError(f'length must be >= 16, got {length}')
    if source == 'simulated':
      if examples_per_class < 1 or test_examples_per_class < 1:
        raise ValueError('examples_per_class and test_examples_per_class must be >= 1, got '
                         f'{examples_per_class}, {test_examples_per_class}')
      if environment not in simulate.ENVIRONMENTS:
        raise ValueError(f'environment must be one of {simulate.ENVIRONMENTS}, got {environment!r}')
      if nuisances not in simulate.NUISANCE_SCOPES:
        raise ValueError(f'nuisances must be one of {simulate.NUISANCE_SCOPES}, got {nuisances!r}')
      name = (f'simulated_l{length}_e{examples_per_class}_t{test_examples_per_class}'
              f'_snr{_number(snr_db_low)}to{_number(snr_db_high)}_s{sim_seed}_{environment}_{nuisances}')
      description = 'AoAM simulated by ssl_jax.data.simulate.'
    else:
      if real is None:
        raise ValueError("source 'real' needs the inspected files (real_files.inspect(manual_dir, length))")
      if real.length != length:
        raise ValueError(f'{real.manual_dir}: the files hold examples of length {real.length}, the config '
                         f'asks for {length}')
      name = f'real_l{length}_{real.fingerprint}'
      description = f'Real AoAM recordings {REAL_FILES} read from {real.manual_dir}.'
    super().__init__(name=name, description=description, **kwargs)
    self.source = source
    self.length = int(length)
    self.examples_per_class = int(examples_per_class)
    self.test_examples_per_class = int(test_examples_per_class)
    self.snr_db_low = float(snr_db_low)
    self.snr_db_high = float(snr_db_high)
    self.sim_seed = int(sim_seed)
    self.environment = environment
    self.nuisances = nuisances
    self.real = real if source == 'real' else None

  def source_record(self) -> dict[str, Any]:
    """What the build is made from, as stored in its metadata.json: the real files, or {} if simulated."""
    if self.real is None:
      return {}
    return {'manual_dir': self.real.manual_dir, 'digest': self.real.digest,
            'files': {split: dataclasses.asdict(f) for split, f in self.real.files.items()}}

  def sim_config(self) -> simulate.SimConfig:
    return simulate.SimConfig(length=self.length, snr_db_low=self.snr_db_low, snr_db_high=self.snr_db_high,
                             environment=self.environment, nuisances=self.nuisances)


def to_model_layout(iq_data: np.ndarray) -> np.ndarray:
  """AoAM layout (n, 4, 2, L) -> model layout (n, L, 8), float32."""
  n, _, _, length = iq_data.shape
  return np.ascontiguousarray(iq_data.transpose(0, 3, 1, 2).reshape(n, length, spec.NUM_CHANNELS), np.float32)


class Aoam(tfds.core.GeneratorBasedBuilder):
  """AoAM: 4-antenna IQ examples labelled with angle of arrival (225) and modulation (7)."""

  VERSION = tfds.core.Version('1.2.0')
  RELEASE_NOTES = {'1.0.0': 'Simulated and real configs, array_record shards.',
                   '1.1.0': "Simulated: reflections fixed per AoA position by default (environment='static').",
                   '1.2.0': "Simulated: SNR, CFO and transmitter settings fixed per recording by default "
                            "(nuisances='recording')."}
  # None listed: every config comes from config.data through `builder_config` (see the module docstring).
  BUILDER_CONFIGS = []
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f'Put the AoAM HDF5 recordings in the manual dir as {REAL_FILES["train"]} and {REAL_FILES["test"]}, each '
      f'with datasets iq_data (n, {spec.NUM_ANTENNAS}, {spec.NUM_IQ}, L) float, modulation (n,) int in '
      f'[0, {spec.NUM_MODULATIONS}), angles (n, 2) degrees.')

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS 4.9.10's default probes `importlib_resources` (absent on Python >= 3.9) for editable installs.
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    length = self.builder_config.length
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'iq': tfds.features.Tensor(shape=(length, spec.NUM_CHANNELS), dtype=np.float32,
                                       encoding=tfds.features.Encoding.BYTES),
            'aoa': tfds.features.ClassLabel(num_classes=spec.NUM_AOA_CLASSES),
            'modulation': tfds.features.ClassLabel(names=spec.MODULATIONS),
            'angles_deg': tfds.features.Tensor(shape=(2,), dtype=np.float32),
        }),
        supervised_keys=None,
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(self.builder_config.source_record()),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    config = self.builder_config
    if config.source == 'simulated':
      per_class = {'train': config.examples_per_class, 'test': config.test_examples_per_class}
      return {split: self._generate_examples(split=split, examples_per_class=n) for split, n in per_class.items()}
    return {split: self._generate_examples(path=f.path) for split, f in config.real.files.items()}

  def _generate_examples(self, *, split: str | None = None, examples_per_class: int | None = None,
                         path: str | None = None):
    """Simulated split (split, examples_per_class) or real file (path) -> (index, example) in file order."""
    config = self.builder_config
    if path is None:
      for first, chunk in simulate.generate(split, examples_per_class, config.sim_config(), config.sim_seed):
        yield from _examples(first, chunk['iq_data'], chunk['modulation'], chunk['angles'])
    else:
      for first, iq, modulation, angles in validate.iter_chunks(path, config.length):
        yield from _examples(first, iq, modulation, angles)


def _examples(first: int, iq_data: np.ndarray, modulation: np.ndarray, angles: np.ndarray):
  iq = to_model_layout(iq_data)
  aoa = simulate.aoa_class(angles[:, 0], angles[:, 1])
  for i in range(len(iq)):
    yield first + i, {'iq': iq[i], 'aoa': int(aoa[i]), 'modulation': int(modulation[i]),
                      'angles_deg': angles[i].astype(np.float32)}


def builder_config(data_config: Any) -> AoamConfig:
  """config.data (see configs/base.py) -> the matching AoamConfig; for 'real', checks and fingerprints the files.

  Raises ValueError naming the directory, file, key, shape or dtype when the real files are missing or do not
  have the AoAM layout at `data_config.length`.
  """
  real = None
  if data_config.source == 'real':
    real = real_files.inspect(data_config.manual_dir, data_config.length)
  return AoamConfig(source=data_config.source, length=data_config.length,
                    examples_per_class=data_config.examples_per_class,
                    test_examples_per_class=data_config.test_examples_per_class,
                    snr_db_low=data_config.snr_db_low, snr_db_high=data_config.snr_db_high,
                    sim_seed=data_config.sim_seed, environment=data_config.get('environment', 'static'),
                    nuisances=data_config.get('nuisances', 'recording'), real=real)


def _check_built_from(builder: Aoam) -> None:
  """Raises ValueError if a reused real build records other files than the config's (a fingerprint collision)."""
  expected = builder.builder_config.source_record()
  recorded = dict(builder.info.metadata or {})
  if expected and recorded.get('digest') != expected['digest']:
    raise ValueError(
        f'{builder.data_path}: these shards were built from other files (recorded digest '
        f"{recorded.get('digest')!r}, {builder.builder_config.real.manual_dir} has {expected['digest']!r}); "
        f'delete {builder.data_path} and rerun to rebuild them from the current files')


def get_builder(data_config: Any) -> Aoam:
  """Builds the `aoam` builder for config.data and prepares it once (no network); later calls reuse the shards."""
  config = builder_config(data_config)
  builder = Aoam(config=config, data_dir=data_config.data_dir or None, file_format=FILE_FORMAT)
  builder.download_and_prepare(
      file_format=FILE_FORMAT,
      download_config=tfds.download.DownloadConfig(manual_dir=data_config.manual_dir or None,
                                                   try_download_gcs=False))
  _check_built_from(builder)
  return builder


class _CustomConfigFilter(logging.Filter):
  """Drops TFDS's "Using custom data configuration" warning for `aoam` configs: every one of them is custom."""

  def filter(self, record: logging.LogRecord) -> bool:
    args = record.args if isinstance(record.args, tuple) else ()
    return not (str(record.msg).startswith('Using custom data configuration')
                and args and isinstance(args[0], AoamConfig))


logging.getLogger('absl').addFilter(_CustomConfigFilter())
