"""SwAV (Caron et al. 2020): swapped prediction of Sinkhorn-Knopp codes over learnable prototypes.

Networks: the encoder and projection head of SimCLR, and the prototypes, a bias-free Dense `output_dim ->
swav.num_prototypes` (`params['prototypes']['kernel']`, `(output_dim, K)`, one prototype per column).

One step:
  1. z_a, z_b = head(encoder(view a / view b)) (two passes, BatchNorm over the global batch of each view);
  2. scores_v = l2_normalize(z_v) @ prototypes, `(batch, K)` (cosines: the prototypes are unit norm);
  3. codes q_a, q_b = Sinkhorn-Knopp(scores) in float32 under stop_gradient, its sums over the global batch
     (named-axis collectives; `swav_losses.sinkhorn_knopp`), with the queue's rows in those sums when the
     queue is on and in use (below);
  4. loss = swapped prediction (`swav_losses.swav_loss`): q_a predicted by softmax(scores_b / τ) and q_b by
     softmax(scores_a / τ), τ = `config.temperature`; SGD on encoder, head and prototypes;
  5. the prototypes are l2-normalised after the update (SwAV normalises them before each forward pass:
     the same sequence, and the stored state always holds unit prototypes). For the first
     `swav.freeze_prototypes_steps` steps they do not move at all: the optimiser's update of them and of
     their momentum and decay is discarded (SwAV drops their gradient, which keeps torch's SGD from
     touching them), so they stay bit-identical to their initial unit columns.

The views are the two MTC (+ AD) views every method makes (`common.view_encoder`); SwAV's multi-crop
(smaller extra crops that only predict) is not used.

Queue (`swav.queue_size` > 0; SwAV's remedy for small batches): the l2-normalised projections of the last
`queue_size / batch_size` global batches, one queue per view, `queue (2, queue_size, output_dim)`,
written FIFO after each step (row `(step * batch_size) mod queue_size` on). They enter Sinkhorn's sums
(scored against the current prototypes, no gradient) from step `max(swav.queue_start_step, queue_size /
batch_size)` on: once the queue is full of real projections and training is past SwAV's
`epoch_queue_starts`, counted in steps. Each device puts its slice of the (replicated) queue into the
global sums, so the codes are those of one device holding the batch and the whole queue.
"""

import dataclasses
from typing import Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from ssl_jax import augment, models
from ssl_jax.losses import common as loss_common, contrastive, swav as swav_losses
from ssl_jax.methods import common

PyTree = common.PyTree
PROTOTYPES = 'prototypes'  # the key of the prototypes in `params`


@flax.struct.dataclass
class SwAVState(common.TrainState):
  """SimCLR's state, with the prototypes in `params['prototypes']` (unit columns)."""


@flax.struct.dataclass
class SwAVQueueState(SwAVState):
  queue: jax.Array  # (2, queue_size, output_dim): past unit-norm projections of view a and view b


@dataclasses.dataclass(frozen=True)
class SwAVNetworks(common.Networks):
  """Encoder and head (as SimCLR), and the prototypes (`create_networks` sets them)."""
  prototypes: nn.Module | None = None


def create_networks(config: ml_collections.ConfigDict, bn_axis_name: str | None) -> SwAVNetworks:
  return SwAVNetworks(encoder=models.create_encoder(config.model, bn_axis_name=bn_axis_name),
                      head=models.create_head(config.model, bn_axis_name=bn_axis_name),
                      prototypes=nn.Dense(int(config.swav.num_prototypes), use_bias=False, name=PROTOTYPES))


def normalize_prototypes(kernel: jax.Array) -> jax.Array:
  """`(dim, K)` -> every column (prototype) scaled to unit L2 norm."""
  return loss_common.l2_normalize(kernel.T).T


def check_queue(config: ml_collections.ConfigDict) -> None:
  """A queue, when on, holds a whole number of global batches (so FIFO writes never wrap mid-batch)."""
  size, batch = int(config.swav.queue_size), int(config.batch_size)
  if size < 0 or size % batch:
    raise ValueError(f'config.swav.queue_size={size} must be 0 (no queue) or a positive multiple of '
                     f'config.batch_size={batch}.')


def init_state(config: ml_collections.ConfigDict, networks: SwAVNetworks,
               tx: optax.GradientTransformation, rng: jax.Array) -> SwAVState:
  check_queue(config)
  init_key, prototypes_key, run_key = jax.random.split(rng, 3)
  params, batch_stats = common.init_variables(networks, init_key, config.data.length)
  kernel = networks.prototypes.init(prototypes_key, jnp.zeros((1, config.model.output_dim)))['params']['kernel']
  params[PROTOTYPES] = {'kernel': normalize_prototypes(kernel)}
  fields = dict(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats, opt_state=tx.init(params),
                rng=run_key)
  if config.swav.queue_size:
    queue = jnp.zeros((2, int(config.swav.queue_size), config.model.output_dim), jnp.float32)
    return SwAVQueueState(**fields, queue=queue)
  return SwAVState(**fields)


def _under_prototypes(path) -> bool:
  return any(getattr(entry, 'key', None) == PROTOTYPES for entry in path)


