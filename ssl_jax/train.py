"""The pretraining loop, top to bottom: mesh -> data -> state (or resume) -> step -> log -> checkpoint.

`train_and_evaluate(config, workdir)` is the whole program behind `python -m ssl_jax.main`. It resumes from
the latest checkpoint in `workdir` automatically; because the input pipeline is resumable by step and the
step is deterministic, a resumed run ends bit-identical (on CPU) to an uninterrupted one. SIGTERM/SIGINT
save a checkpoint and stop cleanly; a non-finite loss stops the run with a clear message and keeps the last
good checkpoint (no checkpoint is written after the first bad step).
"""

import contextlib
import math
import signal
import time
from typing import Any, Iterator

import jax
import ml_collections
import numpy as np
from absl import logging
from tqdm import tqdm

from ssl_jax import augment, checkpointing, metrics_writer, methods, optim, parallel
from ssl_jax.data import pipeline
from ssl_jax.methods import common


class NonFiniteLossError(RuntimeError):
  """The loss became NaN or Inf; the run stopped without checkpointing the bad state."""


class _StopRequest:
  """Turns SIGTERM / SIGINT into a flag the loop checks between steps."""

  def __init__(self):
    self.signal_name: str | None = None

  def __call__(self, signum, frame):
    self.signal_name = signal.Signals(signum).name

  @contextlib.contextmanager
  def installed(self):
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
      for s in previous:
        signal.signal(s, self)
    except ValueError:  # Not the main thread: signals cannot be caught here.
      previous = {}
    try:
      yield self
    finally:
      for s, handler in previous.items():
        signal.signal(s, handler)


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks values the step functions would otherwise trip over later with a less helpful message."""
  if config.batch_size <= 0:
    raise ValueError(f'config.batch_size must be positive, got {config.batch_size}')
  if config.temperature <= 0:
    raise ValueError(f'config.temperature must be positive, got {config.temperature}')
  if config.num_train_steps <= 0 and config.num_epochs <= 0:
    raise ValueError('set config.num_epochs or config.num_train_steps to a positive value '
                     f'(got {config.num_epochs} and {config.num_train_steps})')
  methods.get_method(config.method)


def build(config: ml_collections.ConfigDict, mesh, steps_per_epoch: int) -> dict[str, Any]:
  """Networks, optimiser, schedules, initial state (replicated on the mesh) and the parallel step."""
  method = methods.get_method(config.method)
  num_steps = common.total_steps(config, steps_per_epoch)
  lr = optim.learning_rate_schedule(config.optim, batch_size=config.batch_size,
                                    steps_per_epoch=steps_per_epoch, total_steps=num_steps)
  momentum = None
  if hasattr(method, 'momentum_schedule'):  # MoCo v2 and v3: the key encoder's EMA momentum
    momentum = method.momentum_schedule(config.moco.momentum, num_steps, config.moco.momentum_cosine)
  schedules = common.Schedules(learning_rate=lr, momentum=momentum)
  tx = optim.create_optimizer(config.optim, lr)
  init_networks = method.create_networks(config, bn_axis_name=None)
  state = jax.jit(lambda key: method.init_state(config, init_networks, tx, key))(
      jax.random.PRNGKey(config.seed))
  networks = method.create_networks(config, bn_axis_name=parallel.AXIS)
  per_device_step = method.make_train_step(config, networks, tx, schedules, axis_name=parallel.AXIS)
  return {'state': parallel.replicate(jax.device_get(state), mesh), 'num_steps': num_steps,
          'step_fn': parallel.data_parallel(per_device_step, mesh)}


def _host_batches(config: ml_collections.ConfigDict, start_step: int) -> Iterator[dict[str, np.ndarray]]:
  return pipeline.pretrain_batches(config.data, batch_size=config.batch_size, seed=config.seed,
                                   start_step=start_step, process_index=jax.process_index(),
                                   process_count=jax.process_count(),
                                   num_local_devices=jax.local_device_count())


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Pretrains `config.method` into `workdir`; returns a summary (steps, final loss, views/s, stop reason)."""
  validate_config(config)
  mesh = parallel.create_mesh()
  parallel.check_batch_divides(config.batch_size, mesh)
  is_chief = jax.process_index() == 0

  num_train = pipeline.num_examples(config.data, 'train')
  steps_per_epoch = max(num_train // config.batch_size, 1)
  built = build(config, mesh, steps_per_epoch)
  state, step_fn, num_steps = built['state'], built['step_fn'], built['num_steps']

  checkpointer = checkpointing.Checkpointer(workdir, keep=config.keep_checkpoints)
  if checkpointer.latest_step() is not None:
    checkpointing.check_compatible(checkpointing.read_config(workdir), config, workdir)
    state = checkpointer.restore(state)
    logging.info('Resumed %s from step %d', workdir, checkpointer.latest_step())
  elif is_chief:
    checkpointing.write_config(workdir, config)
  start_step = int(jax.device_get(state.step))
  run_rng = jax.device_get(state.rng)  # Fixed for the run; with the step it gives the views' keys.
  policy = augment.AugmentPolicy.from_config(config.augment)

  writer = metrics_writer.MetricWriter(workdir, enabled=is_chief)
  batches = _host_batches(config, start_step)
  views_per_step = 2 * config.batch_size
  summary: dict[str, Any] = {'method': config.method, 'start_step': start_step, 'num_steps': num_steps,
                             'stop_reason': 'completed'}
  progress = tqdm(total=num_steps, initial=start_step, desc=f'{config.method} pretraining', unit='step',
                  disable=not (config.progress_bar and is_chief), dynamic_ncols=True)
  last_good_step = start_step
  window_start, window_steps = time.perf_counter(), 0
  last_metrics = None
  stop = _StopRequest()
  with stop.installed():
    step = start_step
    while step < num_steps:
      batch = parallel.shard_batch(next(batches), mesh)
      crop_lengths = common.crop_lengths_for_step(run_rng, step, policy, config.data.length)
      state, metrics = step_fn(state, batch, crop_lengths)
      step += 1
      window_steps += 1
      # One host sync per step: the guard must see every step before its state can be checkpointed.
      loss, param_norm = (float(v) for v in jax.device_get((metrics['loss'], metrics['param_norm'])))
      if not (math.isfinite(loss) and math.isfinite(param_norm)):
        summary['stop_reason'] = 'non_finite_loss'
        checkpointer.close()
        writer.close()
        progress.close()
        raise NonFiniteLossError(
            f'non-finite training state at step {step} (loss {loss}, parameter norm {param_norm}); stopped. The last good checkpoint (step {checkpointer.latest_step()}) '
            f'in {checkpointer.directory} is kept. Lower config.optim.learning_rate or raise config.temperature.')
      last_good_step = step
      last_metrics = metrics
      progress.update(1)
      if step % config.log_every_steps == 0 or step == num_steps:
        elapsed = time.perf_counter() - window_start
        scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
        scalars['views_per_second'] = views_per_step * window_steps / max(elapsed, 1e-9)
        scalars['epoch'] = step / steps_per_epoch
        writer.write(step, scalars)
        progress.set_postfix(loss=f'{loss:.4f}', views_s=f"{scalars['views_per_second']:.0f}")
        summary['views_per_second'] = scalars['views_per_second']
        window_start, window_steps = time.perf_counter(), 0
      if step % config.checkpoint_every_steps == 0:
        checkpointer.save(step, state)
      if stop.signal_name is not None:
        summary['stop_reason'] = stop.signal_name
        logging.warning('%s received: saving step %d and stopping.', stop.signal_name, step)
        break
  checkpointer.save(last_good_step, state)
  checkpointer.close()
  writer.close()
  progress.close()
  summary['final_step'] = last_good_step
  if last_metrics is not None:
    summary['final_loss'] = float(last_metrics['loss'])
  return summary
