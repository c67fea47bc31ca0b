"""What the train loop does now and then, besides the step: time its log windows, and profile steps on demand.

`LogWindow` measures the steps between two log steps (steps/s, views/s) and says how long the rest of the
run will take at that rate. `Profile` traces a window of steps with JAX's profiler (`jax.profiler`).
The loop decides when to log (`is_log_step`); checkpoints follow orbax's own cadence
(`ssl_jax.workdir.checkpoints.Checkpointer`).
"""

import math
import os
import time


def is_log_step(step: int, every: int, last: int) -> bool:
  """Steps that log: every `every`-th step, and the run's last step."""
  return step % every == 0 or step == last


def format_duration(seconds: float) -> str:
  """A rough duration: '45s', '12m05s', '3h07m' (rounded down to the last unit shown)."""
  if not math.isfinite(seconds) or seconds < 0:
    return '?'
  seconds = int(seconds)
  if seconds < 60:
    return f'{seconds}s'
  if seconds < 3600:
    return f'{seconds // 60}m{seconds % 60:02d}s'
  return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'


class LogWindow:
  """The wall time of the steps between log steps.

  `close(step)` ends the window at `step` (call it once the step's results are on the host, so that the
  window holds whole steps) and starts the next; it returns the window's steps per second. `eta` uses the
  rate since the first window closed: the first window holds the first compile, and later compiles (a new
  crop-length pair) spread over the run.
  """

  def __init__(self, start_step: int, clock=time.perf_counter):
    self._clock = clock
    self._start_time = clock()
    self._start_step = start_step
    self._first_close: tuple[int, float] | None = None
    self._excluded = 0.0
    self.steps_per_second = float('nan')

  def exclude(self, seconds: float) -> None:
    """Leaves `seconds` of the open window (work besides the steps, e.g. the online monitor) out of its
    steps per second; the ETA still counts them."""
    self._excluded += seconds

  def close(self, step: int) -> float:
    now = self._clock()
    self.steps_per_second = (step - self._start_step) / max(now - self._start_time - self._excluded, 1e-9)
    self._start_time, self._start_step, self._excluded = now, step, 0.0
    if self._first_close is None:
      self._first_close = (step, now)
    return self.steps_per_second

  def eta(self, step: int, last_step: int) -> str:
    """How long steps `step + 1 .. last_step` take, e.g. '12m05s' ('?' before the first window closed)."""
    if self._first_close is None:
      return '?'
    first_step, first_time = self._first_close
    if step == first_step:
      rate = self.steps_per_second
    else:
      rate = (step - first_step) / max(self._start_time - first_time, 1e-9)
    return format_duration((last_step - step) / rate)


class Profile:
  """Traces steps `first .. first + count - 1` (1-based, as the loop counts them) into `directory`.

  The trace (`plugins/profile/<time>/*.xplane.pb` and a `*.trace.json.gz`) opens in TensorBoard's profile
  plugin or in Perfetto. `first = 0` profiles nothing. Call `before_step(step)` with the number of the step
  about to run and `after_step(step, outputs)` with the step just run and its outputs (waited for before
  the trace stops); `stop()` ends a trace that the run left early.
  """

  def __init__(self, directory: str, first: int, count: int):
    self.directory = directory
    self.first, self.last = first, first + count - 1
    self.active = False
    self.done = False

  def before_step(self, step: int) -> None:
    if self.first and step == self.first and not self.active and not self.done:
      import jax
      os.makedirs(self.directory, exist_ok=True)
      jax.profiler.start_trace(self.directory)
      self.active = True

  def after_step(self, step: int, outputs) -> bool:
    """True when this step ended the trace."""
    if self.active and step >= self.last:
      import jax
      jax.block_until_ready(outputs)
      self.stop()
      return True
    return False

  def stop(self) -> None:
    if self.active:
      import jax
      jax.profiler.stop_trace()
      self.active, self.done = False, True
