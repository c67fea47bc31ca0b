"""The study's augmentations as pure, jittable functions of explicit PRNG keys.

Inputs are `(batch, time, 8)` float arrays, channels a0-I, a0-Q, a1-I, a1-Q, ..., a3-Q
(antenna = channel // 2).

* MTC, multi-time cropping (`random_crop`): for a crop length l < time, one uniform start
  s in [0, time - l] per example, keep `x[:, s:s+l, :]`; for l >= time keep x.
* AD, antenna dropout @p (`antenna_dropout`): multiply by a {0,1} mask per example and antenna, each
  antenna kept with probability 1 - p, broadcast over I/Q and time. No 1/(1-p) rescaling: the study
  defines AD as a plain mask.
* Identity: `AugmentPolicy(enabled=False)`; both views are the unaltered example.
* Label-preserving IQ augmentations (`IQAugmentations`, the end of this module): a common phase rotation,
  a carrier-frequency shift, noise to a lower SNR, a cyclic time shift, 90-degree IQ rotations. Each is off
  unless `AugmentPolicy.iq` switches it on, independently of `enabled` (which switches MTC and AD).

A view is crop -> dropout -> IQ augmentations (`make_view`) at a static crop length. The length of a view
is drawn uniformly from the policy's set with its own key (`draw_crop_length`), on the host, so a step
that makes two views compiles one program per pair of lengths (at most |C|^2, each small). The two views
of a step use independent keys (`view_keys`).
"""

import dataclasses
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp

from ssl_jax.data import spec


def _check_input(x: jax.Array) -> None:
  shape = getattr(x, 'shape', None)
  if shape is None or len(shape) != 3 or shape[2] != spec.NUM_CHANNELS:
    raise ValueError(f'x must have shape (batch, time, {spec.NUM_CHANNELS}); got shape {shape}.')


def _local_draws(draw: Callable[[tuple[int, ...]], jax.Array], batch: int,
                 axis_name: Optional[str]) -> jax.Array:
  """Per-example random values for this device's `batch` rows.

  Outside a parallel map: `draw((batch,))`. Inside one (`axis_name`): the values are drawn for the whole
  global batch (`batch * num_devices` rows, the same key on every device) and this device keeps its rows,
  so the views a run makes do not depend on how many devices share the batch.
  """
  if axis_name is None:
    return draw((batch,))
  num_devices = jax.lax.axis_size(axis_name)
  draws = draw((batch * num_devices,))
  return jax.lax.dynamic_slice_in_dim(draws, jax.lax.axis_index(axis_name) * batch, batch, axis=0)


def random_crop(key: jax.Array, x: jax.Array, length: int, axis_name: Optional[str] = None) -> jax.Array:
  """MTC for one static crop length: `(batch, time, 8)` -> `(batch, min(length, time), 8)`.

  One start per example, uniform in [0, time - length]; length >= time returns x unchanged.
  With `axis_name` (inside shard_map/pmap) the starts are this device's slice of the global batch's draws.
  """
  _check_input(x)
  if not isinstance(length, int) or isinstance(length, bool) or length <= 0:
    raise ValueError(f'length must be a positive int; got {length!r}.')
  batch, time = x.shape[:2]
  if length >= time:
    return x
  starts = _local_draws(lambda shape: jax.random.randint(key, shape, 0, time - length + 1), batch, axis_name)
  # vmap of dynamic_slice, not take_along_axis: the faster form on CPU (docs/performance.md).
  return jax.vmap(lambda xi, si: jax.lax.dynamic_slice_in_dim(xi, si, length, axis=0))(x, starts)


