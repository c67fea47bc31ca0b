"""The online monitor (ssl_jax.monitor) and the instance-discrimination accuracy (ssl_jax.losses.discrimination).

kNN: the weighted vote against a float64 NumPy transcription of InstDisc's / solo-learn's (raw exp of
cos / T, which float64 holds for T = 0.07: e^(1/0.07) = 1.6e6); 1 on a separable embedding; chance on a
random one (a binomial test); padding rows never vote or count. In the train loop: the metrics at the
cadence, with the step's instance accuracy, and on 2 emulated devices (a subprocess).
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import smoke
from ssl_jax import config_checks, monitor, parallel, periodic, train
from ssl_jax.losses import discrimination
from ssl_jax.workdir import metrics, resume

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _reference_scores(bank, bank_labels, queries, num_classes, k, temperature):
  """solo-learn's WeightedKNNClassifier vote in float64: (m, C) sums of exp(cos / T) of the k nearest."""
  bank = np.asarray(bank, np.float64)
  queries = np.asarray(queries, np.float64)
  bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
  queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
  similarity = queries @ bank.T
  index = np.argsort(-similarity, axis=1, kind='stable')[:, :k]
  weights = np.exp(np.take_along_axis(similarity, index, axis=1) / temperature)
  labels = np.asarray(bank_labels)[index]
  return np.stack([np.sum(weights * (labels == c), axis=1) for c in range(num_classes)], axis=1)


def _clustered(rng, n, num_classes, dim, spread):
  labels = rng.integers(0, num_classes, n)
  centres = rng.normal(size=(num_classes, dim))
  return centres[labels] + spread * rng.normal(size=(n, dim)), labels


def test_weighted_knn_matches_the_float64_reference():
  rng = np.random.default_rng(0)
  bank, bank_labels = _clustered(rng, 500, 7, 32, 1.5)
  queries, _ = _clustered(rng, 200, 7, 32, 1.5)
  want = _reference_scores(bank, bank_labels, queries, 7, 20, 0.07)
  with jax.enable_x64(True):
    got = np.asarray(monitor.weighted_knn_scores(jnp.asarray(bank), jnp.asarray(bank_labels), jnp.asarray(queries),
                                                 num_classes=7, k=20, temperature=0.07))
  # Ours are the reference's divided by each query's exp(s_1 / T): the same vote, relative weights.
  nearest = np.exp(np.max(_unit(queries) @ _unit(bank).T, axis=1) / 0.07)
  np.testing.assert_allclose(got, want / nearest[:, None], rtol=1e-12, atol=1e-15)
  # float32: the same predictions wherever the reference's vote is not within rounding of a tie (cosines
  # carry ~1e-7 absolute error, weights exp(s / 0.07) ~2e-6 relative; a 1e-3 margin is far outside that).
  got32 = np.asarray(monitor.weighted_knn_scores(jnp.asarray(bank, jnp.float32), jnp.asarray(bank_labels),
                                                 jnp.asarray(queries, jnp.float32), num_classes=7, k=20,
                                                 temperature=0.07))
  ordered = np.sort(want, axis=1)
  clear = (ordered[:, -1] - ordered[:, -2]) > 1e-3 * ordered[:, -1]
  assert clear.mean() > 0.9
  np.testing.assert_array_equal(got32.argmax(1)[clear], want.argmax(1)[clear])


def _unit(x):
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_knn_accuracy_is_one_on_a_separable_embedding_and_chance_on_a_random_one():
  rng = np.random.default_rng(1)
  bank, bank_labels = _clustered(rng, 700, 7, 16, 0.01)
  picked = rng.integers(0, 700, 300)
  queries, query_labels = bank[picked] + 0.01 * rng.normal(size=(300, 16)), bank_labels[picked]
  assert float(monitor.knn_accuracy(bank, bank_labels, queries, query_labels, num_classes=7, k=20,
                                    temperature=0.07)) == 1.0
  # Random features, labels independent of them: each prediction is right with probability 1/7 exactly
  # (query labels uniform and independent of the prediction); n = 4,000 gives sd 0.0055: 4 sd = 0.022.
  n = 4000
  accuracy = float(monitor.knn_accuracy(rng.normal(size=(2000, 64)), rng.integers(0, 7, 2000),
                                        rng.normal(size=(n, 64)), rng.integers(0, 7, n), num_classes=7, k=20,
                                        temperature=0.07))
  assert abs(accuracy - 1 / 7) < 4 * np.sqrt(1 / 7 * 6 / 7 / n)


