"""The study in one command: SimCLR vs MoCo on AoAM, with and without augmentation, probed as the study did.

  python experiments/study.py --scale {smoke,demo,cpu,full} --out DIR [--seeds K] [--steps N] [--mtc_only]
      [--no_ablation] [--methods simclr,moco,moco_v3,...] [--data real --manual_dir DIR]

Start it as `python -m ssl_jax.launch experiments/study.py ...` (as `make demo` does) to run on mimalloc
(ssl_jax/launch.py); the first line it prints names the host allocator in force.

Pretrains an encoder per method (`--methods`, default the study's SimCLR and MoCo v2) with MTC+AD and one
with no augmentation (with `--mtc_only` also one with MTC alone), named `<method>_aug`, `<method>_noaug`,
`<method>_mtc`; probes each at every label budget (several seeds), probes a randomly initialised encoder,
trains the supervised baseline on the same label sets, and scores silhouette. Writes `DIR/results.json`,
`DIR/report.md` (the study's three tables beside its published numbers; with three or more methods also
every method against SimCLR, paired) and PNG plots, after each run. `--no_ablation` skips the
no-augmentation runs (a comparison of methods needs only the augmented ones; it halves the pretraining).

Reruns resume and add: finished pretraining runs are reused from `DIR/runs/`; a rerun whose runs differ
from those stored there (another --steps, --seed ...) is refused before any work, naming the workdir and the
keys (use another --out, or delete the run to retrain it). The runs already in `DIR/results.json` are kept
when that study had the same `STUDY_SETTINGS` (else ValueError naming the setting), so a study of many
methods can be run a few methods at a time (`previous_runs`); a run asked for again is redone and replaces
its entry, and the baselines (random-init encoder, supervised) are kept rather than redone. Every config is
checked before the first run starts.

Stops: SIGTERM or SIGINT during a pretraining run saves its checkpoint and stops the study there, with exit
status 128 + the signal's number and a message naming the run and its step
(`ssl_jax.train.PretrainingStopped`); nothing of that run is probed or reported, and the same command
resumes it. A stored run whose pretraining did not finish is dropped from the results it adds to.

Seeds: `--seeds K` trains every encoder as K members of one program (`config.members.count = K`,
`ssl_jax/members.py`; member k has seed `--seed + k`, all members read the same data order). Pairing index
k also probes member k on the label sets of seed `--seed + k` and trains the supervised baseline and the
random-init encoder with seed `--seed + k`; every table cell is then the mean over the K seeds with its
95% confidence interval, and the report's Conclusions test the study's claims as paired comparisons over
the seeds (`study_report.conclusions`). Default: 3 at the cpu scale, 1 elsewhere. K = 1 writes the
results.json layout of a plain study (layout: experiments/study_report.py).

Scales (`configs/scales.py`; each run's config is `configs/<method>.py:scale=<scale>`, the probes'
`configs/probe.py:scale=<scale>`): `smoke` (tests; a few minutes on 2 CPU cores, tiny model), `demo`
(`make demo`: SimCLR with MTC + AD alone, at the cpu scale's pretraining, against the random-init and
supervised baselines at 1 and 10 labels per class; no MoCo and no ablation), `cpu` (the real model, L=128
with the study's crops up to 128, 3,000 steps; MoCo v2 collapses in so few steps, `--methods
simclr,moco_v3` runs MoCo v3), `full` (the study's 400 epochs at
batch 256; for an accelerator). Times: docs/performance.md.

Data: the simulator by default; `--data real --manual_dir DIR` runs every pretraining run, probe and
baseline on the real AoAM files DIR/train.h5 and DIR/test.h5 instead. Their length must be the scale's
(smoke 64, demo and cpu 128, full 1,024); they are checked (layout, then every value while their shards
are written) before any training, and a problem exits with a message that names the file.
"""

import argparse
import json
import os
import sys
import time
from typing import Any, Mapping

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import ml_collections  # noqa: E402

from configs import METHOD_CONFIGS  # noqa: E402
from configs import probe as probe_config_lib  # noqa: E402
from configs import scales  # noqa: E402
from experiments import study_report  # noqa: E402
from ssl_jax import host_allocator  # noqa: E402
from ssl_jax.workdir import layout  # noqa: E402