def antenna_dropout(key: jax.Array, x: jax.Array, p: float, axis_name: Optional[str] = None) -> jax.Array:
  """AD@p: zero each antenna's I and Q over all time with probability p, per example.

  Mask `(batch, 1, 4)` in {0,1}, repeated over I/Q to `(batch, 1, 8)` and broadcast over time.
  Kept antennas are not rescaled. p = 0 returns x unchanged. `axis_name`: as in `random_crop`.
  """
  _check_input(x)
  if isinstance(p, (int, float)):
    if not 0.0 <= p < 1.0:
      raise ValueError(f'p must be in [0, 1); got {p}.')
    if p == 0:
      return x
  keep = _local_draws(lambda shape: jax.random.bernoulli(key, 1.0 - p, shape + (1, spec.NUM_ANTENNAS)),
                      x.shape[0], axis_name)
  return x * jnp.repeat(keep, spec.NUM_IQ, axis=-1).astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class AugmentPolicy:
  """What makes a view: MTC over `crop_lengths`, AD@`antenna_dropout` (both off with `enabled=False`),
  then the IQ augmentations `iq` switches on (none by default). `enabled=False` with the default `iq` is
  the identity.

  Hashable, so it can be a static argument or a closure constant of a jitted step.
  """
  crop_lengths: tuple[int, ...]
  antenna_dropout: float
  enabled: bool = True
  iq: 'IQAugmentations' = dataclasses.field(default_factory=lambda: IQAugmentations())

  def __post_init__(self):
    lengths = self.crop_lengths
    if not isinstance(lengths, tuple) or not lengths:
      raise ValueError(f'crop_lengths must be a non-empty tuple of positive ints; got {lengths!r}.')
    for length in lengths:
      if not isinstance(length, int) or isinstance(length, bool) or length <= 0:
        raise ValueError(f'crop_lengths must hold positive ints; got {length!r} in {lengths!r}.')
    p = self.antenna_dropout
    if isinstance(p, jax.core.Tracer):
      pass  # a member's value inside a member run's step (ssl_jax.members), checked before it was traced
    elif not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p < 1.0:
      raise ValueError(f'antenna_dropout must be a float in [0, 1); got {p!r}.')
    if not isinstance(self.enabled, bool):
      raise ValueError(f'enabled must be a bool; got {self.enabled!r}.')
    if not isinstance(self.iq, IQAugmentations):
      raise ValueError(f'iq must be an IQAugmentations; got {self.iq!r}.')

  @classmethod
  def from_config(cls, augment_config: Any) -> 'AugmentPolicy':
    """From `config.augment` (keys `crop_lengths`, `antenna_dropout`, `enabled`, `iq`)."""
    lengths = augment_config.crop_lengths
    if isinstance(lengths, Sequence) and not isinstance(lengths, str):
      lengths = tuple(lengths)
    return cls(crop_lengths=lengths, antenna_dropout=augment_config.antenna_dropout,
               enabled=augment_config.enabled, iq=IQAugmentations.from_config(augment_config.iq))


# `make_view` derives the IQ augmentations' key from a view's example key by `fold_in` with this number,
# so the crop and dropout keys (`split(example_key)`) and draws stay what they are without IQ augmentations.
_IQ_KEY_DATA = 0x49510001


def make_view(x: jax.Array, *, policy: AugmentPolicy, length: int, example_key: jax.Array,
              axis_name: Optional[str] = None) -> jax.Array:
  """One view at a given static crop length: crop -> antenna dropout -> the IQ augmentations of `policy.iq`.

  `(batch, time, 8)` -> `(batch, min(length, time), 8)`; `policy.enabled=False` skips the crop and the
  dropout, and with no IQ augmentation switched on either returns x. Inside shard_map, pass the same
  `example_key` on every device and the batch axis as `axis_name`: each device takes its rows of the
  draws made for the global batch, so the views do not depend on the device count.
  """
  _check_input(x)
  view = x
  if policy.enabled:
    crop_key, dropout_key = jax.random.split(example_key)
    view = random_crop(crop_key, view, length, axis_name)
    view = antenna_dropout(dropout_key, view, policy.antenna_dropout, axis_name)
  if policy.iq.any_enabled:
    view = iq_augment(jax.random.fold_in(example_key, _IQ_KEY_DATA), view, policy.iq, axis_name)
  return view


