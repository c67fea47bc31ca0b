"""The supervised baseline: the same encoder plus the task's head, trained end to end on a label budget.

Starts from a random initialisation (no pretraining), trains with BatchNorm in train mode and no
augmentation, and is scored with the running BatchNorm statistics. The optimiser is SGD with momentum
and coupled weight decay (`torch.optim.SGD`, as pretraining), at ShuffleNetV2's own ImageNet recipe
scaled to the batch (lr 0.5 at batch 1024 -> 0.03125 at 64, weight decay 4e-5), with a cosine learning
rate; AdamW is the option. SGD, not AdamW, because AdamW's encoder generalised far worse on the
simulated data: it fitted the training labels and stayed near chance on held-out modulation examples
(experiments/results/amc_investigation.md). The number of steps scales with the budget,
`clip(round(epochs * n / batch_size), min_steps, max_steps)`, so small budgets are not under-trained; the
default cap lets every budget of the protocol train its epochs (a CPU scale sets a lower one). Minibatches walk through seeded epoch permutations
(concatenated, so a budget smaller than one batch repeats examples). One compile per (model, batch
shape): the learning rate is fed to the step as a value.
"""

import dataclasses
import functools
from typing import Any, Iterable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssl_jax.evaluation import embeddings as embeddings_lib
from ssl_jax.evaluation import probe as probe_lib


OPTIMIZERS = ('sgd', 'adamw')


@dataclasses.dataclass(frozen=True)
class SupervisedSettings:
  """Optimiser and step budget of the end-to-end baseline."""
  optimizer: str = 'sgd'  # 'sgd' (momentum, coupled weight decay) | 'adamw' (decoupled weight decay)
  learning_rate: float = 0.03125
  weight_decay: float = 4e-5
  momentum: float = 0.9  # 'sgd' only
  batch_size: int = 64
  epochs: float = 30.0
  min_steps: int = 100
  max_steps: int = 60_000
  warmup_steps: int = 10

  def __post_init__(self):
    if not 1 <= self.min_steps <= self.max_steps:
      raise ValueError(f'need 1 <= min_steps <= max_steps, got {self.min_steps}, {self.max_steps}')
    if self.batch_size < 1:
      raise ValueError(f'batch_size must be >= 1, got {self.batch_size}')
    if self.optimizer not in OPTIMIZERS:
      raise ValueError(f'optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}')

  @classmethod
  def from_config(cls, config) -> 'SupervisedSettings':
    return probe_lib.settings_from_config(cls, config, 'supervised')

  def num_steps(self, num_examples: int) -> int:
    steps = int(round(self.epochs * num_examples / self.batch_size))
    return int(np.clip(steps, self.min_steps, self.max_steps))


class Classifier(nn.Module):
  """Encoder + probe head: `(batch, time, 8) -> (batch, num_classes)` logits."""
  encoder: nn.Module
  num_classes: int
  hidden_dim: int = 0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    features = self.encoder(x, train=train)
    return probe_lib.ProbeHead(self.num_classes, self.hidden_dim, name='head')(features)


def _sgd(learning_rate: float, weight_decay: float, momentum: float) -> optax.GradientTransformation:
  """`torch.optim.SGD(lr, momentum, weight_decay)`: g + weight_decay * param, then heavy-ball momentum."""
  return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(learning_rate, momentum=momentum))


@functools.lru_cache(maxsize=None)
def _optimizer(name: str, weight_decay: float, momentum: float) -> optax.GradientTransformation:
  """The optimiser with its learning rate as a hyperparameter in the state (set by each step)."""
  if name == 'sgd':
    return optax.inject_hyperparams(_sgd, static_args=('weight_decay', 'momentum'))(
        learning_rate=0.0, weight_decay=weight_decay, momentum=momentum)
  if name == 'adamw':
    return optax.inject_hyperparams(optax.adamw)(learning_rate=0.0, weight_decay=weight_decay)
  raise ValueError(f'optimizer must be one of {OPTIMIZERS}, got {name!r}')


@functools.partial(jax.jit, static_argnames=('model', 'tx'), donate_argnums=(0, 1, 2))
def _train_step(params, batch_stats, opt_state, x, y, learning_rate, *, model: Classifier,
                tx: optax.GradientTransformation):
  def loss_fn(params):
    logits, updates = model.apply({'params': params, 'batch_stats': batch_stats}, x, train=True,
                                  mutable=['batch_stats'])
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
    return loss, updates['batch_stats']

  (loss, new_batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  opt_state.hyperparams['learning_rate'] = learning_rate
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), new_batch_stats, opt_state, loss


def _index_stream(num_examples: int, rng: np.random.Generator):
  while True:
    yield from rng.permutation(num_examples)


def train_supervised(encoder: nn.Module, train_iq: np.ndarray, train_labels: np.ndarray, *,
                     num_classes: int, hidden_dim: int, settings: SupervisedSettings,
                     seed: int) -> tuple[Classifier, Mapping[str, Any], dict]:
  """Trains encoder + head from scratch on `(n, time, 8)` IQ and `(n,)` labels.

  Returns:
    `(model, variables, info)`: the Classifier, its `{'params', 'batch_stats'}`, and
    `{'num_steps', 'final_loss'}`.
  """
  train_iq, train_labels = np.asarray(train_iq, np.float32), np.asarray(train_labels, np.int32)
  if train_iq.ndim != 3 or train_labels.shape != train_iq.shape[:1]:
    raise ValueError(f'train_iq must be (n, time, 8) with train_labels (n,), got {train_iq.shape} and '
                     f'{train_labels.shape}')
  model = Classifier(encoder, num_classes, hidden_dim)
  tx = _optimizer(settings.optimizer, settings.weight_decay, settings.momentum)
  variables = model.init(jax.random.key(seed), jnp.zeros((2,) + train_iq.shape[1:], jnp.float32),
                         train=False)
  params, batch_stats = variables['params'], variables['batch_stats']
  opt_state = tx.init(params)
  num_steps = settings.num_steps(train_labels.size)
  schedule = optax.warmup_cosine_decay_schedule(0.0, settings.learning_rate,
                                                min(settings.warmup_steps, num_steps - 1) or 1, num_steps)
  indices = _index_stream(train_labels.size, np.random.default_rng(seed))
  loss = jnp.nan
  for step in range(num_steps):
    idx = np.fromiter(indices, np.int64, count=settings.batch_size)
    params, batch_stats, opt_state, loss = _train_step(
        params, batch_stats, opt_state, train_iq[idx], train_labels[idx],
        jnp.float32(schedule(step)), model=model, tx=tx)
  info = {'num_steps': num_steps, 'final_loss': float(loss)}
  return model, {'params': params, 'batch_stats': batch_stats}, info


def predict(model: Classifier, variables: Mapping[str, Any], batches: Iterable, *,
            batch_size: int) -> np.ndarray:
  """`(n,)` int32 predicted classes of every example in `batches` (eval-mode BatchNorm)."""
  logits = embeddings_lib.compute_embeddings(model, variables, batches, batch_size=batch_size,
                                             desc='supervised predict')
  return np.argmax(logits, axis=-1).astype(np.int32)
