"""ssl_jax.periodic: log steps, log-window rates and ETA, profiling a window of steps."""

import os

import jax
import jax.numpy as jnp
import pytest

from ssl_jax import periodic


def test_log_steps_are_every_nth_and_the_last():
  assert [s for s in range(1, 12) if periodic.is_log_step(s, 4, 11)] == [4, 8, 11]
  assert [s for s in range(1, 9) if periodic.is_log_step(s, 4, 8)] == [4, 8]


@pytest.mark.parametrize('seconds, text', [(0, '0s'), (59.9, '59s'), (60, '1m00s'), (725, '12m05s'),
                                           (3600, '1h00m'), (11230, '3h07m'), (float('nan'), '?'),
                                           (float('inf'), '?'), (-1, '?')])
def test_format_duration(seconds, text):
  assert periodic.format_duration(seconds) == text


class FakeClock:
  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def test_log_window_rates_and_eta_leave_the_first_window_out():
  clock = FakeClock()
  window = periodic.LogWindow(start_step=10, clock=clock)
  assert window.eta(10, 110) == '?'
  clock.now += 50.0  # Steps 11-20, with the compile: 0.2 steps/s.
  assert window.close(20) == pytest.approx(0.2)
  assert window.eta(20, 110) == '7m30s'  # 90 steps at the only rate there is.
  clock.now += 5.0  # Steps 21-30: 2 steps/s.
  assert window.close(30) == pytest.approx(2.0)
  clock.now += 10.0  # Steps 31-40: 1 step/s.
  assert window.close(40) == pytest.approx(1.0)
  assert window.eta(40, 110) == '52s'  # 70 steps at 20 steps / 15 s since step 20.


def test_profile_traces_the_asked_steps_only(tmp_path):
  directory = str(tmp_path / 'profile')
  profile = periodic.Profile(directory, first=3, count=2)
  double = jax.jit(lambda x: 2 * x)
  x = jnp.ones(4)
  ended = []
  for step in range(1, 7):
    profile.before_step(step)
    assert profile.active == (step in (3, 4)), step
    x = double(x)
    if profile.after_step(step, x):
      ended.append(step)
  profile.stop()
  assert ended == [4] and profile.done and not profile.active
  traces = [f for _, _, files in os.walk(directory) for f in files]
  assert any(f.endswith('.xplane.pb') for f in traces), traces
  off = periodic.Profile(str(tmp_path / 'off'), first=0, count=5)
  for step in range(1, 4):
    off.before_step(step)
    off.after_step(step, x)
  off.stop()
  assert not os.path.exists(tmp_path / 'off')