def draw_crop_length(length_key: jax.Array, policy: AugmentPolicy, time: int) -> jax.Array:
  """A view's crop length for `length_key`: one of `policy.crop_lengths`, uniformly, capped at `time`.

  Lengths >= time all mean the uncropped view and keep their probability mass. Jittable; the train loop
  calls it on the host (`int(...)`) and passes the result to `make_view` as a static length.
  """
  table = jnp.asarray([min(length, time) for length in policy.crop_lengths], jnp.int32)
  return table[jax.random.randint(length_key, (), 0, len(policy.crop_lengths))]


def view_keys(key: jax.Array):
  """Keys for the two views of one step: `((length_key_a, example_key_a), (length_key_b, ...))`.

  Pass the same `key` on every device (e.g. the run key folded with the step); per-device rows come
  from `make_view(..., axis_name=...)`, never from device-dependent keys.
  """
  length_a, length_b, example_a, example_b = jax.random.split(key, 4)
  return (length_a, example_a), (length_b, example_b)


# ---------------------------------------------------------------- label-preserving IQ augmentations
#
# Each is a pure, jittable function `(key, x (batch, time, 8), ...) -> same shape and dtype`, with one random
# draw per example (drawn for the global batch with `axis_name`, as `random_crop`), and each is off unless a
# caller applies it (`IQAugmentations()` applies none). Antenna `a`'s complex baseband sample is
# `z_a(t) = x[..., 2a] + 1j * x[..., 2a + 1]`.
#
# What they keep. The angle of arrival lives in the phase DIFFERENCES between antennas: for a plane wave
# z_a(t) = s(t) e^{j phi_a(theta)}, so the spatial covariance R_ab = sum_t z_a(t) conj(z_b(t)) carries
# e^{j(phi_a - phi_b)}. Any factor common to all antennas at each time t, c(t) z_a(t) with |c(t)| = 1,
# leaves every product z_a(t) conj(z_b(t)), hence R and the AoA, unchanged: a common phase rotation
# (c = e^{j theta}), a carrier-frequency shift (c(t) = e^{j 2 pi f t}) and a 90-degree IQ rotation
# (c = j^k). The cyclic time shift permutes time identically on all antennas (R unchanged; it does put
# a phase/symbol discontinuity at the wrap point). Added noise lowers the SNR (R gains sigma^2 I).
#
# A PER-ANTENNA phase change (a different theta_a per antenna) multiplies R_ab by e^{j(theta_a - theta_b)}:
# it moves the steering vector to another angle and destroys the AoA label. None of these functions does
# that; do not build one for AoA runs. (It, and per-antenna gains, are at most a calibration-error
# augmentation for AMC.)


