"""Train-step speed: views/s of SimCLR and MoCo steps, compile time and peak memory, side by side in one run.

  python experiments/bench_train_step.py [--batch_sizes 256,64] [--length 512] [--steps 5]
      [--methods simclr,moco,moco_v3]
      [--host_allocators system,mimalloc --rounds 5] [--mtc]

For each method and batch size it times the jitted, state-donating step on all local devices
(`parallel.data_parallel`), at two view settings: both views uncropped (L each: the study's batch at full
length) and the study's MTC mix (crop lengths cycled over the pairs of the crop set, so the mean cost is
the expected cost under MTC). Reports mean step time, views/s, first-call (compile) time and the
process's peak RSS and minor page faults per step. Cases are interleaved over `--rounds` so that this
machine's drift hits them alike. The host allocator is bound when a process starts, so each of
`--host_allocators` runs in a child process started for it (mimalloc preloaded as `ssl_jax.launch` does
it, or taken out of LD_PRELOAD for the system allocator), kept alive and driven in alternating rounds over
a pipe; the step-time ratios against the first are printed. Each row names the allocator in force.
Target on a 2-core CPU: >= 2,000 views/s for SimCLR at batch 256 (512 views), L=512.

Members (`ssl_jax.members`):

  python experiments/bench_train_step.py --members 1,2,4,8 [--methods simclr] [--batch_sizes 128]
      [--length 128] [--steps 5] [--dtype float32|bfloat16] [--out FILE.json]

times the member step (`train.build_members`; K = 1 is the plain run's `train.build`) for each K in its own
child process (so that each K's peak memory is its own): compile time (first call), step time, views/s
per member and in all, peak RSS (and the device's peak bytes where the backend reports them). Then the
cost of K members against K single runs (step time K / (K x step time 1): <= 1 means members are no
dearer than separate runs) and one compile of K members against K compiles of one.
"""

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from configs import METHOD_CONFIGS  # noqa: E402
from ssl_jax import host_allocator, launch, methods, optim, parallel  # noqa: E402
from ssl_jax.methods import common  # noqa: E402
from ssl_jax.data import spec  # noqa: E402

HOST_ALLOCATORS = ('mimalloc', 'system')


def random_batch(batch_size: int, length: int, mesh) -> dict:
  """A random batch sharded over `mesh`, with the keys the pipeline yields ('iq', and 'index': the memory
  bank's rows)."""
  return parallel.shard_batch(
      {'iq': np.random.default_rng(0).normal(size=(batch_size, length, spec.NUM_CHANNELS)).astype(np.float32),
       'index': np.arange(batch_size, dtype=np.int32)}, mesh)


