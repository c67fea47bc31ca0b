"""MoCo (v2): a query encoder trained by InfoNCE against keys from a momentum (EMA) encoder and a queue.

State beyond SimCLR's: `ema_params` / `ema_batch_stats` (the key encoder and head), `queue` (K unit-norm
keys, `(queue_size, output_dim)`) and `queue_ptr` (the next row to overwrite).

One step, as in MoCo v2's reference code:
  1. key encoder <- m * key encoder + (1 - m) * query encoder, with m on a cosine schedule from
     `moco.momentum` to 1 (`momentum_schedule`);
  2. q = head(encoder(view a)); k = stop_gradient(key_head(key_encoder(view b)));
  3. loss = InfoNCE(q, k, queue); SGD on the query encoder only;
  4. the keys of all devices (the global batch, in device order) are written FIFO over the oldest rows.

The loss, by `config.loss.name` (`queue_loss`): 'info_nce' (MoCo's) or 'debiased', the debiased
(`config.loss.tau_plus`, Chuang et al. 2020) and hard-negative (`config.loss.beta`, Robinson et al. 2021)
estimate of the queue's negative term (`debiased.debiased_info_nce`; InfoNCE at tau_plus = beta = 0).
MoCHi (`mochi.py`) runs this step with its own loss (`make_queue_step`).

BatchNorm and the batch's signature (`config.moco.key_bn`, `shuffle_bn.py`): a BatchNorm in training mode
normalises each example with statistics of the examples it is batched with. The positive key is computed
in this step's batch, the queue's keys in earlier batches, so whatever the query and its positive share
through the statistics is a cue the queue's keys lack: the batch's signature. Global statistics (over
all devices) do not remove it. They make every key *of this step* share the same statistics, so nothing
singles out the positive among this step's keys; but the loss contrasts the positive with the queue, and
the sampling fluctuation of this batch's statistics (computed from views of the same examples for the
queries and the keys) is shared by the query and the positive and by no queue key (MoCo's reason for
Shuffle-BN holds with SyncBN too: facebookresearch/moco issue 46). `tests/test_shuffle_bn.py` measures
it: with every candidate the query's own example (two views differing by small noise), the positive
normalised in this batch and the queue's keys in others, a random-init encoder finds the positive almost
always with 'global', and little above chance with 'shuffle'.
  'global' (default): each forward pass normalises with its view's global batch (`bn_axis_name`); the
    signature stays.
  'shuffle': MoCo's Shuffle-BN. The batch is split into `config.moco.bn_groups` groups normalised
    separately: the queries in the batch's own contiguous blocks (MoCo's per-GPU query batches), the keys in
    blocks of a permutation of the global batch drawn per step, then put back in order (MoCo's
    `_batch_shuffle_ddp`); a query and its positive key are normalised with mostly different examples'
    statistics (a share of about 1/G of them in common, as a query's group shares none with a queue key's).
    It removes most of the signature; what it cannot remove is a difference between this batch's and the
    queue's batches' *distributions* (all groups of this batch share it): the data order must be shuffled.
The key encoder's running statistics are updated only by its own forward passes (like the buffers of
MoCo's key encoder); with 'shuffle', by the mean of the groups' statistics.

The momentum encoder (its state, schedule, EMA update and key encoding, steps 1-2) is shared with MoCo v3
(`moco_v3.py`), which has no queue.
"""

from typing import Callable, Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from ssl_jax import augment, models
from ssl_jax.losses import common as loss_common, contrastive, debiased, discrimination
from ssl_jax.methods import common, shuffle_bn

PyTree = common.PyTree
QUEUE_LOSSES = ('info_nce', 'debiased')  # config.loss.name
# `loss(q, k, queue, key, axis_name)`: the mean over this device's queries of a loss against their keys and
# the queue; `key` (the same on every device) is for losses that draw (MoCHi), with `axis_name` to draw for
# the global batch.
QueueLoss = Callable[[jax.Array, jax.Array, jax.Array, jax.Array, Optional[str]], jax.Array]


@flax.struct.dataclass
class MomentumEncoderState(common.TrainState):
  """A train state with a momentum key encoder: EMA copies of the query encoder and head (no predictor)."""
  ema_params: PyTree
  ema_batch_stats: PyTree


@flax.struct.dataclass
class MoCoState(MomentumEncoderState):
  queue: jax.Array  # (queue_size, output_dim), unit-norm rows
  queue_ptr: jax.Array  # int32 scalar


