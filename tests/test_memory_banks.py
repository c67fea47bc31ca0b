"""Memory banks against float64 NumPy references: Wu et al.'s update and InfoNCE, the negative sampler, the FIFO.

lightly's `NTXentLoss(memory_bank_size=...)` is the oracle of the FIFO form in `tests/test_lightly_oracles.py`.

Tolerances (ε = float32 epsilon, d = dimension): a float32 normalised row differs from float64 by <= 4 d ε
per entry; the momentum step `normalize(μ m + (1 - μ) v)` divides that by the norm ρ of the mix (reported
by the reference), so updated rows agree to 8 d ε / ρ. A logit has error δ = 4 d ε / τ; the InfoNCE value
moves by at most 2δ + 8 ε |loss| and each gradient row (scaled by |q|) by (4ε + 2δ) · 2 / (τ · batch).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.losses import banks

EPS32 = float(np.finfo(np.float32).eps)


def _np_normalize(z):
  norm = np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
  return z / norm, norm


def np_update(bank, indices, embeddings, momentum):
  """Wu et al.'s update with duplicates averaged; returns (bank, smallest mix norm)."""
  bank = np.asarray(bank, np.float64).copy()
  v, _ = _np_normalize(np.asarray(embeddings, np.float64))
  smallest = np.inf
  for i in np.unique(indices):
    mean_v = v[indices == i].mean(axis=0)
    mix = momentum * bank[i] + (1 - momentum) * mean_v
    smallest = min(smallest, np.linalg.norm(mix))
    bank[i] = mix / np.linalg.norm(mix)
  return bank, smallest


def np_bank_info_nce(q, positive_indices, negative_indices, bank, tau):
  """Returns (loss, dloss/dq) in float64."""
  q, bank = np.asarray(q, np.float64), np.asarray(bank, np.float64)
  u, norm = _np_normalize(q)
  keys = np.concatenate([bank[positive_indices][:, None], bank[negative_indices]], axis=1)  # (n, 1 + K, d)
  logits = np.einsum('nd,nkd->nk', u, keys) / tau
  m = logits.max(1, keepdims=True)
  lse = (m + np.log(np.exp(logits - m).sum(1, keepdims=True)))[:, 0]
  dlogits = np.exp(logits - lse[:, None])
  dlogits[:, 0] -= 1
  dlogits /= len(q)
  du = np.einsum('nk,nkd->nd', dlogits, keys) / tau
  return np.mean(lse - logits[:, 0]), (du - u * np.sum(u * du, 1, keepdims=True)) / norm


def _bank(seed, num_examples=12, dim=8):
  return np.asarray(banks.init_bank(jax.random.key(seed), num_examples, dim))


def test_init_bank_rows_are_unit_norm():
  bank = _bank(0, 50, 16)
  assert bank.shape == (50, 16) and bank.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(bank.astype(np.float64), axis=1), 1.0, atol=4 * 16 * EPS32)


@pytest.mark.parametrize('momentum', [0.5, 0.0, 0.9])
def test_update_matches_reference_with_duplicates(momentum):
  rng = np.random.default_rng(1)
  bank = _bank(1)
  indices = np.array([3, 7, 3, 0, 11, 7, 3, 5], np.int32)  # 3 three times, 7 twice
  embeddings = (rng.normal(size=(8, 8)) * 10.0**rng.uniform(-2, 3, size=(8, 1))).astype(np.float32)
  want, smallest = np_update(bank, indices, embeddings, momentum)
  got = np.asarray(jax.jit(lambda b, i, e: banks.update_memory_bank(b, i, e, momentum=momentum))(
      bank, indices, embeddings), np.float64)
  np.testing.assert_allclose(got, want, rtol=0, atol=8 * 8 * EPS32 / smallest)
  untouched = np.setdiff1d(np.arange(12), indices)
  np.testing.assert_array_equal(got[untouched], bank[untouched])  # other rows bit-identical
  # The rule is order-free: a permuted batch gives the same bank (to rounding of the duplicate sums).
  perm = rng.permutation(8)
  permuted = np.asarray(banks.update_memory_bank(bank, indices[perm], embeddings[perm], momentum=momentum))
  np.testing.assert_allclose(permuted, got, rtol=0, atol=16 * 8 * EPS32 / smallest)


def test_duplicates_are_averaged_not_last_write_wins():
  bank = np.zeros((3, 2), np.float32)
  bank[1] = [1.0, 0.0]
  embeddings = np.array([[0.0, 1.0], [0.0, -1.0], [0.0, 1.0]], np.float32)
  got = np.asarray(banks.update_memory_bank(bank, np.array([1, 1, 1], np.int32), embeddings, momentum=0.5))
  # mean v = (0, 1/3); 0.5 (1, 0) + 0.5 (0, 1/3) = (0.5, 1/6), normalised.
  want = np.array([0.5, 1 / 6]) / np.hypot(0.5, 1 / 6)
  np.testing.assert_allclose(got[1], want, rtol=0, atol=16 * EPS32)


