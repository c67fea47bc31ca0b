"""Members: K runs of one model trained by one program, the train state carrying a leading member axis.

`config.members` (`configs/base.py`) lists what may differ between members: the seed (initial weights and
the per-example view draws; with `data_order='member'` the data order too), the temperature, the learning
rate, the weight decay, MoCo's EMA momentum base and the antenna-dropout probability (`MEMBER_KEYS`).
Everything that defines a shape (model, batch, crop set, queue size, ...) is shared. `count` is K; each
list holds K values or is empty (every member takes the config's own value; seeds default to
`config.seed + k`).

K = 1 is a plain run (no member axis; `config_of` applies member 0's values). For K >= 2:

- `member_configs(config)[k]` is the plain config of member k: running it alone trains what member k
  trains. Members share each step's crop lengths (a static shape of the step): they are drawn from
  `config.augment.crop_length_seed`, which every member config sets (to `config.seed` unless given); with
  `data_order='shared'` they also share the data order (`config.data.order_seed`, likewise).
- The member-valued hyperparameters enter the step as traced values (`Hyperparameters`): the method's own
  step is built inside `jax.vmap` from a config whose member keys are those values, so every method of
  `ssl_jax.methods` runs as members without a line of its own.
- `per_device_step` is the per-device step of all members (for `parallel.member_parallel`).
- `MemberState` is the method's state with a leading axis K plus `alive`: a member whose step produces a
  non-finite loss or state keeps its last finite state from then on (frozen, `alive=False`); the others
  go on.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import flax
from flax import traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ssl_jax import config_keys

PyTree = Any

# config.members.<name> -> the config key it sets per member.
MEMBER_KEYS = {
    'seed': 'seed',
    'temperature': 'temperature',
    'learning_rate': 'optim.learning_rate',
    'weight_decay': 'optim.weight_decay',
    'momentum': 'moco.momentum',
    'antenna_dropout': 'augment.antenna_dropout',
}
# The member values that enter the step as traced scalars (the seed enters through the state's keys).
TRACED = ('temperature', 'learning_rate', 'weight_decay', 'momentum', 'antenna_dropout')
DATA_ORDERS = ('shared', 'member')
# Keys whose value fixes an array shape of the step or the state: members never differ in them.
SHAPE_KEYS = ('method', 'batch_size', 'data.length', 'model.', 'augment.crop_lengths', 'augment.enabled',
              'moco.queue_size', 'fifo_bank.size', 'memory_bank.', 'mochi.', 'swav.', 'clip.', 'augment.iq.')


def count(config: Any) -> int:
  """K, the number of members (1 for a config without a `members` section)."""
  return int(config_keys.get(config, 'members.count', 1))


def is_member_run(config: Any) -> bool:
  """True when the state carries a member axis (K >= 2)."""
  return count(config) >= 2


def values(config: Any, name: str) -> list:
  """Member `name`'s K values (`MEMBER_KEYS`): the list given, or the config's own value K times (seeds:
  `config.seed + k`)."""
  given = tuple(config_keys.get(config, f'members.{name}', ()) or ())
  if given:
    return list(given)
  if name == 'seed':
    return [int(config.seed) + k for k in range(count(config))]
  return [config_keys.get(config, MEMBER_KEYS[name], None)] * count(config)


def given_names(config: Any) -> list[str]:
  """The `MEMBER_KEYS` names with a non-empty list in `config.members`."""
  return [name for name in MEMBER_KEYS if tuple(config_keys.get(config, f'members.{name}', ()) or ())]


def member_configs(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
  """The plain config of each member (`count(config)` of them; see the module docstring).

  Each has K = 1 and member k's values; for K >= 2 also the shared crop-length seed and, with
  `data_order='shared'`, the shared data-order seed (both `config.seed` unless the config sets them).
  """
  k_count = count(config)
  columns = {name: values(config, name) for name in MEMBER_KEYS
             if config_keys.get(config, MEMBER_KEYS[name], None) is not None}
  configs = []
  for k in range(k_count):
    member = copy.deepcopy(config)
    with member.unlocked():
      for name, column in columns.items():
        config_keys.set_existing(member, MEMBER_KEYS[name], column[k])
      if k_count >= 2:
        if int(member.augment.crop_length_seed) < 0:
          member.augment.crop_length_seed = int(config.seed)
        if config.members.data_order == 'shared' and int(member.data.order_seed) < 0:
          member.data.order_seed = int(config.seed)
      for name in MEMBER_KEYS:
        member.members[name] = ()
      member.members.count = 1
    configs.append(member)
  return configs


def config_of(config: ml_collections.ConfigDict, member: int | None = None) -> ml_collections.ConfigDict:
  """The plain config of `member` (K = 1: member 0 is the config itself with its member values applied).

  Raises ValueError for a member that is not in 0..K-1, or None for K >= 2.
  """
  k_count = count(config)
  if member is None:
    if k_count >= 2:
      raise ValueError(f'the run has {k_count} members (config.members.count); choose one with member=0..'
                       f'{k_count - 1}')
    member = 0
  if not 0 <= member < k_count:
    raise ValueError(f'member={member} is not a member of this run (config.members.count={k_count}: members '
                     f'0..{k_count - 1})')
  return member_configs(config)[member] if 'members' in config else config


def shape_differences(configs: Sequence[ml_collections.ConfigDict]) -> list[str]:
  """The shape-defining keys (`SHAPE_KEYS`) on which `configs` disagree, one 'KEY: v0, v1, ...' per key."""
  flat = [traverse_util.flatten_dict(json_of(c), sep='.') for c in configs]
  keys = sorted(set().union(*flat))
  problems = []
  for key in keys:
    if not any(key == s or (s.endswith('.') and key.startswith(s)) for s in SHAPE_KEYS):
      continue
    column = [f.get(key) for f in flat]
    if any(v != column[0] for v in column):
      problems.append(f'config.{key}: {", ".join(repr(v) for v in column)}')
  return problems


def stack_configs(configs: Sequence[ml_collections.ConfigDict]) -> ml_collections.ConfigDict:
  """One member-run config whose member k is `configs[k]` (plain configs, e.g. a sweep's grid).

  The configs may differ only in `MEMBER_KEYS`; raises ValueError naming each key they differ in
  otherwise (shape-defining keys first: members share every shape).
  """
  if not configs:
    raise ValueError('no member configs given: a member run needs at least one member')
  shapes = shape_differences(configs)
  if shapes:
    raise ValueError('members must share every shape-defining key; they differ in:\n  ' + '\n  '.join(shapes))
  member_paths = set(MEMBER_KEYS.values())
  flat = [traverse_util.flatten_dict(json_of(c), sep='.') for c in configs]
  other = [key for key in sorted(set().union(*flat)) if key not in member_paths and not key.startswith('members.')
           and any(f.get(key) != flat[0].get(key) for f in flat)]
  if other:
    raise ValueError('members may differ only in ' + ', '.join(f'config.{p}' for p in MEMBER_KEYS.values())
                     + '; they differ in ' + ', '.join(f'config.{k}' for k in other))
  stacked = copy.deepcopy(configs[0])
  with stacked.unlocked():
    stacked.members.count = len(configs)
    for name, path in MEMBER_KEYS.items():
      column = [config_keys.get(c, path, None) for c in configs]
      stacked.members[name] = tuple(column) if column[0] is not None and len(set(column)) > 1 else ()
    stacked.seed = int(configs[0].seed)
    if all(int(c.seed) == int(configs[0].seed) + k for k, c in enumerate(configs)):
      stacked.members.seed = ()  # config.seed + k, the default
  return stacked


def json_of(config: ml_collections.ConfigDict) -> dict:
  return config_keys.to_json(config)


# ----------------------------------------------------------------------------------------------- the state


@flax.struct.dataclass
class MemberState:
  """The train state of a member run: `state` is the method's state with a leading member axis K;
  `alive[k]` is False once member k's step produced a non-finite value (its state is frozen since)."""
  state: PyTree
  alive: jax.Array


def select(state: MemberState, member: int) -> PyTree:
  """Member `member`'s train state (the method's state, without the member axis)."""
  return jax.tree.map(lambda leaf: leaf[member], state.state)


def stack_states(states: Sequence[PyTree]) -> MemberState:
  """A `MemberState` holding `states` (equal structures) as members 0..K-1, all alive."""
  stacked = jax.tree.map(lambda *leaves: np.stack([np.asarray(x) for x in leaves]), *states)
  return MemberState(state=stacked, alive=np.ones((len(states),), bool))


def hyperparameters(configs: Sequence[ml_collections.ConfigDict]) -> dict[str, np.ndarray]:
  """The traced member values of `configs` (`TRACED` names the config has), each `(K,)` in JAX's float
  dtype (float64 with 64-bit mode on)."""
  dtype = jnp.result_type(float)
  out = {}
  for name in TRACED:
    column = [config_keys.get(c, MEMBER_KEYS[name], None) for c in configs]
    if column[0] is not None:
      out[name] = np.asarray(column, dtype)
  return out


def traced_config(config: ml_collections.ConfigDict, hyper: dict[str, jax.Array]) -> ml_collections.ConfigDict:
  """A copy of `config` whose member keys hold `hyper`'s (traced) values, for building a step inside a trace.

  Not type-safe (a config field cannot otherwise hold a tracer); its values were checked before tracing.
  """
  traced = ml_collections.ConfigDict(config.to_dict(), type_safe=False)
  for name, value in hyper.items():
    config_keys.set_existing(traced, MEMBER_KEYS[name], value)
  return traced


def all_finite(tree: PyTree) -> jax.Array:
  """True when no floating-point leaf of `tree` holds a NaN or an infinity (a traced scalar)."""
  checks = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(checks)) if checks else jnp.bool_(True)


