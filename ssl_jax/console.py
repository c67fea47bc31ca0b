"""What a run prints: its own few lines by default; the libraries' INFO chatter only on request.

By default (absl's `--verbosity` not given) the entry points call `quiet_libraries()`: absl logging at
WARNING (orbax, TFDS and JAX log through it or through Python's root logger), TensorFlow's C++ logs at
WARNING, TFDS's progress bars off, and each distinct warning shown once. Errors are untouched.
`--verbosity=0` brings back absl's INFO lines, `--verbosity=1` its DEBUG ones (absl's own meaning).

`Console` prints a run's own lines (header, one line per log interval, summary) on stdout, from one
process; while a tqdm bar is on screen (a terminal) it prints through tqdm so that the bar stays below.
"""

import logging
import os
import sys

PREFIX = '[ssl_jax]'


class _OncePerMessage(logging.Filter):
  """Lets each distinct (logger, level, message) below ERROR through once; errors always pass."""

  def __init__(self):
    super().__init__()
    self._seen: set[tuple[str, int, str]] = set()

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno >= logging.ERROR:
      return True
    key = (record.name, record.levelno, record.getMessage())
    if key in self._seen:
      return False
    self._seen.add(key)
    return True


def _show_each_message_once(handler: logging.Handler) -> None:
  if not any(isinstance(f, _OncePerMessage) for f in handler.filters):
    handler.addFilter(_OncePerMessage())  # One per handler: a record may pass through several.


def quiet_libraries() -> None:
  """absl/orbax/TFDS/JAX/TensorFlow INFO off, repeated warnings shown once, TFDS progress bars off.

  Call before TensorFlow is imported for its C++ start-up lines to be quiet too (`TF_CPP_MIN_LOG_LEVEL`,
  `TF_ENABLE_ONEDNN_OPTS`, each unless the environment sets it).
  """
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  # TensorFlow (the input pipeline's only user) logs 'oneDNN custom operations are on' through absl before
  # absl's logging is initialised, where TF_CPP_MIN_LOG_LEVEL does not reach it, on CPUs where oneDNN's custom
  # kernels apply. Those kernels serve matmuls and convolutions, which the pipeline does not run.
  os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
  import tensorflow_datasets as tfds  # First: importing it may add handlers to the root logger.
  tfds.disable_progress_bar()
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)
  # Handlers, not loggers, so that JAX's many loggers are covered too. Every record reaches a root handler:
  # absl's once app.run installed it; in a script without app.run (the study), the handler absl's first
  # log call would add (basicConfig), added here first.
  if not logging.root.handlers:
    logging.basicConfig()
  for handler in (absl_logging.get_absl_handler(), *logging.root.handlers):
    if handler is not None:
      _show_each_message_once(handler)


class Console:
  """A run's own lines on stdout (from one process: `enabled`), kept clear of a tqdm bar."""

  def __init__(self, enabled: bool):
    self.enabled = enabled
    self._bar = None

  def progress(self, *, total: int, initial: int, desc: str, show: bool):
    """A tqdm bar, on screen only when `show`, this console is enabled and stderr is a terminal."""
    from tqdm import tqdm
    self._bar = tqdm(total=total, initial=initial, desc=desc, unit='step', dynamic_ncols=True,
                     disable=None if (show and self.enabled) else True)  # None: off when not a TTY.
    return self._bar

  def line(self, text: str) -> None:
    if not self.enabled:
      return
    text = f'{PREFIX} {text}'
    if self._bar is not None and not self._bar.disable:
      from tqdm import tqdm
      tqdm.write(text, file=sys.stdout)
    else:
      print(text, flush=True)
