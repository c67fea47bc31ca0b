"""What every method shares: the train-state record, networks, keys, views, the gradient update, metrics.

A method module (`simclr.py`, `moco.py`, `moco_v3.py`) provides `create_networks(config, bn_axis_name)`,
`init_state(config, networks, tx, rng)` and `make_train_step(config, networks, tx, schedules, axis_name)`;
everything they have in common lives here once (the two MoCo methods' momentum encoder, in `moco.py`).
A method's step takes its views' crop lengths as a static argument; `HostStep` draws them for each step,
so that the train loop calls `step_fn(state, batch, step)` and knows nothing of views.
"""

import dataclasses
import functools
import zlib
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ssl_jax import augment
from ssl_jax.data import spec
from ssl_jax.losses import common as loss_common

PyTree = Any
Schedule = Callable[[jax.Array], jax.Array]


@flax.struct.dataclass
class TrainState:
  """Everything that changes during pretraining. Methods extend it (MoCo adds the key encoder, v2 a queue).

  `params` and `batch_stats` are dicts keyed by network name ('encoder', 'head', ...); `rng` is a raw
  uint32 PRNG key (checkpointable as a plain array).
  """
  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: optax.OptState
  rng: jax.Array


@dataclasses.dataclass(frozen=True)
class Networks:
  """The Flax modules of one method. `predictor` is only used by MoCo v3."""
  encoder: nn.Module
  head: nn.Module
  predictor: nn.Module | None = None


@dataclasses.dataclass(frozen=True)
class Schedules:
  """Step -> value functions: learning rate always, EMA momentum for MoCo."""
  learning_rate: Schedule
  momentum: Schedule | None = None


@flax.struct.dataclass
class ViewKeys:
  """PRNG keys for the two views of one step (identical on every device, see `view_keys`)."""
  length_a: jax.Array
  length_b: jax.Array
  example_a: jax.Array
  example_b: jax.Array


def view_keys(rng: jax.Array, step: jax.Array) -> ViewKeys:
  """Keys for step `step`: folded from the run key and the step, never from the device.

  Per-example randomness (crop starts, antenna masks) is drawn for the whole global batch and each device
  takes its rows (`augment.make_view(..., axis_name=...)`), so a run's views do not depend on how many
  devices share the batch.
  """
  (length_a, example_a), (length_b, example_b) = augment.view_keys(jax.random.fold_in(rng, step))
  return ViewKeys(length_a, length_b, example_a, example_b)


def step_key(rng: jax.Array, step: jax.Array, purpose: str) -> jax.Array:
  """The key of one step's draws for `purpose` (e.g. 'mochi'), apart from the views' keys.

  Folded from the run key, the step and a fixed number per purpose (a CRC of its name), never from the
  device: draws made for the whole global batch with it, each device taking its rows, do not depend on
  the device count (as `view_keys`).
  """
  return jax.random.fold_in(jax.random.fold_in(rng, step), zlib.crc32(purpose.encode()) & 0x7FFFFFFF)


def init_variables(networks: Networks, rng: jax.Array, input_length: int) -> tuple[dict, dict]:
  """Initial (params, batch_stats), each a dict keyed by network name."""
  enc_key, head_key, pred_key = jax.random.split(rng, 3)
  x = jnp.zeros((2, input_length, spec.NUM_CHANNELS), jnp.float32)
  enc_vars = networks.encoder.init(enc_key, x, train=False)
  h = jnp.zeros((2, networks.encoder.apply(enc_vars, x, train=False).shape[-1]), jnp.float32)
  head_vars = networks.head.init(head_key, h)
  params = {'encoder': enc_vars['params'], 'head': head_vars['params']}
  batch_stats = {'encoder': enc_vars.get('batch_stats', {})}
  if networks.predictor is not None:
    z = networks.head.apply(head_vars, h)
    pred_vars = networks.predictor.init(pred_key, z, train=False)
    params['predictor'] = pred_vars['params']
    batch_stats['predictor'] = pred_vars.get('batch_stats', {})
  return params, batch_stats


