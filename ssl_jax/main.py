"""Pretraining entry point.

  python -m ssl_jax.main --config=configs/moco.py --workdir=DIR [--config.key=value ...]

Resumes automatically from the latest checkpoint in DIR. Multi-host: start one process per host with
`--config.distributed.coordinator_address=HOST:PORT --config.distributed.num_processes=P
--config.distributed.process_id=I`.
"""

import json
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from ssl_jax import host_allocator  # No JAX import: configure() must run before JAX starts its backend.

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Training configuration file.', lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and the run config.')
flags.DEFINE_enum('host_allocator', host_allocator.DEFAULT_POLICY, list(host_allocator.POLICIES),
                  'mimalloc: relaunch with mimalloc preloaded, so XLA:CPU step buffers stop page-faulting. '
                  'system: the C library defaults. See ssl_jax/host_allocator.py.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected command-line arguments: {argv[1:]}')
  logging.info('%s', host_allocator.configure(FLAGS.host_allocator))  # Before JAX starts its backend.
  from ssl_jax import parallel
  parallel.initialize_distributed(FLAGS.config.distributed)  # Before anything touches the devices.
  from ssl_jax import train
  try:
    summary = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (ValueError, FileNotFoundError, train.NonFiniteLossError) as e:
    logging.error('%s', e)
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  print(json.dumps(summary))


if __name__ == '__main__':
  app.run(main)
