"""Pretraining entry point.

  python -m ssl_jax.main --config=configs/moco.py --workdir=DIR [--config.key=value ...]

Start it with `python -m ssl_jax.launch -m ssl_jax.main ...` to run on mimalloc (ssl_jax/launch.py); the
header says which host allocator is in force.

Resumes automatically from the newest readable checkpoint in DIR. Multi-host: start one process per
host with `--config.distributed.coordinator_address=HOST:PORT --config.distributed.num_processes=P
--config.distributed.process_id=I`.

One run writes into DIR at a time: a second launch exits 1 naming the process that holds DIR's lock
(`ssl_jax/workdir/lock.py`). The console shows a short header, one line per log interval and, as the
last line of stdout (of every process of a multi-host run), a summary (`ssl_jax.train.summary_line`: stop
reason, steps, final loss, views/s, workdir); `--verbosity=0` (absl's flag) adds the libraries' INFO logs,
`--verbosity=1` their DEBUG logs. Exits 1 with a one-line message on errors it can name.
"""

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from ssl_jax import host_allocator

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Training configuration file.', lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and the run config.')
flags.mark_flags_as_required(['config', 'workdir'])


def _fail(error: Exception) -> None:
  print(f'error: {error}', file=sys.stderr, flush=True)
  sys.exit(1)


def _config_description() -> str:
  """The config file and the keys overridden on the command line."""
  overrides = config_flags.get_override_values(FLAGS['config'])
  text = config_flags.get_config_filename(FLAGS['config'])
  return text + (' with ' + ', '.join(f'{k}={v}' for k, v in overrides.items()) if overrides else '')


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected command-line arguments: {argv[1:]}')
  if not FLAGS['verbosity'].present:
    from ssl_jax import console
    console.quiet_libraries()  # Before TensorFlow is imported.
  from ssl_jax import config_checks, parallel
  try:
    config_checks.check_pretrain_run(FLAGS.config, FLAGS.workdir)  # A bad value is a message, before any work.
    parallel.initialize_distributed(FLAGS.config.distributed)  # Before anything touches the devices.
  except ValueError as e:
    _fail(e)
  from ssl_jax import train
  from ssl_jax.workdir import lock
  import jax
  if jax.process_index() == 0:
    print(f'[ssl_jax] config: {_config_description()}\n[ssl_jax] {host_allocator.describe()}', flush=True)
  try:
    summary = train.pretrain(FLAGS.config, FLAGS.workdir)  # Process 0's console ends with its summary line.
  except (ValueError, FileNotFoundError, train.NonFiniteLossError, lock.WorkdirBusyError) as e:
    _fail(e)
  if jax.process_index() != 0:  # The other processes' consoles end with it too.
    from ssl_jax import console
    print(f'{console.PREFIX} {train.summary_line(summary, os.path.abspath(FLAGS.workdir))}', flush=True)


if __name__ == '__main__':
  app.run(main)