def test_padding_rows_neither_vote_nor_count():
  rng = np.random.default_rng(2)
  bank, bank_labels = _clustered(rng, 60, 3, 8, 0.3)
  queries, query_labels = _clustered(rng, 30, 3, 8, 0.3)
  want = float(monitor.knn_accuracy(bank, bank_labels, queries, query_labels, num_classes=3, k=5,
                                    temperature=0.07))
  # Padding: bank rows equal to the queries with wrong labels (would win every vote), queries that are wrong.
  padded_bank = np.concatenate([bank, queries])
  padded_labels = np.concatenate([bank_labels, (query_labels + 1) % 3])
  padded_queries = np.concatenate([queries, queries[:10]])
  padded_query_labels = np.concatenate([query_labels, (query_labels[:10] + 1) % 3])
  got = float(monitor.knn_accuracy(padded_bank, padded_labels, padded_queries, padded_query_labels,
                                   num_classes=3, k=5, temperature=0.07,
                                   bank_valid=np.arange(90) < 60, query_valid=np.arange(40) < 30))
  assert got == want


class _State:
  """The parts of a train state the monitor reads."""

  def __init__(self, variables):
    self.params = {'encoder': variables['params']}
    self.batch_stats = {'encoder': variables['batch_stats']}


def _encoder_and_subset(seed=0, n_bank=225 * 2 + 7, n_query=101):
  from ssl_jax import models
  config = smoke.get_config('simclr')
  encoder = models.create_encoder(config.model, bn_axis_name=None)
  x = jnp.zeros((2, config.data.length, 8))
  variables = encoder.init(jax.random.PRNGKey(seed), x, train=False)
  rng = np.random.default_rng(seed)
  subset = monitor.Subset(
      bank_iq=rng.normal(size=(n_bank, config.data.length, 8)).astype(np.float32),
      bank_labels={'aoa': rng.integers(0, 225, n_bank), 'modulation': rng.integers(0, 7, n_bank)},
      query_iq=rng.normal(size=(n_query, config.data.length, 8)).astype(np.float32),
      query_labels={'aoa': rng.integers(0, 225, n_query), 'modulation': rng.integers(0, 7, n_query)})
  config.monitor.batch_size = 64  # several chunks, the last one padded
  config.monitor.every_steps = 3
  return config, encoder, variables, subset


def test_online_monitor_equals_the_direct_vote_on_the_encoder_features():
  config, encoder, variables, subset = _encoder_and_subset()
  online = monitor.OnlineMonitor(config, encoder, subset, parallel.create_mesh(jax.devices()[:1]))
  got = online.measure(6, _State(variables), last_step=6)
  embed = lambda x: np.asarray(encoder.apply(variables, x, train=False))  # noqa: E731
  bank, queries = embed(subset.bank_iq), embed(subset.query_iq)
  for task, key, num_classes in monitor.TASKS:
    want = float(monitor.knn_accuracy(bank, subset.bank_labels[key], queries, subset.query_labels[key],
                                      num_classes=num_classes, k=20, temperature=0.07))
    assert got[monitor.metric_name(task)] == pytest.approx(want, abs=0.5 / len(subset.query_iq)), task
  assert got[monitor.SECONDS] > 0
  assert online.measure(5, _State(variables), last_step=6) == {}  # not due (every 3)


def test_subset_is_per_aoa_class_and_deterministic():
  rng = np.random.default_rng(3)
  train_aoa, test_aoa = rng.permutation(np.repeat(np.arange(225), 5)), rng.permutation(np.repeat(np.arange(225), 2))
  bank, queries = monitor.select_subset(train_aoa, test_aoa, bank_per_class=3, query_per_class=2, seed=0)
  assert np.array_equal(np.bincount(train_aoa[bank], minlength=225), np.full(225, 3))
  assert np.array_equal(np.bincount(test_aoa[queries], minlength=225), np.full(225, 2))
  again = monitor.select_subset(train_aoa, test_aoa, bank_per_class=3, query_per_class=2, seed=0)
  assert np.array_equal(bank, again[0]) and np.array_equal(queries, again[1])
  with pytest.raises(ValueError, match=r'config.monitor.query_per_class=3: the test split cannot serve it'):
    monitor.select_subset(train_aoa, test_aoa, bank_per_class=3, query_per_class=3, seed=0)


