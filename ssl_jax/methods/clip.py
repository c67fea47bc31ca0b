"""CLIP-style cross-representation pretraining: an IQ tower and a spectrum tower, CLIP's symmetric InfoNCE.

Two towers, each an encoder (ShuffleNetV2-0.5, as every method) and a projection head, see two
representations of one example:
  * the IQ tower reads the time-domain IQ, as every other method's encoder;
  * the spectrum tower reads its spectrum (`spectrum`): per antenna, the centred, orthonormal DFT of the
    complex samples over the view's time axis, in the IQ's layout (Re, Im per antenna: 8 channels).
Why these two representations: docs/design.md ("SwAV and CLIP").

The spectrum tower's encoder is a `SpectrumEncoder`: the ShuffleNet with the DFT in front, so it too maps
IQ `(batch, time, 8)` to an embedding, and either encoder can be probed on IQ examples.

One step: view a (MTC + AD + IQ augmentations, `common.view_encoder`) goes through the IQ tower, view b
through the spectrum tower, each with BatchNorm statistics over the global batch of its view; with
`augment.enabled=False` both are the example itself (cross-representation only). The loss is CLIP's:
logits u_i . v_j / τ between the unit IQ embeddings u and spectrum embeddings v of the global batch, the
mean of the cross-entropy over rows (IQ -> spectrum) and over columns (spectrum -> IQ), both towers
differentiated through both (`contrastive.symmetric_info_nce(u, v, u, v, key_gradient=True) / 2`). The
temperature is fixed, `config.temperature` (not learned).

Storage (checkpoints): `params['encoder']`, `params['head']` are the IQ tower, where every method keeps its
encoder, so `ssl_jax.encoders.load_encoder` and `ssl_jax.evaluate` read the IQ encoder;
`params['spectrum']` = {'encoder', 'head'} the spectrum tower (`batch_stats` alike). `ssl_jax.encoders.load_clip_tower(workdir,
representation='spectrum')` loads the spectrum encoder instead.
"""

import dataclasses
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from ssl_jax import augment, models
from ssl_jax.data import spec
from ssl_jax.losses import contrastive, discrimination
from ssl_jax.methods import common

SPECTRUM = 'spectrum'  # the key of the spectrum tower in `params` and `batch_stats`
REPRESENTATIONS = ('iq', 'spectrum')  # the towers, by the representation they read; 'iq' is the default

TrainState = common.TrainState


def spectrum(x: jax.Array) -> jax.Array:
  """`(batch, time, 8)` IQ -> its spectrum in the same layout: per antenna a, Z_a(f) = DFT(z_a)(f) / sqrt(time),
  z_a = I_a + jQ_a, frequencies -time/2 .. time/2 - 1 in order (DC at index time // 2), Re and Im of Z_a in
  channels 2a and 2a + 1. Linear, unitary (energy kept), in x's real dtype."""
  parts = x.reshape(x.shape[:2] + (spec.NUM_ANTENNAS, spec.NUM_IQ))
  z = jax.lax.complex(parts[..., 0], parts[..., 1])
  transform = jnp.fft.fftshift(jnp.fft.fft(z, axis=1, norm='ortho'), axes=1)
  return jnp.stack([transform.real, transform.imag], axis=-1).reshape(x.shape).astype(x.dtype)


class SpectrumEncoder(models.ShuffleNetV2Encoder):
  """The ShuffleNetV2 encoder on the spectrum of its IQ input: `(batch, time, 8)` IQ -> `(batch, 1024)`.

  Its parameters are the ShuffleNet's (the same names and shapes); only the input is transformed.
  """

  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    return super().__call__(spectrum(x), train)


@dataclasses.dataclass(frozen=True)
class ClipNetworks(common.Networks):
  """`encoder` / `head`: the IQ tower; `spectrum_encoder` / `spectrum_head`: the spectrum tower."""
  spectrum_encoder: nn.Module | None = None
  spectrum_head: nn.Module | None = None

  def spectrum_tower(self) -> common.Networks:
    return common.Networks(encoder=self.spectrum_encoder, head=self.spectrum_head)


