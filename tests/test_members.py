"""Members (ssl_jax/members.py): member k of a K-member run is the single run of member k's config.

Tolerances. float64 (`config.model.dtype='float64'`, jax x64): the member program differs from the single
one only by vmap's added batch dimension, which can change the order of a sum (~1e-16 per operation);
after 4 steps the states and losses agree to ~5e-15 (measured), so 1e-10 leaves a wide margin while a
member that took another member's value (temperature, lr, seed) moves them by >1e-3.

float32: no fixed tolerance holds on every CPU (a 1-ulp change at a ReLU kink moves a gradient entry by
O(1), tests/test_parallel.py). The member program must be as accurate as the single program instead:
both evaluate the same operations on the same inputs in float32, in possibly another summation order,
and the standard rounding-error bounds (gamma_n = n u for an n-term sum) do not depend on that order. So
the member's distance from the exact trajectory (float64) is bounded by the single run's distance from it
times 2 (two orders' realised errors of the same bound), plus 8 u for the float64 reference's own
conversion. A member computed with another member's value is off by >1e-3, which no such bound allows.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import member_harness  # tests/member_harness.py
from configs import smoke
from ssl_jax import members, parallel, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLOAT64_RTOL = 1e-10  # module docstring
U32 = 2.0 ** -24  # float32's unit roundoff


def test_member_configs_take_each_members_values_and_share_the_step_shapes():
  config = smoke.get_config('moco')
  config.members.count = 3
  config.members.temperature = (0.05, 0.1, 0.2)
  config.members.momentum = (0.99, 0.995, 0.999)
  plain = members.member_configs(config)
  assert [c.seed for c in plain] == [config.seed, config.seed + 1, config.seed + 2]
  assert [c.temperature for c in plain] == [0.05, 0.1, 0.2]
  assert [c.moco.momentum for c in plain] == [0.99, 0.995, 0.999]
  assert {c.optim.learning_rate for c in plain} == {config.optim.learning_rate}
  # The shared crop-length and data-order seeds: the step's shapes and batches are the members' own.
  assert {c.augment.crop_length_seed for c in plain} == {config.seed}
  assert {c.data.order_seed for c in plain} == {config.seed}
  assert all(c.members.count == 1 for c in plain)
  config.members.data_order = 'member'
  assert {c.data.order_seed for c in members.member_configs(config)} == {-1}  # each member's own seed


def test_one_member_is_the_plain_run_with_its_values():
  config = smoke.get_config('simclr')
  assert members.config_of(config) .to_dict() == config.to_dict()
  config.members.temperature = (0.3,)
  assert members.config_of(config).temperature == 0.3 and not members.is_member_run(config)


def test_stack_configs_round_trips_and_refuses_a_shape_key_naming_it():
  base = smoke.get_config('simclr')
  grid = []
  for k, t in enumerate((0.05, 0.1)):
    c = smoke.get_config('simclr')
    c.temperature, c.seed = t, 7 + k
    grid.append(c)
  stacked = members.stack_configs(grid)
  assert stacked.members.count == 2 and stacked.members.temperature == (0.05, 0.1)
  assert [c.seed for c in members.member_configs(stacked)] == [7, 8]
  grid[1].batch_size = 2 * base.batch_size
  with pytest.raises(ValueError, match=r'(?s)shape-defining.*config\.batch_size: 16, 32'):
    members.stack_configs(grid)
  grid[1].batch_size = base.batch_size
  grid[1].model.output_dim = 64
  with pytest.raises(ValueError, match=r'config\.model\.output_dim'):
    members.stack_configs(grid)
  grid[1].model.output_dim = base.model.output_dim
  grid[1].optim.momentum = 0.5
  with pytest.raises(ValueError, match=r'differ only in .*; they differ in config\.optim\.momentum'):
    members.stack_configs(grid)
  with pytest.raises(ValueError, match='no member configs'):
    members.stack_configs([])


def test_crop_lengths_follow_the_shared_seed_not_the_members_run_keys():
  config = smoke.get_config('simclr')
  config.augment.crop_lengths = (32, 64)
  config.members.count = 2
  a, b = members.member_configs(config)
  assert a.seed != b.seed
  policy_step = lambda c: train.common.host_step(c, lambda *args: None)
  lengths = lambda host: [host.crop_lengths(s) for s in range(64)]
  ha, hb = policy_step(a), policy_step(b)
  fake_state = type('S', (), {'rng': None})()
  ha(fake_state, None, 0), hb(fake_state, None, 0)  # the key is given: state.rng is not read
  assert lengths(ha) == lengths(hb) and len(set(lengths(ha))) > 1


@pytest.mark.slow
@pytest.mark.parametrize('method', ['simclr', 'moco'])
def test_each_member_is_its_single_run_in_float64(method):
  with jax.enable_x64(True):
    config = member_harness.member_config(method, 'float64', count=2, antenna_dropout=True)
    config.augment.crop_lengths = (32,)  # one compiled step per run
    report = member_harness.compare(config, 4, parallel.create_member_mesh(1))
  for k, member in enumerate(report['members']):
    assert member['loss'] < FLOAT64_RTOL and member['state'] < FLOAT64_RTOL, (k, member)
  # The members trained differently: taking another member's values would show.
  assert abs(report['members'][0]['losses'][-1] - report['members'][1]['losses'][-1]) > 1e-3


@pytest.mark.slow
def test_each_member_is_as_accurate_as_its_single_run_in_float32():
  config32 = member_harness.member_config('simclr', 'float32', count=2)
  config32.augment.crop_lengths = (32,)
  host_batches = member_harness.batches(config32, 2)
  _, state32 = member_harness.member_run(config32, host_batches, parallel.create_member_mesh(1))
  singles32 = [member_harness.single_run(c, host_batches)[1] for c in members.member_configs(config32)]
  with jax.enable_x64(True):
    config64 = member_harness.member_config('simclr', 'float64', count=2)
    config64.augment.crop_lengths = (32,)
    exact = [member_harness.single_run(c, host_batches)[1] for c in members.member_configs(config64)]
  for k in range(2):
    member_error = member_harness.distance(members.select(state32, k).params, exact[k].params)
    single_error = member_harness.distance(singles32[k].params, exact[k].params)
    assert member_error <= 2 * single_error + 8 * U32, (k, member_error, single_error)
    # Another member's trajectory is far outside that bound.
    assert member_harness.distance(members.select(state32, 1 - k).params, exact[k].params) > 1e-4


_XLA_FLAGS = '--xla_force_host_platform_device_count=4 --xla_cpu_collective_call_terminate_timeout_seconds=600'


@pytest.mark.slow
@pytest.mark.xdist_group('multidevice')
@pytest.mark.parametrize('n_devices,member_devices', [(2, 2), (4, 2)])
def test_members_spread_over_devices_are_their_single_runs(n_devices, member_devices):
  env = dict(os.environ, XLA_FLAGS=_XLA_FLAGS, JAX_PLATFORMS='cpu', PYTHONPATH=REPO, JAX_ENABLE_X64='1')
  env.pop('JAX_COMPILATION_CACHE_DIR', None)  # Multi-device programs loaded from the cache crashed (SIGSEGV).
  proc = subprocess.run([sys.executable, os.path.join(REPO, 'tests', 'member_harness.py'), 'simclr', 'float64',
                         str(n_devices), str(member_devices)], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=1200)
  assert proc.returncode == 0, proc.stderr[-4000:]
  report = json.loads([l for l in proc.stdout.splitlines() if l.startswith('RESULT')][-1][len('RESULT'):])
  for k, member in enumerate(report['members']):
    assert member['loss'] < FLOAT64_RTOL and member['state'] < FLOAT64_RTOL, (k, member)


@pytest.mark.parametrize('overrides,message', [
    ({'members.count': 0}, r'config\.members\.count = 0: must be an integer >= 1 \(the number of members: an empty'),
    ({'members.count': 3, 'members.temperature': (0.1, 0.2)},
     r'config\.members\.temperature = \(0\.1, 0\.2\): holds 2 values but config\.members\.count = 3'),
    ({'members.count': 2, 'members.learning_rate': (0.1, -1.0)}, r'members\.learning_rate .*-1\.0 is not'),
    ({'members.count': 2, 'members.momentum': (0.9, 0.99)}, r"momentum base .* method 'simclr' has none"),
    ({'members.count': 3, 'members.devices': 2}, r'config\.members\.devices = 2: must divide config\.members\.count = 3'),
    ({'members.count': 2, 'members.data_order': 'random'}, r'config\.members\.data_order'),
])
def test_bad_member_lists_are_refused_naming_the_key(overrides, message):
  from ssl_jax import config_checks
  config = smoke.get_config('simclr')
  for key, value in overrides.items():
    section, name = key.split('.')
    config[section][name] = value
  with pytest.raises(config_checks.ConfigError, match=message):
    config_checks.check_pretrain_config(config)


def test_member_mesh_refuses_a_member_axis_that_does_not_divide_the_devices():
  with pytest.raises(ValueError, match=r'config\.members\.devices=2 does not divide the device count 1'):
    parallel.create_member_mesh(2)