def make_encode(networks: Networks, params: PyTree, *, train: bool = True,
                with_predictor: bool = False) -> Callable[[PyTree, jax.Array], tuple[jax.Array, PyTree]]:
  """Returns `encode(batch_stats, view) -> (projection, new_batch_stats)` for one view `(batch, time, 8)`."""

  def encode(batch_stats: PyTree, view: jax.Array) -> tuple[jax.Array, PyTree]:
    h, updates = networks.encoder.apply(
        {'params': params['encoder'], 'batch_stats': batch_stats['encoder']}, view, train=train,
        mutable=['batch_stats'])
    z = networks.head.apply({'params': params['head']}, h)
    new_stats = dict(batch_stats, encoder=updates['batch_stats'])
    if with_predictor:
      z, pred_updates = networks.predictor.apply(
          {'params': params['predictor'], 'batch_stats': batch_stats['predictor']}, z, train=train,
          mutable=['batch_stats'])
      new_stats['predictor'] = pred_updates['batch_stats']
    return z, new_stats

  return encode


CropLengths = tuple[int, int]


def view_encoder(x: jax.Array, keys: ViewKeys, crop_lengths: CropLengths, policy: augment.AugmentPolicy,
                 axis_name: str | None) -> Callable[[Callable, PyTree, str], tuple[jax.Array, PyTree]]:
  """`encode_as(encode, batch_stats, 'a' | 'b') -> (projection, new_batch_stats)`: makes view a or b of this
  step's local batch `x` at its static crop length (`crop_lengths_for_step`) and encodes it."""
  lengths = dict(zip('ab', crop_lengths))
  example_keys = {'a': keys.example_a, 'b': keys.example_b}

  def encode_as(encode: Callable, batch_stats: PyTree, which: str) -> tuple[jax.Array, PyTree]:
    view = augment.make_view(x, policy=policy, length=lengths[which], example_key=example_keys[which],
                             axis_name=axis_name)
    return encode(batch_stats, view)

  return encode_as


