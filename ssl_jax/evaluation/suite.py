"""The study's evaluation of one encoder: probes at every budget and seed, both tasks, and silhouette.

`evaluate_encoder` embeds only the train examples that some budget draws (streamed from the data, never
the raw train split in memory) plus the test split, then trains every probe on those frozen embeddings.
`evaluate_supervised` trains the end-to-end baseline on the same label sets (same seeds, same indices).
`random_init_variables` gives the random-init baseline's variables (probe them with `evaluate_encoder`).

Label sets: for probe seed `s` (0..num_seeds-1) and run seed `seed`, `sample_budget(train labels,
budget, seed=seed * 1000 + s)`; budgets are nested per seed, and every encoder probed with the same
`seed` sees the same label sets (paired comparison). A budget larger than the smallest class raises,
unless `probe_config.skip_unavailable_budgets` is True: then it is skipped with the reason recorded in the
results (`unavailable_numbers` lists them all up front).
"""

import dataclasses
import time
from typing import Any, Iterable, Iterator, Mapping, Optional, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from ssl_jax.data import spec
from ssl_jax.evaluation import budgets as budgets_lib
from ssl_jax.evaluation import clustering
from ssl_jax.evaluation import embeddings as embeddings_lib
from ssl_jax.evaluation import metrics
from ssl_jax.evaluation import probe as probe_lib
from ssl_jax.evaluation import supervised as supervised_lib


@dataclasses.dataclass(frozen=True)
class Task:
  name: str
  label_key: str  # key of the batch / labels dict
  num_classes: int


TASKS = {
    'aoa': Task('aoa', 'aoa', spec.NUM_AOA_CLASSES),
    'amc': Task('amc', 'modulation', spec.NUM_MODULATIONS),
}


class EvalData(Protocol):
  """Where evaluation reads a split: all labels at once, and the IQ streamed in the same order."""

  def labels(self, split: str) -> Mapping[str, np.ndarray]:
    """`{'aoa': (n,), 'modulation': (n,), 'angles_deg': (n, 2)}` of the whole split, in stream order."""

  def batches(self, split: str) -> Iterable[Mapping[str, np.ndarray]]:
    """One pass over the split in a fixed order: dicts with at least `'iq'` `(b, time, 8)`."""


@dataclasses.dataclass
class ArrayData:
  """In-memory splits (tests, small data): `splits[name] = {'iq', 'aoa', 'modulation', 'angles_deg'}`."""
  splits: Mapping[str, Mapping[str, np.ndarray]]
  batch_size: int = 256

  def labels(self, split: str) -> Mapping[str, np.ndarray]:
    return {k: v for k, v in self._split(split).items() if k != 'iq'}

  def batches(self, split: str) -> Iterator[Mapping[str, np.ndarray]]:
    data = self._split(split)
    for start in range(0, len(data['iq']), self.batch_size):
      yield {k: v[start:start + self.batch_size] for k, v in data.items()}

  def _split(self, split: str) -> Mapping[str, np.ndarray]:
    if split not in self.splits:
      raise ValueError(f'split {split!r} not in ArrayData (has {sorted(self.splits)})')
    return self.splits[split]


class PipelineData:
  """Reads splits through `ssl_jax.data.pipeline` (streaming; labels without the IQ)."""

  def __init__(self, data_config: ml_collections.ConfigDict, batch_size: int):
    self.data_config = data_config
    self.batch_size = batch_size

  def labels(self, split: str) -> Mapping[str, np.ndarray]:
    from ssl_jax.data import pipeline  # Local: keeps TF off the import path of the probe library.
    return pipeline.load_labels(self.data_config, split)

  def batches(self, split: str) -> Iterable[Mapping[str, np.ndarray]]:
    from ssl_jax.data import pipeline
    return pipeline.eval_batches(self.data_config, split, batch_size=self.batch_size)


def select_rows(batches: Iterable[Mapping[str, np.ndarray]], indices: np.ndarray,
                key: str = 'iq') -> Iterator[np.ndarray]:
  """Streams `batch[key]` rows whose running index is in the sorted `indices`; `(k, ...)` chunks."""
  indices = np.asarray(indices)
  offset, found = 0, 0
  for batch in batches:
    rows = np.asarray(batch[key])
    lo, hi = np.searchsorted(indices, [offset, offset + rows.shape[0]])
    if hi > lo:
      yield rows[indices[lo:hi] - offset]
      found += hi - lo
    offset += rows.shape[0]
    if found == indices.size:
      return
  if found < indices.size:
    raise ValueError(f'the split has {offset} examples but index {indices[found]} was requested')


