"""Label-budget sampling: exact counts, determinism, nesting, and the error for a short class."""

import numpy as np
import pytest

from ssl_jax.evaluation import budgets


def _labels():
  rng = np.random.default_rng(0)
  return rng.permutation(np.repeat(np.arange(5), [7, 9, 12, 7, 30])).astype(np.int32)


@pytest.mark.parametrize('per_class', [1, 3, 7])
def test_exact_counts_per_class(per_class):
  labels = _labels()
  idx = budgets.sample_budget(labels, per_class, seed=1, num_classes=5)
  assert idx.size == 5 * per_class
  assert np.unique(idx).size == idx.size
  np.testing.assert_array_equal(np.bincount(labels[idx], minlength=5), [per_class] * 5)


def test_deterministic_and_seed_dependent():
  labels = _labels()
  a = budgets.sample_budget(labels, 3, seed=4)
  np.testing.assert_array_equal(a, budgets.sample_budget(labels, 3, seed=4))
  assert not np.array_equal(a, budgets.sample_budget(labels, 3, seed=5))


def test_budgets_are_nested_for_one_seed():
  labels = _labels()
  small = budgets.sample_budget(labels, 2, seed=3)
  large = budgets.sample_budget(labels, 6, seed=3)
  assert set(small) <= set(large)


def test_short_class_error_names_the_class():
  with pytest.raises(ValueError, match='class 0 has 7 examples'):
    budgets.sample_budget(_labels(), 8, seed=0)


def test_absent_class_is_an_error_with_num_classes():
  with pytest.raises(ValueError, match='class 5 has 0 examples'):
    budgets.sample_budget(_labels(), 1, seed=0, num_classes=6)
  assert budgets.max_per_class(_labels(), 6) == 0
  assert budgets.max_per_class(_labels(), 5) == 7


@pytest.mark.parametrize('labels, per_class, match', [
    (np.zeros((2, 2), np.int32), 1, 'labels must be integer'),
    (np.zeros(4, np.float32), 1, 'labels must be integer'),
    (np.zeros(4, np.int32), 0, 'per_class'),
])
def test_bad_input(labels, per_class, match):
  with pytest.raises(ValueError, match=match):
    budgets.sample_budget(labels, per_class, seed=0)
