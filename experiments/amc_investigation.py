"""Controlled experiments on why the encoder learns the simulated AMC task poorly (issue 20, item 2).

Trains an encoder + the AMC head (one linear layer) end to end on simulated examples, changing one
thing at a time (the data: --variant, --sim, --fixed_aoa, --length; the recipe: --optimizer, --lr,
--steps, --augment, --fresh; the model: --model, --encoder, --dw_kernel), and prints train / test
accuracy, the confusion matrix and accuracy by SNR. A logistic regression on hand-made features on the
same data is the reference (--feature_groups: by group of features). The defaults are the supervised
recipe before the investigation (AdamW, lr 1e-3), so that the logged commands reproduce; --task aoa
runs the AoA task instead; --random_init_probe trains nothing and scores the study's probe on the frozen
random-init encoder instead (the floor of the calibration).
Results and commands: experiments/results/amc_investigation.md.

  python experiments/amc_investigation.py --length 128 --train 3000 --test 1400 --steps 400 [--variant ...]
"""

import argparse
import dataclasses
import json
import time

import jax
import jax.numpy as jnp
import flax.linen as nn
import ml_collections
import numpy as np

from ssl_jax.data import aoam
from ssl_jax.data import simulate
from ssl_jax.evaluation import embeddings as embeddings_lib
from ssl_jax.evaluation import probe
from ssl_jax.evaluation import suite
from ssl_jax.evaluation import supervised
from ssl_jax.models import layers
from ssl_jax.models import shufflenet

VARIANTS = ('none', 'no_cfo', 'per_example', 'normalize', 'high_snr')


class PlainCNN(nn.Module):
  """A plain 1-D CNN (conv-BN-ReLU, max-pool), a reference against the ShuffleNet."""

  shufflenet_stem: bool = False  # conv k3 s2 (24) + BN + ReLU + max-pool k3 s2 first, as the ShuffleNet
  downsample: str = 'maxpool'  # 'maxpool' after the conv, or 'stride': the conv itself has stride 2
  pools: int = 3  # max-pools of stride 2 (3: stride 8; 5: stride 32 as the ShuffleNet, two more layers)

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.shufflenet_stem:
      x = nn.Conv(24, (3,), strides=(2,), padding=((1, 1),), use_bias=False)(x)
      x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
      x = layers.max_pool1d(x, window=3, stride=2, padding=1)
    specs = ((32, 7), (64, 5), (128, 5)) + ((128, 3),) * (self.pools - 2)
    for index, (width, kernel) in enumerate(specs):
      strided = self.downsample == 'stride' and index < self.pools
      x = nn.Conv(width, (kernel,), strides=(2 if strided else 1,), use_bias=False)(x)
      x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
      if index < self.pools and not strided:
        x = nn.max_pool(x, (2,), (2,))
    return jnp.mean(x, axis=1)