def _iq_parts(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`(batch, time, 8)` -> I and Q, each `(batch, time, 4)`."""
  parts = x.reshape(x.shape[:2] + (spec.NUM_ANTENNAS, spec.NUM_IQ))
  return parts[..., 0], parts[..., 1]


def _from_iq(i: jax.Array, q: jax.Array) -> jax.Array:
  return jnp.stack([i, q], axis=-1).reshape(i.shape[:2] + (spec.NUM_CHANNELS,))


def _rotate(x: jax.Array, angle: jax.Array) -> jax.Array:
  """Multiplies every antenna's complex sample by e^{j angle}; `angle` broadcasts to `(batch, time, 1)`."""
  i, q = _iq_parts(x)
  cos, sin = jnp.cos(angle).astype(x.dtype), jnp.sin(angle).astype(x.dtype)
  return _from_iq(cos * i - sin * q, sin * i + cos * q)


def common_phase_rotation(key: jax.Array, x: jax.Array, axis_name: Optional[str] = None) -> jax.Array:
  """Rotates all antennas of an example by one phase theta ~ U[0, 2 pi): z_a -> e^{j theta} z_a (keeps AoA)."""
  _check_input(x)
  theta = _local_draws(lambda shape: jax.random.uniform(key, shape, jnp.float32, 0.0, 2 * jnp.pi),
                       x.shape[0], axis_name)
  return _rotate(x, theta[:, None, None])


def carrier_frequency_shift(key: jax.Array, x: jax.Array, max_cycles_per_sample: float,
                            axis_name: Optional[str] = None) -> jax.Array:
  """Shifts an example's carrier by f ~ U[-max, max] cycles per sample: z_a(t) -> e^{j 2 pi f t} z_a(t).

  The same f for all antennas (keeps AoA); t = 0 at the first sample of `x`. `max_cycles_per_sample` in
  [0, 0.5] (0 returns x).
  """
  _check_input(x)
  if (not isinstance(max_cycles_per_sample, (int, float)) or isinstance(max_cycles_per_sample, bool)
      or not 0.0 <= max_cycles_per_sample <= 0.5):
    raise ValueError(f'max_cycles_per_sample must be a float in [0, 0.5]; got {max_cycles_per_sample!r}.')
  if max_cycles_per_sample == 0:
    return x
  freq = _local_draws(lambda shape: jax.random.uniform(key, shape, jnp.float32, -max_cycles_per_sample,
                                                       max_cycles_per_sample), x.shape[0], axis_name)
  t = jnp.arange(x.shape[1], dtype=jnp.float32)
  return _rotate(x, (2 * jnp.pi * freq[:, None] * t[None, :])[..., None])


def add_noise_to_snr(key: jax.Array, x: jax.Array, snr_db: tuple[float, float],
                     axis_name: Optional[str] = None) -> jax.Array:
  """Adds complex white Gaussian noise at an SNR ~ U[snr_db] dB relative to the example's own power.

  Per example, with P = mean over time and antennas of |z_a(t)|^2 and an SNR s drawn uniformly in
  `snr_db = (low, high)`, adds independent N(0, P 10^(-s/10) / 2) noise to every I and Q value (all
  antennas, all time), i.e. noise of power P / 10^(s/10) per complex sample: the output's SNR with respect
  to the input signal is s (the input's own noise comes on top, so the total SNR is lower than both). An
  all-zero example stays zero. Computes in float32, or float64 for float64 input.
  """
  _check_input(x)
  try:
    low, high = (float(v) for v in snr_db)
  except (TypeError, ValueError):
    raise ValueError(f'snr_db must be a (low, high) pair of floats in dB; got {snr_db!r}.') from None
  if not (abs(low) < float('inf') and abs(high) < float('inf') and low <= high):  # also rejects NaN
    raise ValueError(f'snr_db must be finite with low <= high; got {snr_db!r}.')
  snr_key, noise_key = jax.random.split(key)
  dtype = jnp.promote_types(x.dtype, jnp.float32)  # float32, or float64 for float64 input
  snr = _local_draws(lambda shape: jax.random.uniform(snr_key, shape, jnp.float32, low, high),
                     x.shape[0], axis_name)
  example_keys = _local_draws(lambda shape: jax.random.split(noise_key, shape[0]), x.shape[0], axis_name)
  noise = jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], dtype))(example_keys)
  # Per real component: variance P 10^(-s/10) / 2 = mean(x^2) 10^(-s/10), since P = 2 mean(x^2).
  std = jnp.sqrt(jnp.mean(jnp.square(x.astype(dtype)), axis=(1, 2)) * 10.0**(-snr / 10.0))
  return (x.astype(dtype) + std[:, None, None] * noise).astype(x.dtype)


def cyclic_time_shift(key: jax.Array, x: jax.Array, axis_name: Optional[str] = None) -> jax.Array:
  """Rolls each example in time by d ~ U{0, ..., time - 1} samples, all antennas alike: x[t] -> x[t - d]."""
  _check_input(x)
  shift = _local_draws(lambda shape: jax.random.randint(key, shape, 0, x.shape[1]), x.shape[0], axis_name)
  return jax.vmap(lambda xi, d: jnp.roll(xi, d, axis=0))(x, shift)


