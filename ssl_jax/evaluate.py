"""Evaluation entry point: probes a pretraining workdir and writes `DIR/eval/results.json`.

  python -m ssl_jax.evaluate --workdir=DIR [--probe_config=configs/probe.py] \
      [--probe_config.budgets=1,10] [--seed=0] [--step=N]

Loads the (query/online) encoder of the workdir's newest readable checkpoint (or `--step`), reads the data the run was trained
on (`config.data`), and runs `ssl_jax.evaluation.evaluate_encoder` on it; with `probe_config.random_init`
also on a randomly initialised encoder, with `probe_config.supervised.enabled` also the supervised
baseline. The results file is written atomically (temporary file, then rename). Exits 1 with a message,
before any probing, when the probe config is out of range, DIR holds no checkpoint (or no `--step` N: "no
step N in DIR (have ...)"), or the train split cannot serve a requested budget (a class with fewer
examples than the budget, or none): `--probe_config.skip_unavailable_budgets=True` skips those budgets
instead, each named in a warning and in the results' `skipped` list.

A member run's workdir (`ssl_jax.members`, K >= 2) has every member probed (from the same checkpoint step):
`results['members']` holds each member's settings and results, `results['pretrained']` their mean with a
95% confidence interval over the members (`ssl_jax.evaluation.intervals`; each score's `values` are the
members' probe-seed means). The random-init and supervised baselines do not depend on the member: once.

On success the console shows a table of the probe accuracies (task x budget: the pretrained encoder's,
the random-init encoder's beside it, the AoA error in degrees; `ssl_jax.evaluation.summary`), then the
path of the results file as the last line of stdout.

A workdir whose run is still writing can be evaluated: evaluation takes no lock and reads only finalized
checkpoints (see `ssl_jax.encoders.load_encoder`).
"""

import os
import sys
from typing import Optional

from absl import app, flags, logging
import ml_collections
from ml_collections import config_flags

from ssl_jax.workdir import layout

_DEFAULT_PROBE_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                     'configs', 'probe.py')

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Pretraining workdir (holds config.json and checkpoints/).')
config_flags.DEFINE_config_file('probe_config', _DEFAULT_PROBE_CONFIG, 'Probe settings file.',
                                lock_config=True)
flags.DEFINE_integer('seed', 0, 'Seed of the label sets, probe heads and random-init encoder.')
flags.DEFINE_integer('step', None, 'Checkpoint step to evaluate (default: the latest).')
flags.mark_flags_as_required(['workdir'])


def run(workdir: str, probe_config: ml_collections.ConfigDict, *, seed: int = 0,
        step: Optional[int] = None, data=None) -> dict:
  """Evaluates the encoder of `workdir`, writes `workdir/eval/results.json`, returns the results.

  `data` (an `ssl_jax.evaluation.EvalData`) overrides where the splits are read from (tests).
  Raises ValueError (or FileNotFoundError) before any probing when the probe config is out of range, the
  workdir holds no config or no checkpoint at `step`, or the train split cannot serve a requested budget
  (unless `probe_config.skip_unavailable_budgets`: then the budgets are skipped, each with a warning).
  """
  from ssl_jax import config_checks, config_keys, encoders, evaluation, path_checks  # Local: --help stays fast.
  config_checks.check_probe_config(probe_config)
  if seed < 0:
    raise ValueError(f'--seed must be >= 0, got {seed}')
  path_checks.check_trained_workdir(workdir, step)
  path_checks.check_workdir(os.path.dirname(layout.eval_results_path(workdir)), 'the results directory')
  num_members = encoders.member_count(workdir)
  loaded = encoders.load_encoder(workdir, step, 0 if num_members > 1 else None)  # Without a step: the newest.
  config, encoder, variables, step = loaded.config, loaded.module, loaded.variables, loaded.step
  data = data or evaluation.PipelineData(config.data, probe_config.embed_batch_size)
  unavailable = evaluation.unavailable_numbers(data.labels('train'), probe_config)
  if unavailable and not probe_config.skip_unavailable_budgets:
    raise ValueError(
        f'the train split of {workdir!r} cannot serve every requested budget:\n' +
        '\n'.join(f'  {reason}' for reason in unavailable) +
        '\nAsk for smaller budgets (--probe_config.budgets=...), or skip these with '
        '--probe_config.skip_unavailable_budgets=True.')
  for reason in unavailable:
    logging.warning('skipped (probe_config.skip_unavailable_budgets): %s', reason)
    print(f'warning: skipped: {reason}', file=sys.stderr)
  results = {
      'workdir': os.path.abspath(workdir),
      'method': config.get('method'),
      'step': step,
      'seed': seed,
      'data_config': config_keys.to_json(config.data),
      'probe_config': config_keys.to_json(probe_config),
      'skipped': unavailable,
  }
  if num_members == 1:
    logging.info('probing the pretrained encoder of %s', workdir)
    results['pretrained'] = evaluation.evaluate_encoder(encoder, variables, config.data, probe_config,
                                                        seed=seed, data=data)
  else:
    results.update(_probe_members(workdir, step, num_members, probe_config, seed, data))
  if probe_config.random_init:
    logging.info('probing a randomly initialised encoder')
    random_variables = evaluation.random_init_variables(encoder, config.data, seed)
    results['random_init'] = evaluation.evaluate_encoder(encoder, random_variables, config.data,
                                                         probe_config, seed=seed, data=data)
  if probe_config.supervised.enabled:
    logging.info('training the supervised baseline')
    results['supervised'] = evaluation.evaluate_supervised(encoder, config.data, probe_config, seed=seed,
                                                           data=data)
  layout.write_json_atomic(layout.eval_results_path(workdir), results)
  return results


def _probe_members(workdir: str, step: int, num_members: int, probe_config: ml_collections.ConfigDict, seed: int,
                   data) -> dict:
  """A member run's probes: `members` (each member's settings and results, all from checkpoint `step`),
  `pretrained` (their mean with a 95% t-interval over the members, `evaluation.intervals.summarize`)."""
  from ssl_jax import config_keys, encoders, evaluation, members
  from ssl_jax.evaluation import intervals
  per_member = []
  for member in range(num_members):
    logging.info('probing member %d of %s', member, workdir)
    loaded = encoders.load_encoder(workdir, step, member)
    settings = {name: config_keys.get(loaded.config, path, None) for name, path in members.MEMBER_KEYS.items()
                if config_keys.get(loaded.config, path, None) is not None}
    scores = evaluation.evaluate_encoder(loaded.module, loaded.variables, loaded.config.data, probe_config,
                                         seed=seed, data=data)
    per_member.append({'member': member, 'settings': settings, 'pretrained': scores})
  return {'num_members': num_members, 'members': per_member,
          'pretrained': intervals.summarize([m['pretrained'] for m in per_member])}


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected command-line arguments: {argv[1:]}')
  if not FLAGS['verbosity'].present:  # absl's flag: --verbosity=0 shows the libraries' INFO logs.
    from ssl_jax import console
    console.quiet_libraries()
  try:
    results = run(FLAGS.workdir, FLAGS.probe_config, seed=FLAGS.seed, step=FLAGS.step)
  except (FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  from ssl_jax.evaluation import summary
  for line in summary.summary_table(results):
    print(line)
  print(layout.eval_results_path(FLAGS.workdir))


if __name__ == '__main__':
  app.run(main)
