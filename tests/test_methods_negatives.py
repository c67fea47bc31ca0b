"""The methods and loss options that treat negatives otherwise (memory bank, FIFO bank, MoCHi; debiased,
hard-negative, DCL, DCLW): each trains, and each step does what its method says, on one device.

"Trains": a contrastive loss need not fall from step to step when its negatives change (a queue or bank
fills with harder ones), so the test is that every step descends its own objective: the step's loss,
evaluated again at the updated parameters with everything else the same (views, draws, bank or queue),
is lower, for most steps and on average, and every metric stays finite.
"""

import jax
import numpy as np
import pytest

from configs import smoke
from ssl_jax import methods, optim
from ssl_jax.methods import common, memory_bank

NUM_EXAMPLES = 450  # the smoke config's train split: 2 per AoA class


def _config(name, **overrides):
  config = smoke.get_config(name)
  config.augment.crop_lengths = (config.data.length,)  # one step program per config (crops: test_methods)
  config.update_from_flattened_dict(overrides)
  return config


def _setup(config, total_steps=16):
  """(initial state, jitted step(state, batch) -> (state, metrics)) as the train loop builds them."""
  method = methods.get_method(config.method)
  lr = optim.learning_rate_schedule(config.optim, batch_size=config.batch_size, steps_per_epoch=total_steps,
                                    total_steps=total_steps)
  momentum = method.momentum_schedule(config.moco.momentum, total_steps) if 'moco' in config else None
  tx = optim.create_optimizer(config.optim, lr)
  networks = method.create_networks(config, bn_axis_name=None)
  state = method.init_state(config, networks, tx, jax.random.PRNGKey(0))
  step = jax.jit(method.make_train_step(config, networks, tx, common.Schedules(lr, momentum), axis_name=None),
                 static_argnames='crop_lengths')
  lengths = (config.data.length, config.data.length)
  return state, lambda state, batch: step(state, batch, crop_lengths=lengths)


def _batches(config, count, seed=0):
  """`count` batches of distinct examples (random IQ), each with its examples' bank rows as 'index'."""
  rng = np.random.default_rng(seed)
  rows = rng.permutation(NUM_EXAMPLES)[:count * config.batch_size].reshape(count, config.batch_size)
  iq = rng.normal(size=(count, config.batch_size, config.data.length, 8)).astype(np.float32)
  return [{'iq': iq[i], 'index': rows[i].astype(np.int32)} for i in range(count)]


def _leaves(tree):
  return [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]


def _relative_distance(a, b):
  """||a - b|| / ||b|| over all leaves of two pytrees."""
  num = sum(float(np.sum((x - y) ** 2)) for x, y in zip(_leaves(a), _leaves(b)))
  return (num / max(sum(float(np.sum(y ** 2)) for y in _leaves(b)), 1e-300)) ** 0.5


@pytest.mark.slow
@pytest.mark.parametrize('name, overrides', [
    ('memory_bank', {}), ('fifo_bank', {}), ('mochi', {}), ('debiased', {}), ('hard_negative', {}),
    ('dcl', {}), ('dclw', {}),
    ('moco', {'loss.name': 'debiased', 'loss.tau_plus': 0.1, 'loss.beta': 0.5}),
])
def test_every_step_descends_its_own_objective(name, overrides):
  config = _config(name, **overrides)
  state, step = _setup(config)
  batches = _batches(config, 6)
  descents = []
  for i in range(12):
    batch = batches[i % len(batches)]
    new_state, metrics = step(state, batch)
    for key, value in metrics.items():
      assert np.isfinite(float(value)), (i, key)
    _, again = step(state.replace(params=new_state.params), batch)
    descents.append(float(again['loss']) - float(metrics['loss']))
    state = new_state
  descents = np.asarray(descents)
  assert np.mean(descents) < 0 and np.sum(descents < 0) >= 10, descents


# One float32 step of two formulations of the same loss. Their only difference is how the log-sum-exp over
# the logits is formed (the order of its terms, log N added and taken off again): its value then carries an
# absolute error of a few |lse| ε, |lse| <= ~20 here, so each softmax weight and the loss agree to ~1e-5
# relative. The gradients (the optimiser's trace) inherit that; 1e-4 of their norm leaves 10x for the
# backward pass's reassociation. The forward passes are the same, so the BatchNorm statistics agree, and
# the weights move by lr x gradient (lr = 0.01, |grad| / |weights| < 1): 1e-5 bounds both.
REDUCTION_TOLERANCE = {'loss': 1e-5, 'opt_state': 1e-4, 'other': 1e-5}