def momentum_schedule(base_momentum: float, total_steps: int,
                      cosine: bool = True) -> Callable[[jax.Array], jax.Array]:
  """EMA momentum at a step: 1 - (1 - m0) * (cos(pi * step / total) + 1) / 2, rising from m0 to 1.

  In JAX's default float dtype: float32, or float64 when 64-bit mode is on, so a float64 run
  (`config.model.dtype='float64'`) has no float32 rounding in its EMA.
  """
  dtype = jnp.result_type(float)
  if not cosine:
    return lambda step: jnp.asarray(base_momentum, dtype)

  def schedule(step):
    progress = jnp.clip(jnp.asarray(step, dtype) / max(total_steps, 1), 0.0, 1.0)
    return 1.0 - (1.0 - base_momentum) * (jnp.cos(jnp.pi * progress) + 1.0) / 2.0

  return schedule


def ema_update(target: PyTree, online: PyTree, momentum: jax.Array) -> PyTree:
  """target <- momentum * target + (1 - momentum) * online, leaf by leaf."""
  return jax.tree.map(lambda t, o: momentum * t + (1.0 - momentum) * o, target, online)


def key_network(tree: PyTree) -> PyTree:
  """The parts of a query-side `params` / `batch_stats` dict the key encoder mirrors: all but the predictor."""
  return {k: v for k, v in tree.items() if k != 'predictor'}


def init_key_encoder(params: PyTree, batch_stats: PyTree) -> tuple[PyTree, PyTree]:
  """The key encoder at step 0: copies of the query encoder and head, `(ema_params, ema_batch_stats)`."""
  return jax.tree.map(jnp.copy, key_network(params)), jax.tree.map(jnp.copy, key_network(batch_stats))


def encode_keys(networks: common.Networks, state: MomentumEncoderState, momentum: jax.Array,
                encode_as: Callable, views: Sequence[str],
                wrap: Callable[[Callable], Callable] = lambda encode: encode,
                ) -> tuple[PyTree, PyTree, list[jax.Array]]:
  """The key encoder's part of a step: `(ema_params, ema_batch_stats, keys)`.

  First the EMA update of its weights from the query network's weights before this step's gradient
  update (MoCo's order), then the keys of `views` ('a' and/or 'b', in that order, through
  `encode_as`, the key encoder's `encode` passed through `wrap`: Shuffle-BN's `shuffle_bn.shuffled`),
  without gradient. Its running statistics move only with these forward passes.
  """
  ema_params = ema_update(state.ema_params, key_network(state.params), momentum)
  key_encode = wrap(common.make_encode(networks, ema_params))
  ema_stats, keys = state.ema_batch_stats, []
  for which in views:
    k, ema_stats = encode_as(key_encode, ema_stats, which)
    keys.append(jax.lax.stop_gradient(k))
  return ema_params, ema_stats, keys


def create_networks(config: ml_collections.ConfigDict, bn_axis_name: str | None) -> common.Networks:
  """The encoder and head; with `moco.key_bn='shuffle'` their BatchNorm never reduces over devices (each
  device normalises its own groups, `shuffle_bn`), so `bn_axis_name` is dropped."""
  if shuffle_bn.key_bn(config) == 'shuffle':
    bn_axis_name = None
  return common.Networks(encoder=models.create_encoder(config.model, bn_axis_name=bn_axis_name),
                         head=models.create_head(config.model, bn_axis_name=bn_axis_name))


def batch_norm_wraps(config: ml_collections.ConfigDict, rng: jax.Array, step: jax.Array,
                     axis_name: str | None) -> tuple[Callable[[Callable], Callable], Callable[[Callable], Callable]]:
  """`(query_wrap, key_wrap)`: what `config.moco.key_bn` does to the query and key encoders' `encode`.

  'global': nothing (each forward pass normalises with the global batch's statistics). 'shuffle': the
  queries in `config.moco.bn_groups` groups of the batch in its order, the keys in as many groups of a
  permutation of it drawn for this step (`common.step_key(rng, step, 'shuffle_bn')`), un-permuted
  (`shuffle_bn`).
  """
  if shuffle_bn.key_bn(config) == 'global':
    return (lambda encode: encode), (lambda encode: encode)
  groups, key = int(config.moco.bn_groups), common.step_key(rng, step, 'shuffle_bn')
  return (lambda encode: shuffle_bn.grouped(encode, groups, axis_name),
          lambda encode: shuffle_bn.shuffled(encode, groups, key, axis_name))


def check_queue(config: ml_collections.ConfigDict) -> None:
  """The queue must hold a whole number of global batches (so FIFO writes never wrap mid-batch)."""
  size, batch = int(config.moco.queue_size), int(config.batch_size)
  if size <= 0 or size % batch:
    raise ValueError(f'config.moco.queue_size={size} must be a positive multiple of config.batch_size={batch}.')