def _np_in_batch_top1(z_a, z_b):
  views = _unit(np.concatenate([z_a, z_b]))
  n = len(z_a)
  scores = views @ views.T
  np.fill_diagonal(scores, -np.inf)
  positive = np.concatenate([np.arange(n) + n, np.arange(n)])
  best_other = np.where(np.arange(2 * n)[None, :] == positive[:, None], -np.inf, scores).max(1)
  return np.mean(scores[np.arange(2 * n), positive] > best_other)


def test_instance_accuracy_of_each_task():
  rng = np.random.default_rng(4)
  z_a = rng.normal(size=(16, 8))
  noisy = z_a + 0.8 * rng.normal(size=(16, 8))
  assert float(discrimination.in_batch_top1(z_a, noisy)) == pytest.approx(_np_in_batch_top1(z_a, noisy))
  assert 0 < _np_in_batch_top1(z_a, noisy) < 1
  assert float(discrimination.in_batch_top1(z_a, z_a)) == 1.0
  collapsed = np.ones((16, 8))
  assert float(discrimination.in_batch_top1(collapsed, collapsed)) == 0.0  # ties miss
  queue = rng.normal(size=(64, 8))
  want = np.mean(np.sum(_unit(z_a) * _unit(noisy), 1) > (_unit(z_a) @ _unit(queue).T).max(1))
  assert float(discrimination.queue_top1(z_a, noisy, queue)) == pytest.approx(want)
  scores = _unit(z_a) @ _unit(noisy).T
  want = np.mean(np.diag(scores) > np.where(np.eye(16, dtype=bool), -np.inf, scores).max(1))
  assert float(discrimination.cross_top1(z_a, noisy)) == pytest.approx(want)
  # A random representation: chance is 1 / candidates (SimCLR: 2N - 1 = 31), on average over many batches.
  hits = [float(discrimination.in_batch_top1(rng.normal(size=(16, 8)), rng.normal(size=(16, 8))))
          for _ in range(200)]
  assert abs(np.mean(hits) - 1 / 31) < 4 * np.sqrt(1 / 31 * 30 / 31 / (200 * 32))


def test_config_keys_are_checked_and_free_on_resume():
  config = smoke.get_config('simclr')
  config.monitor.every_steps = -1
  config.monitor.k = 10_000
  config.monitor.temperature = 0.0
  problems = config_checks.pretrain_config_problems(config)
  assert 'config.monitor.every_steps = -1: must be an integer >= 0 (0: the online monitor is off)' in problems
  assert any(p.startswith('config.monitor.k = 10000: must be an integer in [1, 225]') for p in problems)
  assert any(p.startswith('config.monitor.temperature = 0.0: must be a finite number > 0') for p in problems)
  changed = smoke.get_config('simclr')
  changed.monitor.every_steps = 5
  changed.monitor.bank_per_class = 2
  kinds = {c.key: c.kind for c in resume.differences(smoke.get_config('simclr'), changed)}
  assert kinds == {'monitor.every_steps': resume.FREE, 'monitor.bank_per_class': resume.FREE}


def test_log_window_leaves_excluded_time_out_of_the_rate():
  now = [0.0]
  window = periodic.LogWindow(0, clock=lambda: now[0])
  now[0] = 10.0
  window.exclude(5.0)
  assert window.close(10) == pytest.approx(2.0)  # 10 steps in 10 s, 5 of them the monitor's
  now[0] = 20.0
  assert window.close(20) == pytest.approx(1.0)  # the exclusion ended with its window


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def _rows(workdir):
  return metrics.read_metrics(workdir)


@pytest.mark.parametrize('method', ['simclr', 'moco', pytest.param('swav', marks=pytest.mark.slow)])
def test_monitor_and_instance_accuracy_reach_the_metrics_at_their_cadence(method, data_dir, tmp_path):
  config = smoke.get_config(method)
  config.data.data_dir = data_dir
  config.num_train_steps = 5
  config.log_every_steps = 2
  config.monitor.every_steps = 2
  train.pretrain(config, str(tmp_path))
  rows = _rows(str(tmp_path))
  knn = [r for r in rows if monitor.metric_name('aoa') in r]
  assert [r['step'] for r in knn] == [0, 2, 4, 5]  # step 0 (random init), every 2nd, the last
  for r in knn:
    for task, _, _ in monitor.TASKS:
      assert 0.0 <= r[monitor.metric_name(task)] <= 1.0
  logged = [r for r in rows if 'loss' in r]
  assert [r['step'] for r in logged] == [2, 4, 5]
  for r in logged:
    assert (0.0 <= r['instance_accuracy'] <= 1.0) if method != 'swav' else 'instance_accuracy' not in r
  # The same rows in TensorBoard.
  from tests.test_train import tensorboard_steps
  assert tensorboard_steps(str(tmp_path), monitor.metric_name('amc')) == [0, 2, 4, 5]