SCALES = scales.SCALES
DATA_SOURCES = ('simulated', 'real')
# The methods a study can pretrain are those of `METHOD_CONFIGS` ('moco' is MoCo v2, the study's).
DEFAULT_METHODS = ('simclr', 'moco')  # the study's
# The demo shows one comparison in minutes: SimCLR with MTC + AD against the random-init and supervised
# baselines. Its default methods are SimCLR alone, and at this scale no no-augmentation run is made.
SCALE_METHODS = {'demo': ('simclr',)}
SCALES_WITHOUT_ABLATION = ('demo',)


def default_methods(scale: str) -> tuple[str, ...]:
  """The methods a study at `scale` pretrains when `--methods` is not given."""
  return SCALE_METHODS.get(scale, DEFAULT_METHODS)


# Pretraining seeds per scale (--seeds): the cpu study's claims need a confidence interval; smoke and demo
# stay one plain run each (fast tests, `make demo`).
DEFAULT_SEEDS = {'smoke': 1, 'demo': 1, 'cpu': 3, 'full': 1}


def default_seeds(scale: str) -> int:
  """The --seeds a study at `scale` runs when none is given."""
  return DEFAULT_SEEDS[scale]


def check_methods(methods: tuple[str, ...]) -> tuple[str, ...]:
  """Returns `methods` when it names known methods, each once; else raises ValueError naming `--methods`."""
  unknown = [m for m in methods if m not in METHOD_CONFIGS]
  if not methods or unknown or len(set(methods)) != len(methods):
    raise ValueError(f'--methods must name one or more of {sorted(METHOD_CONFIGS)}, each once; got '
                     f'{",".join(methods)!r}')
  return tuple(methods)


def runs_for(methods: tuple[str, ...] = DEFAULT_METHODS, mtc_only: bool = False,
             ablation: bool = True) -> tuple[tuple[str, bool, bool], ...]:
  """The pretraining runs `(method, augment, antenna_dropout)`: the study's, MTC + AD and (with `ablation`)
  no augmentation, for each method; with `mtc_only` also ours, MTC alone, which shows what AD costs in
  short runs."""
  runs = [(m, True, True) for m in methods] + ([(m, False, True) for m in methods] if ablation else [])
  return tuple(runs + ([(m, True, False) for m in methods] if mtc_only else []))


def run_name(method: str, augment: bool, antenna_dropout: bool = True) -> str:
  if not augment:
    return f'{method}_noaug'
  return f"{method}_{'aug' if antenna_dropout else 'mtc'}"


def pretrain_config(method: str, augment: bool, scale: str,
                    antenna_dropout: bool = True) -> ml_collections.ConfigDict:
  """One run's pretraining config: `configs/<method>.py:scale=<scale>` with the run's augmentation."""
  check_methods((method,))
  config = METHOD_CONFIGS[method].get_config(f'scale={scale}')
  config.augment.enabled = augment
  if not antenna_dropout:
    config.augment.antenna_dropout = 0.0
  return config


class DataError(ValueError):
  """The study's data cannot be used (missing files, wrong layout, length or values); raised before training."""


def set_data(config: ml_collections.ConfigDict, data_dir: str, data_source: str = 'simulated',
             manual_dir: str = '') -> None:
  """Points a run's config.data at the study's data: the TFDS data dir and the source (real: manual_dir's files)."""
  config.data.data_dir = data_dir
  config.data.source = data_source
  config.data.manual_dir = manual_dir if data_source == 'real' else ''


def check_data_args(data_source: str, manual_dir: str) -> None:
  """Raises ValueError unless --data is a known source and --manual_dir is given exactly for 'real'."""
  if data_source not in DATA_SOURCES:
    raise ValueError(f'--data must be one of {DATA_SOURCES}, got {data_source!r}')
  if data_source == 'real' and not manual_dir:
    raise ValueError('--data real needs --manual_dir DIR (the directory holding train.h5 and test.h5)')
  if data_source != 'real' and manual_dir:
    raise ValueError(f'--manual_dir {manual_dir} is read only with --data real')


