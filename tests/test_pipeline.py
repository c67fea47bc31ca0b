"""Input pipeline: contract shapes, determinism, exact resume, process sharding, epochs, eval order, errors."""

import itertools

import ml_collections
import numpy as np
import pytest

from ssl_jax.data import aoam
from ssl_jax.data import pipeline

LENGTH = 32
N_TRAIN = 225  # examples_per_class = 1


@pytest.fixture(scope='module')
def config(tmp_path_factory):
  return ml_collections.ConfigDict(dict(
      source='simulated', data_dir=str(tmp_path_factory.mktemp('tfds')), manual_dir='', length=LENGTH,
      examples_per_class=1, test_examples_per_class=1, snr_db_low=0.0, snr_db_high=30.0, sim_seed=0,
      prefetch=2))


@pytest.fixture(scope='module')
def train_data(config):
  source = aoam.get_builder(config).as_data_source('train')
  return np.stack([source[i]['iq'] for i in range(len(source))])


def take(config, steps, **kwargs):
  kwargs = {'process_index': 0, 'process_count': 1, 'num_local_devices': 1, **kwargs}
  return list(itertools.islice(pipeline.pretrain_batches(config, **kwargs), steps))


def test_batch_contract(config):
  batch = take(config, 1, batch_size=8, seed=0)[0]
  assert batch['iq'].shape == (8, LENGTH, 8) and batch['iq'].dtype == np.float32
  for key in ('aoa', 'modulation'):
    assert batch[key].shape == (8,) and batch[key].dtype == np.int32
  assert batch['angles_deg'].shape == (8, 2) and batch['angles_deg'].dtype == np.float32
  assert batch['index'].shape == (8,) and batch['index'].dtype == np.int32


def test_index_is_each_examples_position_in_the_split(config, train_data):
  """'index' names the example a row holds (the memory bank's row), across epochs and processes."""
  batches = take(config, 20, batch_size=24, seed=6)  # 480 positions: two epochs and a straddling batch
  for batch in batches:
    np.testing.assert_array_equal(batch['iq'], train_data[batch['index']])
  shard = take(config, 3, batch_size=24, seed=6, process_index=1, process_count=2)[2]
  np.testing.assert_array_equal(shard['iq'], train_data[shard['index']])
  labels = pipeline.load_labels(config, 'train')
  np.testing.assert_array_equal(batches[0]['aoa'], labels['aoa'][batches[0]['index']])
  test_batch = next(pipeline.eval_batches(config, 'test', batch_size=50))
  np.testing.assert_array_equal(test_batch['index'], np.arange(50))  # file order


def test_deterministic_for_a_seed_and_seeds_differ(config):
  a, b = take(config, 3, batch_size=8, seed=1), take(config, 3, batch_size=8, seed=1)
  c = take(config, 3, batch_size=8, seed=2)
  for x, y in zip(a, b):
    assert x['iq'].tobytes() == y['iq'].tobytes()
  assert not np.array_equal(a[0]['aoa'], c[0]['aoa'])


def test_resume_equals_uninterrupted_stream(config):
  full = take(config, 70, batch_size=16, seed=3)  # 70 * 16 > 4 epochs of 225
  resumed = take(config, 10, batch_size=16, seed=3, start_step=60)
  for step, batch in enumerate(resumed, start=60):
    for key in batch:
      np.testing.assert_array_equal(batch[key], full[step][key])


def test_resume_does_not_read_earlier_steps(config, monkeypatch):
  seen = []
  original = pipeline.step_indices
  monkeypatch.setattr(pipeline, 'step_indices', lambda step, **kw: (seen.append(step), original(step, **kw))[1])
  take(config, 2, batch_size=8, seed=0, start_step=10_000)
  assert min(seen) == 10_000


def test_epochs_cover_every_example_and_reshuffle(config, train_data):
  batches = take(config, 2 * N_TRAIN // 15, batch_size=15, seed=4)  # 225 / 15 = 15 steps per epoch
  epoch0 = np.concatenate([b['iq'] for b in batches[:15]])
  epoch1 = np.concatenate([b['iq'] for b in batches[15:30]])
  key = lambda x: sorted(map(bytes, x))
  assert key(epoch0) == key(epoch1) == key(train_data)  # each epoch: every example exactly once
  assert not np.array_equal(epoch0, epoch1)  # a new order each epoch


def test_process_shards_are_disjoint_and_form_the_global_batch(config):
  global_batches = take(config, 20, batch_size=12, seed=5)
  shards = [take(config, 20, batch_size=12, seed=5, process_index=i, process_count=2) for i in range(2)]
  for step in range(20):
    a, b = shards[0][step], shards[1][step]
    assert a['iq'].shape[0] == b['iq'].shape[0] == 6
    assert not set(map(bytes, a['iq'])) & set(map(bytes, b['iq']))
    for key in a:
      np.testing.assert_array_equal(np.concatenate([a[key], b[key]]), global_batches[step][key])


@pytest.mark.parametrize('batch_size, processes, devices', [(10, 1, 4), (12, 2, 4), (8, 3, 1)])
def test_batch_not_divisible_is_a_clear_error(config, batch_size, processes, devices):
  with pytest.raises(ValueError, match=rf'batch_size {batch_size} is not divisible by process_count '
                                       rf'\({processes}\) x local devices \({devices}\) = {processes * devices}'):
    take(config, 1, batch_size=batch_size, seed=0, process_count=processes, num_local_devices=devices)


def test_eval_batches_ordered_with_partial_last_batch(config):
  batches = list(pipeline.eval_batches(config, 'test', batch_size=100))
  assert [len(b['aoa']) for b in batches] == [100, 100, 25]
  labels = pipeline.load_labels(config, 'test')
  np.testing.assert_array_equal(np.concatenate([b['aoa'] for b in batches]), labels['aoa'])
  np.testing.assert_array_equal(labels['aoa'], np.arange(225))  # file order = simulator order
  assert labels['modulation'].dtype == np.int32 and labels['angles_deg'].shape == (225, 2)
  limited = list(pipeline.eval_batches(config, 'test', batch_size=40, max_examples=50))
  assert [len(b['aoa']) for b in limited] == [40, 10]
  np.testing.assert_array_equal(limited[1]['iq'], batches[0]['iq'][40:50])
  assert pipeline.num_examples(config, 'test') == 225 and pipeline.num_examples(config, 'train') == N_TRAIN


def test_unknown_split(config):
  with pytest.raises(ValueError, match="split 'validation'"):
    pipeline.num_examples(config, 'validation')