def guarded(step: Callable[[PyTree, PyTree], tuple[PyTree, dict]]
            ) -> Callable[[PyTree, jax.Array, PyTree], tuple[PyTree, jax.Array, dict]]:
  """`(state, alive, batch) -> (state, alive, metrics)`: `step`, unless the member is not alive or the step
  produced a non-finite loss or state, in which case the member keeps its state and is (from now) dead."""

  def run(state, alive, batch):
    new_state, metrics = step(state, batch)
    ok = alive & jnp.isfinite(metrics['loss']) & all_finite(new_state)
    kept = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_state, state)
    return kept, ok, metrics

  return run


def per_device_step(config: ml_collections.ConfigDict, method: Any, steps_per_epoch: int, num_steps: int,
                    batch_per_member: bool) -> Callable:
  """The per-device step of a member run, for `parallel.member_parallel`:
  `(MemberState, hyper, batch, crop_lengths) -> (MemberState, metrics)`, metrics with a member axis.

  Each member runs `method`'s own step, built inside `jax.vmap` from `config` with its member values
  `hyper` (traced scalars, `hyperparameters`) in place (`traced_config`), and `guarded`: a member whose step
  is not finite keeps its state and is dead from then on (`metrics['alive']`). `batch` is shared by all
  members, or with `batch_per_member` has a leading member axis.
  """
  from ssl_jax import optim, parallel  # pylint: disable=g-import-not-at-top
  from ssl_jax.methods import common  # pylint: disable=g-import-not-at-top
  networks = method.create_networks(config, bn_axis_name=parallel.AXIS)

  def one_member(state, hyper, batch, crop_lengths):
    traced = traced_config(config, hyper)
    lr = optim.learning_rate_schedule(traced.optim, batch_size=config.batch_size,
                                      steps_per_epoch=steps_per_epoch, total_steps=num_steps)
    momentum = None
    if hasattr(method, 'momentum_schedule'):  # MoCo v2 and v3: the key encoder's EMA momentum
      momentum = method.momentum_schedule(traced.moco.momentum, num_steps, config.moco.momentum_cosine)
    tx = optim.create_optimizer(traced.optim, lr)
    train_step = method.make_train_step(traced, networks, tx, common.Schedules(lr, momentum),
                                        axis_name=parallel.AXIS)
    return train_step(state, batch, crop_lengths)

  def per_device(state, hyper, batch, crop_lengths):
    def one(member_state, alive, member_hyper, member_batch):
      run = guarded(lambda s, b: one_member(s, member_hyper, b, crop_lengths))
      return run(member_state, alive, member_batch)

    new, alive, metrics = jax.vmap(one, in_axes=(0, 0, 0, 0 if batch_per_member else None))(
        state.state, state.alive, hyper, batch)
    return MemberState(state=new, alive=alive), dict(metrics, alive=alive)

  return per_device
