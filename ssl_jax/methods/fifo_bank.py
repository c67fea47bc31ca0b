"""SimCLR with lightly's memory bank: NT-Xent whose negatives come from a FIFO bank of past second views.

lightly's `NTXentLoss(memory_bank_size=...)` as a method: SimCLR's encoder, head and two views, but the
negatives of a first view are the bank's rows, not the batch's other views. State beyond SimCLR's:
`bank` (`config.fifo_bank.size` unit-norm rows, `(size, output_dim)`, random at the start) and `bank_ptr`
(the next row to overwrite, the oldest).

One step:
  1. z_a, z_b = head(encoder(view a / view b)), BatchNorm over the global batch of each view;
  2. loss = the mean over the global batch's first views of the cross-entropy of [u_a·u_b, u_a·bankᵀ] / τ,
     positive first (`banks.nt_xent_fifo_bank`); the gradient flows into both views, not the bank;
  3. SGD; then the normalised second views of all devices (the global batch, in device order) overwrite the
     oldest rows, wrapping around the end (`banks.fifo_bank_update`).
The bank must hold at least one global batch. lightly drops the part of a batch that does not fit before
the bank's end; here it wraps; the two agree when the size is a multiple of the global batch.

Its own method rather than a SimCLR option: its state (the bank) and its negatives (the bank only, first
views as anchors) differ from SimCLR's, and SimCLR's loss options (debiased, DCL) do not apply to it.
"""

from typing import Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from ssl_jax import augment, models
from ssl_jax.losses import banks, contrastive, discrimination
from ssl_jax.methods import common


@flax.struct.dataclass
class FifoBankState(common.TrainState):
  bank: jax.Array  # (size, output_dim), unit-norm rows: past second views
  bank_ptr: jax.Array  # int32 scalar, the next row to overwrite


def create_networks(config: ml_collections.ConfigDict, bn_axis_name: str | None) -> common.Networks:
  return common.Networks(encoder=models.create_encoder(config.model, bn_axis_name=bn_axis_name),
                         head=models.create_head(config.model, bn_axis_name=bn_axis_name))


def init_state(config: ml_collections.ConfigDict, networks: common.Networks,
               tx: optax.GradientTransformation, rng: jax.Array) -> FifoBankState:
  size, batch = int(config.fifo_bank.size), int(config.batch_size)
  if size < batch:
    raise ValueError(f'config.fifo_bank.size={size} must hold at least one global batch '
                     f'(config.batch_size={batch}).')
  init_key, bank_key, run_key = jax.random.split(rng, 3)
  params, batch_stats = common.init_variables(networks, init_key, config.data.length)
  return FifoBankState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                       opt_state=tx.init(params), rng=run_key,
                       bank=banks.init_bank(bank_key, size, int(config.model.output_dim)),
                       bank_ptr=jnp.zeros((), jnp.int32))


def make_train_step(config: ml_collections.ConfigDict, networks: common.Networks,
                    tx: optax.GradientTransformation, schedules: common.Schedules,
                    axis_name: str | None) -> Callable[[FifoBankState, dict], tuple[FifoBankState, dict]]:
  """The per-device step `(state, batch) -> (state, metrics)`; `batch['iq']` is `(local_batch, time, 8)`."""
  policy = augment.AugmentPolicy.from_config(config.augment)
  temperature, global_batch = config.temperature, int(config.batch_size)

  def train_step(state: FifoBankState, batch: dict,
                 crop_lengths: common.CropLengths) -> tuple[FifoBankState, dict]:
    encode_as = common.view_encoder(batch['iq'], common.view_keys(state.rng, state.step), crop_lengths,
                                    policy, axis_name)

    loss, batch_stats, z_a, z_b, grads = common.two_view_gradients(
        networks, state, encode_as, lambda z_a, z_b: banks.nt_xent_fifo_bank(
            z_a, z_b, state.bank, temperature=temperature, axis_name=axis_name))
    params, opt_state, grad_norm = common.apply_gradients(state, grads, tx, axis_name)
    bank, bank_ptr = banks.fifo_bank_update(state.bank, state.bank_ptr, z_b, axis_name=axis_name)
    similarity = contrastive.similarity_stats(z_a, z_b, axis_name=axis_name)
    size = state.bank.shape[0]
    metrics = common.step_metrics(
        loss=loss,  # already the global batch's (the losses' convention)
        step=state.step, schedules=schedules, grad_norm=grad_norm, params=params,
        positive_similarity=similarity['pos_cosine'], negative_similarity=similarity['neg_cosine'],
        embeddings=z_a, axis_name=axis_name,
        queue_fill=jnp.minimum((state.step + 1) * global_batch, size) / size,
        instance_accuracy=discrimination.queue_top1(z_a, z_b, state.bank, axis_name))
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state,
                              bank=bank, bank_ptr=bank_ptr)
    return new_state, metrics

  return train_step