def prepare(method_name: str, batch_size: int, length: int, crop_pairs: list, model: dict | None = None):
  """Compiles one step program per crop pair; returns `(time_steps(n) -> [seconds per step], row)`. `model`:
  `config.model` keys to set (an encoder layout, say)."""
  config = METHOD_CONFIGS[method_name].get_config()  # a loss variant (configs.LOSS_VARIANTS) names its method
  config.model.update(model or {})
  method = methods.get_method(config.method)
  config.batch_size = batch_size
  config.data.length = length
  if 'moco' in config and 'queue_size' in config.moco:
    config.moco.queue_size = 16 * batch_size
  lr = optim.learning_rate_schedule(config.optim, batch_size=batch_size, steps_per_epoch=100, total_steps=1000)
  mom = method.momentum_schedule(config.moco.momentum, 1000) if hasattr(method, 'momentum_schedule') else None
  tx = optim.create_optimizer(config.optim, lr)
  mesh = parallel.create_mesh()
  state = method.init_state(config, method.create_networks(config, None), tx, jax.random.PRNGKey(0))
  state = parallel.replicate(jax.device_get(state), mesh)
  step = parallel.data_parallel(method.make_train_step(
      config, method.create_networks(config, parallel.AXIS), tx, common.Schedules(lr, mom),
      axis_name=parallel.AXIS), mesh)
  batch = random_batch(batch_size, length, mesh)
  compile_s = []
  for pair in crop_pairs:  # First call per pair: compile + one step.
    t0 = time.perf_counter()
    state, metrics = step(state, batch, pair)
    jax.block_until_ready(metrics['loss'])
    compile_s.append(time.perf_counter() - t0)
  pairs = itertools.cycle(crop_pairs)

  def time_steps(n: int) -> tuple[list[float], int]:
    """Runs n steps; returns their wall times and the minor page faults they caused."""
    nonlocal state  # The step donates its input state, so each call continues from the last one's.
    times = []
    faults_before = host_allocator.minor_page_faults()
    for pair in itertools.islice(pairs, n):
      t0 = time.perf_counter()
      state, metrics = step(state, batch, pair)
      jax.block_until_ready(metrics['loss'])
      times.append(time.perf_counter() - t0)
    return times, host_allocator.minor_page_faults() - faults_before

  row = {'method': method_name, 'batch': batch_size, 'views': 2 * batch_size,
         'compile_s_per_program': float(np.median(compile_s)), 'programs': len(crop_pairs)}
  return time_steps, row


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser()
  parser.add_argument('--batch_sizes', default='256,64')
  parser.add_argument('--length', type=int, default=512)
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--methods', default='simclr,moco')
  parser.add_argument('--host_allocators', default=HOST_ALLOCATORS[0],
                      help=f'comma-separated host allocators from {HOST_ALLOCATORS}: one child process each, '
                           'timed in alternating rounds')
  parser.add_argument('--rounds', type=int, default=1,
                      help='interleave the cases over this many rounds of steps / rounds steps each')
  parser.add_argument('--mtc', action='store_true', help='also time the study MTC mix (25 programs)')
  parser.add_argument('--serve', action='store_true', help=argparse.SUPPRESS)  # Child mode, see drive_children.
  parser.add_argument('--members', default='',
                      help='comma-separated member counts K (e.g. 1,2,4,8): the member bench (module docstring)')
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'),
                      help='compute dtype of the member bench (config.model.dtype)')
  parser.add_argument('--member_case', default='', help=argparse.SUPPRESS)  # Child mode of --members.
  parser.add_argument('--out', default='', help='--members: also write the rows to this JSON file, after each K '
                                                '(experiments/full_scale_plan.py --measured reads it)')
  args = parser.parse_args(argv)
  args.members = [int(k) for k in args.members.split(',') if k]
  if any(k < 1 for k in args.members):
    parser.error(f'--members: each count must be >= 1, got {args.members}')
  args.host_allocators = args.host_allocators.split(',')
  for allocator in args.host_allocators:
    if allocator not in HOST_ALLOCATORS:
      parser.error(f'--host_allocators: unknown allocator {allocator!r}; choose from {HOST_ALLOCATORS}')
  return args


def prepare_cases(args: argparse.Namespace, allocator: str) -> list:
  """Compiles every (method, batch, view setting) case of this process: [(time_steps, row)]."""
  settings = [('full length', [(args.length, args.length)])]
  if args.mtc:
    crops = [min(c, args.length) for c in (32, 64, 128, 256, 512)]
    settings.append(('MTC mix', list(itertools.product(crops, crops))))
  cases = []
  for method in args.methods.split(','):
    for batch_size in (int(b) for b in args.batch_sizes.split(',')):
      for label, pairs in settings:
        time_steps, row = prepare(method, batch_size, args.length, pairs)
        row['setting'] = label
        row['host_allocator'] = allocator
        cases.append((time_steps, row))
  return cases


