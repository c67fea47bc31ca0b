"""Instance discrimination with a memory bank (Wu et al. 2018): one encoder + projection head, and a bank
of one embedding per training example whose rows are the positives and the negatives.

State beyond SimCLR's: `bank`, one unit-norm row per example of the train split, `(num_examples,
output_dim)`, replicated on every device; row i belongs to the example the pipeline numbers i
(`batch['index']`, its position in the split). It starts as random unit vectors.

One step (one view per example, as Wu et al.):
  1. v = head(encoder(view a)) for the local batch, BatchNorm over the global batch;
  2. per query, K bank rows of other examples drawn uniformly with replacement (K =
     `config.memory_bank.num_negatives`, capped at num_examples - 1), drawn for the global batch from the
     step's key (`common.step_key`), each device taking its rows;
  3. loss = InfoNCE over [v·m_i, v·m_j1, ..., v·m_jK] / τ, the positive the query's own bank row (written
     at earlier steps), the mean over the global batch; SGD on the encoder and head;
  4. m_i <- normalize(μ m_i + (1 - μ) v_i) for the global batch's examples, μ = `config.memory_bank.momentum`
     (Wu et al.: 0.5): every device gathers all devices' indices and embeddings and updates its replica
     alike. An example twice in one global batch (a batch that straddles two epochs) moves its row towards
     the mean of its embeddings, whatever their order (`ssl_jax.losses.banks`).
The bank is part of the checkpoint, so a resumed run continues bit-identically.
"""

from typing import Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from ssl_jax import augment, models
from ssl_jax.data import real_files, simulate, validate
from ssl_jax.losses import banks, common as loss_common, discrimination
from ssl_jax.methods import common

VIEWS_PER_EXAMPLE = 1  # views encoded per example and step (the other methods: 2)


@flax.struct.dataclass
class MemoryBankState(common.TrainState):
  bank: jax.Array  # (num_examples, output_dim), unit-norm rows; row i: the example with batch['index'] == i


def num_train_examples(data_config: ml_collections.ConfigDict) -> int:
  """The train split's example count, the bank's rows, without building the dataset.

  Simulated: `examples_per_class` per AoA class. Real: the rows of `train.h5` (its structure is checked at
  `data_config.length`; ValueError names the file and the problem). The `aoam` builder holds the same count.
  """
  if data_config.source == 'simulated':
    return simulate.num_split_examples(int(data_config.examples_per_class))
  path = real_files.file_paths(data_config.manual_dir)['train']
  with validate.open_file(path) as f:
    return validate.check_structure(path, f, data_config.length).num_examples


def num_negatives(config: ml_collections.ConfigDict, num_examples: int) -> int:
  """K: `config.memory_bank.num_negatives`, capped at the other examples' count `num_examples - 1`."""
  if num_examples < 2:
    raise ValueError(f'the memory bank needs at least 2 train examples (a negative is another example); the '
                     f'train split of config.data has {num_examples}.')
  return min(int(config.memory_bank.num_negatives), num_examples - 1)


def create_networks(config: ml_collections.ConfigDict, bn_axis_name: str | None) -> common.Networks:
  return common.Networks(encoder=models.create_encoder(config.model, bn_axis_name=bn_axis_name),
                         head=models.create_head(config.model, bn_axis_name=bn_axis_name))


def init_state(config: ml_collections.ConfigDict, networks: common.Networks,
               tx: optax.GradientTransformation, rng: jax.Array) -> MemoryBankState:
  init_key, bank_key, run_key = jax.random.split(rng, 3)
  params, batch_stats = common.init_variables(networks, init_key, config.data.length)
  bank = banks.init_bank(bank_key, num_train_examples(config.data), int(config.model.output_dim))
  return MemoryBankState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                         opt_state=tx.init(params), rng=run_key, bank=bank)