def embed_split(encoder: nn.Module, variables: Mapping[str, Any], data: EvalData, split: str, *,
                batch_size: int) -> tuple[np.ndarray, Mapping[str, np.ndarray]]:
  """`((n, dim) embeddings, labels dict)` of a whole split (e.g. the test set for a 2-D projection plot)."""
  labels = data.labels(split)
  x = embeddings_lib.compute_embeddings(encoder, variables, data.batches(split), batch_size=batch_size,
                                        total=len(labels['aoa']), desc=f'{split} embeddings')
  return x, labels


def random_init_variables(encoder: nn.Module, data_config: ml_collections.ConfigDict,
                          seed: int) -> dict:
  """`{'params', 'batch_stats'}` of a freshly initialised encoder (the random-init baseline).

  The BatchNorm running statistics stay at their initial values (mean 0, variance 1), so the frozen
  random encoder is evaluated exactly as initialised; the probe's standardisation absorbs the scale.
  """
  x = jnp.zeros((1, int(data_config.length), spec.NUM_CHANNELS), jnp.float32)
  variables = encoder.init(jax.random.key(seed), x, train=False)
  return {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}


def _budget_seed(seed: int, probe_seed: int) -> int:
  return seed * 1000 + probe_seed


def unavailable_reason(train_labels: Mapping[str, np.ndarray], task: Task, budget: int) -> str | None:
  """Why `budget` labels per class cannot be drawn for `task` (a class short of examples), or None."""
  labels = np.asarray(train_labels[task.label_key])
  counts = np.bincount(labels, minlength=task.num_classes)[:task.num_classes] if labels.size else (
      np.zeros(task.num_classes, np.int64))
  if budget <= counts.min():
    return None
  absent = np.flatnonzero(counts == 0)
  if absent.size:
    shown = ', '.join(str(c) for c in absent[:10]) + (', ...' if absent.size > 10 else '')
    return (f'{task.name}: budget {budget} per class cannot be drawn: {absent.size} of {task.num_classes} '
            f'classes have no train examples (class {shown})')
  return (f'{task.name}: budget {budget} per class exceeds the smallest train class '
          f'({int(counts.min())} examples, class {int(np.argmin(counts))})')


def unavailable_numbers(train_labels: Mapping[str, np.ndarray], probe_config) -> list[str]:
  """Every probe (and, when enabled, supervised) budget of `probe_config` the train labels cannot serve."""
  reasons = []
  for task in _tasks(probe_config):
    for budget in probe_config.budgets:
      reason = unavailable_reason(train_labels, task, int(budget))
      if reason:
        reasons.append(f'probe {reason}')
    if probe_config.supervised.enabled:
      for budget in probe_config.supervised.budgets:
        reason = unavailable_reason(train_labels, task, int(budget))
        if reason:
          reasons.append(f'supervised {reason}')
  return reasons


def plan_label_sets(train_labels: Mapping[str, np.ndarray], task: Task, budget_list, num_seeds: int,
                    seed: int, skip_unavailable: bool) -> dict:
  """`{budget: (num_seeds, budget * classes) indices}` or `{budget: 'reason skipped'}`."""
  labels = np.asarray(train_labels[task.label_key])
  plan = {}
  for budget in budget_list:
    reason = unavailable_reason(train_labels, task, int(budget))
    if reason:
      if not skip_unavailable:
        raise ValueError(f'{reason}; set probe_config.skip_unavailable_budgets=True to skip it')
      plan[int(budget)] = reason
      continue
    plan[int(budget)] = np.stack([
        budgets_lib.sample_budget(labels, budget, _budget_seed(seed, s), task.num_classes)
        for s in range(num_seeds)])
  return plan


def probe_settings(probe_config, task: Task) -> probe_lib.ProbeSettings:
  """The probe head settings of `task` under a probe config (`configs/probe.py`): `heads[task]` over `probe`."""
  settings = dict(probe_config.probe)
  settings.update(dict(probe_config.heads[task.name]))
  return probe_lib.ProbeSettings.from_config(ml_collections.ConfigDict(settings))


