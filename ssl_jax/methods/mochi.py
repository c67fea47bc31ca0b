"""MoCHi (Kalantidis et al. 2020): MoCo v2 with hard negatives mixed per query from the queue.

Everything but the loss is MoCo v2's (`moco.py`: state, networks, momentum encoder, queue, the step and its
metrics). The loss is InfoNCE of each query against its key, the queue, and its own s + s' synthetic
negatives (`ssl_jax.losses.mochi`), made from its N hardest queue rows (`config.mochi.num_hard`):
  s  = `config.mochi.num_mix` mixes of two of them,      h  = α n_i + (1 - α) n_j,  α ~ U(0, 1);
  s' = `config.mochi.num_query_mix` mixes with the query, h' = β q + (1 - β) n_j,   β ~ U(0, 0.5);
each L2-normalised, without gradient, never enqueued. Every query draws its own pairs and coefficients
from its own hard set; the draws come from the step's key (`common.step_key`) and are made for the global
batch, each device taking its rows, so a run does not depend on the device count. With s = s' = 0 the
loss is MoCo's InfoNCE and the step is MoCo v2's.
"""

from typing import Callable

import ml_collections
import optax

from ssl_jax.losses import mochi as mochi_losses
from ssl_jax.methods import common, moco

MoCoState = moco.MoCoState
create_networks = moco.create_networks
init_state = moco.init_state
momentum_schedule = moco.momentum_schedule


def mochi_loss(config: ml_collections.ConfigDict) -> moco.QueueLoss:
  """MoCHi's loss (module docstring) as MoCo's `QueueLoss`: the mean over this device's queries."""
  num_hard, num_mix = int(config.mochi.num_hard), int(config.mochi.num_mix)
  num_query_mix, temperature = int(config.mochi.num_query_mix), config.temperature

  def loss(q, k, queue, key, axis_name):
    draws = mochi_losses.draw_mochi(key, q.shape[0], num_hard=num_hard, num_mix=num_mix,
                                    num_query_mix=num_query_mix, axis_name=axis_name)
    synthetic = mochi_losses.synthesize_hard_negatives(q, queue, draws, num_hard=num_hard)
    return mochi_losses.mochi_info_nce(q, k, queue, synthetic, temperature=temperature)

  return loss


def make_train_step(config: ml_collections.ConfigDict, networks: common.Networks,
                    tx: optax.GradientTransformation, schedules: common.Schedules,
                    axis_name: str | None) -> Callable[[MoCoState, dict], tuple[MoCoState, dict]]:
  """The per-device step `(state, batch) -> (state, metrics)`; `batch['iq']` is `(local_batch, time, 8)`."""
  return moco.make_queue_step(config, networks, tx, schedules, axis_name, mochi_loss(config))
