r"""AoAM simulator: multi-antenna radio IQ examples with AoA and modulation labels, in the AoAM HDF5 layout.

The real AoAM recordings (USRP testbed, 4 receive antennas, a transmitter moved by a servo) are not
public; this module makes data of the same layout and the same two label sets, with the physics that
makes both tasks learnable and not trivial.

Array geometry (what makes both angles identifiable)
  A 2x2 uniform rectangular array (URA) with half-wavelength spacing stands in the vertical y-z plane and
  looks along +x (broadside). Antenna positions in wavelengths, (y, z), seen from behind the array:
    a0 = (-1/4, +1/4)  top-left       a1 = (+1/4, +1/4)  top-right
    a2 = (-1/4, -1/4)  bottom-left    a3 = (+1/4, -1/4)  bottom-right
  A plane wave from azimuth az (in the horizontal plane, from +x towards +y) and elevation el (above the
  horizontal plane) has unit direction d = (cos el cos az, cos el sin az, sin el), and antenna m sees
    a_m(az, el) = exp(j 2 pi (y_m u + z_m v)),   u = cos(el) sin(az),   v = sin(el).
  So a1/a0 = exp(j pi u) and a0/a2 = exp(j pi v). On the study's grid (az, el in [-70, 70] deg) the map
  (az, el) -> (u, v) is one-to-one (v fixes el, then u / cos(el) = sin(az) fixes az) and |u|, |v| < 1, so
  the phases pi*u, pi*v never wrap: all 225 directions have distinct steering vectors. (A horizontal
  array with elevation measured from its plane would confuse el and -el: the mirror ambiguity this
  vertical, broadside geometry avoids; `tests/test_simulate.py` proves it with a beamformer scan.) The
  closest pair of directions (az = 60/70 deg at el = +-70 deg) differs by ~0.05 rad of inter-antenna phase,
  so the finest AoA distinctions need good SNR: the task is learnable, not trivial.

Labels
  AoA grid: az and el each -70..70 deg in 10 deg steps; index = (angle_deg + 70) / 10;
  aoa class = az_index * 15 + el_index (225 classes). Modulation ids in `MODULATIONS` order.
  Example i of a split has aoa = i % 225 and modulation = i % 7: since gcd(225, 7) = 1, every AoA class
  gets the same number of examples and the modulations are balanced overall and within each class (to one).

Waveforms (complex baseband s(t), one per example, unit mean power)
  bpsk, qpsk, pam4, qam16, qam64: i.i.d. symbols from the unit-power constellation, one every `sps` samples
  (sps uniform in [sps_low, sps_high], random symbol timing), shaped by a root-raised-cosine pulse with a
  roll-off drawn from `rolloffs`. The pulse is applied in the frequency domain on a circular (periodic)
  symbol stream, which is exact and costs one FFT pair.
  cw: the unmodulated carrier, s = 1.  sine: a carrier amplitude-modulated by a sine tone,
  s = 1 + m sin(2 pi f_m t + phi), depth m ~ U[am_depth_low, am_depth_high], f_m ~ U[am_freq_low, am_freq_high].

Channel and receiver (per example unless noted)
  carrier frequency offset: s(t) * exp(j 2 pi cfo t), cfo ~ U[-cfo_max, cfo_max] cycles/sample (common LO);
  multipath: the line of sight (gain 1) plus `num_reflections` reflections, each from a direction
    (az, el ~ U[-90, 90] deg) with power U[reflection_db_low, reflection_db_high] dB relative to the LOS,
    a phase relative to the LOS and an integer delay of 1..max_delay_samples samples; all paths share
    one random carrier phase per example. Where the reflections come from is `environment`:
      'static' (default): a fixed room, as the real testbed (fixed receiver, transmitter moved by a servo):
        each of the 225 positions has its own reflections, drawn once from `environment_seed`, so the
        same position always sees the same multipath (optionally with a per-example Gaussian jitter of
        the reflection phases, `reflection_phase_jitter_deg`, for imperfect servo repeatability);
      'random': every example redraws its reflections. The multipath is then noise that no learner can
        average out (docs/design.md), which is why 'static' is the default.
  fixed receiver (the same for every split; drawn from `receiver_seed`): per-antenna gain (+-1 dB) and
    phase (+-30 deg) mismatch and, when `iq_imbalance` (default off), per-antenna IQ imbalance
    (I' = I, Q' = (1 + eps)(Q cos phi - I sin phi), |eps| <= 0.01, |phi| <= 1 deg, ~40 dB image rejection);
  AWGN: SNR ~ U[snr_db_low, snr_db_high] dB, SNR = mean per-antenna signal power / noise power per antenna.
  (sps, roll-off, AM depth and frequency, CFO and SNR are per recording by default: see `nuisances`.)

Recordings (`nuisances`)
  The real AoAM is sliced from recording sessions, one per servo position and modulation, made with one
  transmitter and one receiver. 'recording' (default) models that, with settings drawn once from
  `recording_seed` (`recordings`): the transmitter's program (sps, roll-off, AM depth and tone frequency)
  is one per modulation; the carrier offset is the testbed's one LO offset plus a session drift of at
  most `cfo_drift` (default 5e-4 cycles/sample, below the 1/L frequency resolution of any crop); the SNR
  is one per position (the link budget at that servo position). What changes from example to example is
  what changes from slice to slice: the symbols, the symbol timing, the carrier phase, the AM tone phase
  and the noise. 'example' redraws every nuisance per example, so each example carries its own
  fingerprint (SNR, CFO, sps, roll-off) that both of its crops share. Measured, this matters less than
  one might fear: SimCLR with crops alone learns AoA about as well either way (docs/design.md).

Power normalisation
  Each example is scaled so that its measured mean power per complex sample over the 4 antennas is 1
  (mean of I^2 + Q^2 = 1), like one AGC for the whole array: the relative amplitudes and phases between
  antennas (the AoA information) and the SNR are kept, only the arbitrary overall level is removed.

Determinism
  Examples come in fixed chunks of `CHUNK_SIZE`; chunk c of a split draws from
  SeedSequence([seed, split_code, c]) (train 0, test 1), so the bytes depend only on (seed, split,
  parameters), splits are independent streams, and memory stays bounded for any number of examples.

CLI
  python -m ssl_jax.data.simulate --out FILE.h5 --examples_per_class N --length L --seed S [--split test]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
from typing import Iterator

import h5py
import numpy as np

from ssl_jax import atomic_files
from ssl_jax.data import spec
# The dataset's facts, under the names this module has always exported.
from ssl_jax.data.spec import MODULATIONS, NUM_AOA_CLASSES, NUM_ANTENNAS, NUM_MODULATIONS, TEST_EXAMPLES_PER_CLASS

ANGLE_GRID_DEG = np.asarray(spec.ANGLE_GRID_DEG, np.float32)  # spec's grid as an array, for indexing
SPLIT_CODES = {'train': 0, 'test': 1}
ENVIRONMENTS = ('static', 'random')
NUISANCE_SCOPES = ('recording', 'example')
CHUNK_SIZE = 2048  # examples per generation chunk; part of the seed contract, do not change lightly
# (y, z) positions in wavelengths, in antenna order a0..a3 (see module docstring).
ANTENNA_POSITIONS_WL = np.array([[-0.25, 0.25], [0.25, 0.25], [-0.25, -0.25], [0.25, -0.25]])


@dataclasses.dataclass(frozen=True)
class SimConfig:
  """Physics parameters of the simulator; defaults are the embedded AoAM stand-in."""
  length: int = spec.LENGTH  # samples per example (L)
  snr_db_low: float = 0.0
  snr_db_high: float = 30.0
  cfo_max: float = 0.01  # cycles per sample
  sps_low: int = 2  # samples per symbol, uniform integer in [sps_low, sps_high]
  sps_high: int = 8
  rolloffs: tuple[float, ...] = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)
  num_reflections: int = 2
  environment: str = 'static'  # 'static': reflections fixed per AoA position (a fixed room); 'random'
  environment_seed: int = 1  # the fixed room of 'static'
  reflection_phase_jitter_deg: float = 0.0  # 'static': per-example std of each reflection's phase
  reflection_db_low: float = -20.0  # reflection power relative to the line of sight
  reflection_db_high: float = -10.0
  max_delay_samples: int = 4
  am_depth_low: float = 0.3
  am_depth_high: float = 0.9
  am_freq_low: float = 0.004  # cycles per sample
  am_freq_high: float = 0.04
  iq_imbalance: bool = False  # optional: off by default (it slows the simulation; docs/performance.md)
  receiver_seed: int = 2024  # the fixed receiver hardware, shared by all splits
  nuisances: str = 'recording'  # 'recording': SNR, CFO and transmitter settings fixed per recording; 'example'
  recording_seed: int = 3  # the recordings' fixed settings under nuisances='recording'
  cfo_drift: float = 0.0005  # 'recording': LO drift between sessions, cycles/sample (below 1/L: unresolvable)

  def __post_init__(self):
    if self.length < 16:
      raise ValueError(f'length must be >= 16 samples, got {self.length}')
    if self.snr_db_low > self.snr_db_high:
      raise ValueError(f'snr_db_low ({self.snr_db_low}) > snr_db_high ({self.snr_db_high})')
    if not 1 <= self.sps_low <= self.sps_high:
      raise ValueError(f'need 1 <= sps_low <= sps_high, got {self.sps_low}, {self.sps_high}')
    if self.num_reflections < 0 or self.max_delay_samples < 1:
      raise ValueError('num_reflections must be >= 0 and max_delay_samples >= 1, got '
                       f'{self.num_reflections}, {self.max_delay_samples}')
    if self.max_delay_samples >= self.length:
      raise ValueError(f'max_delay_samples ({self.max_delay_samples}) must be < length ({self.length})')
    if self.environment not in ENVIRONMENTS:
      raise ValueError(f'environment must be one of {ENVIRONMENTS}, got {self.environment!r}')
    if not 0 <= self.cfo_drift <= self.cfo_max:
      raise ValueError(f'need 0 <= cfo_drift <= cfo_max, got {self.cfo_drift}, {self.cfo_max}')
    if self.nuisances not in NUISANCE_SCOPES:
      raise ValueError(f'nuisances must be one of {NUISANCE_SCOPES}, got {self.nuisances!r}')
    if self.reflection_phase_jitter_deg < 0:
      raise ValueError(f'reflection_phase_jitter_deg must be >= 0, got {self.reflection_phase_jitter_deg}')
    if not self.rolloffs or not all(0.0 < r <= 1.0 for r in self.rolloffs):
      raise ValueError(f'rolloffs must be non-empty values in (0, 1], got {self.rolloffs}')


@dataclasses.dataclass(frozen=True)
class Receiver:
  """The fixed receiver impairments. gains: complex (4,); iq_eps, iq_phi_rad: (4,)."""
  gains: np.ndarray
  iq_eps: np.ndarray
  iq_phi_rad: np.ndarray


def make_receiver(config: SimConfig) -> Receiver:
  """Draws the fixed per-antenna gain/phase mismatch and IQ imbalance from `config.receiver_seed`."""
  rng = np.random.default_rng(np.random.SeedSequence([config.receiver_seed, 7919]))
  gain_db = rng.uniform(-1.0, 1.0, NUM_ANTENNAS)
  phase = np.deg2rad(rng.uniform(-30.0, 30.0, NUM_ANTENNAS))
  gains = (10.0 ** (gain_db / 20.0) * np.exp(1j * phase)).astype(np.complex64)
  iq_eps = rng.uniform(-0.01, 0.01, NUM_ANTENNAS)
  iq_phi = np.deg2rad(rng.uniform(-1.0, 1.0, NUM_ANTENNAS))
  if not config.iq_imbalance:
    iq_eps, iq_phi = np.zeros(NUM_ANTENNAS), np.zeros(NUM_ANTENNAS)
  return Receiver(gains=gains, iq_eps=iq_eps.astype(np.float32), iq_phi_rad=iq_phi.astype(np.float32))


@functools.lru_cache(maxsize=8)
def _static_environment(environment_seed: int, k: int, db_low: float, db_high: float, max_delay: int):
  rng = np.random.default_rng(np.random.SeedSequence([environment_seed, 104729]))
  shape = (NUM_AOA_CLASSES, k)
  room = {'az': rng.uniform(-90.0, 90.0, shape), 'el': rng.uniform(-90.0, 90.0, shape),
          'power_db': rng.uniform(db_low, db_high, shape), 'phase': rng.uniform(0.0, 2 * np.pi, shape),
          'delay': rng.integers(1, max_delay + 1, shape)}
  for value in room.values():
    value.setflags(write=False)
  return room


def static_environment(config: SimConfig) -> dict[str, np.ndarray]:
  """The fixed room of `environment='static'`: per AoA position (225, k) reflection az/el (deg), power (dB),
  phase relative to the line of sight (rad) and delay (samples), drawn once from `environment_seed`."""
  return _static_environment(config.environment_seed, config.num_reflections, config.reflection_db_low,
                             config.reflection_db_high, config.max_delay_samples)


@functools.lru_cache(maxsize=8)
def _recordings(recording_seed: int, config_key: tuple) -> dict[str, np.ndarray]:
  (snr_low, snr_high, cfo_max, cfo_drift, sps_low, sps_high, num_rolloffs, depth_low, depth_high, freq_low,
   freq_high) = config_key
  rng = np.random.default_rng(np.random.SeedSequence([recording_seed, 7919]))
  program = {  # the transmitter's program: one setting per modulation
      'sps': rng.integers(sps_low, sps_high + 1, NUM_MODULATIONS),
      'rolloff_index': rng.integers(0, num_rolloffs, NUM_MODULATIONS),
      'am_depth': rng.uniform(depth_low, depth_high, NUM_MODULATIONS).astype(np.float32),
      'am_freq': rng.uniform(freq_low, freq_high, NUM_MODULATIONS)}
  table = {key: np.tile(value, (NUM_AOA_CLASSES, 1)) for key, value in program.items()}
  # One transmitter and one receiver: one LO offset for the testbed, drifting a little between sessions.
  lo_offset = rng.uniform(-cfo_max, cfo_max)
  table['cfo'] = lo_offset + rng.uniform(-cfo_drift, cfo_drift, (NUM_AOA_CLASSES, NUM_MODULATIONS))
  # The link budget depends on where the servo holds the transmitter, not on what it sends.
  table['snr_db'] = np.tile(rng.uniform(snr_low, snr_high, (NUM_AOA_CLASSES, 1)), (1, NUM_MODULATIONS))
  for value in table.values():
    value.setflags(write=False)
  return table


def recordings(config: SimConfig) -> dict[str, np.ndarray]:
  """The fixed settings of `nuisances='recording'`, each (225, 7): indexed [aoa, modulation].

  sps, rolloff_index, am_depth, am_freq: the transmitter's program, one per modulation; cfo (cycles per
  sample): the testbed's LO offset plus a session drift of at most `cfo_drift`; snr_db: one per position.
  """
  key = (config.snr_db_low, config.snr_db_high, config.cfo_max, config.cfo_drift, config.sps_low,
         config.sps_high, len(config.rolloffs), config.am_depth_low, config.am_depth_high,
         config.am_freq_low, config.am_freq_high)
  return _recordings(config.recording_seed, key)


def steering_vector(az_deg: np.ndarray, el_deg: np.ndarray) -> np.ndarray:
  """Ideal array response exp(j 2 pi (y_m u + z_m v)); (...,) angles -> (..., 4) complex64."""
  az, el = np.deg2rad(np.asarray(az_deg, np.float64)), np.deg2rad(np.asarray(el_deg, np.float64))
  u, v = np.cos(el) * np.sin(az), np.sin(el)
  phase = 2 * np.pi * (u[..., None] * ANTENNA_POSITIONS_WL[:, 0] + v[..., None] * ANTENNA_POSITIONS_WL[:, 1])
  return np.exp(1j * phase).astype(np.complex64)


def aoa_class(az_deg: np.ndarray, el_deg: np.ndarray) -> np.ndarray:
  """Grid angles (deg) -> AoA class az_index * 15 + el_index, int64."""
  az_index = np.rint(spec.grid_index(np.asarray(az_deg))).astype(np.int64)
  el_index = np.rint(spec.grid_index(np.asarray(el_deg))).astype(np.int64)
  return spec.aoa_class(az_index, el_index)


def class_angles_deg(aoa: np.ndarray) -> np.ndarray:
  """AoA class (n,) -> (azimuth, elevation) in degrees, float32 (n, 2)."""
  az_index, el_index = spec.axis_indices(np.asarray(aoa))
  return np.stack([ANGLE_GRID_DEG[az_index], ANGLE_GRID_DEG[el_index]], axis=-1)


def label_schedule(start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
  """Labels of examples start..start+count-1 of a split: (aoa (count,), modulation (count,)) int64."""
  index = np.arange(start, start + count, dtype=np.int64)
  return index % NUM_AOA_CLASSES, index % NUM_MODULATIONS


def num_split_examples(examples_per_class: int) -> int:
  if examples_per_class < 1:
    raise ValueError(f'examples_per_class must be >= 1, got {examples_per_class}')
  return examples_per_class * NUM_AOA_CLASSES


def _constellations() -> np.ndarray:
  """(7, 64) complex64: row = modulation id, 64 equiprobable entries over its unit-power constellation."""
  levels4 = np.array([-3.0, -1.0, 1.0, 3.0])
  levels8 = np.arange(-7.0, 8.0, 2.0)
  points = {
      'bpsk': np.array([-1.0, 1.0]),
      'pam4': levels4,
      'qpsk': (np.array([-1.0, 1.0])[:, None] + 1j * np.array([-1.0, 1.0])[None]).ravel(),
      'qam16': (levels4[:, None] + 1j * levels4[None]).ravel(),
      'qam64': (levels8[:, None] + 1j * levels8[None]).ravel(),
  }
  table = np.zeros((NUM_MODULATIONS, 64), np.complex128)
  for name, p in points.items():
    p = p / np.sqrt(np.mean(np.abs(p) ** 2))
    table[MODULATIONS.index(name)] = np.tile(p, 64 // len(p))
  return table.astype(np.complex64)


CONSTELLATIONS = _constellations()
DIGITAL_IDS = np.array([MODULATIONS.index(m) for m in ('bpsk', 'pam4', 'qam16', 'qam64', 'qpsk')])


def rrc_frequency_response(length: int, sps: int, rolloff: float) -> np.ndarray:
  """|H(f)| of a root-raised-cosine pulse on the `length`-point DFT grid (f in cycles/sample), (length,).

  Unit passband gain; symbol rate 1/sps; sqrt of the raised-cosine spectrum.
  """
  f = np.abs(np.fft.fftfreq(length)) * sps  # in units of the symbol rate
  lo, hi = (1.0 - rolloff) / 2.0, (1.0 + rolloff) / 2.0
  rc = np.where(f <= lo, 1.0, 0.5 * (1.0 + np.cos(np.pi / rolloff * (f - lo))))
  rc = np.where(f > hi, 0.0, rc)
  return np.sqrt(rc)


@functools.lru_cache(maxsize=8)
def _tables(length: int, sps_low: int, sps_high: int, rolloffs: tuple[float, ...]):
  """Pulse responses (num_sps, num_rolloffs, L) float32 and symbol masks (num_sps, sps_high, L) float32."""
  sps_values = np.arange(sps_low, sps_high + 1)
  pulses = np.array([[rrc_frequency_response(length, s, r) for r in rolloffs] for s in sps_values])
  t = np.arange(length)
  masks = np.zeros((len(sps_values), sps_high, length), np.float32)
  for i, s in enumerate(sps_values):
    for offset in range(s):
      masks[i, offset] = (t % s) == offset
  return pulses.astype(np.float32), masks


def _unit_power(s: np.ndarray) -> np.ndarray:
  power = np.mean(s.real ** 2 + s.imag ** 2, axis=-1, keepdims=True)
  return s * (1.0 / np.sqrt(np.maximum(power, 1e-12))).astype(np.float32)


def _baseband(rng: np.random.Generator, modulation: np.ndarray, config: SimConfig,
              recording: dict[str, np.ndarray] | None = None) -> dict:
  """Unit-power complex baseband waveforms (n, L) complex64 and their random parameters.

  recording: per-example settings from `recordings` (nuisances='recording'); they replace the draws of
  sps, roll-off and the AM tone (the draws are still made, so both scopes consume the same stream).
  """
  n, length = len(modulation), config.length
  s = np.empty((n, length), np.complex64)
  pulses, masks = _tables(length, config.sps_low, config.sps_high, tuple(config.rolloffs))
  sps = rng.integers(config.sps_low, config.sps_high + 1, n)
  rolloff_index = rng.integers(0, len(config.rolloffs), n)
  timing_draw = rng.integers(0, 1 << 30, n)
  am_depth = rng.uniform(config.am_depth_low, config.am_depth_high, n).astype(np.float32)
  am_freq = rng.uniform(config.am_freq_low, config.am_freq_high, n)
  am_phase = rng.uniform(0.0, 2 * np.pi, n)
  symbols = rng.integers(0, 64, (n, length), dtype=np.uint8)
  if recording is not None:
    sps, rolloff_index = recording['sps'], recording['rolloff_index']
    am_depth, am_freq = recording['am_depth'], recording['am_freq']
  timing = timing_draw % sps

  digital = np.isin(modulation, DIGITAL_IDS)
  d = np.flatnonzero(digital)
  if len(d):
    x = CONSTELLATIONS[modulation[d, None], symbols[d]]
    x *= masks[sps[d] - config.sps_low, timing[d]]
    spectrum = np.fft.fft(x, axis=-1)
    spectrum *= pulses[sps[d] - config.sps_low, rolloff_index[d]]
    s[d] = np.fft.ifft(spectrum, axis=-1)
  s[modulation == MODULATIONS.index('cw')] = 1.0
  a = np.flatnonzero(modulation == MODULATIONS.index('sine'))
  if len(a):
    t = np.arange(length)
    tone = np.sin(2 * np.pi * am_freq[a, None] * t + am_phase[a, None]).astype(np.float32)
    s[a] = 1.0 + am_depth[a, None] * tone
  return {'s': _unit_power(s), 'sps': sps, 'rolloff': np.asarray(config.rolloffs)[rolloff_index],
          'am_depth': am_depth, 'am_freq': am_freq}


def _rotation(cfo: np.ndarray, length: int) -> np.ndarray:
  """exp(j 2 pi cfo t) for t < length, (n, L) complex64, from two short exps and one outer product."""
  block = 32
  hi = np.arange((length + block - 1) // block) * block
  lo = np.arange(block)
  e_hi = np.exp(2j * np.pi * cfo[:, None] * hi).astype(np.complex64)
  e_lo = np.exp(2j * np.pi * cfo[:, None] * lo).astype(np.complex64)
  return (e_hi[:, :, None] * e_lo[:, None, :]).reshape(len(cfo), -1)[:, :length]


def _uniform01(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
  """Uniform float32 in [0, 1) with 23 random bits, from raw generator output (faster than rng.random)."""
  count = int(np.prod(shape))
  bits = rng.bit_generator.random_raw((count + 1) // 2).view(np.uint32)[:count].reshape(shape)
  u = ((bits >> np.uint32(9)) | np.uint32(0x3F800000)).view(np.float32)
  u -= np.float32(1.0)
  return u


def _complex_gaussian_polar(rng: np.random.Generator, shape: tuple[int, ...],
                            std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Circular complex Gaussian noise in polar form (Box-Muller): (radius, angle_rad) float32 of `shape`.

  std: (shape[0],) complex standard deviation per example. radius = std * sqrt(-ln U1) is Rayleigh with
  E[radius^2] = std^2, angle = 2 pi U2. Faster than
  `standard_normal` here, the simulator's largest cost; radius is capped at sqrt(23 ln 2) ~ 4 (P < 1e-7).
  """
  radius = _uniform01(rng, shape)
  np.subtract(np.float32(1.0), radius, out=radius)  # (0, 1]
  np.log(radius, out=radius)
  radius *= -np.square(std, dtype=np.float32).reshape((-1,) + (1,) * (len(shape) - 1))
  np.sqrt(radius, out=radius)
  angle = _uniform01(rng, shape)
  angle *= np.float32(2 * np.pi)
  return radius, angle