def steps_per_round(args: argparse.Namespace, row: dict) -> int:
  return -(-max(args.steps, row['programs']) // args.rounds)  # At least one step per compiled crop pair.


def run_round(args: argparse.Namespace, cases: list) -> list[tuple[list[float], int]]:
  """A few steps of every case (one round): [(step times, page faults)] per case."""
  return [time_steps(steps_per_round(args, row)) for time_steps, row in cases]


def add_round(results: list[list], round_results: list) -> None:
  """Adds one round's (step times, page faults) per case to the running [times, faults] per case."""
  for result, (times, faults) in zip(results, round_results):
    result[0] += times
    result[1] += faults


def serve(args: argparse.Namespace) -> None:
  """Child mode: prepares the cases, then times one round of them per line read from stdin."""
  print(f'{host_allocator.describe()}\ndevices: {jax.devices()}  backend: {jax.default_backend()}', file=sys.stderr)
  cases = prepare_cases(args, host_allocator.in_force())
  print(json.dumps([row for _, row in cases]), flush=True)
  run_round(args, cases)  # untimed: every case's buffers are allocated before any case is timed
  for _ in sys.stdin:
    print(json.dumps(run_round(args, cases)), flush=True)
  print(json.dumps({'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)


def child_launch(allocator: str, forwarded: list[str]) -> launch.Launch:
  """The bench child for `allocator`: mimalloc preloaded as `ssl_jax.launch` does, or kept out of it."""
  child_args = [os.path.abspath(__file__), *forwarded, '--serve', f'--host_allocators={allocator}']
  if allocator == 'mimalloc':
    return launch.plan(child_args, dict(os.environ))
  return launch.Launch([sys.executable, *child_args], host_allocator.without_mimalloc(dict(os.environ)), None)


def read_reply(child: subprocess.Popen) -> object:
  """The next JSON line of a bench child; a clear error if it died instead."""
  line = child.stdout.readline()
  if not line:
    raise RuntimeError(f'bench child exited with {child.wait()} (its stderr is above): {child.args}')
  return json.loads(line)


def drive_children(args: argparse.Namespace) -> tuple[list[dict], list[list], list[tuple[str, float]]]:
  """One child process per host allocator, rounds alternating between them: rows, results, peak RSS each."""
  forwarded = [f'--batch_sizes={args.batch_sizes}', f'--length={args.length}', f'--steps={args.steps}',
               f'--methods={args.methods}', f'--rounds={args.rounds}'] + (['--mtc'] if args.mtc else [])
  children = []
  for allocator in args.host_allocators:
    child_start = child_launch(allocator, forwarded)
    if child_start.note:
      print(child_start.note, flush=True)
    child = subprocess.Popen(child_start.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env=child_start.env)
    rows = read_reply(child)
    children.append((child, rows, [[[], 0] for _ in rows]))
  for _ in range(args.rounds):
    for child, _, results in children:
      child.stdin.write('next\n')
      child.stdin.flush()
      add_round(results, read_reply(child))
  peak_mib = []
  for child, child_rows, _ in children:
    child.stdin.close()
    peak_mib.append((child_rows[0]['host_allocator'], read_reply(child)['peak_rss_mib']))
    if child.wait() != 0:
      raise RuntimeError(f'bench child exited with {child.returncode}: {child.args}')
  rows = [row for _, child_rows, _ in children for row in child_rows]
  results = [result for _, _, child_results in children for result in child_results]
  return rows, results, peak_mib


def build_member_step(config, steps_per_epoch: int = 100) -> tuple[dict, dict]:
  """The step of `config.members.count` members on all local devices, as a run builds it (K = 1:
  `train.build`; K >= 2: `train.build_members`, members on one row of the member mesh, each member's batch split
  over the devices), and a random batch of `config`'s shape: `(built, batch)`. `built['lower_step']` lowers its
  program without running it (`experiments/full_scale_plan.py`)."""
  from ssl_jax import train
  if config.members.count > 1:
    mesh = parallel.create_member_mesh(1)
    built = train.build_members(config, mesh, steps_per_epoch)
  else:
    mesh = parallel.create_mesh()
    built = train.build(config, mesh, steps_per_epoch)
  return built, random_batch(config.batch_size, config.data.length, mesh)


def member_case(method_name: str, count: int, batch_size: int, length: int, steps: int, dtype: str) -> dict:
  """One member bench case in this process: compile and step time of `count` members (one crop pair)."""
  config = METHOD_CONFIGS[method_name].get_config()
  config.batch_size, config.data.length, config.model.dtype = batch_size, length, dtype
  config.augment.crop_lengths = (length,)  # one program: both views at full length
  if 'moco' in config and 'queue_size' in config.moco:
    config.moco.queue_size = 16 * batch_size
  config.members.count = count
  if count > 1:
    config.members.temperature = tuple(np.linspace(0.05, 0.2, count).tolist())
  built, batch = build_member_step(config)
  state, step_fn = built['state'], built['step_fn']
  t0 = time.perf_counter()
  state, metrics = step_fn(state, batch, 0)
  jax.block_until_ready(metrics['loss'])
  compile_s = time.perf_counter() - t0
  times = []
  for step in range(1, steps + 1):
    t0 = time.perf_counter()
    state, metrics = step_fn(state, batch, step)
    jax.block_until_ready(metrics['loss'])
    times.append(time.perf_counter() - t0)
  views = getattr(methods.get_method(config.method), 'VIEWS_PER_EXAMPLE', 2) * batch_size
  step_s = float(np.median(times))
  device_stats = jax.devices()[0].memory_stats() or {}
  return {'method': method_name, 'members': count, 'batch': batch_size, 'length': length, 'dtype': dtype,
          'queue_size': config.moco.queue_size if 'moco' in config else None, 'compile_s': compile_s,
          'step_ms': 1e3 * step_s, 'views_per_s_per_member': views / step_s,
          'views_per_s_total': count * views / step_s,
          'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
          'device_peak_mib': device_stats.get('peak_bytes_in_use', 0) / 2**20 or None,
          'device_kind': jax.devices()[0].device_kind, 'devices': jax.device_count()}


def run_members(args: argparse.Namespace) -> None:
  """`--members`: one child process per (method, K), then the table and the K-vs-single ratios."""
  rows = []
  for method in args.methods.split(','):
    batch = int(args.batch_sizes.split(',')[0])
    for count in args.members:
      command = [sys.executable, os.path.abspath(__file__), '--member_case', f'{method},{count}',
                 f'--batch_sizes={batch}', f'--length={args.length}', f'--steps={args.steps}', f'--dtype={args.dtype}']
      out = subprocess.run(command, capture_output=True, text=True, check=False)
      if out.returncode != 0:
        raise RuntimeError(f'member bench child {command} failed:\n{out.stderr[-3000:]}')
      rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
      print(rows[-1], flush=True)
      if args.out:  # After each K (a check's timeout keeps the rows so far); jax is not started here.
        with open(args.out, 'w') as f:
          json.dump({'device_kind': rows[0]['device_kind'], 'rows': rows}, f, indent=1)
  print(f'\ndevices: {jax.devices()}')
  print('\n| method | K | dtype | compile s | K compiles of 1, s | step ms | K x step ms of 1 | cost ratio | '
        'views/s per member | views/s total | peak RSS MiB | device peak MiB |')
  print('|---|---|---|---|---|---|---|---|---|---|---|---|')
  single = {r['method']: r for r in rows if r['members'] == 1}
  for r in rows:
    one = single.get(r['method'])
    k = r['members']
    k_compiles = f"{k * one['compile_s']:.1f}" if one else '-'
    k_steps = f"{k * one['step_ms']:.0f}" if one else '-'
    ratio = f"{r['step_ms'] / (k * one['step_ms']):.2f}" if one else '-'
    device = f"{r['device_peak_mib']:.0f}" if r['device_peak_mib'] else '-'
    print(f"| {r['method']} | {k} | {r['dtype']} | {r['compile_s']:.1f} | {k_compiles} | {r['step_ms']:.0f} | "
          f"{k_steps} | {ratio} | {r['views_per_s_per_member']:.0f} | {r['views_per_s_total']:.0f} | "
          f"{r['peak_rss_mib']:.0f} | {device} |")
  if args.out:
    print(f'wrote {args.out}')


def main() -> None:
  args = parse_args()
  if args.member_case:
    method, count = args.member_case.split(',')
    print(json.dumps(member_case(method, int(count), int(args.batch_sizes.split(',')[0]), args.length,
                                 args.steps, args.dtype)))
    return
  if args.members:
    return run_members(args)
  if args.serve:
    return serve(args)
  print(f'host allocators {args.host_allocators}: one child process each, {args.rounds} alternating rounds')
  rows, results, peak_mib = drive_children(args)
  for row, (times, faults) in zip(rows, results):
    step_s = float(np.mean(times))
    row.update(step_ms=1e3 * step_s, views_per_s=2 * row['batch'] / step_s, steps_timed=len(times),
               page_faults_per_step=faults / len(times))
    print(row, flush=True)
  print('\n| method | batch | views | host allocator | step ms | views/s | page faults / step | '
        'compile s / program | programs |')
  print('|---|---|---|---|---|---|---|---|---|')
  for r in rows:
    print(f"| {r['method']} | {r['batch']} | {r['setting']} | {r['host_allocator']} | "
          f"{r['step_ms']:.0f} | {r['views_per_s']:.0f} | {r['page_faults_per_step']:,.0f} | "
          f"{r['compile_s_per_program']:.1f} | {r['programs']} |")
  first = {}
  for r in rows:  # Ratios against the first allocator of the same method, batch and setting.
    key = (r['method'], r['batch'], r['setting'])
    if key in first:
      print(f"{key}: {r['host_allocator']} / {first[key]['host_allocator']} step time = "
            f"{r['step_ms'] / first[key]['step_ms']:.2f}")
    else:
      first[key] = r
  for allocator, mib in peak_mib:
    print(f'peak RSS of the process with host allocator {allocator}: {mib:.0f} MiB')


if __name__ == '__main__':
  main()
