"""experiments/full_scale_plan.py: XLA's analysis of a tiny step (the smoke config, K = 1 and 2) and the plan's
arithmetic on synthetic numbers."""

import json
import math
import os

import pytest

from experiments import full_scale_plan as plan

GIB = 2**30


@pytest.fixture(scope='module')
def smoke_rows():
  """SimCLR's smoke step with 1 and 2 members, lowered and compiled for its largest crop pair."""
  rows = []
  for count in (1, 2):
    config = plan.study_config('simclr', count, scale='smoke')
    largest, _ = plan.crop_pairs(config)
    rows += plan.analyse(config, [largest])
  return rows


def test_costs_are_positive_and_memory_grows_with_members(smoke_rows):
  one, two = smoke_rows
  assert (one['members'], two['members']) == (1, 2)
  for row in smoke_rows:
    assert row['source'] == 'compiled'
    assert row['compiled']['flops'] > 0 and row['compiled']['bytes'] > 0
    assert row['hlo']['flops'] > 0 and row['hlo']['bytes'] > 0
    assert row['memory']['argument'] > 0 and row['memory']['total'] > 0
  # Two members' state is twice one's; their step does about twice the work.
  assert two['memory']['argument'] == pytest.approx(2 * one['memory']['argument'], rel=0.05)
  assert two['memory']['total'] > one['memory']['total']
  assert two['compiled']['flops'] == pytest.approx(2 * one['compiled']['flops'], rel=0.1)
  _, per_member = plan.fit_members([1, 2], [one['memory']['total'], two['memory']['total']])
  assert per_member > 0


def test_crop_pairs_of_the_study_and_smoke_configs():
  largest, diagonal = plan.crop_pairs(plan.study_config('simclr', 1))
  assert largest == (512, 512)
  assert diagonal == [(32, 32), (64, 64), (128, 128), (256, 256), (512, 512)]
  assert plan.crop_pairs(plan.study_config('moco', 1, scale='smoke')) == ((32, 32), [(32, 32)])


def test_roofline_picks_the_larger_bound():
  assert plan.roofline_s(2e12, 1e12, 1e12, 1e12, 1.0, 1.0) == (2.0, 'compute')
  assert plan.roofline_s(1e12, 3e12, 1e12, 1e12, 1.0, 1.0) == (3.0, 'memory')
  seconds, bound = plan.roofline_s(4e12, 1e12, 10e12, 1e12, 0.4, 0.6)  # 1.0 s of compute, 1.67 s of traffic
  assert bound == 'memory' and seconds == pytest.approx(1 / 0.6)
  seconds, bound = plan.roofline_s(4e12, 1e11, 10e12, 1e12, 0.4, 0.6)
  assert bound == 'compute' and seconds == pytest.approx(1.0)


def test_largest_k_and_the_memory_line_on_synthetic_numbers():
  assert plan.largest_k(2 * GIB, 3 * GIB, 20 * GIB, 0.75) == 4  # (15 - 2) / 3 = 4.33
  assert plan.largest_k(0, 5 * GIB, 20 * GIB, 0.75) == 3  # exactly full
  assert plan.largest_k(16 * GIB, 1 * GIB, 20 * GIB, 0.75) == 0  # the fixed part alone does not fit
  with pytest.raises(ValueError):
    plan.largest_k(0, 0, 20 * GIB)
  fixed, per_member = plan.fit_members([1, 4, 16], [0.5 * GIB + k * 0.25 * GIB for k in (1, 4, 16)])
  assert fixed == pytest.approx(0.5 * GIB) and per_member == pytest.approx(0.25 * GIB)
  assert plan.fit_members([4], [2 * GIB]) == (0.0, 0.5 * GIB)


def test_study_steps():
  assert plan.TRAIN_EXAMPLES == 770_000
  assert plan.study_steps(256, 400) == 400 * 3007