def simulate_examples(rng: np.random.Generator, aoa: np.ndarray, modulation: np.ndarray,
                      config: SimConfig, receiver: Receiver | None = None,
                      *, return_info: bool = False):
  """Simulates one chunk. aoa, modulation: (n,) ints -> iq float32 (n, 4, 2, L) [, info dict].

  info holds the per-example nuisance draws (snr_db, cfo, sps, rolloff, ...) for diagnostics and tests.
  """
  aoa, modulation = np.asarray(aoa, np.int64), np.asarray(modulation, np.int64)
  if aoa.shape != modulation.shape or aoa.ndim != 1:
    raise ValueError(f'aoa and modulation must be equal-length 1-D arrays, got {aoa.shape}, {modulation.shape}')
  if aoa.size and (aoa.min() < 0 or aoa.max() >= NUM_AOA_CLASSES):
    raise ValueError(f'aoa must be in [0, {NUM_AOA_CLASSES}), got range [{aoa.min()}, {aoa.max()}]')
  if modulation.size and (modulation.min() < 0 or modulation.max() >= NUM_MODULATIONS):
    raise ValueError(f'modulation must be in [0, {NUM_MODULATIONS}), got [{modulation.min()}, {modulation.max()}]')
  receiver = receiver if receiver is not None else make_receiver(config)
  n, length, k = len(aoa), config.length, config.num_reflections
  recording = None
  if config.nuisances == 'recording':
    recording = {key: value[aoa, modulation] for key, value in recordings(config).items()}
  info = _baseband(rng, modulation, config, recording)
  cfo = rng.uniform(-config.cfo_max, config.cfo_max, n)
  if recording is not None:
    cfo = recording['cfo']
  s = info.pop('s') * _rotation(cfo, length)

  # Paths: line of sight (delay 0, unit power) + k reflections; a common random carrier phase.
  angles = class_angles_deg(aoa)
  if config.environment == 'static':
    room = static_environment(config)
    refl_az, refl_el, refl_db = room['az'][aoa], room['el'][aoa], room['power_db'][aoa]
    refl_delay, refl_phase = room['delay'][aoa], room['phase'][aoa]
    if config.reflection_phase_jitter_deg > 0:
      refl_phase = refl_phase + np.deg2rad(config.reflection_phase_jitter_deg) * rng.standard_normal((n, k))
  else:
    refl_az, refl_el = rng.uniform(-90.0, 90.0, (n, k)), rng.uniform(-90.0, 90.0, (n, k))
    refl_db = rng.uniform(config.reflection_db_low, config.reflection_db_high, (n, k))
    refl_phase = rng.uniform(0.0, 2 * np.pi, (n, k))
    refl_delay = rng.integers(1, config.max_delay_samples + 1, (n, k))
  az = np.concatenate([angles[:, :1], refl_az], axis=1)
  el = np.concatenate([angles[:, 1:], refl_el], axis=1)
  power_db = np.concatenate([np.zeros((n, 1)), refl_db], 1)
  carrier_phase = rng.uniform(0.0, 2 * np.pi, (n, 1))
  path_gain = 10.0 ** (power_db / 20.0) * np.exp(1j * (carrier_phase + np.concatenate([np.zeros((n, 1)), refl_phase], 1)))
  delay = np.concatenate([np.zeros((n, 1), np.int64), refl_delay], 1)
  weights = (steering_vector(az, el) * receiver.gains).transpose(0, 2, 1) * path_gain[:, None, :]  # (n, 4, k+1)
  if k:
    dmax = config.max_delay_samples
    extended = np.concatenate([s[:, length - dmax:], s], axis=1)
    windows = np.lib.stride_tricks.sliding_window_view(extended, length, axis=1)  # (n, dmax+1, L)
    paths = windows[np.arange(n)[:, None], dmax - delay]  # (n, k+1, L)
    y = np.matmul(weights.astype(np.complex64), paths)  # (n, 4, L)
  else:
    y = weights.astype(np.complex64) * s[:, None, :]

  # AWGN at the drawn SNR: noise power = mean per-antenna signal power / snr.
  snr_db = rng.uniform(config.snr_db_low, config.snr_db_high, n)
  if recording is not None:
    snr_db = recording['snr_db']
  signal_power = np.sum(np.abs(path_gain) ** 2, axis=1) * np.mean(np.abs(receiver.gains) ** 2)
  noise_std = np.sqrt(signal_power / 10.0 ** (snr_db / 10.0)).astype(np.float32)  # complex std
  radius, angle = _complex_gaussian_polar(rng, (n, NUM_ANTENNAS, length), noise_std)
  iq = np.empty((n, NUM_ANTENNAS, 2, length), np.float32)
  np.cos(angle, out=iq[:, :, 0])
  np.sin(angle, out=iq[:, :, 1])
  iq[:, :, 0] *= radius
  iq[:, :, 1] *= radius
  iq[:, :, 0] += y.real
  iq[:, :, 1] += y.imag
  if config.iq_imbalance:
    a = ((1.0 + receiver.iq_eps) * np.cos(receiver.iq_phi_rad)).astype(np.float32)[:, None]
    b = ((1.0 + receiver.iq_eps) * np.sin(receiver.iq_phi_rad)).astype(np.float32)[:, None]
    iq[:, :, 1] *= a
    iq[:, :, 1] -= b * iq[:, :, 0]
  # Unit measured power per complex sample over the array (see module docstring).
  power = np.einsum('nact,nact->n', iq, iq) / (NUM_ANTENNAS * length)
  iq *= (1.0 / np.sqrt(np.maximum(power, 1e-20))).astype(np.float32)[:, None, None, None]
  if return_info:
    info.update(snr_db=snr_db, cfo=cfo, delay=delay, path_power_db=power_db)
    return iq, info
  return iq


