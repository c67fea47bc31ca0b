"""The study's augmentations as pure, jittable functions of explicit PRNG keys.

Inputs are `(batch, time, 8)` float arrays, channels a0-I, a0-Q, a1-I, a1-Q, ..., a3-Q
(antenna = channel // 2).

* MTC, multi-time cropping (`random_crop`): for a crop length l < time, one uniform start
  s in [0, time - l] per example, keep `x[:, s:s+l, :]`; for l >= time keep x.
* AD, antenna dropout @p (`antenna_dropout`): multiply by a {0,1} mask per example and antenna, each
  antenna kept with probability 1 - p, broadcast over I/Q and time. No 1/(1-p) rescaling: the study
  defines AD as a plain mask.
* Identity: `AugmentPolicy(enabled=False)`; both views are the unaltered example.

A view is crop -> dropout (`make_view`). `apply_view` draws the crop length for a view uniformly from
the policy's set and runs `fn` on the view inside `jax.lax.switch`, one branch per distinct effective
length, so a step function that makes two views compiles ONCE (one program, `|C|` branches per view)
whatever lengths are drawn. The two views of a step use independent keys (`view_keys`).
"""

import dataclasses
from typing import Any, Callable, Optional, Sequence, TypeVar

import jax
import jax.numpy as jnp

from ssl_jax.data import spec

Out = TypeVar('Out')


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
  """What makes a view: MTC over `crop_lengths`, AD@`antenna_dropout`; `enabled=False` is identity.

  Hashable, so it can be a static argument or a closure constant of a jitted step.
  """
  crop_lengths: tuple[int, ...]
  antenna_dropout: float
  enabled: bool = True

  def __post_init__(self):
    lengths = self.crop_lengths
    if not isinstance(lengths, tuple) or not lengths:
      raise ValueError(f'crop_lengths must be a non-empty tuple of positive ints; got {lengths!r}.')
    for length in lengths:
      if not isinstance(length, int) or isinstance(length, bool) or length <= 0:
        raise ValueError(f'crop_lengths must hold positive ints; got {length!r} in {lengths!r}.')
    p = self.antenna_dropout
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p < 1.0:
      raise ValueError(f'antenna_dropout must be a float in [0, 1); got {p!r}.')
    if not isinstance(self.enabled, bool):
      raise ValueError(f'enabled must be a bool; got {self.enabled!r}.')

  @classmethod
  def from_config(cls, augment_config: Any) -> 'AugmentPolicy':
    """From `config.augment` (keys `crop_lengths`, `antenna_dropout`, `enabled`)."""
    lengths = augment_config.crop_lengths
    if isinstance(lengths, Sequence) and not isinstance(lengths, str):
      lengths = tuple(lengths)
    return cls(crop_lengths=lengths, antenna_dropout=augment_config.antenna_dropout,
               enabled=augment_config.enabled)

  def effective_lengths(self, time: int) -> tuple[int, ...]:
    """The distinct crop lengths `min(l, time)` in increasing order (the switch branches)."""
    return tuple(sorted({min(length, time) for length in self.crop_lengths}))


def make_view(x: jax.Array, *, policy: AugmentPolicy, length: int, example_key: jax.Array,
              axis_name: Optional[str] = None) -> jax.Array:
  """One view at a given static crop length: crop -> antenna dropout.

  `(batch, time, 8)` -> `(batch, min(length, time), 8)`; `policy.enabled=False` returns x.
  """
  _check_input(x)
  if not policy.enabled:
    return x
  crop_key, dropout_key = jax.random.split(example_key)
  view = random_crop(crop_key, x, length, axis_name)
  return antenna_dropout(dropout_key, view, policy.antenna_dropout, axis_name)


def apply_view(fn: Callable[[jax.Array], Out], x: jax.Array, *, policy: AugmentPolicy,
               length_key: jax.Array, example_key: jax.Array, axis_name: Optional[str] = None) -> Out:
  """Makes ONE augmented view of x `(batch, time, 8)` and returns `fn(view)`.

  The crop length is drawn uniformly from `policy.crop_lengths` with `length_key`; crop starts and
  dropout masks use `example_key`. Under shard_map/pmap pass the SAME keys on every device and the
  batch axis as `axis_name`: all devices take the same branch (static shapes, and collectives inside
  `fn` such as global BatchNorm line up), and each device takes its rows of the per-example draws made
  for the global batch, so the views do not depend on the device count.

  Implemented as `jax.lax.switch` over one branch per distinct effective length `min(l, time)`, each
  branch crop -> dropout -> fn. Lengths >= time all map to the identity crop and keep their
  probability mass. Compiled variants: 1 per step function; |distinct lengths| branches per view.
  `fn` must return the same pytree of shapes and dtypes for every length (e.g. `(batch, dim)`
  embeddings plus batch statistics). Differentiable: `fn` may close over parameters under jax.grad.

  With `policy.enabled=False` returns `fn(x)` exactly (the "no augmentation" ablation).
  """
  _check_input(x)
  if not policy.enabled:
    return fn(x)
  lengths = policy.effective_lengths(x.shape[1])
  branches = [
      lambda x, key, length=length: fn(make_view(x, policy=policy, length=length, example_key=key,
                                                 axis_name=axis_name))
      for length in lengths
  ]
  if len(branches) == 1:
    return branches[0](x, example_key)
  # Each entry of crop_lengths is equally likely; map it to its branch.
  branch_of_choice = jnp.asarray(
      [lengths.index(min(length, x.shape[1])) for length in policy.crop_lengths], jnp.int32)
  return jax.lax.switch(branch_of_choice[_draw_choice(length_key, policy)], branches, x, example_key)


def _draw_choice(length_key: jax.Array, policy: AugmentPolicy) -> jax.Array:
  return jax.random.randint(length_key, (), 0, len(policy.crop_lengths))


def draw_crop_length(length_key: jax.Array, policy: AugmentPolicy, time: int) -> jax.Array:
  """The effective crop length `min(l, time)` that `apply_view` uses for this `length_key`.

  For callers that compile one step per length pair instead of using `apply_view`'s switch:
  `int(draw_crop_length(...))` on the host, then `make_view(..., length=that)` under jit gives
  exactly `apply_view`'s view for the same keys.
  """
  table = jnp.asarray([min(length, time) for length in policy.crop_lengths], jnp.int32)
  return table[_draw_choice(length_key, policy)]


def view_keys(key: jax.Array):
  """Keys for the two views of one step: `((length_key_a, example_key_a), (length_key_b, ...))`.

  Pass the same `key` on every device (e.g. the run key folded with the step); per-device rows come
  from `apply_view(..., axis_name=...)`, never from device-dependent keys.
  """
  length_a, length_b, example_a, example_b = jax.random.split(key, 4)
  return (length_a, example_a), (length_b, example_b)
