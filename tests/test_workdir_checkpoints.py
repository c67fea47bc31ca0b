"""ssl_jax.workdir.checkpoints.Checkpointer on a small state: orbax's save cadence, and no non-finite state saved."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.workdir import checkpoints


def _state(value=1.0):
  return {'params': {'w': jnp.full((3, 2), value)}, 'step': jnp.int32(0), 'rng': jnp.zeros(2, jnp.uint32)}


def test_should_save_follows_the_cadence_and_never_the_first_step(tmp_path):
  checkpointer = checkpoints.Checkpointer(str(tmp_path), every=3)
  asked = [step for step in range(1, 10) if checkpointer.should_save(step)]
  assert asked == [3, 6, 9]  # orbax's default would also have saved step 1 (no checkpoint yet)
  checkpointer.save(6, _state())
  assert not checkpointer.should_save(6) and not checkpointer.should_save(3)  # not newer than the latest
  assert checkpointer.should_save(9)
  checkpointer.close()
  explicit_only = checkpoints.Checkpointer(str(tmp_path / 'explicit'))
  assert not any(explicit_only.should_save(step) for step in range(1, 10))
  explicit_only.close()
  with pytest.raises(ValueError, match='checkpoint_every_steps=0'):
    checkpoints.Checkpointer(str(tmp_path / 'zero'), every=0)


@pytest.mark.parametrize('bad', [np.nan, np.inf, -np.inf])
def test_a_non_finite_state_is_never_saved(tmp_path, bad):
  checkpointer = checkpoints.Checkpointer(str(tmp_path))
  checkpointer.save(2, _state())
  state = _state()
  state['params']['w'] = state['params']['w'].at[1, 0].set(bad)
  with pytest.raises(checkpoints.NonFiniteStateError, match=r'step 4 holds a NaN or an infinity; not saved'):
    checkpointer.save(4, state)
  checkpointer.close()
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['2']
  assert checkpoints.all_finite(_state()) and not checkpoints.all_finite(state)
  assert checkpoints.all_finite({'ints': jnp.arange(3)})  # no float leaf: nothing to be non-finite


def test_a_failed_restores_unretrieved_reads_are_dropped_and_other_asyncio_records_kept():
  """A restore with a damaged file fails in one read; asyncio's "never retrieved" log of the reads still in
  flight is noise after the reported failure (tests/test_evaluate.py's one-line CLI error)."""
  import logging
  keep = checkpoints._DropUnretrievedRestoreReads()  # pylint: disable=protected-access

  def record(message):
    return logging.LogRecord('asyncio', logging.ERROR, __file__, 1, message, None, None)

  assert not keep.filter(record("Task exception was never retrieved\nfuture: <Task finished name='Task-158' "
                                "coro=<async_deserialize() done, defined at serialization.py:394> exception=ValueError()>"))
  assert keep.filter(record("Task exception was never retrieved\nfuture: <Task finished coro=<other() done>>"))
  assert keep.filter(record('Executing <Task pending> took 0.5 seconds'))