def generate(split: str, examples_per_class: int, config: SimConfig, seed: int,
             start: int = 0, stop: int | None = None) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
  """Yields (first index, chunk) for examples [start, stop) of a split, chunk by chunk.

  A chunk is {'iq_data': float32 (c, 4, 2, L), 'modulation': int64 (c,), 'angles': float32 (c, 2)}.
  Chunk c always covers examples [c * CHUNK_SIZE, (c + 1) * CHUNK_SIZE), so any range gives the same bytes.
  """
  if split not in SPLIT_CODES:
    raise ValueError(f'split must be one of {sorted(SPLIT_CODES)}, got {split!r}')
  total = num_split_examples(examples_per_class)
  stop = total if stop is None else min(stop, total)
  receiver = make_receiver(config)
  for chunk in range(start // CHUNK_SIZE, (stop + CHUNK_SIZE - 1) // CHUNK_SIZE):
    first = chunk * CHUNK_SIZE
    count = min(CHUNK_SIZE, total - first)
    rng = np.random.default_rng(np.random.SeedSequence([seed, SPLIT_CODES[split], chunk]))
    aoa, modulation = label_schedule(first, count)
    iq = simulate_examples(rng, aoa, modulation, config, receiver)
    lo, hi = max(start - first, 0), min(stop - first, count)
    yield first + lo, {'iq_data': iq[lo:hi], 'modulation': modulation[lo:hi],
                       'angles': class_angles_deg(aoa[lo:hi])}


def write_hdf5(path: str, split: str, examples_per_class: int, config: SimConfig, seed: int) -> str:
  """Writes a split in the AoAM HDF5 layout, atomically (temp file in the same folder, then rename).

  The file gets the mode a new file gets under the process umask (0o644 under umask 022).
  """
  total = num_split_examples(examples_per_class)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  tmp_path = atomic_files.create_temp_beside(path)  # Mode 0o666 less the umask, as the final file's.
  try:
    with h5py.File(tmp_path, 'w') as f:
      rows = max(1, min(64, total))
      iq_ds = f.create_dataset('iq_data', (total, NUM_ANTENNAS, 2, config.length), np.float32,
                               chunks=(rows, NUM_ANTENNAS, 2, config.length))
      mod_ds = f.create_dataset('modulation', (total,), np.int64)
      ang_ds = f.create_dataset('angles', (total, 2), np.float32)
      for first, chunk in generate(split, examples_per_class, config, seed):
        end = first + len(chunk['modulation'])
        iq_ds[first:end] = chunk['iq_data']
        mod_ds[first:end] = chunk['modulation']
        ang_ds[first:end] = chunk['angles']
      f.attrs['modulation_classes'] = np.array(MODULATIONS, dtype=h5py.string_dtype())
      f.attrs['angle_grid_deg'] = ANGLE_GRID_DEG
      f.attrs['iq_layout'] = 'antenna (a0..a3), (I, Q), time'
      f.attrs['angles_columns'] = np.array(['azimuth_deg', 'elevation_deg'], dtype=h5py.string_dtype())
      f.attrs['split'] = split
      f.attrs['seed'] = seed
      f.attrs['examples_per_class'] = examples_per_class
      for key, value in dataclasses.asdict(config).items():
        f.attrs['sim_' + key] = value if isinstance(value, str) else np.asarray(value)
    os.replace(tmp_path, path)
  except BaseException:
    if os.path.exists(tmp_path):
      os.remove(tmp_path)
    raise
  return path


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description='Simulate an AoAM split into an HDF5 file.')
  parser.add_argument('--out', required=True, help='output .h5 path (written atomically)')
  parser.add_argument('--examples_per_class', type=int, default=None,
                      help=f'per AoA class; default 200 for train, {TEST_EXAMPLES_PER_CLASS} for test')
  parser.add_argument('--length', type=int, default=SimConfig.length)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--split', choices=sorted(SPLIT_CODES), default='train')
  parser.add_argument('--snr_db_low', type=float, default=SimConfig.snr_db_low)
  parser.add_argument('--snr_db_high', type=float, default=SimConfig.snr_db_high)
  parser.add_argument('--num_reflections', type=int, default=SimConfig.num_reflections)
  parser.add_argument('--no_iq_imbalance', action='store_true')
  parser.add_argument('--environment', choices=ENVIRONMENTS, default=SimConfig.environment,
                      help='static: reflections fixed per position (default); random: redrawn per example')
  parser.add_argument('--nuisances', choices=NUISANCE_SCOPES, default=SimConfig.nuisances,
                      help='recording: SNR, CFO, transmitter settings per recording (default); example: per example')
  args = parser.parse_args(argv)
  per_class = args.examples_per_class
  if per_class is None:
    per_class = TEST_EXAMPLES_PER_CLASS if args.split == 'test' else 200
  from ssl_jax import path_checks  # Local: the simulator library itself needs no path checks.
  try:  # Every argument and the output path before the first example is drawn.
    if per_class < 1:
      raise ValueError(f'--examples_per_class must be >= 1, got {per_class}')
    if args.seed < 0:
      raise ValueError(f'--seed must be >= 0, got {args.seed}')
    config = SimConfig(length=args.length, snr_db_low=args.snr_db_low, snr_db_high=args.snr_db_high,
                       num_reflections=args.num_reflections, iq_imbalance=not args.no_iq_imbalance,
                       environment=args.environment, nuisances=args.nuisances)
    path_checks.check_output_file(args.out, '--out')
    write_hdf5(args.out, args.split, per_class, config, args.seed)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except OSError as e:  # The disk filled up, or the path changed under us: nothing is left behind.
    print(f'error: cannot write --out {args.out!r}: {e}', file=sys.stderr)
    return 1
  print(f'wrote {num_split_examples(per_class)} {args.split} examples (L={args.length}) to {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
