"""SimCLR and MoCo (v2) training steps in conventional PyTorch, the recipe of `ssl_jax.methods`.

What a torch user would write: `torch.optim.SGD(momentum, weight_decay)` (coupled L2 decay on every
parameter, like `ssl_jax.optim`), lightly's `NTXentLoss` (`lightly_loss.py`) with a memory bank for MoCo,
and a key encoder updated by a parameter EMA *before* the keys are computed (MoCo's reference code). The
learning-rate and EMA-momentum schedules are ssl_jax's own functions evaluated on the host each step, so
both frameworks follow the same schedule.

One step, SimCLR: z_a = model(view_a), z_b = model(view_b) (two forward passes, so each view is
batch-normalised with its own statistics, as in ssl_jax); loss = NTXent(z_a, z_b); SGD step.
One step, MoCo v2: key <- m * key + (1 - m) * query (parameters only; the key encoder's BatchNorm running
statistics come from its own forward passes); k = key(view_b) without gradient; q = model(view_a);
loss = NTXent_with_memory_bank(q, k) = InfoNCE(q, k, queue); SGD step. lightly reads the bank before it
writes the normalised keys at its pointer (FIFO), the order of `ssl_jax.methods.moco.enqueue`. Its
BatchNorm statistics are ssl_jax's 'global' mode; `config.moco.key_bn='shuffle'` (Shuffle-BN) is refused.

lightly's memory bank vs ssl_jax's queue: the same FIFO order and the same content (L2-normalised keys,
oldest overwritten first) when the queue size is a multiple of the batch size, which ssl_jax requires
(`check_queue`). Otherwise lightly drops the part of a batch that does not fit before the end of the bank
and restarts at row 0 (no wrap-around). lightly only enqueues when the query requires grad (not under
`torch.no_grad()`), and it initialises the bank with its own random unit vectors: `set_queue` copies
ssl_jax's initial queue in for parity.

Views are `(batch, 8, time)`, channels first. `make_views` is the torch version of ssl_jax's MTC crop +
antenna dropout, for training in torch alone; the parity tests and `compare_torch.py` instead feed both
frameworks the views that `ssl_jax.augment` made, so randomness is out of the comparison.
"""

import copy
from typing import Callable

import ml_collections
import torch
from torch import nn

from experiments.torch_baseline import lightly_loss, models
from ssl_jax.data import spec