def test_monitor_off_writes_no_monitor_metrics(data_dir, tmp_path):
  config = smoke.get_config('simclr')
  config.data.data_dir = data_dir
  config.num_train_steps = 2
  config.monitor.every_steps = 0
  train.pretrain(config, str(tmp_path))
  assert not [r for r in _rows(str(tmp_path)) if any(k.startswith('monitor/') for k in r)]


_TWO_DEVICES = textwrap.dedent('''
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from configs import smoke
    from ssl_jax import monitor, parallel, train
    from ssl_jax.losses import discrimination
    from tests import test_monitor as tm
    from jax.sharding import PartitionSpec as P

    assert jax.device_count() == 2
    report = {}
    # The monitor over a 2-device mesh gives the 1-device figures (the same program, rows split).
    config, encoder, variables, subset = tm._encoder_and_subset()
    state = tm._State(variables)
    for n in (1, 2):
      online = monitor.OnlineMonitor(config, encoder, subset, parallel.create_mesh(jax.devices()[:n]))
      got = online.measure(3, state, last_step=6)
      report[f'mesh{n}'] = {k: v for k, v in got.items() if k != monitor.SECONDS}
    # The instance accuracies per device (shard_map) equal those of the whole batch.
    rng = np.random.default_rng(0)
    z_a, z_b, queue = rng.normal(size=(16, 8)), rng.normal(size=(16, 8)), rng.normal(size=(32, 8))
    z_b = z_a + 0.7 * z_b
    mesh = parallel.create_mesh()
    fns = {'in_batch': lambda a, b, q, ax: discrimination.in_batch_top1(a, b, ax),
           'queue': lambda a, b, q, ax: discrimination.queue_top1(a, b, q, ax),
           'cross': lambda a, b, q, ax: discrimination.cross_top1(a, b, ax)}
    for name, fn in fns.items():
      sharded = jax.jit(jax.shard_map(lambda a, b, q: fn(a, b, q, parallel.AXIS), mesh=mesh,
                                      in_specs=(P(parallel.AXIS), P(parallel.AXIS), P()), out_specs=P(),
                                      check_vma=False))(z_a, z_b, queue)
      report[name] = [float(sharded), float(fn(z_a, z_b, queue, None))]
    # A whole run on 2 devices writes the monitor's rows.
    config = smoke.get_config('simclr')
    config.data.data_dir, config.num_train_steps = sys.argv[1], 3
    config.monitor.every_steps = 3
    train.pretrain(config, sys.argv[2])
    print('RESULT' + json.dumps(report))
''')


@pytest.mark.slow
@pytest.mark.xdist_group('multidevice')
def test_monitor_on_two_emulated_devices(data_dir, tmp_path):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2', JAX_PLATFORMS='cpu',
             PYTHONPATH=REPO)
  env.pop('JAX_COMPILATION_CACHE_DIR', None)  # Multi-device programs loaded from the cache crashed (test_parallel).
  proc = subprocess.run([sys.executable, '-c', _TWO_DEVICES, data_dir, str(tmp_path / 'run')], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]
  report = json.loads([l for l in proc.stdout.splitlines() if l.startswith('RESULT')][-1][len('RESULT'):])
  # Accuracies are counts over 101 queries: the 2-device sums in another order may flip a near-tie vote at
  # most rarely; allow one query.
  for key, value in report['mesh1'].items():
    assert report['mesh2'][key] == pytest.approx(value, abs=1.01 / 101), key
  for name in ('in_batch', 'queue', 'cross'):
    assert report[name][0] == pytest.approx(report[name][1]), name
  knn_steps = [r['step'] for r in _rows(str(tmp_path / 'run')) if monitor.metric_name('aoa') in r]
  assert knn_steps == [0, 3]