def keep_prototypes(new: PyTree, old: PyTree, keep: jax.Array) -> PyTree:
  """`new` with every leaf under a 'prototypes' key taken from `old` where `keep` (a traced bool).

  Applies to `params` and to an optimiser state alike (optax keeps per-parameter state in trees shaped as
  `params`), so a frozen prototype and its momentum stay exactly as they were.
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, n, o: jnp.where(keep, o, n) if _under_prototypes(path) else n, new, old)


def make_train_step(config: ml_collections.ConfigDict, networks: SwAVNetworks,
                    tx: optax.GradientTransformation, schedules: common.Schedules,
                    axis_name: str | None) -> Callable[[SwAVState, dict], tuple[SwAVState, dict]]:
  """The per-device step `(state, batch) -> (state, metrics)`; `batch['iq']` is `(local_batch, time, 8)`."""
  policy = augment.AugmentPolicy.from_config(config.augment)
  swav = config.swav
  loss_kwargs = dict(temperature=config.temperature, epsilon=float(swav.epsilon),
                     sinkhorn_iterations=int(swav.sinkhorn_iterations), axis_name=axis_name)
  global_batch, queue_size = int(config.batch_size), int(swav.queue_size)
  freeze_steps = int(swav.freeze_prototypes_steps)
  queue_from = max(int(swav.queue_start_step), queue_size // global_batch)

  def local_queue_rows(queue: jax.Array) -> jax.Array:
    """This device's slice of the rows of a replicated queue `(2, size, dim)`: `(2, size / devices, dim)`."""
    if axis_name is None:
      return queue
    rows = queue.shape[1] // jax.lax.axis_size(axis_name)
    return jax.lax.dynamic_slice_in_dim(queue, jax.lax.axis_index(axis_name) * rows, rows, axis=1)

  def train_step(state: SwAVState, batch: dict, crop_lengths: common.CropLengths) -> tuple[SwAVState, dict]:
    encode_as = common.view_encoder(batch['iq'], common.view_keys(state.rng, state.step), crop_lengths,
                                    policy, axis_name)
    use_queue = jnp.asarray(False)
    if queue_size:
      use_queue = state.step >= queue_from
      past = jax.lax.stop_gradient(local_queue_rows(state.queue))

    def loss_fn(params):
      encode = common.make_encode(networks, params)
      z_a, stats = encode_as(encode, state.batch_stats, 'a')
      z_b, stats = encode_as(encode, stats, 'b')
      score = lambda u: networks.prototypes.apply({'params': params[PROTOTYPES]}, u)
      u_a, u_b = loss_common.l2_normalize(z_a), loss_common.l2_normalize(z_b)
      scores = [score(u_a), score(u_b)]
      if queue_size:
        queue_scores = [score(past[0]), score(past[1])]
        loss = jax.lax.cond(use_queue,
                            lambda: swav_losses.swav_loss(scores, queue_scores=queue_scores, **loss_kwargs),
                            lambda: swav_losses.swav_loss(scores, **loss_kwargs))
      else:
        loss = swav_losses.swav_loss(scores, **loss_kwargs)
      return loss, (stats, z_a, z_b, u_a, u_b)

    (loss, (batch_stats, z_a, z_b, u_a, u_b)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    params, opt_state, grad_norm = common.apply_gradients(state, grads, tx, axis_name)
    frozen = state.step < freeze_steps
    params = dict(params, **{PROTOTYPES: {'kernel': normalize_prototypes(params[PROTOTYPES]['kernel'])}})
    params = keep_prototypes(params, state.params, frozen)
    opt_state = keep_prototypes(opt_state, state.opt_state, frozen)
    similarity = contrastive.similarity_stats(z_a, z_b, axis_name=axis_name)
    # No 'instance_accuracy': SwAV predicts codes over prototypes, it does not pick an instance among
    # instances (ssl_jax.losses.discrimination). The online kNN monitor (ssl_jax.monitor) covers it.
    metrics = common.step_metrics(
        loss=loss, step=state.step, schedules=schedules, grad_norm=grad_norm, params=params,
        positive_similarity=similarity['pos_cosine'], negative_similarity=similarity['neg_cosine'],
        embeddings=z_a, axis_name=axis_name, prototypes_frozen=frozen.astype(jnp.float32))
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state)
    if queue_size:
      metrics['queue_in_use'] = use_queue.astype(jnp.float32)
      new_state = new_state.replace(queue=enqueue(state.queue, state.step, u_a, u_b, axis_name))
    return new_state, metrics

  return train_step


def enqueue(queue: jax.Array, step: jax.Array, u_a: jax.Array, u_b: jax.Array,
            axis_name: str | None) -> jax.Array:
  """Writes the unit projections of all devices (`(global_batch, dim)` per view, in device order) at row
  `(step * global_batch) mod size` of each view's queue, overwriting the oldest."""
  rows = jax.lax.stop_gradient(jnp.stack([u_a, u_b]))  # (2, local_batch, dim)
  if axis_name is not None:
    rows = jax.lax.all_gather(rows, axis_name, axis=1, tiled=True)
  start = (step * rows.shape[1]) % queue.shape[1]
  return jax.lax.dynamic_update_slice(queue, rows.astype(queue.dtype), (jnp.zeros_like(start), start,
                                                                          jnp.zeros_like(start)))
