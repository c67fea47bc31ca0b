"""The full scale on paper (issue 33): XLA's cost and memory analysis of the study's train step, and the step
time, the 400 epochs' wall time and the largest member count K they predict on an H100 and a TPU v2-8.

  python experiments/full_scale_plan.py [--methods simclr,moco] [--members 1,4,16] [--devices h100,tpu_v2_8]
      [--scale full] [--dtype float32] [--no_per_core] [--no_crop_mean] [--lowered_only 16]
      [--compile_timeout 300] [--max_rss_gib 8] [--measured BENCH.json] [--out FILE.json]
  python experiments/full_scale_plan.py --replan FILE.json [--devices ...] [--measured BENCH.json]

For each method (its study config: `configs/<method>.py` with no scale argument, i.e. L = 1,024, batch 256,
MTC over (32, 64, 128, 256, 512), MoCo v2's queue of 65,536; `config.model` as the config has it) and each
member count K, it builds the train step as a run does (`bench_train_step.build_member_step`: `train.build`,
or `train.build_members` for K >= 2), lowers it for the largest crop pair the config draws (512, 512: the
cost's upper bound, no crop is longer), compiles it for this machine's backend and reads XLA's
`compiled.cost_analysis()` (FLOPs, bytes accessed, transcendentals) and `compiled.memory_analysis()`
(argument, output, alias, temp and generated-code bytes). Each (method, K, batch) is one child process, so
that its peak RSS and its compile time are its own. A child that spends more than `--compile_timeout` seconds
on one lowering or compile, or passes `--max_rss_gib`, is stopped, and that case keeps the lowered program's
HLO-level `cost_analysis()` (no compile): its FLOPs and bytes are then the HLO figures times the compiled/HLO
ratio of the largest K compiled, and its memory the straight line through the compiled K's (members are a
vmap: memory is a fixed part plus a part per member). `--lowered_only K,...` takes that path on purpose.
Every figure says which it is.

Also, at K = 1: every diagonal crop pair (l, l) of the crop set, whose mean is the mean cost over the
config's crop-length distribution (the two views draw their lengths independently and uniformly, and a step's
cost is a sum of one part per view, checked on the off-diagonal pairs (32, 512) and (512, 32)); and for a
device of N cores (the TPU v2-8), unless `--no_per_core` or the backend has several devices itself, the
per-core program of data parallelism (the same step at batch 256 / N: what each core runs, but for the
gradient all-reduce and SimCLR's all-gather of the embeddings, a few MB).

From these a roofline per device (`DEVICES`): step time = max(FLOPs / (peak x COMPUTE_EFFICIENCY), bytes /
(bandwidth x MEMORY_EFFICIENCY)); the study's 400 epochs = 400 x (real AoAM train examples // 256) steps
(`study_steps`); the largest K whose memory (fixed + K x per member) fits USABLE_MEMORY_FRACTION of the
device's (per core) memory. Prints markdown tables and the assumptions; `--out` writes every number, and
`--replan` reads them back to plan again (other devices or efficiencies) without compiling.

On a machine with an accelerator (`experiments/accelerator_check.sh`) the same command gives that backend's
own analysis; `--measured BENCH.json` (`bench_train_step.py --members ... --out BENCH.json`) puts the member
bench's measured step times beside the prediction for the device it ran on (the bench's views are uncropped
at L = 512, i.e. the crop pair (512, 512); its MoCo queue is 16 x batch, not 65,536).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import queue
import resource
import subprocess
import sys
import threading
import time
from typing import Any, Iterable, Mapping, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from configs import METHOD_CONFIGS  # noqa: E402
from experiments import bench_train_step  # noqa: E402

# The real AoAM (docs/study.md, "The data: AoAM"): about 1.1 M examples, split 70/30.
AOAM_EXAMPLES = 1_100_000
AOAM_TRAIN_FRACTION = 0.7
TRAIN_EXAMPLES = int(AOAM_EXAMPLES * AOAM_TRAIN_FRACTION)  # 770,000

# The roofline's assumptions: the fraction of peak FLOP/s and of peak bandwidth a step reaches, and the
# fraction of a device's memory a run may fill (JAX preallocates 75% of a GPU's by default).
COMPUTE_EFFICIENCY = 0.4
MEMORY_EFFICIENCY = 0.6
USABLE_MEMORY_FRACTION = 0.75

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Device:
  """An accelerator, per core: peak FLOP/s by compute dtype, HBM bandwidth (bytes/s) and memory (bytes);
  `cores` split the batch (data parallelism)."""
  label: str
  peak_flops: Mapping[str, float]
  bandwidth: float
  memory: float
  cores: int = 1
  note: str = ''


DEVICES = {
    'h100': Device('H100 SXM', {'float32': 67e12, 'bfloat16': 989e12}, 3.35e12, 80e9, 1,
                   'float32: the non-tensor-core peak (TF32 tensor cores: 494); bfloat16: dense tensor cores'),
    'h200': Device('H200 SXM', {'float32': 67e12, 'bfloat16': 989e12}, 4.8e12, 141e9, 1,
                   'as the H100 but for its memory'),
    # TPU v2-8: 4 chips of 2 cores; 180 TFLOP/s bf16 in all (22.5 per core; a float32 matmul runs as bf16
    # passes at JAX's default precision); 16 GiB and 700 GB/s of HBM per chip (Jouppi et al. 2020), i.e. 8 GiB
    # and 350 GB/s per core.
    'tpu_v2_8': Device('TPU v2-8', {'float32': 22.5e12, 'bfloat16': 22.5e12}, 350e9, 8 * GIB, 8,
                       'per core: 22.5 TFLOP/s, 350 GB/s, 8 GiB; batch split over 8 cores'),
}
# Device kinds (jax.Device.device_kind) -> DEVICES, for --measured.
DEVICE_KINDS = {'H100': 'h100', 'H200': 'h200', 'TPU v2': 'tpu_v2_8'}


# -- The programs: build, lower, compile, read XLA's analysis. ------------------------------------------------

def study_config(method: str, count: int, scale: str = 'full', dtype: str = 'float32',
                 batch_size: int | None = None) -> ml_collections.ConfigDict:
  """`configs/<method>.py` at `scale` ('full': no argument, the study's) with `count` members, `dtype`
  compute and, when given, another batch size (the per-core batch)."""
  config = METHOD_CONFIGS[method].get_config(None if scale == 'full' else f'scale={scale}')
  config.members.count = count
  config.model.dtype = dtype
  if batch_size is not None:
    config.batch_size = batch_size
  return config


def crop_pairs(config: ml_collections.ConfigDict) -> tuple[tuple[int, int], list[tuple[int, int]]]:
  """The largest crop-length pair the config's steps draw, and the diagonal pairs (l, l) of its crop set
  (each length capped at L, as `augment.draw_crop_length` caps it)."""
  length = config.data.length
  if not config.augment.enabled:
    return (length, length), [(length, length)]
  lengths = sorted({min(c, length) for c in config.augment.crop_lengths})
  return (lengths[-1], lengths[-1]), [(c, c) for c in lengths]


def cost_of(analysis: Any) -> dict[str, float]:
  """FLOPs, bytes accessed and transcendentals of a `cost_analysis()` (a dict, or a list of one per
  program in older JAX)."""
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  analysis = analysis or {}
  return {'flops': float(analysis.get('flops', 0.0)), 'bytes': float(analysis.get('bytes accessed', 0.0)),
          'transcendentals': float(analysis.get('transcendentals', 0.0))}


def memory_of(stats: Any) -> dict[str, int] | None:
  """A `memory_analysis()` as bytes: argument, output, alias, temp, generated code; `total` is what the device
  holds during a step (arguments + outputs - donated aliases + temps + code)."""
  if stats is None:
    return None
  memory = {'argument': int(stats.argument_size_in_bytes), 'output': int(stats.output_size_in_bytes),
            'alias': int(stats.alias_size_in_bytes), 'temp': int(stats.temp_size_in_bytes),
            'code': int(stats.generated_code_size_in_bytes)}
  memory['total'] = memory['argument'] + memory['output'] - memory['alias'] + memory['temp'] + memory['code']
  return memory


def analyse(config: ml_collections.ConfigDict, pairs: Sequence[tuple[int, int]], compile_programs: bool = True,
            emit=None) -> list[dict[str, Any]]:
  """Builds `config`'s step (K = config.members.count) and, for each crop pair, lowers it (the HLO's
  `cost_analysis`) and, with `compile_programs`, compiles it (the compiled program's cost and memory).
  One row per pair; `emit(row)` is called after the lowering and again after the compile (the child's
  progress, read by `run_case`)."""
  t0 = time.perf_counter()
  steps_per_epoch = max(TRAIN_EXAMPLES // config.batch_size, 1)
  built, batch = bench_train_step.build_member_step(config, steps_per_epoch)
  build_s = time.perf_counter() - t0
  rows = []
  for pair in pairs:
    row = {'method': config.method, 'members': int(config.members.count), 'batch': int(config.batch_size),
           'length': int(config.data.length), 'dtype': config.model.dtype, 'crop_pair': list(pair),
           'devices': jax.device_count(), 'backend': jax.default_backend(),
           'device_kind': jax.devices()[0].device_kind, 'build_s': build_s}
    t0 = time.perf_counter()
    lowered = built['lower_step'](built['state'], batch, tuple(pair))
    row['lower_s'] = time.perf_counter() - t0
    row['hlo'] = cost_of(lowered.cost_analysis())
    row['compiled'], row['memory'], row['source'] = None, None, 'lowered'
    if emit:
      emit(row)
    if compile_programs:
      t0 = time.perf_counter()
      compiled = lowered.compile()
      row['compile_s'] = time.perf_counter() - t0
      row['compiled'] = cost_of(compiled.cost_analysis())
      row['memory'] = memory_of(compiled.memory_analysis())
      row['source'] = 'compiled'
      if emit:
        emit(row)
    rows.append(row)
  return rows


@dataclasses.dataclass
class Case:
  """One child process: `method` with `members` members at `batch`, its crop pairs; `compile_programs`
  False takes the lowered-only path."""
  method: str
  members: int
  batch: int
  pairs: list
  compile_programs: bool = True
  scale: str = 'full'
  dtype: str = 'float32'


def _case_main(spec: str) -> None:
  """Child mode (`--case JSON`): `analyse` one case, a JSON line per lowering and per compile, then the
  process's peak RSS."""
  case = Case(**json.loads(spec))
  config = study_config(case.method, case.members, case.scale, case.dtype, case.batch)
  analyse(config, [tuple(p) for p in case.pairs], case.compile_programs,
          emit=lambda row: print(json.dumps(row), flush=True))
  print(json.dumps({'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)


def _rss_bytes(pid: int) -> int:
  """A live process's resident set (Linux /proc; 0 where it cannot be read)."""
  try:
    with open(f'/proc/{pid}/status') as f:
      for line in f:
        if line.startswith('VmRSS:'):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return 0


def run_case(case: Case, timeout_s: float, max_rss_bytes: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  """`case` in a child process, stopped when one stage takes longer than `timeout_s` or its RSS passes
  `max_rss_bytes`: its rows (the lowered record of a
  pair whose compile did not finish) and `{wall_s, peak_rss_mib, stopped}`."""
  command = [sys.executable, os.path.abspath(__file__), '--case', json.dumps(dataclasses.asdict(case))]
  child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
  lines: queue.Queue = queue.Queue()
  threading.Thread(target=lambda: [lines.put(line) for line in child.stdout] + [lines.put(None)],
                   daemon=True).start()
  rows: dict[tuple[int, int], dict] = {}
  info: dict[str, Any] = {'stopped': None, 'peak_rss_mib': None}
  t0, peak = time.monotonic(), 0
  last = t0  # the last record's time: the limit is per stage (the build and first lowering, then each program)
  while True:
    try:
      line = lines.get(timeout=0.5)
    except queue.Empty:
      line = ''
    if line is None:
      break
    if line.strip():
      last = time.monotonic()
      record = json.loads(line)
      if 'peak_rss_mib' in record:
        info['peak_rss_mib'] = record['peak_rss_mib']
      else:
        rows[tuple(record['crop_pair'])] = record
    peak = max(peak, _rss_bytes(child.pid))
    stage = time.monotonic() - last
    if stage > timeout_s or peak > max_rss_bytes:
      info['stopped'] = (f'stopped after {stage:.0f} s in one stage at {peak / GIB:.1f} GiB RSS (limits '
                         f'{timeout_s:.0f} s, {max_rss_bytes / GIB:.1f} GiB)')
      child.kill()
      break
  returncode = child.wait()
  info['wall_s'] = time.monotonic() - t0
  info['peak_rss_mib'] = info['peak_rss_mib'] or peak / 2**20
  if returncode != 0 and not info['stopped']:
    info['stopped'] = f'exited with {returncode}'
  for row in rows.values():
    if row['source'] == 'lowered' and case.compile_programs:
      row['stopped'] = info['stopped']
  return list(rows.values()), info


# -- From the analysis to the plan. ---------------------------------------------------------------------------

def fit_members(counts: Sequence[int], totals: Sequence[float]) -> tuple[float, float]:
  """Memory as fixed + K x per member: the least-squares line through (K, bytes); one point: all per member."""
  counts, totals = np.asarray(counts, float), np.asarray(totals, float)
  if len(set(counts.tolist())) < 2:
    return 0.0, float(np.mean(totals / counts))
  per_member, fixed = np.polyfit(counts, totals, 1)
  return float(fixed), float(per_member)


def largest_k(fixed: float, per_member: float, capacity: float,
              usable_fraction: float = USABLE_MEMORY_FRACTION) -> int:
  """The largest K with fixed + K x per_member <= usable_fraction x capacity (0: not even one member)."""
  if per_member <= 0:
    raise ValueError(f'per-member memory must be positive, got {per_member}')
  return max(int(math.floor((usable_fraction * capacity - fixed) / per_member)), 0)


def roofline_s(flops: float, bytes_accessed: float, peak_flops: float, bandwidth: float,
               compute_efficiency: float = COMPUTE_EFFICIENCY,
               memory_efficiency: float = MEMORY_EFFICIENCY) -> tuple[float, str]:
  """The step's time as the larger of its compute and its memory-traffic time: (seconds, 'compute' | 'memory')."""
  compute = flops / (peak_flops * compute_efficiency)
  memory = bytes_accessed / (bandwidth * memory_efficiency)
  return (compute, 'compute') if compute >= memory else (memory, 'memory')


def study_steps(batch_size: int, epochs: int, train_examples: int = TRAIN_EXAMPLES) -> int:
  """The study's steps: `epochs` passes of `train_examples // batch_size` steps (`pipeline.steps_per_epoch`)."""
  return epochs * max(train_examples // batch_size, 1)


def cost(row: Mapping[str, Any]) -> dict[str, float]:
  """The row's compiled cost (or, lowered only, its extrapolated one)."""
  return row['compiled'] or row.get('extrapolated') or row['hlo']


def fill_extrapolated(rows: list[dict[str, Any]]) -> None:
  """For each row left lowered only, its cost (the HLO's times the compiled/HLO ratio of the largest compiled
  K of the same method, batch and crop pair) and memory (each of `memory_of`'s figures on the line through the
  compiled K's), in place."""
  groups: dict[tuple, list[dict]] = {}
  for row in rows:
    groups.setdefault((row['method'], row['batch'], tuple(row['crop_pair'])), []).append(row)
  for group in groups.values():
    measured = sorted((r for r in group if r['compiled']), key=lambda r: r['members'])
    if not measured:
      continue
    reference = measured[-1]
    counts = [r['members'] for r in measured]
    lines = {key: fit_members(counts, [r['memory'][key] for r in measured]) for key in reference['memory']}
    for row in group:
      if row['compiled']:
        continue
      row['extrapolated'] = {key: row['hlo'][key] * reference['compiled'][key] / reference['hlo'][key]
                             if reference['hlo'][key] else 0.0 for key in ('flops', 'bytes', 'transcendentals')}
      row['memory'] = {key: int(fixed + row['members'] * per_member) for key, (fixed, per_member) in lines.items()}
      row['source'] = (f"extrapolated: HLO cost x compiled/HLO of K={reference['members']}; memory from K="
                       f"{','.join(str(r['members']) for r in measured)}")


def crop_mean_ratios(rows: Sequence[Mapping[str, Any]], method: str, largest: tuple[int, int],
                     diagonal: Sequence[tuple[int, int]]) -> dict[str, float] | None:
  """Mean cost over the crop-length distribution / the largest pair's, for FLOPs and bytes, from `method`'s
  K = 1 full-batch rows of every diagonal pair (None if one is missing)."""
  by_pair = {tuple(r['crop_pair']): r for r in rows
             if r['method'] == method and r['members'] == 1 and r['compiled'] and r.get('full_batch')}
  if largest not in by_pair or any(p not in by_pair for p in diagonal):
    return None
  return {key: float(np.mean([by_pair[p]['compiled'][key] for p in diagonal])) / by_pair[largest]['compiled'][key]
          for key in ('flops', 'bytes')}


def additivity_error(rows: Sequence[Mapping[str, Any]], method: str, short: int, long: int) -> float | None:
  """How far the FLOPs of the pairs (short, long) + (long, short) are from those of (short, short) + (long,
  long): 0 when a step's cost is one part per view, f(first) + g(second) (MoCo's two views differ: a query
  with its backward pass, a key without), which makes the mean of the diagonal pairs the mean over the
  crop-length distribution."""
  by_pair = {tuple(r['crop_pair']): r for r in rows
             if r['method'] == method and r['members'] == 1 and r['compiled'] and r.get('full_batch')}
  if not all(p in by_pair for p in ((short, long), (long, short), (short, short), (long, long))):
    return None
  flops = {pair: by_pair[pair]['compiled']['flops'] for pair in by_pair}
  return (flops[(short, long)] + flops[(long, short)]) / (flops[(short, short)] + flops[(long, long)]) - 1


def per_device_row(rows: Sequence[Mapping[str, Any]], method: str, members: int, largest: tuple[int, int],
                   batch: int, device: Device) -> tuple[dict[str, Any], str] | None:
  """The cost and memory one core of `device` sees for `method` with `members` at the global `batch`: a row
  whose per-device batch is batch / cores (measured), else the full-batch row with its FLOPs and non-argument
  bytes and temps divided over the cores ('scaled')."""
  target = batch // device.cores
  candidates = [r for r in rows if r['method'] == method and r['members'] == members
                and tuple(r['crop_pair']) == largest and r['memory']]
  for r in candidates:
    if r['batch'] // r['devices'] == target and (r['devices'] == 1 or r['devices'] == device.cores):
      return {'cost': cost(r), 'memory': r['memory']['total'], 'row': r}, r['source']
  full = [r for r in candidates if r['batch'] == batch and r['devices'] == 1]
  if not full:
    return None
  r, c = full[0], cost(full[0])
  argument = r['memory'].get('argument', 0)
  scaled_cost = {'flops': c['flops'] / device.cores, 'bytes': (c['bytes'] - argument) / device.cores + argument,
                 'transcendentals': c['transcendentals'] / device.cores}
  memory = r['memory']['total']
  if 'temp' in r['memory']:
    memory = r['memory']['total'] - r['memory']['temp'] + r['memory']['temp'] / device.cores
  return {'cost': scaled_cost, 'memory': memory, 'row': r}, f"scaled from batch {batch} ({r['source']})"


def plan(rows: list[dict[str, Any]], methods: Sequence[str], members: Sequence[int], devices: Sequence[str],
         dtype: str, batch: int, epochs: int, largest: tuple[int, int],
         ratios: Mapping[str, dict[str, float] | None]) -> tuple[list[dict], list[dict]]:
  """Predictions per (method, K, device) and the memory fit per (method, device)."""
  predictions, fits = [], []
  steps = study_steps(batch, epochs)
  for method in methods:
    for name in devices:
      device = DEVICES[name]
      points = []
      for k in members:
        found = per_device_row(rows, method, k, largest, batch, device)
        if not found:
          continue
        seen, source = found
        step_s, bound = roofline_s(seen['cost']['flops'], seen['cost']['bytes'], device.peak_flops[dtype],
                                   device.bandwidth)
        prediction = {'method': method, 'members': k, 'device': name, 'source': source, 'step_s': step_s,
                      'bound': bound, 'steps': steps, 'hours': steps * step_s / 3600,
                      'memory_bytes': seen['memory'], 'flops': seen['cost']['flops'], 'bytes': seen['cost']['bytes']}
        ratio = ratios.get(method)
        if ratio:
          mean_s, mean_bound = roofline_s(seen['cost']['flops'] * ratio['flops'],
                                          seen['cost']['bytes'] * ratio['bytes'], device.peak_flops[dtype],
                                          device.bandwidth)
          prediction.update(step_s_mean_crops=mean_s, bound_mean_crops=mean_bound,
                            hours_mean_crops=steps * mean_s / 3600)
        predictions.append(prediction)
        points.append((k, seen['memory'], 'extrapolated' in source))
      if points:
        fixed, per_member = fit_members([k for k, _, _ in points], [m for _, m, _ in points])
        fits.append({'method': method, 'device': name, 'fixed_bytes': fixed, 'per_member_bytes': per_member,
                     'capacity_bytes': device.memory, 'usable_fraction': USABLE_MEMORY_FRACTION,
                     'largest_k': largest_k(fixed, per_member, device.memory) if per_member > 0 else None,
                     'from_members': [k for k, _, _ in points],
                     'extrapolated_members': [k for k, _, e in points if e]})
  return predictions, fits


def compare_measured(measured: Mapping[str, Any], predictions: Sequence[Mapping[str, Any]], dtype: str,
                     batch: int, largest: tuple[int, int]) -> list[dict[str, Any]]:
  """The member bench's step times (`--measured`) beside the prediction for the device it ran on: for its rows
  of `dtype` at `batch` whose uncropped views are as long as the largest crop (the same program but for the
  crop itself); other rows are listed without a prediction."""
  kind = measured.get('device_kind', '')
  device = next((name for key, name in DEVICE_KINDS.items() if key in kind), None)
  out = []
  for r in measured.get('rows', []):
    if r.get('dtype') != dtype:
      continue
    same_shape = r.get('batch') == batch and r.get('length') == largest[0] == largest[1]
    match = [p for p in predictions if p['method'] == r['method'] and p['members'] == r['members']
             and p['device'] == device and same_shape]
    predicted = match[0]['step_s'] * 1e3 if match else None
    out.append({'method': r['method'], 'members': r['members'], 'dtype': r['dtype'], 'device_kind': kind,
                'measured_step_ms': r['step_ms'], 'predicted_step_ms': predicted,
                'measured_over_predicted': r['step_ms'] / predicted if predicted else None,
                'device_peak_mib': r.get('device_peak_mib'), 'queue_size': r.get('queue_size')})
  return out


# -- Printing. ------------------------------------------------------------------------------------------------

def _g(value: float | None, scale: float, fmt: str = '{:,.1f}') -> str:
  return '-' if value is None else fmt.format(value / scale)


def analysis_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
  """XLA's figures per program: one line per (method, K, batch, crop pair)."""
  lines = ['| method | K | batch | crops | GFLOP | GB accessed (HLO) | transcendentals (M) | argument MiB | '
           'temp MiB | device total MiB | lower s | compile s | source |',
           '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    c, m = cost(r), r['memory'] or {}
    lines.append(f"| {r['method']} | {r['members']} | {r['batch']} | {r['crop_pair'][0]},{r['crop_pair'][1]} | "
                 f"{_g(c['flops'], 1e9)} | {_g(c['bytes'], 1e9, '{:,.2f}')} ({_g(r['hlo']['bytes'], 1e9)}) | "
                 f"{_g(c['transcendentals'], 1e6, '{:,.2f}')} | {_g(m.get('argument'), 2**20, '{:,.0f}')} | "
                 f"{_g(m.get('temp'), 2**20, '{:,.0f}')} | {_g(m.get('total'), 2**20, '{:,.0f}')} | "
                 f"{r['lower_s']:.1f} | {_g(r.get('compile_s'), 1)} | {r['source']} |")
  return lines


def plan_table(predictions: Sequence[Mapping[str, Any]], largest: tuple[int, int], epochs: int) -> list[str]:
  """Predicted step time and the study's wall time per (method, K, device)."""
  crops = f'crops {largest[0]},{largest[1]}'
  lines = [f'| method | K | device | step ms, {crops} (bound) | step ms, mean crops | {epochs} epochs h, {crops} | '
           f'{epochs} epochs h, mean crops | h per member, mean crops | memory GiB (per core) | figures |',
           '|---|---|---|---|---|---|---|---|---|---|']
  for p in predictions:
    mean_ms = _g(p.get('step_s_mean_crops'), 1e-3, '{:,.2f}')
    mean_h = _g(p.get('hours_mean_crops'), 1, '{:,.1f}')
    per_member = _g(p['hours_mean_crops'] / p['members'] if 'hours_mean_crops' in p else None, 1, '{:,.1f}')
    lines.append(f"| {p['method']} | {p['members']} | {DEVICES[p['device']].label} | {p['step_s'] * 1e3:,.2f} "
                 f"({p['bound']}) | {mean_ms} | {p['hours']:,.1f} | {mean_h} | {per_member} | "
                 f"{p['memory_bytes'] / GIB:,.2f} | {p['source']} |")
  return lines


def fit_table(fits: Sequence[Mapping[str, Any]]) -> list[str]:
  """The memory line per (method, device) and the largest K under it."""
  lines = ['| method | device | fixed GiB | GiB per member | usable GiB | largest K | from K |',
           '|---|---|---|---|---|---|---|']
  for f in fits:
    extrapolated = (f" ({','.join(map(str, f['extrapolated_members']))} extrapolated)"
                    if f['extrapolated_members'] else '')
    lines.append(f"| {f['method']} | {DEVICES[f['device']].label} | {f['fixed_bytes'] / GIB:,.2f} | "
                 f"{f['per_member_bytes'] / GIB:,.3f} | {f['usable_fraction'] * f['capacity_bytes'] / GIB:,.1f} | "
                 f"{f['largest_k']} | {','.join(map(str, f['from_members']))}{extrapolated} |")
  return lines


def assumptions(dtype: str, devices: Iterable[str], epochs: int, batch: int) -> list[str]:
  lines = [f'- steps: {epochs} epochs x ({TRAIN_EXAMPLES:,} train examples // {batch}) = '
           f'{study_steps(batch, epochs):,} (real AoAM: ~{AOAM_EXAMPLES:,} examples, {AOAM_TRAIN_FRACTION:.0%} '
           'train; docs/study.md)',
           f'- roofline: max(FLOPs / (peak x {COMPUTE_EFFICIENCY}), bytes / (bandwidth x {MEMORY_EFFICIENCY})); '
           f'{dtype} peak; no kernel-launch, host or input-pipeline time; no collectives',
           f'- memory: fits when fixed + K x per member <= {USABLE_MEMORY_FRACTION:.0%} of the (per-core) memory',
           '- bytes accessed: XLA:CPU counts each fusion\'s operands and results; a GPU or TPU fuses differently, '
           'so the traffic (and the memory-bound times) may be over- or underestimated']
  for name in devices:
    d = DEVICES[name]
    lines.append(f"- {d.label}: {d.peak_flops[dtype] / 1e12:g} TFLOP/s {dtype}, {d.bandwidth / 1e9:,.0f} GB/s, "
                 f"{d.memory / GIB:,.1f} GiB per core, {d.cores} core(s); {d.note}")
  return lines


# -- The command line. ----------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--methods', default='simclr,moco')
  parser.add_argument('--members', default='1,4,16')
  parser.add_argument('--devices', default='h100,tpu_v2_8', help=f'of {sorted(DEVICES)}')
  parser.add_argument('--scale', default='full', help='the configs\' scale (configs/scales.py); full: the study')
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  parser.add_argument('--no_per_core', action='store_true',
                      help='skip the per-core programs of multi-core devices (their figures are then scaled)')
  parser.add_argument('--no_crop_mean', action='store_true', help='skip the diagonal crop pairs at K = 1')
  parser.add_argument('--lowered_only', default='', help='member counts not to compile (extrapolated)')
  parser.add_argument('--compile_timeout', type=float, default=300.0, help='seconds per child process')
  parser.add_argument('--max_rss_gib', type=float, default=8.0, help='RSS limit per child process')
  parser.add_argument('--measured', default='', help='a member bench JSON (bench_train_step.py --out)')
  parser.add_argument('--out', default='')
  parser.add_argument('--replan', default='', help="an earlier run's --out: its programs' figures, planned again "
                                                    '(no build, no compile)')
  parser.add_argument('--case', default='', help=argparse.SUPPRESS)  # Child mode.
  args = parser.parse_args(argv)
  args.methods = args.methods.split(',')
  args.members = [int(k) for k in args.members.split(',') if k]
  args.lowered_only = {int(k) for k in args.lowered_only.split(',') if k}
  args.devices = args.devices.split(',')
  for name in args.devices:
    if name not in DEVICES:
      parser.error(f'--devices: unknown {name!r}; choose from {sorted(DEVICES)}')
  return args


def cases_of(args: argparse.Namespace, batch: int, largest: tuple[int, int], diagonal: list[tuple[int, int]],
             off_diagonal: list[tuple[int, int]]) -> list[tuple[Case, bool]]:
  """The child processes to run, each with whether it is the full batch: per method, each K at the full batch
  (at K = 1 with the diagonal and off-diagonal crop pairs), then each K at every multi-core device's per-core
  batch."""
  cases = []
  for method in args.methods:
    for k in args.members:
      pairs = [largest]
      if k == 1 and not args.no_crop_mean:
        pairs += [p for p in diagonal if p != largest] + off_diagonal
      cases.append((Case(method, k, batch, pairs, k not in args.lowered_only, args.scale, args.dtype), True))
    if not args.no_per_core:
      for core_batch in sorted({batch // DEVICES[n].cores for n in args.devices if DEVICES[n].cores > 1}):
        for k in args.members:
          cases.append((Case(method, k, core_batch, [largest], k not in args.lowered_only, args.scale, args.dtype),
                        False))
  return cases


def main() -> None:
  args = parse_args()
  if args.case:
    return _case_main(args.case)
  # This process never starts a JAX backend (on a GPU it would take the memory its children need): the
  # children build and compile, and their rows name the devices.
  t_start = time.monotonic()
  reference = study_config(args.methods[0], 1, args.scale, args.dtype)
  batch, epochs = int(reference.batch_size), int(reference.num_epochs)
  largest, diagonal = crop_pairs(reference)
  off_diagonal = [(diagonal[0][0], largest[0]), (largest[0], diagonal[0][0])] if len(diagonal) > 1 else []
  rows, children, cases = [], [], cases_of(args, batch, largest, diagonal, off_diagonal)
  if args.replan:  # The rows of an earlier run (its --out), planned again under this file's assumptions.
    with open(args.replan) as f:
      earlier = json.load(f)
    rows, children, cases = earlier['rows'], earlier['children'], []
    for row in rows:
      row.pop('extrapolated', None)
    args.methods = list(dict.fromkeys(row['method'] for row in rows))
    args.members = sorted({row['members'] for row in rows})
    print(f"replanning {args.replan}: {len(rows)} programs analysed on {earlier['devices']}")
  else:
    print(f'{len(cases)} child processes', flush=True)
  for case, full_batch in cases:
    if not full_batch and rows and rows[0]['devices'] > 1:
      continue  # The backend's own devices split the batch: its full-batch programs are per-core already.
    case_rows, info = run_case(case, args.compile_timeout, args.max_rss_gib * GIB)
    for row in case_rows:
      row['full_batch'] = full_batch
    rows += case_rows
    children.append({**dataclasses.asdict(case), **info})
    print(f'{case.method} K={case.members} batch {case.batch}: {len(case_rows)} of {len(case.pairs)} program(s) in '
          f"{info['wall_s']:.0f} s, peak RSS {info['peak_rss_mib']:,.0f} MiB"
          + (f"; {info['stopped']}" if info['stopped'] else ''), flush=True)
    if args.out and rows:  # The programs so far, for --replan should this run be stopped before its end.
      with open(args.out, 'w') as f:
        json.dump({'partial': True, 'devices': f"{rows[0]['devices']} x {rows[0]['device_kind']}", 'rows': rows,
                   'children': children}, f, indent=1)
  if not rows:
    raise SystemExit('no program was analysed (the children\'s errors are above)')
  devices = f"{rows[0]['devices']} x {rows[0]['device_kind']} ({rows[0]['backend']})"
  print(f'devices: {devices}')
  fill_extrapolated(rows)
  ratios = {m: crop_mean_ratios(rows, m, largest, diagonal) for m in args.methods}
  additivity = {m: additivity_error(rows, m, *off_diagonal[0]) if off_diagonal else None for m in args.methods}
  predictions, fits = plan(rows, args.methods, args.members, args.devices, args.dtype, batch, epochs, largest, ratios)
  print('\n## XLA\'s analysis of each program (this machine\'s backend)\n')
  print('\n'.join(analysis_table(rows)))
  print('\n## Predicted step and study time\n')
  print('\n'.join(plan_table(predictions, largest, epochs)))
  print('\n## Largest K that fits\n')
  print('\n'.join(fit_table(fits)))
  print('\n## Assumptions\n')
  print('\n'.join(assumptions(args.dtype, args.devices, epochs, batch)))
  for m in args.methods:
    if ratios[m]:
      check = (f'; off-diagonal pairs {off_diagonal} against their diagonals, FLOPs: {additivity[m]:+.2%}'
               if additivity[m] is not None else '')
      print(f"- {m}: mean over the crop-length distribution / crops {largest}: FLOPs {ratios[m]['flops']:.3f}, "
            f"bytes {ratios[m]['bytes']:.3f} (the mean of the diagonal pairs{check})")
  comparison = []
  if args.measured:
    with open(args.measured) as f:
      comparison = compare_measured(json.load(f), predictions, args.dtype, batch, largest)
    print('\n## Measured (member bench) against predicted\n')
    print('| method | K | dtype | device | measured step ms | predicted step ms | measured / predicted | '
          'device peak MiB |\n|---|---|---|---|---|---|---|---|')
    for c in comparison:
      print(f"| {c['method']} | {c['members']} | {c['dtype']} | {c['device_kind']} | {c['measured_step_ms']:,.2f} | "
            f"{_g(c['predicted_step_ms'], 1, '{:,.2f}')} | {_g(c['measured_over_predicted'], 1, '{:.2f}')} | "
            f"{_g(c['device_peak_mib'], 1, '{:,.0f}')} |")
  wall_s = time.monotonic() - t_start
  print(f'\nwall time {wall_s:.0f} s')
  if args.out:
    with open(args.out, 'w') as f:
      json.dump({'command': sys.argv, 'devices': devices, 'backend': rows[0]['backend'],
                 'constants': {'train_examples': TRAIN_EXAMPLES, 'compute_efficiency': COMPUTE_EFFICIENCY,
                               'memory_efficiency': MEMORY_EFFICIENCY, 'usable_memory_fraction': USABLE_MEMORY_FRACTION,
                               'devices': {n: dataclasses.asdict(DEVICES[n]) for n in args.devices}},
                 'batch': batch, 'epochs': epochs, 'steps': study_steps(batch, epochs), 'largest_pair': largest,
                 'crop_mean_ratios': ratios, 'additivity_error': additivity, 'children': children, 'rows': rows,
                 'predictions': predictions, 'fits': fits, 'measured': comparison, 'wall_s': wall_s}, f, indent=1)
    print(f'wrote {args.out}')


if __name__ == '__main__':
  main()
