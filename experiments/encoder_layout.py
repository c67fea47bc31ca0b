"""The encoder's layout chosen by evidence (issue 30): the supervised screen of candidate layouts.

Trains every candidate layout of the 1-D ShuffleNetV2 0.5 (`CANDIDATES`: the stem, the depthwise kernels,
the input scaling; and torchvision's 2-D view of an example) plus the task's head end to end on 100 simulated
labels per class, with the supervised baseline's recipe (`configs/probe.py`: SGD, lr 0.03125, 30 epochs), for
every seed, and writes each run's train and test accuracy, its parameter count and its time to
`OUT/results.json` (after each run; a rerun skips the runs already there). The decision rule and the table:
docs/design.md ("The encoder's layout") and experiments/results/encoder_layout/README.md.

  python experiments/encoder_layout.py --out DIR [--length 128] [--seeds 0,1,2] [--task amc]
      [--candidates v1,stem_s1_pool,...]

Data: seed s simulates its train split (100 per class, generator seed 1000 + s) and test split (200 per
class for AMC, 20 for AoA; generator seed 2000 + s) with the default `SimConfig` at `--length`; every
candidate of seed s sees the same examples, so candidates are compared paired over the seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Mapping

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from configs import probe as probe_config  # noqa: E402
from ssl_jax import models  # noqa: E402
from ssl_jax.data import aoam, simulate  # noqa: E402
from ssl_jax.evaluation import supervised  # noqa: E402
from ssl_jax.models import layers, shufflenet  # noqa: E402


class TorchvisionView2D(nn.Module):
  """ShuffleNetV2 0.5 as torchvision's 2-D network sees a 4 x 2 x L example: an image of height 4
  (antennas), width L (time), with I and Q as its 2 channels.

  The stem is a 3 x 3 conv of stride 2 and a 3 x 3 max-pool of stride 2, both padded by 1: the antenna axis
  goes 4 -> 2 -> 1. On a map of height 1 every later 3 x 3 depthwise kernel (padding 1) uses its middle row
  alone, so the units are the 1-D units with 3-tap kernels: after the stem this is the 1-D network.
  """

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    shufflenet.validate_input(x)
    batch, length, _ = x.shape
    image = x.reshape(batch, length, 4, 2).transpose(0, 2, 1, 3)  # (batch, antenna, time, I/Q)
    y = nn.Conv(shufflenet.STAGE_OUT_CHANNELS[0], (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                use_bias=False, name='stem_conv')(image)
    y = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, name='stem_bn')(y))
    y = nn.max_pool(jnp.pad(y, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf), (3, 3), (2, 2))
    if y.shape[1] != 1:
      raise AssertionError(f'the antenna axis should be 1 after the stem, got {y.shape}')
    y = y[:, 0]
    channels = shufflenet.STAGE_OUT_CHANNELS
    for stage_index, (repeats, out_channels) in enumerate(zip(shufflenet.STAGE_REPEATS, channels[1:4])):
      for unit_index in range(repeats):
        y = shufflenet.ShuffleUnit(out_channels, stride=2 if unit_index == 0 else 1,
                                   name=f'stage{stage_index + 2}_unit{unit_index}')(y, train)
    y = layers.Conv1D(channels[4], name='final_conv')(y)
    y = layers.BatchNorm(use_running_average=not train, relu=True, name='final_bn')(y)
    return jnp.mean(y, axis=1)


# name -> ShuffleNetV2Encoder attributes (None: TorchvisionView2D). The total stride before stage 2 and the
# depthwise taps are what differ; `v1` is the layout ssl_jax ran until issue 30.
CANDIDATES: dict[str, Mapping[str, Any] | None] = {
    'v1': {},  # stem conv k3 s2 + max-pool s2 (stride 4 before any unit), 3-tap depthwise
    'torchvision_2d': None,  # torchvision's 2-D view (above)
    'v1_dw9': {'dw_kernel': 9},  # 9 taps, as many as a 3 x 3 kernel
    'stem_s1_pool': {'stem_stride': 1},  # stem at full resolution, pooled after its first features (stride 2)
    'stem_s1_pool_dw9': {'stem_stride': 1, 'dw_kernel': 9},
    'stem_s1_pool_rms': {'stem_stride': 1, 'input_scaling': 'rms'},  # each example scaled to unit RMS
    'stem_s1_nopool': {'stem_stride': 1, 'stem_pool': False},  # no downsampling before stage 2
    'stem_s1_nopool_dw9': {'stem_stride': 1, 'stem_pool': False, 'dw_kernel': 9},
    # Second round, added after the first round's seeds 0 and 1 (docs/design.md): each stage's stride-2 unit
    # downsamples by a max-pool at the end of each branch instead of its strided depthwise convs.
    'v1_unitpool': {'unit_downsample': 'pool'},
    'stem_s1_pool_unitpool': {'stem_stride': 1, 'unit_downsample': 'pool'},
    'stem_s1_nopool_unitpool': {'stem_stride': 1, 'stem_pool': False, 'unit_downsample': 'pool'},
}

TASKS = {'amc': (simulate.NUM_MODULATIONS, 0, 200), 'aoa': (simulate.NUM_AOA_CLASSES, 512, 20)}  # classes,
# the probe head's hidden width (configs/probe.py), test examples per class


def build(name: str) -> nn.Module:
  attributes = CANDIDATES[name]
  return TorchvisionView2D() if attributes is None else shufflenet.ShuffleNetV2Encoder(**attributes)


def split(length: int, per_class: int, num_classes: int, seed: int, first: int, task: str):
  """`(x (n, length, 8), labels)`: `per_class` examples of each class of `task` from the default simulator."""
  config = simulate.SimConfig(length=length)
  total = per_class * num_classes
  aoa, modulation = simulate.label_schedule(first, total)
  iq = simulate.simulate_examples(np.random.default_rng(seed), aoa, modulation, config)
  labels = modulation if task == 'amc' else aoa
  return aoam.to_model_layout(iq), labels.astype(np.int32)


def run_one(name: str, task: str, length: int, seed: int, per_class: int) -> dict[str, Any]:
  num_classes, hidden_dim, test_per_class = TASKS[task]
  # AMC: 100 per class = 700 examples; label_schedule cycles modulations within AoA classes, so an AMC split
  # of n examples is the schedule's first n. AoA: 100 per class = 22,500 examples.
  n_train = per_class * num_classes
  x_train, y_train = split(length, per_class, num_classes, 1000 + seed, 0, task)
  x_test, y_test = split(length, test_per_class, num_classes, 2000 + seed, n_train, task)
  protocol = probe_config.get_config().supervised
  settings = supervised.SupervisedSettings.from_config(ml_collections.ConfigDict(
      {k: v for k, v in protocol.items() if k not in ('enabled', 'budgets', 'num_seeds')}))
  encoder = build(name)
  t0 = time.perf_counter()
  model, variables, info = supervised.train_supervised(encoder, x_train, y_train, num_classes=num_classes,
                                                       hidden_dim=hidden_dim, settings=settings, seed=seed)
  seconds = time.perf_counter() - t0
  train_pred = supervised.predict(model, variables, [x_train[:2000]], batch_size=256)
  test_pred = supervised.predict(model, variables, [x_test], batch_size=256)
  encoder_params = models.count_params(variables['params']['encoder'])
  return {'candidate': name, 'task': task, 'length': length, 'seed': seed, 'per_class': per_class,
          'train_accuracy': float(np.mean(train_pred == y_train[:2000])),
          'test_accuracy': float(np.mean(test_pred == y_test)), 'encoder_params': encoder_params,
          'steps': info['num_steps'], 'final_loss': info['final_loss'], 'train_seconds': seconds}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', required=True)
  parser.add_argument('--length', type=int, default=128)
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--task', choices=tuple(TASKS), default='amc')
  parser.add_argument('--per_class', type=int, default=100)
  parser.add_argument('--candidates', default=','.join(CANDIDATES))
  args = parser.parse_args()
  names = args.candidates.split(',')
  unknown = [n for n in names if n not in CANDIDATES]
  if unknown:
    parser.error(f'unknown --candidates {unknown}; known: {list(CANDIDATES)}')
  seeds = [int(s) for s in args.seeds.split(',')]
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, 'results.json')
  runs = json.load(open(path))['runs'] if os.path.exists(path) else []
  done = {(r['candidate'], r['task'], r['length'], r['seed'], r['per_class']) for r in runs}
  for seed in seeds:
    for name in names:
      if (name, args.task, args.length, seed, args.per_class) in done:
        continue
      run = run_one(name, args.task, args.length, seed, args.per_class)
      runs.append(run)
      print(f"{name:22s} {args.task} L={args.length} seed {seed}: train {run['train_accuracy']:.3f} test "
            f"{run['test_accuracy']:.3f} ({run['encoder_params']} params, {run['train_seconds']:.0f} s)", flush=True)
      tmp = path + '.tmp'
      with open(tmp, 'w') as f:
        json.dump({'runs': runs}, f, indent=1)
      os.replace(tmp, path)


if __name__ == '__main__':
  main()
