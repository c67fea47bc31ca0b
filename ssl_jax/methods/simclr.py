"""SimCLR: one encoder + projection head, a contrastive loss with negatives from the global 2N-view batch.

Both views of the local batch are made inside the step (`ssl_jax.augment`) and encoded in two passes, each
with BatchNorm statistics over the global batch of that view (`bn_axis_name`). The loss gathers the
projections of all devices, so every view sees the 2N - 2 views of the other examples as negatives.

The loss, by `config.loss.name` (`batch_loss`):
  'nt_xent'  NT-Xent (the study's; `contrastive.nt_xent`);
  'debiased' the debiased (Chuang et al. 2020, class prior `config.loss.tau_plus`) and hard-negative
             (Robinson et al. 2021, concentration `config.loss.beta`) estimate of the negative term
             (`debiased.debiased_nt_xent`); with tau_plus = beta = 0 it is NT-Xent;
  'dcl'      decoupled contrastive learning, the positive out of the denominator (Yeh et al. 2022);
  'dclw'     DCL with the positive weighted by the von Mises-Fisher weight (`config.loss.dclw_sigma`).
The state, networks and views are the same for all four.
"""

from typing import Callable, Optional

import jax
import ml_collections
import optax

from ssl_jax import augment, models
from ssl_jax.losses import contrastive, dcl, debiased, discrimination
from ssl_jax.methods import common

BATCH_LOSSES = ('nt_xent', 'debiased', 'dcl', 'dclw')  # config.loss.name
BatchLoss = Callable[[jax.Array, jax.Array, Optional[str]], jax.Array]

TrainState = common.TrainState


def batch_loss(config: ml_collections.ConfigDict) -> BatchLoss:
  """`loss(z_a, z_b, axis_name)`: the loss `config.loss.name` names, of the global batch.

  `axis_name` as in every loss: the cross-device convention of `ssl_jax/losses/common.py`.
  """
  name, temperature = config.loss.name, config.temperature
  if name == 'nt_xent':
    return lambda z_a, z_b, axis_name: contrastive.nt_xent(z_a, z_b, temperature=temperature, axis_name=axis_name)
  if name == 'debiased':
    tau_plus, beta = float(config.loss.tau_plus), float(config.loss.beta)
    return lambda z_a, z_b, axis_name: debiased.debiased_nt_xent(
        z_a, z_b, temperature=temperature, tau_plus=tau_plus, beta=beta, axis_name=axis_name)
  if name == 'dcl':
    return lambda z_a, z_b, axis_name: dcl.dcl(z_a, z_b, temperature=temperature, axis_name=axis_name)
  if name == 'dclw':
    sigma = float(config.loss.dclw_sigma)
    return lambda z_a, z_b, axis_name: dcl.dclw(z_a, z_b, temperature=temperature, sigma=sigma,
                                                axis_name=axis_name)
  raise ValueError(f'config.loss.name must be one of {BATCH_LOSSES} for SimCLR; got {name!r}')


def create_networks(config: ml_collections.ConfigDict, bn_axis_name: str | None) -> common.Networks:
  return common.Networks(encoder=models.create_encoder(config.model, bn_axis_name=bn_axis_name),
                         head=models.create_head(config.model, bn_axis_name=bn_axis_name))


def init_state(config: ml_collections.ConfigDict, networks: common.Networks,
               tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
  init_key, run_key = jax.random.split(rng)
  params, batch_stats = common.init_variables(networks, init_key, config.data.length)
  return TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=params, batch_stats=batch_stats,
                    opt_state=tx.init(params), rng=run_key)


def make_train_step(config: ml_collections.ConfigDict, networks: common.Networks,
                    tx: optax.GradientTransformation, schedules: common.Schedules,
                    axis_name: str | None) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """The per-device step `(state, batch) -> (state, metrics)`; `batch['iq']` is `(local_batch, time, 8)`."""
  policy = augment.AugmentPolicy.from_config(config.augment)
  loss_of = batch_loss(config)

  def train_step(state: TrainState, batch: dict,
                 crop_lengths: common.CropLengths) -> tuple[TrainState, dict]:
    encode_as = common.view_encoder(batch['iq'], common.view_keys(state.rng, state.step), crop_lengths,
                                    policy, axis_name)

    loss, batch_stats, z_a, z_b, grads = common.two_view_gradients(
        networks, state, encode_as, lambda z_a, z_b: loss_of(z_a, z_b, axis_name))
    params, opt_state, grad_norm = common.apply_gradients(state, grads, tx, axis_name)
    similarity = contrastive.similarity_stats(z_a, z_b, axis_name=axis_name)
    metrics = common.step_metrics(
        loss=loss, step=state.step, schedules=schedules, grad_norm=grad_norm, params=params,
        positive_similarity=similarity['pos_cosine'], negative_similarity=similarity['neg_cosine'],
        embeddings=z_a, axis_name=axis_name,
        instance_accuracy=discrimination.in_batch_top1(z_a, z_b, axis_name))
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state)
    return new_state, metrics

  return train_step