def _task_scores(task: Task, predictions: np.ndarray, test_labels: Mapping[str, np.ndarray]) -> dict:
  """Mean ± std over seeds of accuracy (and AoA MAE) from `(seeds, n_test)` predictions."""
  truth = np.asarray(test_labels[task.label_key])
  scores = {'accuracy': metrics.mean_std([metrics.accuracy(p, truth) for p in predictions])}
  if task.name == 'aoa':
    scores['mae_deg'] = metrics.mean_std(
        [metrics.aoa_mae_deg(p, test_labels['angles_deg']) for p in predictions])
  return scores


def _tasks(probe_config) -> list[Task]:
  unknown = [t for t in probe_config.tasks if t not in TASKS]
  if unknown:
    raise ValueError(f'probe_config.tasks has unknown tasks {unknown}; known: {sorted(TASKS)}')
  return [TASKS[t] for t in probe_config.tasks]


def evaluate_encoder(encoder: nn.Module, variables: Mapping[str, Any],
                     data_config: ml_collections.ConfigDict, probe_config: ml_collections.ConfigDict, *,
                     seed: int, data: Optional[EvalData] = None) -> dict:
  """Linear probes (every task, budget and seed) and silhouette of one frozen encoder.

  Args:
    encoder: the encoder module; `variables` its `{'params', 'batch_stats'}` (only read, never updated).
    data_config: `config.data` of the run (where the splits come from).
    probe_config: `configs/probe.py`.
    seed: picks the label sets and probe initialisations.
    data: where to read the splits; default `PipelineData(data_config, probe_config.embed_batch_size)`.

  Returns:
    JSON-serialisable `{'tasks': {task: {'probe': {budget: scores | {'skipped': why}},
    'silhouette': float or None (undefined, e.g. one test example per class)}},
    'num_train_embedded', 'num_test', 'embedding_dim', 'seed', 'num_seeds', 'timing_s'}`, where
    scores = `{'accuracy': {'mean', 'std', 'values'}, ('mae_deg': ... for AoA), 'final_train_loss'}`.
  """
  start = time.perf_counter()
  data = data or PipelineData(data_config, probe_config.embed_batch_size)
  tasks = _tasks(probe_config)
  train_labels, test_labels = data.labels('train'), data.labels('test')
  plans = {task.name: plan_label_sets(train_labels, task, probe_config.budgets, probe_config.num_seeds,
                                      seed, probe_config.skip_unavailable_budgets) for task in tasks}
  needed = np.unique(np.concatenate(
      [np.zeros(0, np.int64)] +
      [p.ravel() for plan in plans.values() for p in plan.values() if isinstance(p, np.ndarray)]))

  embed = lambda batches, desc, total: embeddings_lib.compute_embeddings(
      encoder, variables, batches, batch_size=probe_config.embed_batch_size, total=total, desc=desc)
  test_x = embed(data.batches('test'), 'test embeddings', len(test_labels['aoa']))
  row_of = np.full(len(train_labels['aoa']), -1, np.int64)
  row_of[needed] = np.arange(needed.size)
  train_x = (embed(select_rows(data.batches('train'), needed), 'train embeddings', needed.size)
             if needed.size else np.zeros((0, test_x.shape[1]), np.float32))
  embed_s = time.perf_counter() - start

  results = {'tasks': {}, 'num_train_embedded': int(needed.size), 'num_test': int(test_x.shape[0]),
             'embedding_dim': int(test_x.shape[1]), 'seed': int(seed),
             'num_seeds': int(probe_config.num_seeds)}
  probe_start = time.perf_counter()
  for task in tasks:
    settings = probe_settings(probe_config, task)
    labels = np.asarray(train_labels[task.label_key])
    task_results = {'probe': {}}
    for budget, plan in plans[task.name].items():
      if isinstance(plan, str):
        task_results['probe'][str(budget)] = {'skipped': plan}
        continue
      predictions, losses = probe_lib.train_and_predict(
          train_x[row_of[plan]], labels[plan], test_x, num_classes=task.num_classes, settings=settings,
          seed=_budget_seed(seed, budget))
      scores = _task_scores(task, predictions, test_labels)
      scores['final_train_loss'] = metrics.mean_std(losses)
      task_results['probe'][str(budget)] = scores
      logging.info('probe %s budget %d: accuracy %.3f ± %.3f', task.name, budget,
                   scores['accuracy']['mean'], scores['accuracy']['std'])
    results['tasks'][task.name] = task_results
  probe_s = time.perf_counter() - probe_start

  cluster_start = time.perf_counter()
  subset = _silhouette_subset(test_x.shape[0], probe_config.clustering.max_examples, seed)
  for task in tasks:
    task_labels = np.asarray(test_labels[task.label_key])[subset]
    num_labels = np.unique(task_labels).size
    if 2 <= num_labels <= subset.size - 1:
      results['tasks'][task.name]['silhouette'] = clustering.silhouette(
          test_x[subset], task_labels, normalize=probe_config.clustering.normalize)
    else:  # E.g. one test example per AoA class (the smoke preset): the score is undefined.
      results['tasks'][task.name]['silhouette'] = None
      results['tasks'][task.name]['silhouette_skipped'] = (
          f'undefined for {num_labels} distinct labels among {subset.size} examples')
  results['silhouette_examples'] = int(subset.size)
  results['timing_s'] = {'embeddings': embed_s, 'probes': probe_s,
                         'silhouette': time.perf_counter() - cluster_start,
                         'total': time.perf_counter() - start}
  return results