def two_view_gradients(networks: Networks, state: Any, encode_as: Callable, loss_of: Callable[..., jax.Array], *,
                       with_predictor: bool = False) -> tuple[jax.Array, PyTree, jax.Array, jax.Array, PyTree]:
  """Encodes views a then b with the online network (view a's BatchNorm statistics feed view b's) and
  differentiates `loss_of(z_a, z_b)` with respect to `state.params`.

  Returns `(loss, new_batch_stats, z_a, z_b, grads)`; `encode_as` is `view_encoder`'s.
  """

  def loss_fn(params):
    encode = make_encode(networks, params, with_predictor=with_predictor)
    z_a, stats = encode_as(encode, state.batch_stats, 'a')
    z_b, stats = encode_as(encode, stats, 'b')
    return loss_of(z_a, z_b), (stats, z_a, z_b)

  (loss, (batch_stats, z_a, z_b)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  return loss, batch_stats, z_a, z_b, grads


def crop_lengths_for_step(rng: jax.Array, step: int, policy: augment.AugmentPolicy, time: int) -> CropLengths:
  """The two views' crop lengths of step `step`, drawn on the host from (run key, step): `(len_a, len_b)`.

  The step takes them as a static argument, so a run compiles one step program per length pair it
  draws (at most |C|^2, each small). With augmentation off both are `time`: one program.
  """
  if not policy.enabled:
    return (time, time)
  keys = view_keys(rng, step)
  return (int(augment.draw_crop_length(keys.length_a, policy, time)),
          int(augment.draw_crop_length(keys.length_b, policy, time)))


CROP_TABLE_STEPS = 1024  # Steps whose crop lengths `HostStep` draws in one host computation.


@functools.partial(jax.jit, static_argnames=('policy', 'time'))
def _crop_length_table(rng: jax.Array, steps: jax.Array, policy: augment.AugmentPolicy, time: int) -> jax.Array:
  """`(len(steps), 2)`: row i is `crop_lengths_for_step(rng, steps[i], policy, time)`."""

  def one(step):
    keys = view_keys(rng, step)
    return jnp.stack([augment.draw_crop_length(keys.length_a, policy, time),
                      augment.draw_crop_length(keys.length_b, policy, time)])

  return jax.vmap(one)(steps)


def _host_device() -> jax.Device:
  """This process's first CPU device; its first device when JAX runs without a CPU backend."""
  try:
    return jax.local_devices(backend='cpu')[0]
  except RuntimeError:
    return jax.local_devices()[0]


class HostStep:
  """`step_fn(state, batch, step) -> (state, metrics)`: one train step with the views it must make.

  `launched(state, batch, crop_lengths)` runs a method's step with the two views' crop lengths as a static
  argument (`parallel.data_parallel`: one compiled program per length pair). `step` is the step's index,
  `state.step` as the host counts it (reading the device's value would wait for the previous step).
  The lengths are `crop_lengths_for_step(run key, step)`, drawn `CROP_TABLE_STEPS` steps at a time in one
  computation on the host's CPU, so that the loop dispatches step after step without waiting for one.
  The run key is read once, from the first state given (a method never changes `state.rng`), unless
  `length_rng` gives the key to draw them from (`config.augment.crop_length_seed`, `length_key`).
  """

  def __init__(self, launched: Callable[[PyTree, PyTree, CropLengths], tuple[PyTree, PyTree]],
               policy: augment.AugmentPolicy, time: int, length_rng: np.ndarray | None = None):
    self._launched = launched
    self._policy = policy
    self._time = time
    self._rng = length_rng
    self._table_start = 0
    self._table = np.zeros((0, 2), np.int64)

  def crop_lengths(self, step: int) -> CropLengths:
    """The two views' crop lengths of `step` (after the first call, which reads the run key)."""
    if not self._policy.enabled:
      return (self._time, self._time)
    index = step - self._table_start
    if not 0 <= index < len(self._table):
      host = _host_device()
      steps = jax.device_put(np.arange(step, step + CROP_TABLE_STEPS, dtype=np.int32), host)
      self._table = np.asarray(_crop_length_table(jax.device_put(self._rng, host), steps, self._policy,
                                                  self._time))
      self._table_start, index = step, 0
    length_a, length_b = self._table[index]
    return (int(length_a), int(length_b))

  def __call__(self, state: PyTree, batch: PyTree, step: int) -> tuple[PyTree, PyTree]:
    if self._rng is None:
      self._rng = np.asarray(jax.device_get(state.rng))
    return self._launched(state, batch, self.crop_lengths(step))


def length_key(config: ml_collections.ConfigDict) -> np.ndarray | None:
  """The key each step's crop lengths are drawn from when `config.augment.crop_length_seed` >= 0 (else None:
  the run's key, `state.rng`)."""
  seed = int(config.augment.get('crop_length_seed', -1))
  return None if seed < 0 else np.asarray(jax.random.PRNGKey(seed))


def host_step(config: ml_collections.ConfigDict,
              launched: Callable[[PyTree, PyTree, CropLengths], tuple[PyTree, PyTree]]) -> HostStep:
  """`HostStep` for a run of `config` (its augmentation, example length and crop-length key)."""
  return HostStep(launched, augment.AugmentPolicy.from_config(config.augment), config.data.length,
                  length_key(config))


def apply_gradients(state: TrainState, grads: PyTree, tx: optax.GradientTransformation,
                    axis_name: str | None) -> tuple[PyTree, optax.OptState, jax.Array]:
  """Averages per-device gradients over `axis_name`, applies the optimiser; returns (params, opt, grad_norm)."""
  if axis_name is not None:
    grads = jax.lax.pmean(grads, axis_name)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  return optax.apply_updates(state.params, updates), opt_state, optax.global_norm(grads)


def step_metrics(*, loss: jax.Array, step: jax.Array, schedules: Schedules, grad_norm: jax.Array,
                 params: PyTree, positive_similarity: jax.Array, negative_similarity: jax.Array,
                 embeddings: jax.Array, axis_name: str | None, **extra: jax.Array) -> dict[str, jax.Array]:
  """The metrics every method's step reports, then the method's own (`extra`).

  loss, learning_rate (at `step`), grad_norm, param_norm (non-finite parameters show here: the NaN guard
  reads it), the mean cosine similarity of positive and of negative pairs, and `embedding_std` of
  `embeddings` over the global batch (the collapse monitor).
  """
  return {
      'loss': loss,
      'learning_rate': schedules.learning_rate(step),
      'grad_norm': grad_norm,
      'param_norm': optax.global_norm(params),
      'positive_similarity': positive_similarity,
      'negative_similarity': negative_similarity,
      'embedding_std': embedding_std(embeddings, axis_name),
      **extra,
  }


def embedding_std(z: jax.Array, axis_name: str | None) -> jax.Array:
  """Collapse monitor: per-dimension std of the L2-normalised projections over the global batch, averaged.

  A healthy representation sits near 1/sqrt(dim); a collapsed one goes to 0.
  """
  z = loss_common.l2_normalize(z)
  mean = jnp.mean(z, axis=0)
  mean_sq = jnp.mean(z * z, axis=0)
  if axis_name is not None:
    mean, mean_sq = jax.lax.pmean((mean, mean_sq), axis_name)
  return jnp.mean(jnp.sqrt(jnp.maximum(mean_sq - mean * mean, 0.0)))


def total_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  """`num_train_steps` when >= 1, else (-1) `num_epochs * steps_per_epoch` (config_checks refuses others)."""
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  return int(round(config.num_epochs * steps_per_epoch))