def create_networks(config: ml_collections.ConfigDict, bn_axis_name: str | None) -> ClipNetworks:
  iq_encoder = models.create_encoder(config.model, bn_axis_name=bn_axis_name)
  settings = {f.name: getattr(iq_encoder, f.name) for f in dataclasses.fields(iq_encoder)
              if f.name not in ('parent', 'name')}
  return ClipNetworks(encoder=iq_encoder, head=models.create_head(config.model, bn_axis_name=bn_axis_name),
                      spectrum_encoder=SpectrumEncoder(**settings),
                      spectrum_head=models.create_head(config.model, bn_axis_name=bn_axis_name))


def init_state(config: ml_collections.ConfigDict, networks: ClipNetworks,
               tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
  iq_key, spectrum_key, run_key = jax.random.split(rng, 3)
  params, batch_stats = common.init_variables(networks, iq_key, config.data.length)
  params[SPECTRUM], batch_stats[SPECTRUM] = common.init_variables(networks.spectrum_tower(), spectrum_key,
                                                                  config.data.length)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=tx.init(params), rng=run_key)


def make_train_step(config: ml_collections.ConfigDict, networks: ClipNetworks,
                    tx: optax.GradientTransformation, schedules: common.Schedules,
                    axis_name: str | None) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """The per-device step `(state, batch) -> (state, metrics)`; `batch['iq']` is `(local_batch, time, 8)`."""
  policy = augment.AugmentPolicy.from_config(config.augment)
  temperature = config.temperature
  spectrum_tower = networks.spectrum_tower()

  def train_step(state: TrainState, batch: dict, crop_lengths: common.CropLengths) -> tuple[TrainState, dict]:
    encode_as = common.view_encoder(batch['iq'], common.view_keys(state.rng, state.step), crop_lengths,
                                    policy, axis_name)

    def loss_fn(params):
      z_iq, stats = encode_as(common.make_encode(networks, params), state.batch_stats, 'a')
      z_spectrum, spectrum_stats = encode_as(common.make_encode(spectrum_tower, params[SPECTRUM]),
                                             state.batch_stats[SPECTRUM], 'b')
      loss = 0.5 * contrastive.symmetric_info_nce(z_iq, z_spectrum, z_iq, z_spectrum, temperature=temperature,
                                                  axis_name=axis_name, key_gradient=True)
      return loss, (dict(stats, **{SPECTRUM: spectrum_stats}), z_iq, z_spectrum)

    (loss, (batch_stats, z_iq, z_spectrum)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    params, opt_state, grad_norm = common.apply_gradients(state, grads, tx, axis_name)
    similarity = contrastive.similarity_stats(z_iq, z_spectrum, axis_name=axis_name)
    metrics = common.step_metrics(
        loss=loss,  # the global batch's: the loss gathers every device's embeddings
        step=state.step, schedules=schedules, grad_norm=grad_norm, params=params,
        positive_similarity=similarity['pos_cosine'], negative_similarity=similarity['neg_cosine'],
        embeddings=z_iq, axis_name=axis_name,
        embedding_std_spectrum=common.embedding_std(z_spectrum, axis_name),
        instance_accuracy=0.5 * (discrimination.cross_top1(z_iq, z_spectrum, axis_name) +
                                 discrimination.cross_top1(z_spectrum, z_iq, axis_name)))
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state)
    return new_state, metrics

  return train_step


def tower_encoder(networks: ClipNetworks, params: common.PyTree, batch_stats: common.PyTree,
                  representation: str = 'iq') -> tuple[nn.Module, dict]:
  """(encoder module, {'params', 'batch_stats'}) of one tower; either module maps IQ to embeddings."""
  if representation == 'iq':
    return networks.encoder, {'params': params['encoder'], 'batch_stats': batch_stats['encoder']}
  if representation == 'spectrum':
    return networks.spectrum_encoder, {'params': params[SPECTRUM]['encoder'],
                                       'batch_stats': batch_stats[SPECTRUM]['encoder']}
  raise ValueError(f'representation must be one of {REPRESENTATIONS}; got {representation!r}')