def rotate_iq_90(key: jax.Array, x: jax.Array, axis_name: Optional[str] = None) -> jax.Array:
  """Rotates each example by k · 90 degrees, k ~ U{0, 1, 2, 3}, all antennas alike: z_a -> j^k z_a.

  Exact (a swap and sign flips of I and Q, no rounding). Meant for modulation (AMC) runs, where the
  square / PSK constellations are symmetric under it; being common to all antennas it is a special case of
  `common_phase_rotation` and keeps the AoA too.
  """
  _check_input(x)
  k = _local_draws(lambda shape: jax.random.randint(key, shape, 0, 4), x.shape[0], axis_name)[:, None, None]
  i, q = _iq_parts(x)
  rotated_i = jnp.where(k == 0, i, jnp.where(k == 1, -q, jnp.where(k == 2, -i, q)))
  rotated_q = jnp.where(k == 0, q, jnp.where(k == 1, i, jnp.where(k == 2, -q, -i)))
  return _from_iq(rotated_i, rotated_q)


@dataclasses.dataclass(frozen=True)
class IQAugmentations:
  """Which label-preserving IQ augmentations a view gets; the defaults apply none.

  Applied by `iq_augment` in this order: cyclic time shift, 90-degree rotation, common phase rotation,
  carrier-frequency shift, noise (last, so its SNR is relative to the transformed signal).
  """
  cyclic_shift: bool = False
  rotate_90: bool = False
  common_phase: bool = False
  max_frequency_shift: float = 0.0  # cycles per sample, in [0, 0.5]; 0 = off
  snr_db: Optional[tuple[float, float]] = None  # (low, high) dB; None = off

  def __post_init__(self):
    for name in ('cyclic_shift', 'rotate_90', 'common_phase'):
      if not isinstance(getattr(self, name), bool):
        raise ValueError(f'{name} must be a bool; got {getattr(self, name)!r}.')
    f = self.max_frequency_shift
    if not isinstance(f, (int, float)) or isinstance(f, bool) or not 0.0 <= f <= 0.5:
      raise ValueError(f'max_frequency_shift must be a float in [0, 0.5] cycles per sample; got {f!r}.')
    if self.snr_db is not None:
      snr = self.snr_db
      if (not isinstance(snr, tuple) or len(snr) != 2
          or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in snr)
          or not snr[0] <= snr[1]):
        raise ValueError(f'snr_db must be None or a (low, high) tuple of floats with low <= high; got {snr!r}.')

  @classmethod
  def from_config(cls, iq_config: Any) -> 'IQAugmentations':
    """From `config.augment.iq` (the field names; `snr_db` () is off, a (low, high) pair is on)."""
    snr_db = iq_config.snr_db
    if isinstance(snr_db, Sequence) and not isinstance(snr_db, str):
      snr_db = tuple(snr_db) or None
    return cls(cyclic_shift=iq_config.cyclic_shift, rotate_90=iq_config.rotate_90,
               common_phase=iq_config.common_phase, max_frequency_shift=iq_config.max_frequency_shift,
               snr_db=snr_db)

  @property
  def any_enabled(self) -> bool:
    return (self.cyclic_shift or self.rotate_90 or self.common_phase or self.max_frequency_shift > 0
            or self.snr_db is not None)


def iq_augment(key: jax.Array, x: jax.Array, augmentations: IQAugmentations,
               axis_name: Optional[str] = None) -> jax.Array:
  """Applies the augmentations switched on in `augmentations` (see `IQAugmentations`); none: returns x."""
  _check_input(x)
  shift_key, rotate_key, phase_key, frequency_key, noise_key = jax.random.split(key, 5)
  if augmentations.cyclic_shift:
    x = cyclic_time_shift(shift_key, x, axis_name)
  if augmentations.rotate_90:
    x = rotate_iq_90(rotate_key, x, axis_name)
  if augmentations.common_phase:
    x = common_phase_rotation(phase_key, x, axis_name)
  if augmentations.max_frequency_shift > 0:
    x = carrier_frequency_shift(frequency_key, x, augmentations.max_frequency_shift, axis_name)
  if augmentations.snr_db is not None:
    x = add_noise_to_snr(noise_key, x, augmentations.snr_db, axis_name)
  return x