def _similarities(v: jax.Array, bank: jax.Array, indices: jax.Array,
                  axis_name: str | None) -> tuple[jax.Array, jax.Array]:
  """Collapse monitor over the global batch (no gradient): the mean cosine of the queries to their own bank
  rows, and to all other rows (the expectation of the sampled negatives' cosine)."""
  u = loss_common.l2_normalize(jax.lax.stop_gradient(v).astype(bank.dtype))
  own = jnp.sum(u * bank[indices], axis=1)
  others = (u @ jnp.sum(bank, axis=0) - own) / (bank.shape[0] - 1)
  pos, neg, count = jnp.sum(own), jnp.sum(others), own.shape[0]
  if axis_name is not None:
    pos, neg = jax.lax.psum((pos, neg), axis_name)
    count = count * jax.lax.axis_size(axis_name)
  return pos / count, neg / count


def _instance_accuracy(v: jax.Array, bank: jax.Array, indices: jax.Array, negatives: jax.Array,
                       axis_name: str | None) -> jax.Array:
  """The fraction of the global batch's queries whose own bank row is the top-1 among it and their K sampled
  rows (`ssl_jax.losses.discrimination`), scored as the loss scores them (one matmul against the bank)."""
  u = loss_common.l2_normalize(jax.lax.stop_gradient(v).astype(bank.dtype))
  similarity = u @ bank.T
  positive = jnp.take_along_axis(similarity, indices[:, None], axis=1)[:, 0]
  negative = jnp.take_along_axis(similarity, negatives.astype(jnp.int32), axis=1)
  return discrimination.positive_top1(positive, negative, axis_name)


def make_train_step(config: ml_collections.ConfigDict, networks: common.Networks,
                    tx: optax.GradientTransformation, schedules: common.Schedules,
                    axis_name: str | None) -> Callable[[MemoryBankState, dict], tuple[MemoryBankState, dict]]:
  """The per-device step `(state, batch) -> (state, metrics)`; `batch['iq']` is `(local_batch, time, 8)`,
  `batch['index']` `(local_batch,)` the examples' bank rows."""
  policy = augment.AugmentPolicy.from_config(config.augment)
  temperature, momentum = config.temperature, float(config.memory_bank.momentum)

  def train_step(state: MemoryBankState, batch: dict,
                 crop_lengths: common.CropLengths) -> tuple[MemoryBankState, dict]:
    encode_as = common.view_encoder(batch['iq'], common.view_keys(state.rng, state.step), crop_lengths,
                                    policy, axis_name)
    if 'index' not in batch:
      raise ValueError("the memory_bank method needs batch['index'], each example's bank row (the input "
                       f'pipeline yields it); the batch has {sorted(batch)}')
    indices = batch['index'].astype(jnp.int32)
    num_examples = state.bank.shape[0]
    negatives = banks.sample_bank_negatives(
        common.step_key(state.rng, state.step, 'memory_bank'), indices, num_examples=num_examples,
        num_negatives=num_negatives(config, num_examples), axis_name=axis_name)

    def loss_fn(params):
      v, stats = encode_as(common.make_encode(networks, params), state.batch_stats, 'a')
      loss = banks.memory_bank_info_nce(v, indices, negatives, state.bank, temperature=temperature,
                                        axis_name=axis_name)
      return loss, (stats, v)

    (loss, (batch_stats, v)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    params, opt_state, grad_norm = common.apply_gradients(state, grads, tx, axis_name)
    positive_similarity, negative_similarity = _similarities(v, state.bank, indices, axis_name)
    bank = banks.update_memory_bank(state.bank, indices, v, momentum=momentum, axis_name=axis_name)
    metrics = common.step_metrics(
        loss=loss,  # already the global batch's (the losses' convention)
        step=state.step, schedules=schedules, grad_norm=grad_norm, params=params,
        positive_similarity=positive_similarity, negative_similarity=negative_similarity,
        embeddings=v, axis_name=axis_name,
        instance_accuracy=_instance_accuracy(v, state.bank, indices, negatives, axis_name))
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state,
                              bank=bank)
    return new_state, metrics

  return train_step