class StemVariant(nn.Module):
  """ShuffleNetV2Encoder with the stem's stride and max-pool as options (an ablation)."""
  stem_stride: int = 2
  stem_pool: bool = True
  stem_kernel: int = 3

  @nn.compact
  def __call__(self, x, train: bool = False):
    channels = shufflenet.STAGE_OUT_CHANNELS
    x = nn.Conv(channels[0], (self.stem_kernel,), strides=(self.stem_stride,),
                padding=((self.stem_kernel // 2, self.stem_kernel // 2),), use_bias=False)(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
    if self.stem_pool:
      x = layers.max_pool1d(x, window=3, stride=2, padding=1)
    for stage_index, (repeats, out_channels) in enumerate(zip(shufflenet.STAGE_REPEATS, channels[1:4])):
      for unit_index in range(repeats):
        x = shufflenet.ShuffleUnit(out_channels, stride=2 if unit_index == 0 else 1)(x, train)
    x = nn.Conv(channels[4], (1,), use_bias=False)(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
    return jnp.mean(x, axis=1)


def rotate_phase(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Multiplies every antenna's complex signal of each example by one random exp(j psi)."""
  psi = rng.uniform(0.0, 2 * np.pi, (x.shape[0], 1, 1))
  i, q = x[..., 0::2], x[..., 1::2]
  out = np.empty_like(x)
  out[..., 0::2] = i * np.cos(psi) - q * np.sin(psi)
  out[..., 1::2] = i * np.sin(psi) + q * np.cos(psi)
  return out


STUDY_CROPS = (32, 64, 128, 256, 512)  # MTC's crop set (docs/study.md)


def random_crop(x: np.ndarray, rng: np.random.Generator, crops=STUDY_CROPS) -> np.ndarray:
  """MTC on a batch: one crop length per batch from `crops` (uniform), one uniform start per example."""
  length = int(rng.choice(crops))
  if length >= x.shape[1]:
    return x
  starts = rng.integers(0, x.shape[1] - length + 1, x.shape[0])
  return x[np.arange(x.shape[0])[:, None], starts[:, None] + np.arange(length)[None]]


def _classifier(encoder, settings, seed, example_shape):
  """(model, tx, params, batch_stats, opt_state, schedule): supervised.train_supervised's AMC classifier and
  optimiser, initialised with `seed`, and its learning-rate schedule over `settings.max_steps`."""
  import optax
  model = supervised.Classifier(encoder, 7, 0)
  tx = supervised._optimizer(settings.optimizer, settings.weight_decay, settings.momentum)
  variables = model.init(jax.random.key(seed), jnp.zeros((2,) + tuple(example_shape), jnp.float32), train=False)
  schedule = optax.warmup_cosine_decay_schedule(0.0, settings.learning_rate, settings.warmup_steps,
                                                settings.max_steps)
  return model, tx, variables['params'], variables['batch_stats'], tx.init(variables['params']), schedule


def train_with_augment(encoder, x, y, settings, seed, augment):
  """supervised.train_supervised's loop with a per-batch augmentation."""
  model, tx, params, batch_stats, opt_state, schedule = _classifier(encoder, settings, seed, x.shape[1:])
  steps = settings.max_steps
  indices = supervised._index_stream(y.size, np.random.default_rng(seed))
  rng = np.random.default_rng(seed + 1)
  for step in range(steps):
    idx = np.fromiter(indices, np.int64, count=settings.batch_size)
    params, batch_stats, opt_state, loss = supervised._train_step(
        params, batch_stats, opt_state, augment(x[idx], rng), y[idx], jnp.float32(schedule(step)),
        model=model, tx=tx)
  return model, {'params': params, 'batch_stats': batch_stats}, {'num_steps': steps, 'final_loss': float(loss)}


def train_fresh(encoder, config, settings, seed, x_test, y_test, eval_every):
  """Trains on a fresh simulated batch every step (no example seen twice); prints test accuracy."""
  model, tx, params, batch_stats, opt_state, schedule = _classifier(encoder, settings, seed, x_test.shape[1:])
  steps = settings.max_steps
  rng = np.random.default_rng(seed + 77)
  for step in range(steps):
    aoa = rng.integers(0, simulate.NUM_AOA_CLASSES, settings.batch_size)
    modulation = rng.integers(0, simulate.NUM_MODULATIONS, settings.batch_size)
    x = aoam.to_model_layout(simulate.simulate_examples(rng, aoa, modulation, config))
    params, batch_stats, opt_state, loss = supervised._train_step(
        params, batch_stats, opt_state, x, modulation.astype(np.int32), jnp.float32(schedule(step)),
        model=model, tx=tx)
    if (step + 1) % eval_every == 0:
      pred = supervised.predict(model, {'params': params, 'batch_stats': batch_stats}, [x_test], batch_size=256)
      print(f'  step {step + 1}: loss {float(loss):.3f} test {np.mean(pred == y_test):.3f}', flush=True)
  return model, {'params': params, 'batch_stats': batch_stats}, {'num_steps': steps, 'final_loss': float(loss)}


def make_split(config: simulate.SimConfig, n: int, seed: int, first: int, fixed_aoa: int = -1):
  rng = np.random.default_rng(seed)
  aoa, modulation = simulate.label_schedule(first, n)
  if fixed_aoa >= 0:
    aoa = np.full_like(aoa, fixed_aoa)
  iq, info = simulate.simulate_examples(rng, aoa, modulation, config, return_info=True)
  info['aoa'] = aoa
  return iq, modulation, info


FEATURE_GROUPS = ('envelope', 'spectrum', 'phase')


def features(iq: np.ndarray, groups: tuple[str, ...] = FEATURE_GROUPS) -> np.ndarray:
  """Hand-made AMC features per example, averaged over the 4 antennas' complex signals z.

  envelope: E|z|^4, E|z|^6 of the power-normalised envelope; spectrum: the log power spectrum of z;
  phase: |E z^2|, |E z^4| (non-zero for real and square constellations) and the log spectrum of z^2.
  """
  z = iq[:, :, 0] + 1j * iq[:, :, 1]  # (n, 4, L)
  a2 = np.abs(z) ** 2
  a2 = a2 / np.mean(a2, axis=-1, keepdims=True)
  columns = []
  if 'envelope' in groups:
    columns.append(np.stack([np.mean(a2 ** k, axis=(1, 2)) for k in (2, 3)], 1))
  if 'phase' in groups:
    columns += [np.abs(np.mean(z ** 2, axis=-1)).mean(1, keepdims=True),
                np.abs(np.mean(z ** 4, axis=-1)).mean(1, keepdims=True)]
  if 'spectrum' in groups:
    ps = np.mean(np.abs(np.fft.fft(z, axis=-1)) ** 2, axis=1)
    columns.append(np.log(ps / ps.sum(-1, keepdims=True) + 1e-6))
  if 'phase' in groups:
    ps2 = np.mean(np.abs(np.fft.fft(z ** 2, axis=-1)) ** 2, axis=1)
    columns.append(np.log(ps2 / ps2.sum(-1, keepdims=True) + 1e-6))
  return np.concatenate(columns, axis=1)


def feature_accuracy(train_iq, train_y, test_iq, test_y, groups=FEATURE_GROUPS) -> tuple[float, np.ndarray]:
  """Test accuracy and per-class recall of a logistic regression on `features(groups)`."""
  from sklearn.linear_model import LogisticRegression
  from sklearn.preprocessing import StandardScaler
  scaler = StandardScaler().fit(features(train_iq, groups))
  model = LogisticRegression(max_iter=3000).fit(scaler.transform(features(train_iq, groups)), train_y)
  predicted = model.predict(scaler.transform(features(test_iq, groups)))
  recall = np.array([np.mean(predicted[test_y == c] == c) for c in range(simulate.NUM_MODULATIONS)])
  return float(np.mean(predicted == test_y)), recall


def random_init_probe_accuracy(encoder, x_train, y_train, x_test, y_test, task: str, config, seed: int) -> float:
  """Test accuracy of the study's probe head for `task` on the frozen random-init encoder's embeddings."""
  from configs import probe as probe_config
  protocol, task_spec = probe_config.get_config(), suite.TASKS[task]
  data_config = ml_collections.ConfigDict({'length': config.length})
  variables = suite.random_init_variables(encoder, data_config, seed)
  embed = lambda x: embeddings_lib.compute_embeddings(encoder, variables, [x], batch_size=protocol.embed_batch_size)
  predictions, _ = probe.train_and_predict(embed(x_train), y_train, embed(x_test), num_classes=task_spec.num_classes,
                                           settings=suite.probe_settings(protocol, task_spec), seed=seed)
  return float(np.mean(predictions == y_test))


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument('--length', type=int, default=128)
  parser.add_argument('--train', type=int, default=3000)
  parser.add_argument('--test', type=int, default=1400)
  parser.add_argument('--steps', type=int, default=400)
  parser.add_argument('--lr', type=float, default=1e-3)
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--weight_decay', type=float, default=1e-4)
  parser.add_argument('--variant', choices=VARIANTS, default='none')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--sim', default='{}', help='JSON dict of SimConfig overrides')
  parser.add_argument('--model', choices=('shufflenet', 'plain', 'stem'), default='shufflenet')
  parser.add_argument('--encoder', default='{}', help='JSON dict of ShuffleNetV2Encoder attributes')
  parser.add_argument('--fixed_aoa', type=int, default=-1, help='every example from this AoA class')
  parser.add_argument('--augment', choices=('none', 'phase', 'crop'), default='none',
                      help="phase: a random carrier phase per example; crop: the study's MTC per batch")
  parser.add_argument('--dw_kernel', type=int, default=3, help='depthwise kernel taps (odd)')
  parser.add_argument('--optimizer', choices=('adamw', 'sgd'), default='adamw',
                      help='sgd: momentum 0.9 with coupled weight decay (torch.optim.SGD)')
  parser.add_argument('--fresh', type=int, default=0, help='>0: a fresh batch every step, test every N steps')
  parser.add_argument('--task', choices=('amc', 'aoa'), default='amc',
                      help='aoa: the AoA task instead (225 classes, linear-ReLU-linear head of 512)')
  parser.add_argument('--feature_groups', action='store_true',
                      help='only the logistic regressions on each group of hand-made features, no encoder')
  parser.add_argument('--random_init_probe', action='store_true',
                      help="instead of training: the study's probe (configs/probe.py, the task's head) on the "
                           'frozen random-init encoder, the baseline a pretrained encoder must beat')
  parser.add_argument('--no_lr_baseline', action='store_true')
  args = parser.parse_args()
  if args.task == 'aoa' and (args.fresh or args.augment != 'none' or args.feature_groups):
    parser.error('--fresh, --augment and --feature_groups are for --task amc')

  overrides = json.loads(args.sim)
  if args.variant == 'no_cfo':
    overrides.update(cfo_max=0.0, cfo_drift=0.0)
  if args.variant == 'per_example':
    overrides.update(nuisances='example')
  if args.variant == 'high_snr':
    overrides.update(snr_db_low=20.0, snr_db_high=30.0)
  config = simulate.SimConfig(length=args.length, **overrides)
  t0 = time.perf_counter()
  train_iq, train_y, train_info = make_split(config, args.train, 1000 + args.seed, 0, args.fixed_aoa)
  test_iq, test_y, test_info = make_split(config, args.test, 2000 + args.seed, args.train, args.fixed_aoa)
  if args.task == 'aoa':
    train_y, test_y = train_info['aoa'], test_info['aoa']
  print(f'config {dataclasses.asdict(config)}\nsimulated in {time.perf_counter() - t0:.1f}s', flush=True)

  if not args.no_lr_baseline:
    accuracy, _ = feature_accuracy(train_iq, train_y, test_iq, test_y)
    print(f'feature logistic regression: test {accuracy:.3f}', flush=True)
  if args.feature_groups:
    for groups in (('envelope',), ('spectrum',), ('envelope', 'spectrum'), ('phase',), FEATURE_GROUPS):
      accuracy, recall = feature_accuracy(train_iq, train_y, test_iq, test_y, groups)
      print(f'  features {"+".join(groups)}: test {accuracy:.3f}, recall per class {np.round(recall, 2)}')
    return

  x_train, x_test = aoam.to_model_layout(train_iq), aoam.to_model_layout(test_iq)
  if args.variant == 'normalize':  # per example, per channel: zero mean, unit std over time
    def norm(x):
      return (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-6)
    x_train, x_test = norm(x_train), norm(x_test)
  if args.dw_kernel != 3:  # every ShuffleUnit's depthwise conv gets dw_kernel taps, 'same' padding
    base = layers.DepthwiseConv1D
    def wide(*, kernel_size, padding, **kwargs):
      return base(kernel_size=args.dw_kernel, padding=args.dw_kernel // 2, **kwargs)
    layers.DepthwiseConv1D = wide
  encoder = {'shufflenet': shufflenet.ShuffleNetV2Encoder, 'plain': PlainCNN,
             'stem': StemVariant}[args.model](**{key: tuple(value) if isinstance(value, list) else value
                                for key, value in json.loads(args.encoder).items()})
  settings = supervised.SupervisedSettings(optimizer=args.optimizer, learning_rate=args.lr,
                                           weight_decay=args.weight_decay, batch_size=args.batch,
                                           min_steps=args.steps, max_steps=args.steps)
  if args.random_init_probe:
    accuracy = random_init_probe_accuracy(encoder, x_train, train_y, x_test, test_y, args.task, config, args.seed)
    print(f'random-init encoder, probe: test {accuracy:.3f}', flush=True)
    return
  t0 = time.perf_counter()
  if args.fresh:
    model, variables, info = train_fresh(encoder, config, settings, args.seed, x_test, test_y, args.fresh)
  elif args.augment == 'none':
    num_classes, hidden_dim = (7, 0) if args.task == 'amc' else (simulate.NUM_AOA_CLASSES, 512)
    model, variables, info = supervised.train_supervised(encoder, x_train, train_y, num_classes=num_classes,
                                                         hidden_dim=hidden_dim, settings=settings,
                                                         seed=args.seed)
  else:
    model, variables, info = train_with_augment(encoder, x_train, train_y.astype(np.int32), settings,
                                                args.seed, {'phase': rotate_phase, 'crop': random_crop}[args.augment])
  print(f'trained {info} in {time.perf_counter() - t0:.0f}s', flush=True)
  pred_train = supervised.predict(model, variables, [x_train[:2000]], batch_size=256)
  pred_test = supervised.predict(model, variables, [x_test], batch_size=256)
  train_acc = np.mean(pred_train == train_y[:2000])
  test_acc = np.mean(pred_test == test_y)
  print(f'encoder: train {train_acc:.3f} test {test_acc:.3f}')
  if args.task == 'aoa':
    return
  confusion = np.zeros((7, 7), int)
  np.add.at(confusion, (test_y, pred_test), 1)
  print('confusion (rows true, cols pred):', simulate.MODULATIONS)
  print(confusion)
  snr = test_info['snr_db']
  for lo in (0, 10, 20):
    m = (snr >= lo) & (snr < lo + 10)
    print(f'  snr {lo}-{lo + 10} dB: test {np.mean(pred_test[m] == test_y[m]):.3f} (n={m.sum()})')


if __name__ == '__main__':
  main()
