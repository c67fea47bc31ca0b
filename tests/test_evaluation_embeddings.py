"""Frozen-encoder embeddings: eval-mode BatchNorm, padding-free results, one compiled shape."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.evaluation import embeddings
from ssl_jax.models.shufflenet import ShuffleNetV2Encoder

LENGTH = 32


@pytest.fixture(scope='module')
def encoder_and_variables():
  encoder = ShuffleNetV2Encoder(stage_repeats=(1, 1, 1))
  variables = encoder.init(jax.random.key(0), jnp.zeros((1, LENGTH, 8)), train=False)
  # Non-trivial running statistics, so eval mode differs visibly from batch statistics.
  variables = {'params': variables['params'],
               'batch_stats': jax.tree.map(lambda s: s + 0.3, variables['batch_stats'])}
  return encoder, variables


def test_matches_direct_eval_apply_with_uneven_batches(encoder_and_variables):
  encoder, variables = encoder_and_variables
  x = np.random.default_rng(0).normal(size=(11, LENGTH, 8)).astype(np.float32)
  expected = np.asarray(encoder.apply(variables, x, train=False))
  chunks = [x[:2], {'iq': x[2:7]}, x[7:8], x[8:]]  # arrays or batch dicts, any sizes
  got = embeddings.compute_embeddings(encoder, variables, chunks, batch_size=4)
  assert got.shape == (11, 1024) and got.dtype == np.float32
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  # Each row is independent of what else is in its batch (running BN statistics, not batch ones).
  single = embeddings.compute_embeddings(encoder, variables, [x[3:4]], batch_size=4)
  np.testing.assert_allclose(single[0], expected[3], rtol=1e-5, atol=1e-5)


def test_one_compile_for_any_number_of_examples(encoder_and_variables):
  encoder, variables = encoder_and_variables
  x = np.zeros((9, LENGTH, 8), np.float32)
  embeddings.compute_embeddings(encoder, variables, [x[:5]], batch_size=3)
  before = embeddings._embed._cache_size()
  for n in (1, 4, 9):
    embeddings.compute_embeddings(encoder, variables, [x[:n]], batch_size=3)
  assert embeddings._embed._cache_size() == before


def test_bad_input(encoder_and_variables):
  encoder, variables = encoder_and_variables
  with pytest.raises(ValueError, match='batches is empty'):
    embeddings.compute_embeddings(encoder, variables, [], batch_size=3)
  with pytest.raises(ValueError, match='batch_size'):
    embeddings.compute_embeddings(encoder, variables, [np.zeros((2, LENGTH, 8))], batch_size=0)
  with pytest.raises(ValueError, match=r'\(batch, time, 8\)'):
    embeddings.compute_embeddings(encoder, variables, [np.zeros((2, LENGTH))], batch_size=3)
