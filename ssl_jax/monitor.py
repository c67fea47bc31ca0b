"""The online monitor: weighted kNN accuracy of the encoder on a small fixed labelled subset, during pretraining.

As solo-learn's and lightly's online kNN: every `config.monitor.every_steps` steps (0: off), and at step 0 of
a new run (the random-init encoder), the train loop asks `OnlineMonitor.measure(step, state)` for

  monitor/knn_accuracy_aoa, monitor/knn_accuracy_amc   the weighted kNN accuracy on both tasks,
  monitor/seconds                                     the wall time of the measurement,

which it writes into the metrics (metrics.jsonl, TensorBoard) with that step's row. The step's own
`instance_accuracy` (`ssl_jax.losses.discrimination`) comes with every log row.

The subset (`select_subset`): the bank is `config.monitor.bank_per_class` train examples of every AoA class,
the queries `config.monitor.query_per_class` test examples of every AoA class, drawn once from
`config.monitor.seed` (`evaluation.budgets.sample_budget`), the same for every run and method on the same
data. Both tasks use the same examples (AMC with their modulation labels). The features are the frozen
encoder's output in eval mode (running BatchNorm statistics, as the probes see it), bank and queries
re-embedded at every measurement.

The weighted vote (Wu et al. 2018, InstDisc; solo-learn's `WeightedKNNClassifier`): on L2-normalised
features, each query's k nearest bank rows by cosine s_j vote for their class with weight exp(s_j / T);
the class with the largest sum wins. Weights are taken relative to the nearest neighbour's,
exp((s_j - s_1) / T), which leaves the vote unchanged and never exponentiates a large number.

Multi-device and multi-host: every process reads the same subset; the examples are sharded over the mesh's
batch axis (`parallel.AXIS`) and the measurement is one jitted program over the mesh whose results are
replicated, so every process gets the same figures.
"""

import dataclasses
import time
from typing import Any, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ssl_jax import parallel
from ssl_jax.data import spec
from ssl_jax.evaluation import budgets
from ssl_jax.losses import common as loss_common

# (metric suffix, label key, number of classes) of the two tasks.
TASKS = (('aoa', 'aoa', spec.NUM_AOA_CLASSES), ('amc', 'modulation', spec.NUM_MODULATIONS))
SECONDS = 'monitor/seconds'


def metric_name(task: str) -> str:
  return f'monitor/knn_accuracy_{task}'


def weighted_knn_scores(bank: jax.Array, bank_labels: jax.Array, queries: jax.Array, *, num_classes: int,
                        k: int, temperature: float, bank_valid: Optional[jax.Array] = None) -> jax.Array:
  """`(num_queries, num_classes)` class scores of the weighted kNN vote (module docstring).

  Args:
    bank: `(n, dim)` features of the labelled examples (normalised here).
    bank_labels: `(n,)` int classes in [0, num_classes).
    queries: `(m, dim)` features to classify (normalised here).
    num_classes: number of classes.
    k: neighbours per query, 1 <= k <= the number of valid bank rows.
    temperature: T > 0 of the weights exp(s / T).
    bank_valid: `(n,)` bool, False for padding rows that must never be neighbours (default: all valid).

  Returns:
    Row i: sum over query i's k neighbours of exp((s_j - s_1) / T) for each class (s_1 the nearest's cosine).
  """
  dtype = jnp.result_type(jnp.float32, bank.dtype, queries.dtype)
  u_bank = loss_common.l2_normalize(bank.astype(dtype))
  u_queries = loss_common.l2_normalize(queries.astype(dtype))
  similarity = u_queries @ u_bank.T  # (m, n)
  if bank_valid is not None:
    similarity = jnp.where(bank_valid[None, :], similarity, -jnp.inf)
  top, index = jax.lax.top_k(similarity, k)  # (m, k), nearest first
  weights = jnp.exp((top - top[:, :1]) / temperature)
  one_hot = jax.nn.one_hot(bank_labels[index], num_classes, dtype=dtype)  # (m, k, C)
  return jnp.einsum('mk,mkc->mc', weights, one_hot)


