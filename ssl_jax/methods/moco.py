"""MoCo: a query encoder trained by InfoNCE against keys from a momentum (EMA) encoder and a queue.

State beyond SimCLR's: `ema_params` / `ema_batch_stats` (the key encoder and head), `queue` (K unit-norm
keys, `(queue_size, output_dim)`) and `queue_ptr` (the next row to overwrite).

One step, as in MoCo v2's reference code:
  1. key encoder <- m * key encoder + (1 - m) * query encoder, with m on a cosine schedule from
     `moco.momentum` to 1 (`momentum_schedule`);
  2. q = head(encoder(view a)); k = stop_gradient(key_head(key_encoder(view b)));
  3. loss = InfoNCE(q, k, queue); SGD on the query encoder only;
  4. the keys of all devices (the global batch, in device order) are written FIFO over the oldest rows.

BatchNorm and information leakage: the queries and the keys are normalised in separate forward passes,
each with statistics over the *global* batch of its view (`bn_axis_name`, all devices), never over a
device-local sub-batch. MoCo's Shuffle-BN exists because per-device statistics let a query and its
positive key share a sub-batch signature; with global statistics every key of the step shares the same
statistics, so no signature singles out the positive among them. The key encoder's running statistics
are updated only by its own forward passes (like the buffers of MoCo's key encoder).

`moco.variant = 'v3'` is MoCo v3's symmetric loss without a queue: both views go through both encoders,
the query path adds a predictor, and negatives are the other keys of the global batch.
"""

from typing import Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from ssl_jax import augment, losses, models
from ssl_jax.methods import common

PyTree = common.PyTree


@flax.struct.dataclass
class MoCoState(common.TrainState):
  ema_params: PyTree
  ema_batch_stats: PyTree
  queue: jax.Array  # (queue_size, output_dim), unit-norm rows; (0, output_dim) for v3
  queue_ptr: jax.Array  # int32 scalar


def momentum_schedule(base_momentum: float, total_steps: int,
                      cosine: bool = True) -> Callable[[jax.Array], jax.Array]:
  """EMA momentum at a step: 1 - (1 - m0) * (cos(pi * step / total) + 1) / 2, rising from m0 to 1."""
  if not cosine:
    return lambda step: jnp.asarray(base_momentum, jnp.float32)

  def schedule(step):
    progress = jnp.clip(jnp.asarray(step, jnp.float32) / max(total_steps, 1), 0.0, 1.0)
    return 1.0 - (1.0 - base_momentum) * (jnp.cos(jnp.pi * progress) + 1.0) / 2.0

  return schedule


def ema_update(target: PyTree, online: PyTree, momentum: jax.Array) -> PyTree:
  """target <- momentum * target + (1 - momentum) * online, leaf by leaf."""
  return jax.tree.map(lambda t, o: momentum * t + (1.0 - momentum) * o, target, online)


def create_networks(config: ml_collections.ConfigDict, bn_axis_name: str | None) -> common.Networks:
  predictor = models.create_predictor(config.model, bn_axis_name=bn_axis_name) if _is_v3(config) else None
  return common.Networks(encoder=models.create_encoder(config.model, bn_axis_name=bn_axis_name),
                         head=models.create_head(config.model, bn_axis_name=bn_axis_name), predictor=predictor)


def check_queue(config: ml_collections.ConfigDict) -> None:
  """The queue must hold a whole number of global batches (so FIFO writes never wrap mid-batch)."""
  if _is_v3(config):
    return
  size, batch = int(config.moco.queue_size), int(config.batch_size)
  if size <= 0 or size % batch:
    raise ValueError(f'config.moco.queue_size={size} must be a positive multiple of config.batch_size={batch}.')


def init_state(config: ml_collections.ConfigDict, networks: common.Networks,
               tx: optax.GradientTransformation, rng: jax.Array) -> MoCoState:
  check_queue(config)
  init_key, queue_key, run_key = jax.random.split(rng, 3)
  params, batch_stats = common.init_variables(networks, init_key, config.data.length)
  queue_size = 0 if _is_v3(config) else int(config.moco.queue_size)
  queue = jax.random.normal(queue_key, (queue_size, config.model.output_dim), jnp.float32)
  queue = losses.l2_normalize(queue)
  key_params = {k: v for k, v in params.items() if k != 'predictor'}
  key_stats = {k: v for k, v in batch_stats.items() if k != 'predictor'}
  return MoCoState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                   opt_state=tx.init(params), rng=run_key,
                   ema_params=jax.tree.map(jnp.copy, key_params), ema_batch_stats=jax.tree.map(jnp.copy, key_stats),
                   queue=queue, queue_ptr=jnp.zeros((), jnp.int32))