def _silhouette_subset(num_test: int, max_examples: int, seed: int) -> np.ndarray:
  """All test rows, or a seeded subset of `max_examples` of them (sorted)."""
  if max_examples <= 0 or num_test <= max_examples:
    return np.arange(num_test)
  return np.sort(np.random.default_rng(seed).choice(num_test, max_examples, replace=False))


def evaluate_supervised(encoder: nn.Module, data_config: ml_collections.ConfigDict,
                        probe_config: ml_collections.ConfigDict, *, seed: int,
                        data: Optional[EvalData] = None) -> dict:
  """The supervised baseline: encoder + task head trained end to end on each budget's label sets.

  Uses the label sets of `evaluate_encoder` with the same seed (first `supervised.num_seeds` of them).
  Holds the IQ of the drawn train examples in memory (budget * classes * num_seeds examples at most).

  Returns:
    `{'tasks': {task: {'supervised': {budget: scores | {'skipped': why}}}}, 'timing_s'}`.
  """
  start = time.perf_counter()
  cfg = probe_config.supervised
  data = data or PipelineData(data_config, probe_config.embed_batch_size)
  run_keys = ('enabled', 'budgets', 'num_seeds')  # What to run; the rest are training settings.
  settings = supervised_lib.SupervisedSettings.from_config(
      ml_collections.ConfigDict({k: v for k, v in cfg.items() if k not in run_keys}))
  tasks = _tasks(probe_config)
  train_labels, test_labels = data.labels('train'), data.labels('test')
  plans = {task.name: plan_label_sets(train_labels, task, cfg.budgets, cfg.num_seeds, seed,
                                      probe_config.skip_unavailable_budgets) for task in tasks}
  needed = np.unique(np.concatenate(
      [np.zeros(0, np.int64)] +
      [p.ravel() for plan in plans.values() for p in plan.values() if isinstance(p, np.ndarray)]))
  row_of = np.full(len(train_labels['aoa']), -1, np.int64)
  row_of[needed] = np.arange(needed.size)
  train_iq = (np.concatenate(list(select_rows(data.batches('train'), needed)))
              if needed.size else np.zeros((0,)))

  results = {'tasks': {}, 'seed': int(seed), 'num_seeds': int(cfg.num_seeds)}
  for task in tasks:
    hidden_dim = int(probe_config.heads[task.name].get('hidden_dim', 0))
    labels = np.asarray(train_labels[task.label_key])
    task_results = {}
    for budget, plan in plans[task.name].items():
      if isinstance(plan, str):
        task_results[str(budget)] = {'skipped': plan}
        continue
      predictions, steps, losses = [], [], []
      for probe_seed, indices in enumerate(plan):
        model, variables, info = supervised_lib.train_supervised(
            encoder, train_iq[row_of[indices]], labels[indices], num_classes=task.num_classes,
            hidden_dim=hidden_dim, settings=settings, seed=_budget_seed(seed, probe_seed))
        predictions.append(supervised_lib.predict(model, variables, data.batches('test'),
                                                  batch_size=probe_config.embed_batch_size))
        steps.append(info['num_steps'])
        losses.append(info['final_loss'])
      scores = _task_scores(task, np.stack(predictions), test_labels)
      scores['num_steps'] = steps[0]
      scores['final_train_loss'] = metrics.mean_std(losses)
      task_results[str(budget)] = scores
      logging.info('supervised %s budget %d: accuracy %.3f ± %.3f (%d steps)', task.name, budget,
                   scores['accuracy']['mean'], scores['accuracy']['std'], steps[0])
    results['tasks'][task.name] = {'supervised': task_results}
  results['timing_s'] = {'total': time.perf_counter() - start}
  return results