def make_views(x: torch.Tensor, crop_length: int, antenna_dropout: float,
               generator: torch.Generator | None = None) -> torch.Tensor:
  """One view of `(batch, 8, time)`: a random crop of `crop_length` per example, then antenna dropout.

  Crop starts are uniform in [0, time - crop_length] (no crop when crop_length >= time); each antenna
  (channels 2a, 2a + 1) is zeroed with probability `antenna_dropout`, no rescaling.
  """
  batch, channels, time = x.shape
  if crop_length < time:
    starts = torch.randint(0, time - crop_length + 1, (batch, 1, 1), generator=generator)
    index = starts + torch.arange(crop_length).view(1, 1, crop_length)
    x = torch.gather(x, 2, index.expand(batch, channels, crop_length))
  if antenna_dropout > 0:
    keep = (torch.rand((batch, channels // spec.NUM_IQ, 1), generator=generator) >= antenna_dropout).to(x.dtype)
    x = x * keep.repeat_interleave(spec.NUM_IQ, dim=1)
  return x


def create_optimizer(model: nn.Module, optim_config: ml_collections.ConfigDict) -> torch.optim.SGD:
  return torch.optim.SGD(model.parameters(), lr=0.0, momentum=optim_config.momentum,
                         weight_decay=optim_config.weight_decay)


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
  for group in optimizer.param_groups:
    group['lr'] = lr


class SimCLR:
  """SimCLR in torch: `step(view_a, view_b, step) -> loss` (a float)."""

  def __init__(self, config: ml_collections.ConfigDict, learning_rate: Callable[[int], float],
               model: models.ContrastiveModel | None = None):
    self.model = model if model is not None else models.from_config(config.model)
    self.model.train()
    self.optimizer = create_optimizer(self.model, config.optim)
    self.criterion = lightly_loss.ntxent_loss(config.temperature)
    self.learning_rate = learning_rate

  def loss(self, view_a: torch.Tensor, view_b: torch.Tensor) -> torch.Tensor:
    return self.criterion(self.model(view_a), self.model(view_b))

  def step(self, view_a: torch.Tensor, view_b: torch.Tensor, step: int) -> float:
    _set_lr(self.optimizer, self.learning_rate(step))
    loss = self.loss(view_a, view_b)
    self.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    self.optimizer.step()
    return float(loss.detach())


class MoCo:
  """MoCo v2 in torch: query model + EMA key model + lightly's memory bank. `step(...) -> loss`."""

  def __init__(self, config: ml_collections.ConfigDict, learning_rate: Callable[[int], float],
               momentum: Callable[[int], float], model: models.ContrastiveModel | None = None):
    if config.moco.queue_size % config.batch_size:
      raise ValueError(f'config.moco.queue_size={config.moco.queue_size} must be a multiple of '
                       f'config.batch_size={config.batch_size} (as in ssl_jax)')
    if config.moco.get('key_bn', 'global') != 'global':
      # ssl_jax's Shuffle-BN (ssl_jax/methods/shuffle_bn.py) is not built here: refused, not trained as 'global'.
      raise ValueError(f"config.moco.key_bn={config.moco.key_bn!r}: the torch baseline trains 'global' "
                       'BatchNorm statistics only')
    self.model = model if model is not None else models.from_config(config.model)
    self.key_model = copy.deepcopy(self.model)
    for p in self.key_model.parameters():
      p.requires_grad_(False)
    self.model.train()
    self.key_model.train()  # MoCo's key encoder normalises with batch statistics too.
    self.optimizer = create_optimizer(self.model, config.optim)
    # lightly makes its memory bank float32; it follows the model's dtype (float64 parity runs).
    dtype = next(self.model.parameters()).dtype
    self.criterion = lightly_loss.ntxent_loss(config.temperature, int(config.moco.queue_size),
                                              int(config.model.output_dim)).to(dtype)
    self.learning_rate = learning_rate
    self.momentum = momentum

  def set_queue(self, queue: torch.Tensor) -> None:
    """Replaces lightly's initial bank `(queue_size, dim)` (e.g. by ssl_jax's initial queue)."""
    bank = self.criterion.memory_bank.bank
    if tuple(queue.shape) != tuple(bank.shape):
      raise ValueError(f'queue must have shape {tuple(bank.shape)}, got {tuple(queue.shape)}')
    bank.copy_(queue)

  @property
  def queue(self) -> torch.Tensor:
    return self.criterion.memory_bank.bank

  @torch.no_grad()
  def update_key_model(self, momentum: float) -> None:
    for key_param, param in zip(self.key_model.parameters(), self.model.parameters()):
      key_param.mul_(momentum).add_(param.detach(), alpha=1.0 - momentum)

  def step(self, view_a: torch.Tensor, view_b: torch.Tensor, step: int) -> float:
    _set_lr(self.optimizer, self.learning_rate(step))
    self.update_key_model(self.momentum(step))
    with torch.no_grad():
      keys = self.key_model(view_b)
    loss = self.criterion(self.model(view_a), keys)  # reads the bank, then enqueues the keys
    self.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    self.optimizer.step()
    return float(loss.detach())


def schedules(config: ml_collections.ConfigDict, total_steps: int,
              steps_per_epoch: int) -> tuple[Callable[[int], float], Callable[[int], float] | None]:
  """ssl_jax's learning-rate (and, for MoCo, EMA-momentum) schedules as host functions of the step.

  Both are tabulated once for steps 0 .. total_steps - 1 (no JAX call inside the torch loop).
  """
  import jax.numpy as jnp
  import numpy as np
  from ssl_jax import optim
  from ssl_jax.methods import moco
  steps = jnp.arange(max(total_steps, 1))
  lr = optim.learning_rate_schedule(config.optim, batch_size=config.batch_size, steps_per_epoch=steps_per_epoch,
                                    total_steps=total_steps)
  lr_table = np.asarray(lr(steps), np.float64)
  learning_rate = lambda step: float(lr_table[min(step, len(lr_table) - 1)])
  if config.method != 'moco':
    return learning_rate, None
  m = moco.momentum_schedule(config.moco.momentum, total_steps, config.moco.momentum_cosine)
  m_table = np.broadcast_to(np.asarray(m(steps), np.float64), steps.shape)
  return learning_rate, lambda step: float(m_table[min(step, len(m_table) - 1)])


def create(config: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: int,
           model: models.ContrastiveModel | None = None) -> SimCLR | MoCo:
  """The torch trainer of `config.method`."""
  learning_rate, momentum = schedules(config, total_steps, steps_per_epoch)
  if config.method == 'simclr':
    return SimCLR(config, learning_rate, model)
  if config.method == 'moco':
    return MoCo(config, learning_rate, momentum, model)
  raise ValueError(f"config.method must be 'simclr' or 'moco', got {config.method!r}")