def make_train_step(config: ml_collections.ConfigDict, networks: common.Networks,
                    tx: optax.GradientTransformation, schedules: common.Schedules,
                    axis_name: str | None) -> Callable[[MoCoState, dict], tuple[MoCoState, dict]]:
  """The per-device step `(state, batch) -> (state, metrics)`; `batch['iq']` is `(local_batch, time, 8)`."""
  policy = augment.AugmentPolicy.from_config(config.augment)
  temperature = config.temperature
  v3 = _is_v3(config)
  global_batch = int(config.batch_size)

  def train_step(state: MoCoState, batch: dict,
                 crop_lengths: common.CropLengths) -> tuple[MoCoState, dict]:
    encode_as = common.view_encoder(batch['iq'], common.view_keys(state.rng, state.step), crop_lengths,
                                    policy, axis_name)
    momentum = schedules.momentum(state.step)
    online = {k: v for k, v in state.params.items() if k != 'predictor'}
    ema_params = ema_update(state.ema_params, online, momentum)
    key_encode = common.make_encode(networks, ema_params)

    if v3:
      k_a, ema_stats = encode_as(key_encode, state.ema_batch_stats, 'a')
      k_b, ema_stats = encode_as(key_encode, ema_stats, 'b')
    else:
      k_b, ema_stats = encode_as(key_encode, state.ema_batch_stats, 'b')
    k_b = jax.lax.stop_gradient(k_b)

    def loss_fn(params):
      encode = common.make_encode(networks, params, with_predictor=v3)
      q_a, stats = encode_as(encode, state.batch_stats, 'a')
      if v3:
        q_b, stats = encode_as(encode, stats, 'b')
        loss = losses.symmetric_info_nce(q_a, q_b, jax.lax.stop_gradient(k_a), k_b, temperature=temperature,
                                         axis_name=axis_name)
      else:
        loss = losses.info_nce(q_a, k_b, state.queue, temperature=temperature)  # this device's queries
      return loss, (stats, q_a)

    (loss, (batch_stats, q_a)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    params, opt_state, grad_norm = common.apply_gradients(state, grads, tx, axis_name)
    if axis_name is not None and not v3:
      loss = jax.lax.pmean(loss, axis_name)  # the mean over the global batch (equal local batch sizes)
    queue, queue_ptr = state.queue, state.queue_ptr
    if not v3:
      queue, queue_ptr = enqueue(queue, queue_ptr, losses.l2_normalize(k_b), axis_name)
    similarity = losses.similarity_stats(q_a, k_b, axis_name=axis_name)
    metrics = {
        'loss': loss,
        'learning_rate': schedules.learning_rate(state.step),
        'momentum': momentum,
        'grad_norm': grad_norm,
        'param_norm': optax.global_norm(params),  # Non-finite params show here (the NaN guard reads it).
        'queue_fill': (jnp.minimum((state.step + 1) * global_batch, queue.shape[0]) / max(queue.shape[0], 1)
                       if not v3 else jnp.zeros(())),
        'positive_similarity': similarity['pos_cosine'],
        'negative_similarity': similarity['neg_cosine'],
        'embedding_std': common.embedding_std(q_a, axis_name),
    }
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state,
                              ema_params=ema_params, ema_batch_stats=ema_stats, queue=queue,
                              queue_ptr=queue_ptr)
    return new_state, metrics

  return train_step


def enqueue(queue: jax.Array, ptr: jax.Array, keys: jax.Array,
            axis_name: str | None) -> tuple[jax.Array, jax.Array]:
  """Writes the keys of all devices `(global_batch, dim)` at `ptr`, overwriting the oldest; advances ptr."""
  if axis_name is not None:
    keys = jax.lax.all_gather(keys, axis_name, tiled=True)
  queue = jax.lax.dynamic_update_slice(queue, keys.astype(queue.dtype), (ptr, jnp.zeros_like(ptr)))
  return queue, (ptr + keys.shape[0]) % queue.shape[0]


def _is_v3(config: ml_collections.ConfigDict) -> bool:
  variant = config.moco.variant
  if variant not in ('v2', 'v3'):
    raise ValueError(f"config.moco.variant must be 'v2' or 'v3', got {variant!r}")
  return variant == 'v3'