def prepare_real_data(scale: str, data_dir: str, manual_dir: str) -> dict[str, Any]:
  """Checks the real files for a study at `scale` and writes their shards; returns what they are.

  Raises DataError (naming the file and the problem) when a file is missing, its layout is not AoAM's,
  its length is not the scale's, or a value is out of range or not finite.
  """
  from ssl_jax.data import aoam, real_files  # pylint: disable=g-import-not-at-top
  config = pretrain_config('simclr', True, scale)
  set_data(config, data_dir, 'real', manual_dir)
  try:
    files = real_files.inspect(manual_dir, length=None)
    if files.length != config.data.length:
      lengths = ', '.join(f'{s} {pretrain_config("simclr", True, s).data.length}' for s in SCALES)
      raise ValueError(f"{files.files['train'].path}: examples of length {files.length}; the {scale} scale runs "
                       f'length {config.data.length} (scales: {lengths}): use files of that length or a scale '
                       'that runs theirs')
    builder = aoam.get_builder(config.data)  # Checks every value while the shards are written.
  except ValueError as e:
    raise DataError(f'--data real --manual_dir {manual_dir}: {e}') from None
  return {'source': 'real', 'manual_dir': manual_dir, 'length': files.length, 'fingerprint': files.fingerprint,
          'num_examples': {split: f.num_examples for split, f in files.files.items()},
          'tfds_config': builder.builder_config.name}


def probe_config(scale: str) -> ml_collections.ConfigDict:
  """Probe and baseline settings: `configs/probe.py:scale=<scale>` with the supervised baseline on."""
  config = probe_config_lib.get_config(f'scale={scale}')
  config.supervised.enabled = True
  return config


def check_study(configs: dict[str, ml_collections.ConfigDict], probes: ml_collections.ConfigDict,
                out_dir: str) -> None:
  """Everything a study can be refused for, before any work: each run's config, the probe config, the
  budgets against the simulated examples per class, and finished or partial runs in `out_dir/runs/` that
  were trained with other settings (a rerun with another --steps, say), which would be reused under
  the new settings' name. Raises ValueError naming the run, the workdir and the keys that differ.
  """
  from ssl_jax import config_checks, path_checks
  from ssl_jax.workdir import resume
  path_checks.check_workdir(out_dir, '--out')
  config_checks.check_probe_config(probes)
  for name, config in configs.items():
    try:
      config_checks.check_pretrain_config(config)
    except config_checks.ConfigError as e:
      raise ValueError(f'run {name}: {e}') from None
    per_class = config.data.examples_per_class
    budgets = sorted(set(probes.budgets) | set(probes.supervised.budgets if probes.supervised.enabled else ()))
    too_large = [b for b in budgets if b > per_class]
    if too_large and not probes.skip_unavailable_budgets:
      raise ValueError(f'run {name}: budgets {too_large} per class exceed the {per_class} simulated train examples '
                       'per class; lower the budgets or set probe_config.skip_unavailable_budgets')
    workdir = os.path.join(out_dir, 'runs', name)
    if not os.path.exists(workdir):
      continue
    try:
      resume.check_workdir_resume(workdir, config)
    except ValueError as e:
      raise ValueError(f'{workdir!r} holds a run {name} trained with other settings than this study asks for, '
                       f'so its results would be labelled wrongly; use another --out, or delete {workdir!r} '
                       f'to retrain it.\n{e}') from None


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
  """`--set KEY=VALUE` pairs -> `{dotted key: value}`; a VALUE is read as JSON (lists become tuples), else kept as
  the string. Raises ValueError naming a pair without '='."""
  overrides = {}
  for pair in pairs or ():
    key, sep, text = pair.partition('=')
    if not sep or not key.strip():
      raise ValueError(f'--set takes KEY=VALUE (e.g. --set model.dw_kernel=9), got {pair!r}')
    try:
      value = json.loads(text)
    except json.JSONDecodeError:
      value = text
    overrides[key.strip()] = tuple(value) if isinstance(value, list) else value
  return overrides


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> None:
  """Sets each dotted key of `overrides` in `config`; raises ValueError naming a key the config does not have."""
  from ssl_jax import config_keys
  for dotted, value in overrides.items():
    try:
      config_keys.set_existing(config, dotted, value, ignore_type=True)  # config_checks checks the value
    except KeyError:
      raise ValueError(f'--set {dotted}: the pretraining config has no key {dotted!r}') from None


STUDY_SETTINGS = ('scale', 'seed', 'seeds', 'steps', 'data', 'probe_config', 'overrides')  # what makes two
# studies one


