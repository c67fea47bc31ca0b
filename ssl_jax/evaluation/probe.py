"""Probes on frozen embeddings: a small head trained with optax, several seeds at once.

The probe sees only embedding arrays `(n, dim)`, never the encoder or its variables, so the backbone is
frozen by construction. Embeddings are standardised with the mean and standard deviation of the probe's
own training examples (per seed); the test embeddings use the same statistics.

Heads (the study's): AMC one linear layer (`hidden_dim=0`); AoA linear-ReLU-linear (`hidden_dim > 0`).
Training: AdamW with a cosine-decayed learning rate for a fixed number of steps; full batch when the
training set fits in one batch, else minibatches drawn uniformly per step. The seeds of one budget have
the same number of examples, so they are stacked and trained together under `jax.vmap` in one
compiled `lax.scan` (one compile per (examples, classes, head) shape, reused across encoders).
"""

import dataclasses
import functools
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax


@dataclasses.dataclass(frozen=True)
class ProbeSettings:
  """How one probe head is trained. `hidden_dim=0`: a linear head; > 0: linear-ReLU-linear."""
  hidden_dim: int = 0
  learning_rate: float = 1e-3
  weight_decay: float = 1e-4
  num_steps: int = 300
  batch_size: int = 256
  # Standard deviations are floored at sqrt(std_floor * mean variance) so that a feature that barely
  # varies over a handful of training examples (budget 1) is not blown up on the test set.
  std_floor: float = 1e-2

  def __post_init__(self):
    for name in ('num_steps', 'batch_size'):
      if getattr(self, name) < 1:
        raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')
    if self.hidden_dim < 0:
      raise ValueError(f'hidden_dim must be >= 0, got {self.hidden_dim}')
    if self.learning_rate <= 0:
      raise ValueError(f'learning_rate must be > 0, got {self.learning_rate}')

  @classmethod
  def from_config(cls, config) -> 'ProbeSettings':
    """From a ConfigDict with (a subset of) these field names."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(config.keys()) - names
    if unknown:
      raise ValueError(f'unknown probe settings {sorted(unknown)}; known: {sorted(names)}')
    return cls(**dict(config))


class ProbeHead(nn.Module):
  """`(batch, dim) -> (batch, num_classes)` logits: linear, or linear-ReLU-linear if hidden_dim > 0."""
  num_classes: int
  hidden_dim: int = 0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.hidden_dim > 0:
      x = nn.relu(nn.Dense(self.hidden_dim, name='hidden')(x))
    return nn.Dense(self.num_classes, name='logits')(x)


def _standardise_stats(x: jax.Array, std_floor: float):
  """Per-feature mean and floored std of `(n, dim)`."""
  mean = jnp.mean(x, axis=0)
  var = jnp.var(x, axis=0)
  std = jnp.sqrt(var + std_floor * jnp.mean(var) + 1e-12)
  return mean, std


@functools.partial(jax.jit, static_argnames=('num_classes', 'settings'))
def _train_and_predict(train_x, train_y, test_x, keys, *, num_classes: int, settings: ProbeSettings):
  """Trains one head per seed and predicts the test set.

  Args:
    train_x: `(seeds, n, dim)` float32 training embeddings, one row-set per seed.
    train_y: `(seeds, n)` int32 labels.
    test_x: `(n_test, dim)` test embeddings (shared by the seeds).
    keys: `(seeds,)` PRNG keys (head init and minibatch order).

  Returns:
    `((seeds, n_test) int32 predictions, (seeds,) final training loss)`.
  """
  head = ProbeHead(num_classes, settings.hidden_dim)
  schedule = optax.cosine_decay_schedule(settings.learning_rate, settings.num_steps)
  tx = optax.adamw(schedule, weight_decay=settings.weight_decay)
  n = train_x.shape[1]
  full_batch = n <= settings.batch_size

  def one_seed(x, y, key):
    mean, std = _standardise_stats(x, settings.std_floor)
    x = (x - mean) / std
    init_key, batch_key = jax.random.split(key)
    params = head.init(init_key, x[:1])
    opt_state = tx.init(params)

    def loss_fn(params, xb, yb):
      logits = head.apply(params, xb)
      return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, yb))

    def step(carry, step_key):
      params, opt_state = carry
      if full_batch:
        xb, yb = x, y
      else:
        idx = jax.random.randint(step_key, (settings.batch_size,), 0, n)
        xb, yb = x[idx], y[idx]
      loss, grads = jax.value_and_grad(loss_fn)(params, xb, yb)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), loss

    step_keys = jax.random.split(batch_key, settings.num_steps)
    (params, _), losses = jax.lax.scan(step, (params, opt_state), step_keys)
    logits = head.apply(params, (test_x - mean) / std)
    return jnp.argmax(logits, axis=-1).astype(jnp.int32), losses[-1]

  return jax.vmap(one_seed)(train_x, train_y, keys)


def train_and_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, *, num_classes: int,
                      settings: ProbeSettings, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Trains a probe head per seed on frozen embeddings and predicts the test embeddings.

  Args:
    train_x: `(seeds, n, dim)` (or `(n, dim)` for one seed) training embeddings.
    train_y: `(seeds, n)` (or `(n,)`) integer labels in [0, num_classes).
    test_x: `(n_test, dim)` test embeddings.
    num_classes: output classes of the head.
    settings: head and optimiser settings.
    seed: seeds the head initialisations and minibatch draws (one key per row of train_x).

  Returns:
    `(predictions (seeds, n_test) int32, final_loss (seeds,))`; leading axis dropped for 2-D train_x.
  """
  train_x, train_y, test_x = np.asarray(train_x), np.asarray(train_y), np.asarray(test_x)
  single = train_x.ndim == 2
  if single:
    train_x, train_y = train_x[None], train_y[None]
  if train_x.ndim != 3 or train_y.shape != train_x.shape[:2]:
    raise ValueError(f'train_x must be (seeds, n, dim) with train_y (seeds, n), got {train_x.shape} and '
                     f'{train_y.shape}')
  if test_x.ndim != 2 or test_x.shape[1] != train_x.shape[2]:
    raise ValueError(f'test_x must be (n_test, {train_x.shape[2]}), got {test_x.shape}')
  if train_y.min() < 0 or train_y.max() >= num_classes:
    raise ValueError(f'train_y must lie in [0, {num_classes}), got [{train_y.min()}, {train_y.max()}]')
  keys = jax.random.split(jax.random.key(seed), train_x.shape[0])
  predictions, losses = _train_and_predict(
      jnp.asarray(train_x, jnp.float32), jnp.asarray(train_y, jnp.int32), jnp.asarray(test_x, jnp.float32),
      keys, num_classes=num_classes, settings=settings)
  predictions, losses = np.asarray(predictions), np.asarray(losses)
  return (predictions[0], losses[0]) if single else (predictions, losses)