def _row(members: int, batch: int, flops: float, total: float, compiled: bool = True, pair=(512, 512)) -> dict:
  hlo = {'flops': flops, 'bytes': 4 * flops, 'transcendentals': 1.0}
  row = {'method': 'simclr', 'members': members, 'batch': batch, 'devices': 1, 'crop_pair': list(pair),
         'hlo': hlo, 'compiled': None, 'memory': None, 'source': 'lowered', 'full_batch': batch == 256}
  if compiled:
    row['compiled'] = {'flops': flops, 'bytes': 2 * flops, 'transcendentals': 1.0}
    row['memory'] = {'argument': members * GIB // 8, 'temp': total - members * GIB // 8, 'total': total}
    row['source'] = 'compiled'
  return row


def test_extrapolation_and_the_plan_on_synthetic_rows():
  rows = [_row(1, 256, 1e12, 1.5 * GIB), _row(4, 256, 4e12, 3 * GIB), _row(16, 256, 16e12, 0, compiled=False)]
  plan.fill_extrapolated(rows)
  sixteen = rows[2]
  assert sixteen['source'].startswith('extrapolated')
  assert sixteen['extrapolated']['bytes'] == pytest.approx(2 * 16e12)  # HLO bytes x compiled/HLO of K = 4
  assert sixteen['memory']['total'] == pytest.approx(1 * GIB + 16 * 0.5 * GIB, rel=1e-6)  # 1 GiB + 0.5 per K
  h100 = plan.DEVICES['h100']
  predictions, fits = plan.plan(rows, ['simclr'], [1, 4, 16], ['h100', 'tpu_v2_8'], 'float32', 256, 400,
                                (512, 512), {'simclr': {'flops': 0.5, 'bytes': 0.5}})
  by = {(p['device'], p['members']): p for p in predictions}
  one = by[('h100', 1)]
  expected, bound = plan.roofline_s(1e12, 2e12, h100.peak_flops['float32'], h100.bandwidth)
  assert one['step_s'] == pytest.approx(expected) and one['bound'] == bound
  assert one['hours'] == pytest.approx(plan.study_steps(256, 400) * expected / 3600)
  assert one['step_s_mean_crops'] == pytest.approx(expected / 2)
  # No per-core rows: the TPU v2-8's core sees the FLOPs and the temps over 8 cores, the arguments whole.
  tpu = by[('tpu_v2_8', 1)]
  assert tpu['source'].startswith('scaled') and tpu['flops'] == pytest.approx(1e12 / 8)
  assert tpu['memory_bytes'] == pytest.approx(GIB / 8 + (1.5 * GIB - GIB / 8) / 8)
  fit = {f['device']: f for f in fits}['h100']
  assert fit['extrapolated_members'] == [16]
  assert fit['largest_k'] == math.floor((0.75 * h100.memory - fit['fixed_bytes']) / fit['per_member_bytes'])


def test_per_core_rows_are_used_when_measured():
  rows = [_row(1, 256, 8e12, 4 * GIB), _row(1, 32, 1.1e12, 1 * GIB)]
  found, source = plan.per_device_row(rows, 'simclr', 1, (512, 512), 256, plan.DEVICES['tpu_v2_8'])
  assert source == 'compiled' and found['cost']['flops'] == 1.1e12 and found['memory'] == 1 * GIB
  found, _ = plan.per_device_row(rows, 'simclr', 1, (512, 512), 256, plan.DEVICES['h100'])
  assert found['cost']['flops'] == 8e12


def test_crop_mean_ratio_and_additivity():
  # A query view of cost 1 + 2 (32, 512) and a key view of 0 + 1: one part per view, asymmetric (as MoCo's).
  pairs = {(32, 32): 1.0, (512, 512): 4.0, (32, 512): 2.0, (512, 32): 3.0}
  rows = [_row(1, 256, f, GIB, pair=p) for p, f in pairs.items()]
  assert plan.crop_mean_ratios(rows, 'simclr', (512, 512), [(32, 32), (512, 512)]) == {
      'flops': pytest.approx(2.5 / 4), 'bytes': pytest.approx(2.5 / 4)}
  assert plan.crop_mean_ratios(rows, 'simclr', (512, 512), [(32, 32), (64, 64), (512, 512)]) is None
  assert plan.additivity_error(rows, 'simclr', 32, 512) == pytest.approx(0.0)
  rows[2]['compiled']['flops'] = 2.5  # (32, 512) costs 0.5 more than its parts
  assert plan.additivity_error(rows, 'simclr', 32, 512) == pytest.approx(0.1)


def test_measured_rows_sit_beside_the_prediction_for_their_device():
  predictions = [{'method': 'simclr', 'members': 4, 'device': 'h100', 'step_s': 0.01}]
  bench = {'method': 'simclr', 'members': 4, 'dtype': 'float32', 'batch': 256, 'length': 512, 'step_ms': 25.0}
  measured = {'device_kind': 'NVIDIA H100 80GB HBM3',
              'rows': [bench, {**bench, 'dtype': 'bfloat16', 'step_ms': 12.0}, {**bench, 'length': 128}]}
  row, other_shape = plan.compare_measured(measured, predictions, 'float32', 256, (512, 512))
  assert row['predicted_step_ms'] == pytest.approx(10.0) and row['measured_over_predicted'] == pytest.approx(2.5)
  assert other_shape['predicted_step_ms'] is None


def test_the_committed_cpu_plan_gives_the_figures_in_docs():
  """experiments/results/full_scale_plan/cpu.json, planned again by this code: docs/performance.md's figures."""
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'experiments', 'results',
                      'full_scale_plan', 'cpu.json')
  with open(path) as f:
    rows = json.load(f)['rows']
  assert all(row['source'] == 'compiled' for row in rows)
  plan.fill_extrapolated(rows)
  largest, diagonal = (512, 512), [(32, 32), (64, 64), (128, 128), (256, 256), (512, 512)]
  ratios = {m: plan.crop_mean_ratios(rows, m, largest, diagonal) for m in ('simclr', 'moco')}
  assert ratios['simclr']['flops'] == pytest.approx(0.495, abs=5e-4)
  assert plan.additivity_error(rows, 'moco', 32, 512) == pytest.approx(0.0, abs=1e-3)
  predictions, fits = plan.plan(rows, ['simclr', 'moco'], [1, 4, 16], ['h100', 'tpu_v2_8'], 'float32', 256, 400,
                                largest, ratios)
  by = {(p['method'], p['members'], p['device']): p for p in predictions}
  assert by[('simclr', 1, 'h100')]['step_s'] * 1e3 == pytest.approx(3.44, abs=0.005)
  assert by[('moco', 16, 'tpu_v2_8')]['hours_mean_crops'] == pytest.approx(24.1, abs=0.05)
  assert all(p['bound'] == 'memory' for p in predictions)
  assert {(f['method'], f['device']): f['largest_k'] for f in fits} == {
      ('simclr', 'h100'): 69, ('simclr', 'tpu_v2_8'): 51, ('moco', 'h100'): 86, ('moco', 'tpu_v2_8'): 27}
