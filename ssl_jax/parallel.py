"""One device mesh for the whole program, and the launchers for per-device train steps.

Per-device code is written with named-axis collectives over `AXIS` ('batch'); `data_parallel` launches it
with `jax.shard_map` under `jax.jit` (state replicated, the batch sharded on its leading axis). Multi-host: `initialize_distributed` starts JAX's own distributed runtime; every process
then feeds its own shard of the global batch (`shard_batch`).

A member run (`ssl_jax.members`) has a 2-D mesh, `MEMBER_AXIS` x `AXIS` (`create_member_mesh`): the members
are split over the first axis, each member's batch over the second; `member_parallel` launches a per-device
step that takes the device's members (a leading axis) and reduces over `AXIS` only.
"""

import functools
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = 'batch'
MEMBER_AXIS = 'member'

PyTree = Any
StepFn = Callable[[PyTree, PyTree], tuple[PyTree, PyTree]]


def initialize_distributed(distributed_config: ml_collections.ConfigDict) -> None:
  """Starts JAX's distributed runtime when `num_processes > 1` (coordinator, count, id from the config)."""
  num_processes = int(distributed_config.num_processes)
  if num_processes <= 1:
    return
  if not distributed_config.coordinator_address:
    raise ValueError('config.distributed.coordinator_address is empty but num_processes='
                     f'{num_processes}; give host:port of process 0.')
  process_id = int(distributed_config.process_id)
  if not 0 <= process_id < num_processes:
    raise ValueError(f'config.distributed.process_id={process_id} is outside [0, {num_processes}).')
  # Cross-process collectives of the CPU backend go through gloo (harmless where devices are GPUs/TPUs).
  # Must not query the backend here: initialize() has to run before JAX starts one.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=distributed_config.coordinator_address,
                             num_processes=num_processes, process_id=process_id)


def create_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh over all devices (of all processes), axis name `AXIS`."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (AXIS,))


def check_batch_divides(batch_size: int, mesh: Mesh) -> None:
  """The global batch must split evenly over the devices (of `AXIS`) and the processes."""
  num_devices = mesh.shape[AXIS]
  if batch_size % num_devices:
    raise ValueError(f'config.batch_size={batch_size} does not divide by the device count {num_devices} '
                     f'(over {jax.process_count()} process(es)); use a multiple of {num_devices}.')


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
  """Places a host pytree (identical on every process) replicated on every device of the mesh."""
  sharding = NamedSharding(mesh, P())

  def put(leaf):
    leaf = np.asarray(leaf)
    return jax.make_array_from_callback(leaf.shape, sharding, lambda index: leaf[index])

  return jax.tree.map(put, tree)


def shard_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's slice of the global batch -> global arrays sharded on their leading axis."""
  sharding = NamedSharding(mesh, P(AXIS))
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}


def data_parallel(per_device_step: StepFn, mesh: Mesh, *, donate_state: bool = True) -> StepFn:
  """`jit(shard_map(step))`: state replicated in and out, batch sharded over `AXIS`, metrics replicated.

  The returned `run(state, batch, crop_lengths)` takes the views' crop lengths as a static argument:
  one compiled program per distinct value. `check_vma=False` gives the per-device gradient semantics of
  `pmap` (the step averages gradients with `pmean`; see `ssl_jax/losses/common.py`).
  """

  def run(state: PyTree, batch: PyTree, crop_lengths: tuple[int, int]) -> tuple[PyTree, PyTree]:
    step = functools.partial(per_device_step, crop_lengths=crop_lengths)
    return jax.shard_map(step, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=(P(), P()),
                         check_vma=False)(state, batch)

  return jax.jit(run, static_argnames=('crop_lengths',), donate_argnums=(0,) if donate_state else ())


def create_member_mesh(member_devices: int, devices: list[jax.Device] | None = None) -> Mesh:
  """A 2-D mesh (`MEMBER_AXIS`, `AXIS`): `member_devices` rows of devices, each holding some members and
  splitting their batch over its row. Raises ValueError when `member_devices` does not divide the device count.
  """
  devices = jax.devices() if devices is None else devices
  if member_devices < 1 or len(devices) % member_devices:
    raise ValueError(f'config.members.devices={member_devices} does not divide the device count {len(devices)}: '
                     'the member axis of the mesh takes that many rows of devices.')
  return Mesh(np.asarray(devices).reshape(member_devices, len(devices) // member_devices), (MEMBER_AXIS, AXIS))


def batch_devices(mesh: Mesh) -> int:
  """The devices along `AXIS` (over which one member's batch is split)."""
  return mesh.shape[AXIS]


def place_members(tree: PyTree, mesh: Mesh) -> PyTree:
  """Places a host pytree whose leaves have a leading member axis, split over `MEMBER_AXIS`."""
  sharding = NamedSharding(mesh, P(MEMBER_AXIS))

  def put(leaf):
    leaf = np.asarray(leaf)
    return jax.make_array_from_callback(leaf.shape, sharding, lambda index: leaf[index])

  return jax.tree.map(put, tree)


def shard_member_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Batches with a leading member axis `(K, batch, ...)`: members over `MEMBER_AXIS`, examples over `AXIS`."""
  sharding = NamedSharding(mesh, P(MEMBER_AXIS, AXIS))
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}


def member_parallel(per_device_step: Callable, mesh: Mesh, *, batch_per_member: bool,
                    donate_state: bool = True) -> Callable:
  """`jit(shard_map(step))` over a member mesh: `run(state, hyper, batch, crop_lengths) -> (state, metrics)`.

  `state`, `hyper` (and the outputs) carry a leading member axis split over `MEMBER_AXIS`; `batch` is shared
  by all members (split over `AXIS`), or with `batch_per_member` has its own member axis. Crop lengths are
  a static argument as in `data_parallel`.
  """
  batch_spec = P(MEMBER_AXIS, AXIS) if batch_per_member else P(AXIS)

  def run(state, hyper, batch, crop_lengths):
    step = functools.partial(per_device_step, crop_lengths=crop_lengths)
    return jax.shard_map(step, mesh=mesh, in_specs=(P(MEMBER_AXIS), P(MEMBER_AXIS), batch_spec),
                         out_specs=(P(MEMBER_AXIS), P(MEMBER_AXIS)), check_vma=False)(state, hyper, batch)

  return jax.jit(run, static_argnames=('crop_lengths',), donate_argnums=(0,) if donate_state else ())