@pytest.mark.slow
@pytest.mark.parametrize('reference, reduced', [
    (('simclr', {}), ('simclr', {'loss.name': 'debiased'})),  # tau+ = beta = 0: NT-Xent
    (('moco', {}), ('moco', {'loss.name': 'debiased'})),  # tau+ = beta = 0: InfoNCE over the queue
    (('moco', {}), ('mochi', {'mochi.num_mix': 0, 'mochi.num_query_mix': 0})),  # s = s' = 0: MoCo
])
def test_a_reduced_step_is_the_plain_methods_step(reference, reduced):
  config = _config(reference[0], **reference[1])
  state, reference_step = _setup(config)
  batches = _batches(config, 5)
  for batch in batches[:4]:  # past the random start: MoCo's queue holds keys, the loss is O(1)
    state, _ = reference_step(state, batch)
  _, reduced_step = _setup(_config(reduced[0], **reduced[1]))
  (want, want_metrics), (got, got_metrics) = reference_step(state, batches[4]), reduced_step(state, batches[4])
  assert float(got_metrics['loss']) == pytest.approx(float(want_metrics['loss']), rel=REDUCTION_TOLERANCE['loss'])
  parts = [p for p in ('params', 'batch_stats', 'opt_state', 'ema_params', 'ema_batch_stats', 'queue')
           if hasattr(want, p)]
  for part in parts:
    tolerance = REDUCTION_TOLERANCE.get(part, REDUCTION_TOLERANCE['other'])
    assert _relative_distance(getattr(got, part), getattr(want, part)) < tolerance, part
  assert int(got.step) == int(want.step) == 5


@pytest.mark.slow
def test_mochis_synthetic_negatives_raise_the_loss_above_mocos():
  """The same state and batch: MoCHi's logits are MoCo's plus the synthetic negatives', so its loss is higher."""
  losses = {}
  for name in ('moco', 'mochi'):
    config = _config(name)
    state, step = _setup(config)
    losses[name] = [float(step(state, batch)[1]['loss']) for batch in _batches(config, 2)]
  assert all(m > c for m, c in zip(losses['mochi'], losses['moco'])), losses


def test_memory_bank_step_moves_the_rows_of_the_batch_only():
  config = _config('memory_bank')
  state, step = _setup(config)
  assert state.bank.shape == (NUM_EXAMPLES, config.model.output_dim)
  batch = _batches(config, 1)[0]
  batch['index'][-3:] = batch['index'][0]  # one example three times (a batch across two epochs)
  new_state, metrics = step(state, batch)
  in_batch = np.zeros(NUM_EXAMPLES, bool)
  in_batch[batch['index']] = True
  old, new = np.asarray(state.bank), np.asarray(new_state.bank)
  np.testing.assert_array_equal(new[~in_batch], old[~in_batch])
  assert np.all(np.any(new[in_batch] != old[in_batch], axis=1))
  np.testing.assert_allclose(np.linalg.norm(new, axis=1), 1.0, rtol=1e-5)
  # mu = 0.5 of a random unit row and a new unit embedding: the row moves by |v - m| / |v + m| > 0.
  assert float(metrics['positive_similarity']) < 0.5  # the positives are random rows at the first step
  for key in ('loss', 'grad_norm', 'negative_similarity', 'embedding_std'):
    assert np.isfinite(float(metrics[key])), key
  # An untrained encoder against random rows: the loss starts near log(K + 1), K = 449 (capped).
  assert memory_bank.num_negatives(config, NUM_EXAMPLES) == NUM_EXAMPLES - 1
  assert 0.5 * np.log(NUM_EXAMPLES) < float(metrics['loss']) < 2 * np.log(NUM_EXAMPLES)
  with pytest.raises(ValueError, match=r"needs batch\['index'\]"):
    step(state, {'iq': batch['iq']})


def test_memory_bank_sizes_come_from_the_data_config():
  config = _config('memory_bank')
  assert memory_bank.num_train_examples(config.data) == NUM_EXAMPLES
  config.memory_bank.num_negatives = 7
  assert memory_bank.num_negatives(config, NUM_EXAMPLES) == 7
  with pytest.raises(ValueError, match='at least 2 train examples'):
    memory_bank.num_negatives(config, 1)
  config.data.source, config.data.manual_dir = 'real', '/nonexistent'
  with pytest.raises(ValueError, match="manual_dir = '/nonexistent': no such directory"):
    memory_bank.num_train_examples(config.data)


def test_fifo_bank_step_writes_the_second_views_at_the_pointer_and_wraps():
  config = _config('fifo_bank')
  state, step = _setup(config)
  size, batch_size = config.fifo_bank.size, config.batch_size
  pointers = []
  for i, batch in enumerate(_batches(config, size // batch_size + 1)):
    new_state, metrics = step(state, batch)
    start = int(state.bank_ptr)
    written = np.asarray(new_state.bank[start:start + batch_size])
    np.testing.assert_allclose(np.linalg.norm(written, axis=1), 1.0, rtol=1e-5)
    assert not np.any(np.all(written == np.asarray(state.bank[start:start + batch_size]), axis=1))
    rest = np.ones(size, bool)
    rest[start:start + batch_size] = False
    np.testing.assert_array_equal(np.asarray(new_state.bank)[rest], np.asarray(state.bank)[rest])
    assert float(metrics['queue_fill']) == pytest.approx(min((i + 1) * batch_size, size) / size)
    pointers.append(int(new_state.bank_ptr))
    state = new_state
  assert pointers == [16, 32, 48, 0, 16]
  config.fifo_bank.size = batch_size - 1
  with pytest.raises(ValueError, match='fifo_bank.size=15 must hold at least one global batch'):
    _setup(config)
