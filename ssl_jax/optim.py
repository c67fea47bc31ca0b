"""Optimiser and learning-rate schedule for pretraining, from `config.optim`.

SGD follows PyTorch's `torch.optim.SGD(momentum, weight_decay)`: an L2 term `weight_decay * param` is added
to every gradient (coupled decay, all parameters, as the MoCo/SimCLR reference code does), then heavy-ball
momentum `buf = m * buf + g; param -= lr * buf`.
"""

from typing import Callable

import jax
import ml_collections
import optax

REFERENCE_BATCH_SIZE = 256  # the linear scaling rule: lr = base_lr * batch_size / 256


def peak_learning_rate(optim_config: ml_collections.ConfigDict, batch_size: int) -> float:
  """The peak lr after the scaling rule (`lr_scaling='linear'` is MoCo's base_lr * batch / 256)."""
  if optim_config.lr_scaling == 'linear':
    return optim_config.learning_rate * batch_size / REFERENCE_BATCH_SIZE
  if optim_config.lr_scaling == 'none':
    return optim_config.learning_rate
  raise ValueError(f"config.optim.lr_scaling must be 'none' or 'linear', got {optim_config.lr_scaling!r}")


def learning_rate_schedule(optim_config: ml_collections.ConfigDict, *, batch_size: int,
                           steps_per_epoch: int, total_steps: int) -> Callable[[jax.Array], jax.Array]:
  """Linear warmup over `warmup_epochs`, then cosine decay to 0 (or constant) until `total_steps`."""
  peak = peak_learning_rate(optim_config, batch_size)
  warmup_steps = min(int(round(optim_config.warmup_epochs * steps_per_epoch)), max(total_steps - 1, 0))
  if optim_config.schedule == 'cosine':
    decay = optax.cosine_decay_schedule(peak, decay_steps=max(total_steps - warmup_steps, 1))
  elif optim_config.schedule == 'constant':
    decay = optax.constant_schedule(peak)
  else:
    raise ValueError(f"config.optim.schedule must be 'cosine' or 'constant', got {optim_config.schedule!r}")
  if warmup_steps == 0:
    return decay
  warmup = optax.linear_schedule(peak / warmup_steps, peak, warmup_steps - 1) if warmup_steps > 1 else (
      optax.constant_schedule(peak))
  return optax.join_schedules([warmup, decay], [warmup_steps])


def create_optimizer(optim_config: ml_collections.ConfigDict,
                     learning_rate: Callable[[jax.Array], jax.Array]) -> optax.GradientTransformation:
  """SGD with momentum and coupled weight decay, as the study (`torch.optim.SGD` semantics)."""
  return optax.chain(
      optax.add_decayed_weights(optim_config.weight_decay),
      optax.sgd(learning_rate, momentum=optim_config.momentum),
  )
