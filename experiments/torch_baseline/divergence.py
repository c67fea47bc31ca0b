"""Where do two trajectories of one pretraining config split? Relative loss difference, step by step.

Two contenders train side by side from the same initial weights on the same batches and views:

  --against torch      ssl_jax's step and the torch baseline (`side_by_side`), as reproduce_torch.py runs them;
  --against perturbed  ssl_jax against itself, the second copy's initial weights scaled by (1 + eps * N(0, 1))
                       with eps = --perturbation (above the precision's rounding: 1e-14 for float64, 1e-6
                       for float32): how fast the recipe itself amplifies a difference.

If the frameworks split no faster than ssl_jax splits from itself, rounding explains the split. Prints one line:
|loss_a - loss_b| / |loss_b| at steps 1..--steps (and, against torch, the number of all-zero views per step:
antenna dropout's examples with every antenna dropped).

  python experiments/torch_baseline/divergence.py --scale cpu --precision float64 --antenna_dropout 0 \\
      --warmup_epochs 0 --against perturbed --data_dir /tmp/tfds
"""

import argparse
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--method', default='simclr', choices=('simclr', 'moco'))
  parser.add_argument('--scale', default='cpu', help='smoke, demo or cpu (configs/scales.py)')
  parser.add_argument('--steps', type=int, default=8)
  parser.add_argument('--schedule_steps', type=int, default=300, help='the run length the schedules assume')
  parser.add_argument('--precision', default='float32', choices=('float32', 'float64'))
  parser.add_argument('--antenna_dropout', type=float, default=None, help="default: the scale's")
  parser.add_argument('--warmup_epochs', type=float, default=None, help="default: the scale's")
  parser.add_argument('--crops', default='', help="comma-separated crop lengths; default: the scale's")
  parser.add_argument('--against', default='torch', choices=('torch', 'perturbed'))
  parser.add_argument('--perturbation', type=float, default=1e-14)
  parser.add_argument('--data_dir', default='')
  parser.add_argument('--set', action='append', metavar='KEY=VALUE', dest='overrides',
                      help='a config key (e.g. --set model.stem_stride=1), as experiments/study.py; ssl_jax only: '
                           'the torch twin builds the default encoder')
  return parser.parse_args(argv)


def main(argv=None) -> list[float]:
  args = parse_args(argv)
  import jax
  from experiments import study
  from experiments.reproduce_torch import pretrain_config
  from experiments.torch_baseline import side_by_side
  from ssl_jax.data import pipeline

  config = pretrain_config(args.method, args.scale, 0, args.schedule_steps, 1, args.data_dir)
  study.apply_overrides(config, study.parse_overrides(args.overrides))
  if args.overrides and args.against == 'torch':
    raise SystemExit('error: --set is for --against perturbed (the torch twin builds the default config)')
  if args.antenna_dropout is not None:
    config.augment.antenna_dropout = args.antenna_dropout
  if args.warmup_epochs is not None:
    config.optim.warmup_epochs = args.warmup_epochs
  if args.crops:
    config.augment.crop_lengths = tuple(int(c) for c in args.crops.split(','))
  config.model.dtype = args.precision
  steps_per_epoch = pipeline.steps_per_epoch(config)
  differences, notes = [], []
  with jax.enable_x64(args.precision == 'float64'):
    run = side_by_side.build_jax(config, args.schedule_steps, steps_per_epoch)
    if args.against == 'torch':
      trainer = side_by_side.build_torch(run, args.schedule_steps, steps_per_epoch)
    else:
      other = side_by_side.build_jax(config, args.schedule_steps, steps_per_epoch)
      rng = np.random.RandomState(0)
      other.state = other.state.replace(params=jax.tree.map(
          lambda p: p * (1 + args.perturbation * rng.standard_normal(p.shape)), other.state.params))
    batches = pipeline.pretrain_batches(config.data, batch_size=config.batch_size, seed=0, start_step=0,
                                        process_index=0, process_count=1, num_local_devices=1)
    for step in range(args.steps):
      x = next(batches)['iq']
      crops = side_by_side.crop_lengths(run, step)
      if args.against == 'torch':
        loss_b, views = side_by_side.torch_step(trainer, run, x, step)
        zero = sum(int((np.abs(v).reshape(v.shape[0], -1).max(1) == 0).sum()) for v in views)
        notes.append(f'({zero})')
      else:
        other.state, metrics_b = other.step_fn(other.state, {'iq': x}, crops)
        loss_b = float(metrics_b['loss'])
        notes.append('')
      run.state, metrics = run.step_fn(run.state, {'iq': x}, crops)
      differences.append(abs(float(metrics['loss']) - loss_b) / abs(loss_b))
  label = 'torch (all-zero views)' if args.against == 'torch' else f'ssl_jax perturbed by {args.perturbation:g}'
  print(f'{args.method} {args.scale} {args.precision}, against {label}: '
        + ' '.join(f'{d:.1e}{n}' for d, n in zip(differences, notes)), flush=True)
  return differences


if __name__ == '__main__':
  main()
