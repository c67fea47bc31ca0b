"""evaluate_encoder end to end on tiny in-memory data: structure, frozen backbone, skipped budgets."""

import json

import jax
import ml_collections
import numpy as np
import pytest

from configs import probe as probe_config_lib
from ssl_jax import evaluation
from ssl_jax.evaluation import budgets, embeddings, metrics, probe, suite
from ssl_jax.models.shufflenet import ShuffleNetV2Encoder

LENGTH = 32


def make_split(rng, per_class):
  """`per_class` examples per AoA class; the modulation class shifts channel 0, the AoA class channels 2-3."""
  aoa = np.repeat(np.arange(225), per_class).astype(np.int32)
  modulation = rng.integers(0, 7, aoa.size).astype(np.int32)
  angles = metrics.aoa_class_to_angles_deg(aoa).astype(np.float32)
  iq = rng.normal(size=(aoa.size, LENGTH, 8)).astype(np.float32)
  iq[:, :, 0] += modulation[:, None]
  iq[:, :, 2:4] += angles[:, None, :] / 30
  order = rng.permutation(aoa.size)
  return {'iq': iq[order], 'aoa': aoa[order], 'modulation': modulation[order], 'angles_deg': angles[order]}


def tiny_probe_config():
  config = probe_config_lib.get_config()
  config.budgets = (1, 2, 200)
  config.skip_unavailable_budgets = True  # 200 per class: more than the train split holds
  config.num_seeds = 2
  config.embed_batch_size = 64
  config.probe.num_steps = 20
  config.heads.aoa.hidden_dim = 16
  return config


@pytest.fixture(scope='module')
def setup():
  rng = np.random.default_rng(0)
  data = evaluation.ArrayData({'train': make_split(rng, 3), 'test': make_split(rng, 1)}, batch_size=100)
  encoder = ShuffleNetV2Encoder(stage_repeats=(1, 1, 1))
  data_config = ml_collections.ConfigDict({'length': LENGTH})
  variables = evaluation.random_init_variables(encoder, data_config, seed=0)
  return data, encoder, data_config, variables


def test_results_structure_and_frozen_backbone(setup):
  data, encoder, data_config, variables = setup
  before = jax.tree.map(np.array, variables)
  config = tiny_probe_config()
  results = evaluation.evaluate_encoder(encoder, variables, data_config, config, seed=0, data=data)

  # The encoder variables are bit-identical after probing.
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.array, variables))

  json.dumps(results)  # JSON-serialisable.
  assert results['embedding_dim'] == 1024 and results['num_test'] == 225
  # One test example per AoA class: the AoA silhouette is undefined and says so; AMC's is a score.
  assert results['tasks']['aoa']['silhouette'] is None
  assert 'undefined' in results['tasks']['aoa']['silhouette_skipped']
  assert -1 <= results['tasks']['amc']['silhouette'] <= 1
  for task in ('aoa', 'amc'):
    task_results = results['tasks'][task]
    for budget in ('1', '2'):
      scores = task_results['probe'][budget]
      assert len(scores['accuracy']['values']) == 2
      assert 0 <= scores['accuracy']['mean'] <= 1
    assert 'smallest train class' in task_results['probe']['200']['skipped']
  assert results['tasks']['aoa']['probe']['1']['mae_deg']['mean'] > 0
  assert 'mae_deg' not in results['tasks']['amc']['probe']['1']
  # Only the drawn train examples are embedded: 2 seeds x 2 per class x 225, overlapping.
  assert results['num_train_embedded'] <= 2 * 2 * 225


def test_probe_results_are_a_function_of_embeddings_only(setup):
  """Rebuild one probe result from compute_embeddings + train_and_predict: nothing else enters."""
  data, encoder, data_config, variables = setup
  config = tiny_probe_config()
  config.tasks = ('amc',)
  config.budgets = (2,)
  results = evaluation.evaluate_encoder(encoder, variables, data_config, config, seed=5, data=data)
  train, test = data.splits['train'], data.splits['test']
  indices = np.stack([budgets.sample_budget(train['modulation'], 2, 5000 + s, 7) for s in range(2)])
  embed = lambda x: embeddings.compute_embeddings(encoder, variables, [x], batch_size=64)
  train_x = embed(train['iq'])[indices]
  predictions, _ = probe.train_and_predict(
      train_x, train['modulation'][indices], embed(test['iq']), num_classes=7,
      settings=probe.ProbeSettings(**{**dict(config.probe), **dict(config.heads.amc)}), seed=5000 + 2)
  expected = [metrics.accuracy(p, test['modulation']) for p in predictions]
  np.testing.assert_allclose(results['tasks']['amc']['probe']['2']['accuracy']['values'], expected)


def test_unavailable_budget_can_raise(setup):
  data, encoder, data_config, variables = setup
  config = tiny_probe_config()
  config.skip_unavailable_budgets = False
  with pytest.raises(ValueError, match='budget 200 per class exceeds'):
    evaluation.evaluate_encoder(encoder, variables, data_config, config, seed=0, data=data)


def test_unknown_task(setup):
  data, encoder, data_config, variables = setup
  config = tiny_probe_config()
  config.tasks = ('snr',)
  with pytest.raises(ValueError, match='unknown tasks'):
    evaluation.evaluate_encoder(encoder, variables, data_config, config, seed=0, data=data)


def test_select_rows_streams_the_requested_rows():
  x = np.arange(10)[:, None] * np.ones((1, 3))
  batches = [{'iq': x[:4]}, {'iq': x[4:7]}, {'iq': x[7:]}]
  got = np.concatenate(list(suite.select_rows(batches, np.array([1, 3, 4, 9]))))
  np.testing.assert_array_equal(got[:, 0], [1, 3, 4, 9])
  with pytest.raises(ValueError, match='index 12 was requested'):
    list(suite.select_rows(batches, np.array([1, 12])))


def test_random_init_variables_depend_on_seed(setup):
  _, encoder, data_config, variables = setup
  other = evaluation.random_init_variables(encoder, data_config, seed=1)
  assert set(other) == {'params', 'batch_stats'}
  leaves_a, leaves_b = jax.tree.leaves(variables['params']), jax.tree.leaves(other['params'])
  assert any(not np.array_equal(a, b) for a, b in zip(leaves_a, leaves_b))


def test_embed_split_matches_the_labels(setup):
  data, encoder, _, variables = setup
  x, labels = evaluation.embed_split(encoder, variables, data, 'test', batch_size=64)
  assert x.shape == (225, 1024)
  np.testing.assert_array_equal(labels['aoa'], data.splits['test']['aoa'])
  direct = embeddings.compute_embeddings(encoder, variables, [data.splits['test']['iq']], batch_size=64)
  np.testing.assert_array_equal(x, direct)


@pytest.mark.slow  # Compiles an end-to-end train step (~20 s on 2 cores).
def test_evaluate_supervised_uses_the_probe_label_sets(setup):
  data, encoder, data_config, _ = setup
  config = tiny_probe_config()
  config.tasks = ('amc',)
  config.supervised.budgets = (1, 200)
  config.supervised.num_seeds = 1
  config.supervised.min_steps = config.supervised.max_steps = 3
  config.supervised.batch_size = 8
  results = evaluation.evaluate_supervised(encoder, data_config, config, seed=0, data=data)
  json.dumps(results)
  scores = results['tasks']['amc']['supervised']['1']
  assert scores['num_steps'] == 3 and len(scores['accuracy']['values']) == 1
  assert 0 <= scores['accuracy']['mean'] <= 1
  assert 'skipped' in results['tasks']['amc']['supervised']['200']