@pytest.mark.parametrize('tau', [0.07, 0.5])
def test_bank_info_nce_matches_reference(tau):
  rng = np.random.default_rng(2)
  bank = _bank(2, num_examples=20)
  q = (rng.normal(size=(6, 8)) * 10.0**rng.uniform(-1, 3, size=(6, 1))).astype(np.float32)
  positives = np.array([0, 4, 4, 9, 13, 19], np.int32)
  negatives = banks.sample_bank_negatives(jax.random.key(3), positives, num_examples=20, num_negatives=7)
  want, want_dq = np_bank_info_nce(q, positives, np.asarray(negatives), bank, tau)
  loss, (dq, dbank) = jax.jit(jax.value_and_grad(lambda q, bank: banks.memory_bank_info_nce(
      q, positives, negatives, bank, temperature=tau), argnums=(0, 1)))(q, bank)
  delta = 4 * 8 * EPS32 / tau
  np.testing.assert_allclose(float(loss), want, rtol=0, atol=2 * delta + 8 * EPS32 * abs(want))
  scale = np.linalg.norm(q.astype(np.float64), axis=1, keepdims=True)
  np.testing.assert_allclose(np.asarray(dq, np.float64) * scale, want_dq * scale, rtol=0,
                             atol=(4 * EPS32 + 2 * delta) * 2 / (tau * 6))
  assert not np.any(dbank), 'the bank must get no gradient'
  with jax.enable_x64(True):
    loss64 = banks.memory_bank_info_nce(jnp.asarray(q, jnp.float64), positives, negatives,
                                        jnp.asarray(bank, jnp.float64), temperature=tau)
  np.testing.assert_allclose(float(loss64), want, rtol=1e-13)


def test_sampler_excludes_the_positive_and_is_uniform_over_the_rest():
  num_examples, k = 7, 20_000
  positives = np.array([0, 3, 6, 3], np.int32)
  draws = np.asarray(banks.sample_bank_negatives(jax.random.key(4), positives, num_examples=num_examples,
                                                 num_negatives=k))
  assert draws.shape == (4, k) and draws.dtype == np.int32
  for row, own in zip(draws, positives):
    assert not np.any(row == own)
    frequencies = np.bincount(row, minlength=num_examples) / k
    others = np.delete(np.arange(num_examples), own)
    p = 1 / (num_examples - 1)  # 6 standard errors of a binomial proportion
    np.testing.assert_allclose(frequencies[others], p, atol=6 * np.sqrt(p * (1 - p) / k))
  assert not np.array_equal(draws[1], draws[3]), 'each query draws its own negatives'


def test_fifo_update_wraps_as_a_ring():
  bank = np.zeros((6, 2), np.float32)
  z1 = np.array([[1, 0], [2, 0], [3, 0], [4, 0]], np.float32)
  bank1, ptr1 = banks.fifo_bank_update(bank, jnp.int32(0), z1)
  assert int(ptr1) == 4
  np.testing.assert_array_equal(np.asarray(bank1)[:4], np.tile([1.0, 0.0], (4, 1)))
  z2 = np.array([[0, 1], [0, 2], [0, -3], [0, 4]], np.float32)
  bank2, ptr2 = banks.fifo_bank_update(bank1, ptr1, z2)
  assert int(ptr2) == 2
  want = np.array([[0, -1], [0, 1], [1, 0], [1, 0], [0, 1], [0, 1]], np.float32)  # rows 4, 5, 0, 1 rewritten
  np.testing.assert_array_equal(np.asarray(bank2), want)


_Z = np.ones((4, 8), np.float32)


@pytest.mark.parametrize('call, match', [
    (lambda: banks.fifo_bank_update(np.zeros((3, 8), np.float32), jnp.int32(0), _Z),
     r'FIFO bank \(3 rows\).*global batch \(4 rows\)'),
    (lambda: banks.update_memory_bank(np.zeros((5, 8), np.float32), np.zeros(4, np.int32), _Z,
                                      momentum=1.0), r'momentum.*1\.0'),
    (lambda: banks.update_memory_bank(np.zeros((5, 8), np.float32), np.zeros(3, np.int32), _Z),
     r'indices.*\(4,\).*\(3,\)'),
    (lambda: banks.update_memory_bank(np.zeros((5, 8), np.float32), np.zeros(4, np.float32), _Z),
     r'indices.*float32'),
    (lambda: banks.sample_bank_negatives(jax.random.key(0), np.zeros(4, np.int32), num_examples=1,
                                         num_negatives=3), r'num_examples.*>= 2.*1'),
    (lambda: banks.sample_bank_negatives(jax.random.key(0), np.zeros(4, np.int32), num_examples=9,
                                         num_negatives=0), r'num_negatives.*0'),
    (lambda: banks.memory_bank_info_nce(_Z, np.zeros(4, np.int32), np.zeros((4,), np.int32),
                                        np.zeros((9, 8), np.float32), temperature=0.1),
     r'negative_indices.*\(4, K >= 1\).*\(4,\)'),
    (lambda: banks.memory_bank_info_nce(_Z, np.zeros(4, np.int32), np.zeros((4, 2), np.int32),
                                        np.zeros((9, 7), np.float32), temperature=0.1), r'bank.*\(9, 7\)'),
    (lambda: banks.nt_xent_fifo_bank(_Z, _Z, np.zeros((9, 7), np.float32), temperature=0.1),
     r'bank.*\(9, 7\)'),
    (lambda: banks.init_bank(jax.random.key(0), 0, 8), r'size.*0'),
])
def test_bad_input_raises(call, match):
  with pytest.raises(ValueError, match=match):
    call()