def previous_runs(out_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
  """`{'runs', 'timing_s'}` of the study already in `out_dir/results.json` (empty when there is none), so
  that a study of other methods adds to it. Raises ValueError naming the setting when that study was run with
  other `STUDY_SETTINGS` than `results` (its runs would not pair with this one's)."""
  previous = study_report.previous_results(out_dir, results, STUDY_SETTINGS, 'study')
  runs = {name: run for name, run in previous.get('runs', {}).items()
          if run.get('pretrain', {}).get('stop_reason', 'completed') == 'completed'}
  for name in sorted(set(previous.get('runs', {})) - set(runs)):
    print(f'[study] {name} in {out_dir}/results.json did not finish its pretraining: dropped', flush=True)
  return {'runs': runs, 'timing_s': dict(previous.get('timing_s', {}))}


def run_study(scale: str, out_dir: str, *, data_dir: str = '', seed: int = 0,
              seeds: int | None = None, steps: int | None = None, mtc_only: bool = False,
              methods: tuple[str, ...] | None = None, data_source: str = 'simulated',
              manual_dir: str = '', ablation: bool = True,
              overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Runs the whole study at `scale` into `out_dir`; returns the results written to results.json.

  seeds: K, the pretraining seeds (members) of every encoder, `seed + k`; default `default_seeds(scale)`.
  steps: pretraining steps of every run instead of the scale's (the schedules follow).
  mtc_only: also pretrain and probe each method with MTC alone (AD off).
  ablation: also pretrain and probe each method without augmentation (not at the demo scale).
  methods: the methods to pretrain (`METHOD_CONFIGS`), default `default_methods(scale)`: the study's SimCLR
    and MoCo v2, at the demo scale SimCLR alone. The demo scale makes no no-augmentation runs.
  data_source, manual_dir: 'simulated', or 'real' with the files in manual_dir (`prepare_real_data`, run
    before any training; DataError if they cannot be used).
  overrides: `{dotted key: value}` set in every pretraining config (`--set`, e.g. an encoder layout:
    `{'model.stem_stride': 1}`); the baselines take the architecture of the first run. Recorded in
    results.json: a study adds only to one of the same overrides.
  """
  if scale not in SCALES:
    raise ValueError(f'--scale must be one of {SCALES}, got {scale!r}')
  methods = check_methods(tuple(methods) if methods is not None else default_methods(scale))
  if steps is not None and steps < 1:
    raise ValueError(f'--steps must be >= 1, got {steps}')
  seeds = default_seeds(scale) if seeds is None else seeds
  if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
    raise ValueError(f'--seeds must be an integer >= 1, got {seeds!r}')
  check_data_args(data_source, manual_dir)
  manual_dir = os.path.abspath(manual_dir) if manual_dir else ''  # Runs' config.json must not depend on the cwd.
  from ssl_jax.workdir import lock
  # One study per output directory (each pretraining run also locks its own workdir under out_dir/runs/):
  # a second study into it raises WorkdirBusyError naming the first.
  with lock.WorkdirLock(out_dir):
    return _run_study(scale, out_dir, data_dir=data_dir, seed=seed, seeds=seeds, steps=steps,
                      mtc_only=mtc_only, methods=methods, data_source=data_source, manual_dir=manual_dir,
                      ablation=ablation and scale not in SCALES_WITHOUT_ABLATION, overrides=dict(overrides or {}))


def set_seeds(config: ml_collections.ConfigDict, seed: int, seeds: int) -> None:
  """Makes `config` train `seeds` members of seeds `seed + k` (one plain run of seed `seed` when 1)."""
  config.seed = seed
  config.members.count = seeds
  config.members.seed = tuple(seed + k for k in range(seeds)) if seeds > 1 else ()


def paired_evaluations(evaluate_one, seed: int, seeds: int) -> dict[str, Any]:
  """A run's `{'eval': ...}` for one seed, `{'eval': summary, 'members': [...]}` for several.

  `evaluate_one(k, probe_seed)` evaluates pairing index k (member k, or the baseline of seed `probe_seed`)
  with the label sets and heads of `probe_seed = seed + k`; the summary is the members' mean with a 95%
  t-interval over them (`intervals.summarize`).
  """
  from ssl_jax.evaluation import intervals
  if seeds == 1:
    return {'eval': evaluate_one(None, seed)}
  members = [{'member': k, 'seed': seed + k, 'eval': evaluate_one(k, seed + k)} for k in range(seeds)]
  return {'eval': intervals.summarize([m['eval'] for m in members]), 'members': members}


def _run_study(scale: str, out_dir: str, *, data_dir: str, seed: int, seeds: int, steps: int | None,
               mtc_only: bool, methods: tuple[str, ...], data_source: str, manual_dir: str,
               ablation: bool, overrides: dict[str, Any]) -> dict[str, Any]:
  """`run_study` once its arguments are checked and `out_dir` is locked."""
  from ssl_jax import config_keys, encoders, train  # Heavy imports after argument checks.
  from ssl_jax.evaluation import embeddings as embeddings_lib
  from ssl_jax.evaluation import suite

  data_dir = data_dir or os.path.join(out_dir, 'tfds')
  configs = {}
  for method, augment, antenna_dropout in runs_for(methods, mtc_only, ablation):
    config = pretrain_config(method, augment, scale, antenna_dropout)
    set_seeds(config, seed, seeds)
    if steps is not None:
      scales.set_steps(config, steps)
    set_data(config, data_dir, data_source, manual_dir)
    apply_overrides(config, overrides)
    configs[run_name(method, augment, antenna_dropout)] = config
  probes = probe_config(scale)
  check_study(configs, probes, out_dir)

  os.makedirs(out_dir, exist_ok=True)
  if not jax.config.jax_compilation_cache_dir:  # a cache the user (or the test session) set is kept
    jax.config.update('jax_compilation_cache_dir', os.path.join(out_dir, '.xla_cache'))
  data = prepare_real_data(scale, data_dir, manual_dir) if data_source == 'real' else {'source': 'simulated'}
  results: dict[str, Any] = {'scale': scale, 'seed': seed, 'seeds': seeds, 'steps': steps, 'data': data,
                             'probe_config': config_keys.to_json(probes),
                             'overrides': {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()}
                             or None}
  previous = previous_runs(out_dir, results)
  redone = set(configs) | ({'random_init', 'supervised'} - set(previous['runs']))
  results['runs'] = {name: run for name, run in previous['runs'].items() if name not in redone}
  results['timing_s'] = {stage: s for stage, s in previous['timing_s'].items()
                         if stage != 'total' and stage.split('_', 1)[-1] not in redone}
  reference = pretrain_config(methods[0], True, scale)  # every run reads the same data
  set_data(reference, data_dir, data_source, manual_dir)
  apply_overrides(reference, overrides)
  projections = {}  # The PCA plot shows member 0 (seed --seed) of each augmented run whose workdir is here.
  test_labels = None

  def timed(stage, run):
    t0 = time.perf_counter()
    value = run()
    results['timing_s'][stage] = time.perf_counter() - t0
    return value

  def project(name):
    loaded = encoders.load_encoder(os.path.join(out_dir, 'runs', name), member=0 if seeds > 1 else None)
    batches = suite.PipelineData(reference.data, probes.embed_batch_size).batches('test')
    projections[name] = embeddings_lib.compute_embeddings(loaded.module, loaded.variables, batches,
                                                          batch_size=probes.embed_batch_size)

  def write():
    nonlocal test_labels
    if test_labels is None:  # the data exist once the first run has built them
      test_labels = suite.PipelineData(reference.data, probes.embed_batch_size).labels('test')
      for name in results['runs']:
        if name.endswith('_aug') and os.path.exists(layout.config_path(os.path.join(out_dir, 'runs', name))):
          project(name)
    results['methods'] = [m for m in METHOD_CONFIGS if any(results['runs'].get(run_name(m, *r), None)
                                                           for r in ((True, True), (False, True), (True, False)))]
    results['timing_s']['total'] = sum(s for stage, s in results['timing_s'].items() if stage != 'total')
    study_report.write(out_dir, results, projections, test_labels)

  def baselines(first_run):
    """The random-init encoder and the supervised baseline, with the architecture of `first_run`'s encoder."""
    encoder = encoders.load_encoder(os.path.join(out_dir, 'runs', first_run), member=0 if seeds > 1 else None).module

    def random_init(_, probe_seed):
      variables = suite.random_init_variables(encoder, reference.data, probe_seed)
      return suite.evaluate_encoder(encoder, variables, reference.data, probes, seed=probe_seed)

    print('[study] probing random_init', flush=True)
    results['runs']['random_init'] = timed('probe_random_init', lambda: paired_evaluations(random_init, seed, seeds))
    print('[study] supervised baseline', flush=True)
    results['runs']['supervised'] = timed('supervised', lambda: paired_evaluations(
        lambda _, probe_seed: suite.evaluate_supervised(encoder, reference.data, probes, seed=probe_seed),
        seed, seeds))

  for method, augment, antenna_dropout in runs_for(methods, mtc_only, ablation):
    name = run_name(method, augment, antenna_dropout)
    config = configs[name]
    workdir = os.path.join(out_dir, 'runs', name)
    print(f'[study] pretraining {name} -> {workdir}', flush=True)
    summary = timed(f'pretrain_{name}', lambda config=config, workdir=workdir: train.pretrain(config, workdir))
    train.check_completed(name, workdir, summary)
    print(f'[study] probing {name}', flush=True)

    def probe_member(member, probe_seed, workdir=workdir, config=config):
      loaded = encoders.load_encoder(workdir, member=member)
      return suite.evaluate_encoder(loaded.module, loaded.variables, config.data, probes, seed=probe_seed)

    evaluations = timed(f'probe_{name}', lambda: paired_evaluations(probe_member, seed, seeds))
    results['runs'][name] = {'method': method, 'augment': augment, 'antenna_dropout': antenna_dropout,
                             'config': config_keys.to_json(config),
                             'pretrain': summary, **evaluations}
    if not {'random_init', 'supervised'} <= set(results['runs']):  # after the first run: in a study cut short too
      baselines(run_name(methods[0], True))
    if augment and test_labels is not None:
      project(name)
    write()  # after each run: a long study's first results need not wait for the last
  return results


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--scale', choices=SCALES, default='smoke')
  parser.add_argument('--out', required=True, help='output directory (results.json, report.md, plots)')
  parser.add_argument('--data_dir', default='', help='TFDS data dir (default: OUT/tfds)')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--seeds', type=int, default=None,
                      help='pretraining seeds per encoder, trained as members of one program (seeds SEED..SEED+K-1); '
                           f'default: {", ".join(f"{s} {k}" for s, k in DEFAULT_SEEDS.items())}')
  parser.add_argument('--steps', type=int, default=None,
                      help="pretraining steps per run instead of the scale's (e.g. --scale cpu --steps 6000)")
  parser.add_argument('--mtc_only', action='store_true',
                      help='also pretrain each method with MTC alone (AD off): what AD costs')
  parser.add_argument('--no_ablation', action='store_true',
                      help='skip the no-augmentation run of each method (a comparison of methods needs only the '
                           'augmented runs)')
  parser.add_argument('--methods', default=None,
                      help=f"comma-separated methods to pretrain, from {', '.join(METHOD_CONFIGS)} ('moco' is "
                           "MoCo v2, the study's); default: the study's (simclr,moco), at --scale demo simclr")
  parser.add_argument('--data', choices=DATA_SOURCES, default='simulated',
                      help='simulated (the default) or real: the AoAM recordings train.h5 and test.h5 in --manual_dir')
  parser.add_argument('--manual_dir', default='', help='with --data real: the directory holding train.h5 and test.h5')
  parser.add_argument('--set', action='append', metavar='KEY=VALUE', dest='overrides',
                      help='set a pretraining config key in every run, VALUE as JSON (repeatable), e.g. '
                           '--set model.stem_stride=1 --set model.stem_pool=false')
  args = parser.parse_args(argv)
  try:
    overrides = parse_overrides(args.overrides)
    check_data_args(args.data, args.manual_dir)
    methods = check_methods(tuple(args.methods.split(',')) if args.methods is not None
                            else default_methods(args.scale))
  except ValueError as e:
    parser.error(str(e))
  print(f'[study] {host_allocator.describe()}')  # mimalloc when started by `python -m ssl_jax.launch`
  from ssl_jax import console
  from ssl_jax import train as train_lib
  console.quiet_libraries()  # The libraries' INFO logs off, each warning once (ssl_jax/console.py).
  import matplotlib
  matplotlib.use('Agg')  # Files only, no display (a notebook importing run_study keeps its own backend).
  try:
    run_study(args.scale, args.out, data_dir=args.data_dir, seed=args.seed, seeds=args.seeds, steps=args.steps,
              mtc_only=args.mtc_only, methods=methods, data_source=args.data, manual_dir=args.manual_dir,
              ablation=not args.no_ablation, overrides=overrides)
  except train_lib.PretrainingStopped as e:
    print(f'[study] stopped: {e}', file=sys.stderr)
    return e.exit_code
  except DataError as e:
    print(f'[study] error: {e}', file=sys.stderr)
    return 2
  except (ValueError, FileNotFoundError) as e:
    print(f'[study] error: {e}', file=sys.stderr)
    return 1
  print(f"[study] report: {os.path.join(os.path.abspath(args.out), 'report.md')}")
  return 0


if __name__ == '__main__':
  from ssl_jax.workdir import lock
  try:
    sys.exit(main())
  except lock.WorkdirBusyError as e:
    sys.exit(f'[study] error: {e}')
