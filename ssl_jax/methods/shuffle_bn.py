"""Shuffle-BN for MoCo v2 (`config.moco.key_bn = 'shuffle'`): ghost BatchNorm groups, keys shuffled among them.

A BatchNorm in training mode couples the examples of the batch it normalises: each output depends on the
batch's statistics. MoCo v2 compares a query with its positive key (this step's batch) and with a queue
of keys from earlier batches, so whatever the query and the positive share *through the statistics* is a
cue that the queue's keys lack: the batch's signature (`moco.py`'s docstring). MoCo (He et al. 2020, sec.
3.3) breaks it with Shuffle-BN: each GPU normalises its own sub-batch, and the keys' sub-batches are drawn
from a permutation of the global batch, so that a query and its positive key are normalised with the
statistics of different sets of examples.

Here the sub-batches are `config.moco.bn_groups` = G groups of the global batch of N examples (N / G
each), whatever the device count:
- `grouped(encode, G, axis_name)`: the query side. Group g is rows g N/G ... (g + 1) N/G - 1 of the global
  batch in its own order (MoCo's per-GPU query batches, unshuffled). Each device holds G / devices whole
  groups and encodes them as separate batches (`jax.vmap` over the groups: every batch-coupled layer of the
  network, BatchNorm and the head's `projection_norm='batch'`, sees its group alone). The networks are built
  without a cross-device BatchNorm axis (`moco.create_networks`), so nothing is averaged over devices in
  the forward pass.
- `shuffled(encode, G, key, axis_name)`: the key side, MoCo's `_batch_shuffle_ddp` / `_batch_unshuffle_ddp`.
  A permutation P of the N rows is drawn from `key` (the same on every device); group g is the examples
  P[g N/G ... (g + 1) N/G - 1]. Each device gathers the global batch, encodes its G / devices groups, the
  keys are gathered and put back in the original order (row i: example i's key), and each device keeps its
  own rows. With one device it is the same computation without the gathers.

Running statistics: each group gives its own batch mean and variance; the running averages move by the
mean over all G groups (over devices too), i.e. `momentum * running + (1 - momentum) * mean_g(stat_g)`, a
replicated value. (MoCo's DDP keeps GPU 0's buffers, one group's statistics; the mean is the same update
with less noise.) Gradients flow through each group's statistics only, so with several devices nothing but
the parameter gradients (`common.apply_gradients`) crosses devices on the query side.

A group count that is not a multiple of the device count is refused when the step is traced (each device
must hold whole groups); `config_checks` refuses one that does not split the batch into groups of >= 2.
Small groups are legal but degenerate where the time axis is short: at the encoder's last stage (length
1 for a 32-sample crop) a group of 2 normalises every channel to +-1 and passes no gradient back through
its statistics (the computed value is rounding noise: two float64 programs of one smoke step, a member run
and its single run, parted by up to 1e-6 within two steps with groups of 2, agreed to ~1e-15 with groups
of 4). MoCo's groups hold 32 (8 GPUs, batch 256), as the default's here.
"""

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from ssl_jax.losses import common as loss_common

KEY_BN_MODES = ('global', 'shuffle')  # config.moco.key_bn
DEFAULT_KEY_BN = 'global'  # also what a config without the key (written before it existed) trains
DEFAULT_BN_GROUPS = 8  # MoCo's 8 GPUs

Encode = Callable[..., tuple[jax.Array, object]]  # `encode(batch_stats, view) -> (projection, new_batch_stats)`


def key_bn(config) -> str:
  """`config.moco.key_bn`, 'global' where the config has no such key; a value not in `KEY_BN_MODES` raises."""
  mode = config.moco.get('key_bn', DEFAULT_KEY_BN)
  if mode not in KEY_BN_MODES:
    raise ValueError(f'config.moco.key_bn must be one of {KEY_BN_MODES}, got {mode!r}')
  return mode


def groups_per_device(groups: int, axis_name: Optional[str]) -> int:
  """G / devices: the whole groups each device normalises (a ValueError names the key if they do not split)."""
  num_devices = 1 if axis_name is None else jax.lax.axis_size(axis_name)
  if groups < 1 or groups % num_devices:
    raise ValueError(f'config.moco.bn_groups={groups} must be a positive multiple of the device count '
                     f'{num_devices}: each device normalises whole groups of the batch')
  return groups // num_devices


def grouped(encode: Encode, groups: int, axis_name: Optional[str]) -> Encode:
  """`encode` with this device's rows split into its G / devices contiguous groups, each a batch of its own.

  `encode(batch_stats, view)`'s batch-coupled layers must not reduce over `axis_name` (networks built with
  `bn_axis_name=None`). The new running statistics are the mean of the groups' (pmean over `axis_name`).
  """

  def encode_grouped(batch_stats, view: jax.Array):
    local = groups_per_device(groups, axis_name)
    n = view.shape[0]
    if n % local:
      raise ValueError(f'config.moco.bn_groups={groups}: the {n} rows of a device do not split into {local} '
                       'equal groups')
    z, stats = jax.vmap(encode, in_axes=(None, 0))(batch_stats, view.reshape((local, n // local) + view.shape[1:]))
    stats = jax.tree.map(lambda s: jnp.mean(s, axis=0), stats)
    if axis_name is not None:
      stats = jax.lax.pmean(stats, axis_name)
    return z.reshape((n,) + z.shape[2:]), stats

  return encode_grouped


def permutation(key: jax.Array, n: int) -> jax.Array:
  """The permutation P of the global batch's n rows that `shuffled` draws from `key`: P[j] is the example at
  position j of the shuffled batch."""
  return jax.random.permutation(key, n)


def shuffled(encode: Encode, groups: int, key: jax.Array, axis_name: Optional[str]) -> Encode:
  """`encode` of the permuted global batch in G groups (`grouped`), its outputs un-permuted: this device's
  rows of the result are its own examples' outputs, in their order (module docstring)."""
  encode_grouped = grouped(encode, groups, axis_name)

  def encode_shuffled(batch_stats, view: jax.Array):
    n_local = view.shape[0]
    num_devices, offset = loss_common.shard_info(axis_name, n_local)
    order = permutation(key, n_local * num_devices)
    inverse = jnp.argsort(order)  # inverse[i]: the position of example i in the shuffled batch
    mine = jax.lax.dynamic_slice_in_dim(order, offset, n_local)
    z, stats = encode_grouped(batch_stats, jnp.take(loss_common.gather(view, axis_name), mine, axis=0))
    back = jax.lax.dynamic_slice_in_dim(inverse, offset, n_local)
    return jnp.take(loss_common.gather(z, axis_name), back, axis=0), stats

  return encode_shuffled