def knn_accuracy(bank: jax.Array, bank_labels: jax.Array, queries: jax.Array, query_labels: jax.Array, *,
                 num_classes: int, k: int, temperature: float, bank_valid: Optional[jax.Array] = None,
                 query_valid: Optional[jax.Array] = None) -> jax.Array:
  """The fraction of valid queries whose weighted kNN vote (`weighted_knn_scores`) is their label."""
  scores = weighted_knn_scores(bank, bank_labels, queries, num_classes=num_classes, k=k,
                               temperature=temperature, bank_valid=bank_valid)
  correct = (jnp.argmax(scores, axis=1) == query_labels).astype(jnp.float32)
  if query_valid is None:
    return jnp.mean(correct)
  valid = query_valid.astype(jnp.float32)
  return jnp.sum(correct * valid) / jnp.sum(valid)


def select_subset(train_aoa: np.ndarray, test_aoa: np.ndarray, *, bank_per_class: int, query_per_class: int,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
  """`(bank indices into train, query indices into test)`: per_class examples of every AoA class, sorted.

  Raises ValueError naming the config key when a split has fewer examples of a class than asked for.
  """
  picked = []
  for labels, per_class, split, key in ((train_aoa, bank_per_class, 'train', 'bank_per_class'),
                                        (test_aoa, query_per_class, 'test', 'query_per_class')):
    try:
      picked.append(budgets.sample_budget(labels, per_class, seed=seed, num_classes=spec.NUM_AOA_CLASSES))
    except ValueError as e:
      raise ValueError(f'config.monitor.{key}={per_class}: the {split} split cannot serve it ({e}); lower it '
                       'or set config.monitor.every_steps=0 (monitor off)') from e
  return picked[0], picked[1]


@dataclasses.dataclass(frozen=True)
class Subset:
  """The monitor's examples: `iq` float32 (n, L, 8) and `labels[key]` int (n,), for 'bank' and 'queries'."""
  bank_iq: np.ndarray
  bank_labels: Mapping[str, np.ndarray]
  query_iq: np.ndarray
  query_labels: Mapping[str, np.ndarray]


def load_subset(config: ml_collections.ConfigDict) -> Subset:
  """Reads the monitor's examples of `config.data` (`select_subset` of `config.monitor`)."""
  from ssl_jax.data import pipeline  # Local: keeps TF off the import path of the kNN functions.
  train_aoa = pipeline.load_labels(config.data, 'train')['aoa']
  test_aoa = pipeline.load_labels(config.data, 'test')['aoa']
  bank_index, query_index = select_subset(train_aoa, test_aoa, bank_per_class=int(config.monitor.bank_per_class),
                                          query_per_class=int(config.monitor.query_per_class),
                                          seed=int(config.monitor.seed))
  bank = pipeline.examples_at(config.data, 'train', bank_index)
  queries = pipeline.examples_at(config.data, 'test', query_index)
  keys = [key for _, key, _ in TASKS]
  return Subset(bank['iq'], {k: bank[k] for k in keys}, queries['iq'], {k: queries[k] for k in keys})


def _chunked(x: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
  """`(x zero-padded to whole chunks, reshaped (num_chunks, chunk, ...), valid (num_chunks * chunk,))`."""
  n = x.shape[0]
  padded = -(-n // chunk) * chunk
  out = np.zeros((padded,) + x.shape[1:], x.dtype)
  out[:n] = x
  valid = np.zeros((padded,), bool)
  valid[:n] = True
  return out.reshape((padded // chunk, chunk) + x.shape[1:]), valid


def _padded(x: np.ndarray, size: int) -> np.ndarray:
  out = np.zeros((size,) + x.shape[1:], x.dtype)
  out[:x.shape[0]] = x
  return out


def _global(x: np.ndarray, mesh: Mesh, spec_: P) -> jax.Array:
  """A host array (the same on every process) as a global array of `mesh` with partition `spec_`."""
  sharding = NamedSharding(mesh, spec_)
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


class OnlineMonitor:
  """`measure(step, state) -> {metric: value}` at the steps `config.monitor` asks for, `{}` at the others.

  Built once per run (`for_run`); the examples are placed on the mesh once. The encoder variables are the
  state's `params['encoder']` and `batch_stats['encoder']` (every method keeps its query/online/IQ encoder
  there). Call `measure` on every process of a multi-host run alike (it runs one program over the mesh).
  """

  def __init__(self, config: ml_collections.ConfigDict, encoder: nn.Module, subset: Subset, mesh: Mesh):
    settings = config.monitor
    self.every_steps = int(settings.every_steps)
    num_devices = mesh.devices.size
    chunk = -(-int(settings.batch_size) // num_devices) * num_devices  # whole rows per device
    self._k = int(settings.k)
    valid_bank = subset.bank_iq.shape[0]
    if not 1 <= self._k <= valid_bank:
      raise ValueError(f'config.monitor.k={self._k} must be in [1, {valid_bank}] (the bank holds {valid_bank} '
                       'examples: config.monitor.bank_per_class x 225 AoA classes)')
    bank_x, bank_valid = _chunked(subset.bank_iq, chunk)
    query_x, query_valid = _chunked(subset.query_iq, chunk)
    examples = P(None, parallel.AXIS)  # the rows of each chunk over the devices
    self._inputs = {
        'bank_x': _global(bank_x, mesh, examples), 'query_x': _global(query_x, mesh, examples),
        'bank_valid': _global(bank_valid, mesh, P()), 'query_valid': _global(query_valid, mesh, P()),
        'bank_labels': {key: _global(_padded(subset.bank_labels[key].astype(np.int32), bank_valid.size), mesh, P())
                        for _, key, _ in TASKS},
        'query_labels': {key: _global(_padded(subset.query_labels[key].astype(np.int32), query_valid.size), mesh,
                                      P()) for _, key, _ in TASKS},
    }
    self._measure = jax.jit(_make_measure(encoder, k=self._k, temperature=float(settings.temperature)))

  @classmethod
  def for_run(cls, config: ml_collections.ConfigDict, encoder: nn.Module, mesh: Mesh) -> Optional['OnlineMonitor']:
    """The run's monitor, or None when `config.monitor.every_steps` is 0."""
    if int(config.monitor.every_steps) == 0:
      return None
    return cls(config, encoder, load_subset(config), mesh)

  def due(self, step: int, last_step: int) -> bool:
    """Steps that measure: every `every_steps`-th, and the run's last (step 0 too: before training)."""
    return step % self.every_steps == 0 or step == last_step

  def measure(self, step: int, state: Any, last_step: int) -> dict[str, float]:
    """The monitor's metrics of `state` when `step` is due (see `due`), else {}. Waits for the result."""
    if not self.due(step, last_step):
      return {}
    variables = {'params': state.params['encoder'], 'batch_stats': state.batch_stats['encoder']}
    jax.block_until_ready(variables)  # The steps before: not the monitor's time.
    start = time.perf_counter()
    values = jax.device_get(self._measure(variables, self._inputs))
    result = {metric_name(task): float(values[task]) for task, _, _ in TASKS}
    result[SECONDS] = time.perf_counter() - start
    return result


def _make_measure(encoder: nn.Module, *, k: int, temperature: float):
  """`measure(variables, inputs) -> {task: accuracy}`: embed bank and queries chunk by chunk, then vote."""

  def embed(variables, chunks):
    features = jax.lax.map(lambda x: encoder.apply(variables, x, train=False), chunks)
    return features.reshape((-1, features.shape[-1]))

  def measure(variables, inputs):
    variables = jax.lax.stop_gradient(variables)
    bank = embed(variables, inputs['bank_x'])
    queries = embed(variables, inputs['query_x'])
    return {task: knn_accuracy(bank, inputs['bank_labels'][key], queries, inputs['query_labels'][key],
                               num_classes=num_classes, k=k, temperature=temperature,
                               bank_valid=inputs['bank_valid'], query_valid=inputs['query_valid'])
            for task, key, num_classes in TASKS}

  return measure


def describe(step: int, measurements: Sequence[Mapping[str, float]]) -> str:
  """One console line of a step's measurements (one per member: each accuracy as the members' range)."""
  def spread(values):
    low, high = min(values), max(values)
    return f'{low:.3f}' if low == high else f'{low:.3f}..{high:.3f}'
  accuracies = '  '.join(f'{task} {spread([m[metric_name(task)] for m in measurements])}' for task, _, _ in TASKS)
  seconds = sum(m[SECONDS] for m in measurements)
  return f'step {step}  kNN monitor: {accuracies}  ({seconds:.1f}s)'
