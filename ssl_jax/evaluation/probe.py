"""Probes on frozen embeddings: a small head trained with optax, several seeds at once.

The probe sees only embedding arrays `(n, dim)`, never the encoder or its variables, so the backbone is
frozen by construction. Embeddings are standardised with the mean and standard deviation of the probe's
own training examples (per seed); the test embeddings use the same statistics.

Heads (the study's): AMC one linear layer (`hidden_dim=0`); AoA linear-ReLU-linear (`hidden_dim > 0`).
Training: AdamW with a cosine-decayed learning rate for a fixed number of steps, on batches of exactly
`batch_size` rows: a label set that fits in one batch is used whole (zero-padded, padding weighted 0),
a larger one is sampled uniformly per step. The seeds of one budget have the same number of examples, so
they are stacked and trained together under `jax.vmap`. Every batch has the same shape whatever the
budget, so one compile per (head, number of seeds) serves every budget and every encoder; the step loop
runs on the host (a few hundred dispatches, negligible next to the head's matmuls).
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax


def settings_from_config(cls, config, kind: str):
  """`cls(**config)` for a settings dataclass; unknown keys raise a ValueError naming them (`kind` settings)."""
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = set(config.keys()) - names
  if unknown:
    raise ValueError(f'unknown {kind} settings {sorted(unknown)}; known: {sorted(names)}')
  return cls(**dict(config))


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
    return settings_from_config(cls, config, 'probe')


class ProbeHead(nn.Module):
  """`(batch, dim) -> (batch, num_classes)` logits: linear, or linear-ReLU-linear if hidden_dim > 0."""
  num_classes: int
  hidden_dim: int = 0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.hidden_dim > 0:
      x = nn.relu(nn.Dense(self.hidden_dim, name='hidden')(x))
    return nn.Dense(self.num_classes, name='logits')(x)


def _standardise_stats(x: np.ndarray, std_floor: float) -> tuple[np.ndarray, np.ndarray]:
  """Per-feature mean and floored std over axis -2 of `(..., n, dim)`: `(..., dim)` each."""
  mean = x.mean(axis=-2)
  var = x.var(axis=-2)
  std = np.sqrt(var + std_floor * var.mean(axis=-1, keepdims=True) + 1e-12)
  return mean.astype(np.float32), std.astype(np.float32)


@functools.lru_cache(maxsize=None)
def _functions(num_classes: int, hidden_dim: int, weight_decay: float):
  """Jitted, seed-vmapped (init, step, predict) of one head; cached so each compiles once per shape."""
  head = ProbeHead(num_classes, hidden_dim)
  # AdamW at unit learning rate; the step scales the update by the scheduled rate (fed as a value, so
  # the schedule does not enter the compiled program).
  tx = optax.adamw(learning_rate=1.0, weight_decay=weight_decay)

  def init(key, x):
    params = head.init(key, x[:1])
    return params, tx.init(params)

  def step(params, opt_state, x, y, weight, learning_rate):
    def loss_fn(params):
      losses = optax.softmax_cross_entropy_with_integer_labels(head.apply(params, x), y)
      return jnp.sum(weight * losses) / jnp.sum(weight)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    updates = jax.tree.map(lambda u: learning_rate * u, updates)
    return optax.apply_updates(params, updates), opt_state, loss

  def predict(params, mean, std, test_x):
    return jnp.argmax(head.apply(params, (test_x - mean) / std), axis=-1).astype(jnp.int32)

  return (jax.jit(jax.vmap(init)),
          jax.jit(jax.vmap(step, in_axes=(0, 0, 0, 0, 0, None)), donate_argnums=(0, 1)),
          jax.jit(jax.vmap(predict, in_axes=(0, 0, 0, None))))


def train_and_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, *, num_classes: int,
                      settings: ProbeSettings, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Trains a probe head per seed on frozen embeddings and predicts the test embeddings.

  Args:
    train_x: `(seeds, n, dim)` (or `(n, dim)` for one seed) training embeddings.
    train_y: `(seeds, n)` (or `(n,)`) integer labels in [0, num_classes).
    test_x: `(n_test, dim)` test embeddings.
    num_classes: output classes of the head.
    settings: head and optimiser settings.
    seed: seeds the head initialisations and minibatch draws.

  Returns:
    `(predictions (seeds, n_test) int32, final_loss (seeds,))`; leading axis dropped for 2-D train_x.
  """
  train_x, train_y, test_x = np.asarray(train_x), np.asarray(train_y), np.asarray(test_x)
  single = train_x.ndim == 2
  if single:
    train_x, train_y = train_x[None], train_y[None]
  if train_x.ndim != 3 or train_y.shape != train_x.shape[:2] or train_x.shape[1] == 0:
    raise ValueError(f'train_x must be (seeds, n >= 1, dim) with train_y (seeds, n), got {train_x.shape} '
                     f'and {train_y.shape}')
  if test_x.ndim != 2 or test_x.shape[1] != train_x.shape[2]:
    raise ValueError(f'test_x must be (n_test, {train_x.shape[2]}), got {test_x.shape}')
  if train_y.min() < 0 or train_y.max() >= num_classes:
    raise ValueError(f'train_y must lie in [0, {num_classes}), got [{train_y.min()}, {train_y.max()}]')
  num_seeds, n, _ = train_x.shape
  batch_size = settings.batch_size
  init, step, predict = _functions(num_classes, settings.hidden_dim, settings.weight_decay)

  mean, std = _standardise_stats(train_x.astype(np.float32), settings.std_floor)
  x = (train_x - mean[:, None]) / std[:, None]
  y = train_y.astype(np.int32)
  params, opt_state = init(jax.random.split(jax.random.key(seed), num_seeds), jnp.asarray(x[:, :1]))
  # Cosine decay to 0 (optax.cosine_decay_schedule), evaluated once on the host.
  schedule = (settings.learning_rate * 0.5 *
              (1 + np.cos(np.pi * np.arange(settings.num_steps) / settings.num_steps))).astype(np.float32)
  if n <= batch_size:  # The whole label set, padded to the one batch shape; padding has weight 0.
    pad = ((0, 0), (0, batch_size - n))
    fixed = (jnp.asarray(np.pad(x, pad + ((0, 0),))), jnp.asarray(np.pad(y, pad)),
             jnp.asarray(np.pad(np.ones((num_seeds, n), np.float32), pad)))
  else:
    rng = np.random.default_rng(seed)
    rows = np.arange(num_seeds)[:, None]
    ones = jnp.ones((num_seeds, batch_size), jnp.float32)
  loss = None
  for i in range(settings.num_steps):
    if n <= batch_size:
      xb, yb, weight = fixed
    else:
      idx = rng.integers(0, n, (num_seeds, batch_size))
      xb, yb, weight = x[rows, idx], y[rows, idx], ones
    params, opt_state, loss = step(params, opt_state, xb, yb, weight, schedule[i])
  predictions = np.asarray(predict(params, jnp.asarray(mean), jnp.asarray(std), jnp.asarray(test_x,
                                                                                               jnp.float32)))
  losses = np.asarray(loss)
  return (predictions[0], losses[0]) if single else (predictions, losses)
