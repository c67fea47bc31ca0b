"""Runs ssl_jax's real train step and the torch baseline from the same weights on the same views.

Used by `tests/test_torch_parity.py` and `experiments/compare_torch.py`. The JAX side is
`ssl_jax.methods.<method>.make_train_step` (single device, jitted, views made inside the step); the torch
side gets the very views that step makes (`jax_views`, the same keys and crop lengths), converted to NCW,
and starts from the converted initial weights (and, for MoCo, ssl_jax's initial queue).
"""

import dataclasses
import functools
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
import torch

from experiments.torch_baseline import convert, models, train
from ssl_jax import augment, methods, optim
from ssl_jax.methods import common


@dataclasses.dataclass
class JaxRun:
  """The JAX side: state, the jitted step `(state, batch, crop_lengths) -> (state, metrics)`, the policy."""
  config: ml_collections.ConfigDict
  state: Any
  step_fn: Callable
  policy: augment.AugmentPolicy
  run_rng: np.ndarray


def build_jax(config: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: int) -> JaxRun:
  """ssl_jax's initial state and single-device step for `config` (as `ssl_jax.train.build`, no mesh)."""
  method = methods.get_method(config.method)
  lr = optim.learning_rate_schedule(config.optim, batch_size=config.batch_size, steps_per_epoch=steps_per_epoch,
                                    total_steps=total_steps)
  momentum = None
  if config.method == 'moco':
    momentum = method.momentum_schedule(config.moco.momentum, total_steps, config.moco.momentum_cosine)
  tx = optim.create_optimizer(config.optim, lr)
  networks = method.create_networks(config, bn_axis_name=None)
  state = jax.jit(lambda key: method.init_state(config, networks, tx, key))(jax.random.PRNGKey(config.seed))
  step = method.make_train_step(config, networks, tx, common.Schedules(lr, momentum), axis_name=None)
  return JaxRun(config, state, jax.jit(step, static_argnums=2), augment.AugmentPolicy.from_config(config.augment),
                np.asarray(jax.device_get(state.rng)))


def crop_lengths(run: JaxRun, step: int) -> common.CropLengths:
  return common.crop_lengths_for_step(run.run_rng, step, run.policy, run.config.data.length)


@functools.partial(jax.jit, static_argnames=('policy', 'length_a', 'length_b'))
def _views(x, rng, step, *, policy, length_a, length_b):
  keys = common.view_keys(rng, step)
  view_a = augment.make_view(x, policy=policy, length=length_a, example_key=keys.example_a)
  view_b = augment.make_view(x, policy=policy, length=length_b, example_key=keys.example_b)
  return view_a, view_b


def jax_views(run: JaxRun, x: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
  """The two views `(batch, time_a, 8)`, `(batch, time_b, 8)` that the JAX step makes from x at `step`."""
  lengths = crop_lengths(run, step)  # With augmentation off both views are the example.
  view_a, view_b = _views(x, run.run_rng, step, policy=run.policy, length_a=lengths[0], length_b=lengths[1])
  return np.asarray(view_a), np.asarray(view_b)


def to_ncw(x: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
  """`(batch, time, 8)` numpy -> `(batch, 8, time)` torch of `dtype` (the torch model's, `torch_dtype`)."""
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 2, 1))).to(dtype)


def torch_dtype(run: JaxRun) -> torch.dtype:
  """The torch dtype of the JAX run's parameters: float64 for `config.model.dtype='float64'`, else float32."""
  leaf = jax.tree.leaves(run.state.params)[0]
  return torch.float64 if leaf.dtype == np.float64 else torch.float32


def build_torch(run: JaxRun, total_steps: int, steps_per_epoch: int) -> train.SimCLR | train.MoCo:
  """The torch trainer for `run.config`, starting from the JAX run's current weights (and queue), in the
  dtype of those weights (`torch_dtype`)."""
  model = models.from_config(run.config.model).to(torch_dtype(run))
  state = jax.device_get(run.state)
  model.load_state_dict(convert.model_to_torch(state.params, state.batch_stats))
  trainer = train.create(run.config, total_steps, steps_per_epoch, model)
  if run.config.method == 'moco':
    trainer.key_model.load_state_dict(convert.model_to_torch(state.ema_params, state.ema_batch_stats))
    trainer.set_queue(torch.from_numpy(np.array(state.queue)))
  return trainer


def torch_step(trainer: train.SimCLR | train.MoCo, run: JaxRun, x: np.ndarray,
               step: int) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
  """One torch step on the views the JAX step makes from x at `step` (`jax_views`), in the run's dtype.

  Returns the torch loss and the two views `(batch, time, 8)`. Does not advance the JAX run.
  """
  view_a, view_b = jax_views(run, x, step)
  dtype = torch_dtype(run)
  return trainer.step(to_ncw(view_a, dtype), to_ncw(view_b, dtype), step), (view_a, view_b)