def init_state(config: ml_collections.ConfigDict, networks: common.Networks,
               tx: optax.GradientTransformation, rng: jax.Array) -> MoCoState:
  check_queue(config)
  init_key, queue_key, run_key = jax.random.split(rng, 3)
  params, batch_stats = common.init_variables(networks, init_key, config.data.length)
  queue = jax.random.normal(queue_key, (int(config.moco.queue_size), config.model.output_dim),
                            models.dtypes(config.model)[1])
  ema_params, ema_batch_stats = init_key_encoder(params, batch_stats)
  return MoCoState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                   opt_state=tx.init(params), rng=run_key, ema_params=ema_params, ema_batch_stats=ema_batch_stats,
                   queue=loss_common.l2_normalize(queue), queue_ptr=jnp.zeros((), jnp.int32))


def queue_loss(config: ml_collections.ConfigDict) -> QueueLoss:
  """MoCo's loss by `config.loss.name` (module docstring), as a `QueueLoss`."""
  name, temperature = config.loss.name, config.temperature
  if name == 'info_nce':
    return lambda q, k, queue, key, axis_name: contrastive.info_nce(q, k, queue, temperature=temperature)
  if name == 'debiased':
    tau_plus, beta = float(config.loss.tau_plus), float(config.loss.beta)
    return lambda q, k, queue, key, axis_name: debiased.debiased_info_nce(
        q, k, queue, temperature=temperature, tau_plus=tau_plus, beta=beta)
  raise ValueError(f'config.loss.name must be one of {QUEUE_LOSSES} for MoCo; got {name!r}')


def make_train_step(config: ml_collections.ConfigDict, networks: common.Networks,
                    tx: optax.GradientTransformation, schedules: common.Schedules,
                    axis_name: str | None) -> Callable[[MoCoState, dict], tuple[MoCoState, dict]]:
  """The per-device step `(state, batch) -> (state, metrics)`; `batch['iq']` is `(local_batch, time, 8)`."""
  return make_queue_step(config, networks, tx, schedules, axis_name, queue_loss(config))


def make_queue_step(config: ml_collections.ConfigDict, networks: common.Networks,
                    tx: optax.GradientTransformation, schedules: common.Schedules, axis_name: str | None,
                    loss_of: QueueLoss) -> Callable[[MoCoState, dict], tuple[MoCoState, dict]]:
  """MoCo v2's per-device step (module docstring) with the loss `loss_of`, its key drawn per step."""
  policy = augment.AugmentPolicy.from_config(config.augment)
  global_batch = int(config.batch_size)

  def train_step(state: MoCoState, batch: dict,
                 crop_lengths: common.CropLengths) -> tuple[MoCoState, dict]:
    encode_as = common.view_encoder(batch['iq'], common.view_keys(state.rng, state.step), crop_lengths,
                                    policy, axis_name)
    momentum = schedules.momentum(state.step)
    query_wrap, key_wrap = batch_norm_wraps(config, state.rng, state.step, axis_name)
    ema_params, ema_stats, (k_b,) = encode_keys(networks, state, momentum, encode_as, ('b',), key_wrap)
    loss_key = common.step_key(state.rng, state.step, 'queue_loss')

    def loss_fn(params):
      q_a, stats = encode_as(query_wrap(common.make_encode(networks, params)), state.batch_stats, 'a')
      loss = loss_of(q_a, k_b, state.queue, loss_key, axis_name)  # the mean over this device's queries
      return loss, (stats, q_a)

    (loss, (batch_stats, q_a)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    params, opt_state, grad_norm = common.apply_gradients(state, grads, tx, axis_name)
    if axis_name is not None:
      loss = jax.lax.pmean(loss, axis_name)  # the mean over the global batch (equal local batch sizes)
    queue, queue_ptr = enqueue(state.queue, state.queue_ptr, loss_common.l2_normalize(k_b), axis_name)
    similarity = contrastive.similarity_stats(q_a, k_b, axis_name=axis_name)
    metrics = common.step_metrics(
        loss=loss, step=state.step, schedules=schedules, grad_norm=grad_norm, params=params,
        positive_similarity=similarity['pos_cosine'], negative_similarity=similarity['neg_cosine'],
        embeddings=q_a, axis_name=axis_name, momentum=momentum,
        queue_fill=jnp.minimum((state.step + 1) * global_batch, queue.shape[0]) / queue.shape[0],
        instance_accuracy=discrimination.queue_top1(q_a, k_b, state.queue, axis_name))
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
