"""MoCo v3: a symmetric contrastive loss between a query network with a predictor and a momentum key
encoder; the negatives are the other keys of the global batch, so there is no queue.

State: MoCo's momentum-encoder state (`moco.MomentumEncoderState`: `ema_params` / `ema_batch_stats`, the
key encoder and head); `params` and `batch_stats` hold the query network, predictor included.

One step, as in MoCo v3's reference code:
  1. key encoder <- m * key encoder + (1 - m) * query encoder (encoder and head), m on the same cosine
     schedule as MoCo v2 (`moco.momentum_schedule`);
  2. k_a, k_b = stop_gradient(key_head(key_encoder(view a / view b)));
  3. q_a, q_b = predictor(head(encoder(view a / view b)));
  4. loss = InfoNCE(q_a, k_b) + InfoNCE(q_b, k_a) against the keys of the whole global batch
     (`contrastive.symmetric_info_nce`); SGD on the query network only.
Every forward pass normalises with statistics over the global batch of its view, as `moco.py`'s 'global'
mode. There is no Shuffle-BN option (`config.moco.key_bn` is MoCo v2's): the negatives are this batch's
keys, normalised with the very statistics of the positive, so the batch's signature (`moco.py`) singles out
no candidate; ghost groups would create one (keys of the positive's group against the others).
"""

from typing import Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from ssl_jax import augment, models
from ssl_jax.losses import contrastive, discrimination
from ssl_jax.methods import common, moco

momentum_schedule = moco.momentum_schedule  # The EMA schedule of both MoCo methods.


@flax.struct.dataclass
class MoCoV3State(moco.MomentumEncoderState):
  """The query network (encoder, head, predictor), its optimiser, and the momentum key encoder."""


def create_networks(config: ml_collections.ConfigDict, bn_axis_name: str | None) -> common.Networks:
  return common.Networks(encoder=models.create_encoder(config.model, bn_axis_name=bn_axis_name),
                         head=models.create_head(config.model, bn_axis_name=bn_axis_name),
                         predictor=models.create_predictor(config.model, bn_axis_name=bn_axis_name))


def init_state(config: ml_collections.ConfigDict, networks: common.Networks,
               tx: optax.GradientTransformation, rng: jax.Array) -> MoCoV3State:
  # MoCo v2's split of the seed (its middle key draws the queue): a seed gives both the same networks.
  init_key, _, run_key = jax.random.split(rng, 3)
  params, batch_stats = common.init_variables(networks, init_key, config.data.length)
  ema_params, ema_batch_stats = moco.init_key_encoder(params, batch_stats)
  return MoCoV3State(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                     opt_state=tx.init(params), rng=run_key, ema_params=ema_params,
                     ema_batch_stats=ema_batch_stats)


def make_train_step(config: ml_collections.ConfigDict, networks: common.Networks,
                    tx: optax.GradientTransformation, schedules: common.Schedules,
                    axis_name: str | None) -> Callable[[MoCoV3State, dict], tuple[MoCoV3State, dict]]:
  """The per-device step `(state, batch) -> (state, metrics)`; `batch['iq']` is `(local_batch, time, 8)`."""
  policy = augment.AugmentPolicy.from_config(config.augment)

  def train_step(state: MoCoV3State, batch: dict,
                 crop_lengths: common.CropLengths) -> tuple[MoCoV3State, dict]:
    encode_as = common.view_encoder(batch['iq'], common.view_keys(state.rng, state.step), crop_lengths,
                                    policy, axis_name)
    momentum = schedules.momentum(state.step)
    ema_params, ema_stats, (k_a, k_b) = moco.encode_keys(networks, state, momentum, encode_as, ('a', 'b'))

    loss, batch_stats, q_a, _, grads = common.two_view_gradients(
        networks, state, encode_as, lambda q_a, q_b: contrastive.symmetric_info_nce(
            q_a, q_b, k_a, k_b, temperature=config.temperature, axis_name=axis_name), with_predictor=True)
    params, opt_state, grad_norm = common.apply_gradients(state, grads, tx, axis_name)
    similarity = contrastive.similarity_stats(q_a, k_b, axis_name=axis_name)
    metrics = common.step_metrics(
        loss=loss,  # already the global batch's: the loss gathers every device's keys
        step=state.step, schedules=schedules, grad_norm=grad_norm, params=params,
        positive_similarity=similarity['pos_cosine'], negative_similarity=similarity['neg_cosine'],
        embeddings=q_a, axis_name=axis_name, momentum=momentum,
        instance_accuracy=discrimination.cross_top1(q_a, k_b, axis_name))  # view a's queries
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state,
                              ema_params=ema_params, ema_batch_stats=ema_stats)
    return new_state, metrics

  return train_step
