"""The pretraining loop, top to bottom: lock -> mesh -> data -> state (or resume) -> step -> log -> checkpoint.

`pretrain(config, workdir)` is the whole program behind `python -m ssl_jax.main`. It holds the
workdir's writer lock for the whole run (`ssl_jax.workdir.lock`: a second run into the same workdir is
refused, naming the process that writes there). It resumes (`ssl_jax.workdir.resume`) from the newest
checkpoint in `workdir` that restores (newer unreadable ones are reported and set aside, see
`ssl_jax.workdir.checkpoints`), after dropping the metrics a killed run logged past that step, so every
step is logged once. Because the input
pipeline is resumable by step and the step is deterministic, a resumed run ends bit-identical (on CPU)
to an uninterrupted one. SIGTERM/SIGINT save a checkpoint and stop cleanly, on every process of a
multi-host run at the same step (`_StopRequest`).

The loop dispatches step after step without waiting for the device; it reads values back at log steps
(the metrics) and at checkpoint steps (the state, which `Checkpointer.save` checks for NaN and infinity).
A non-finite loss, parameter norm or state seen there stops the run with a message naming that step, and
keeps the last good checkpoint: no checkpoint ever holds a non-finite state. Checkpoint steps follow
orbax's cadence (`config.checkpoint_every_steps`); `config.profile_first_step` traces a few steps with
JAX's profiler into `WORKDIR/profile`.
"""

import contextlib
import math
import signal
from typing import Any, Iterator, Mapping, Optional

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from ssl_jax import config_checks, console as console_lib, members
from ssl_jax import methods, monitor, optim, parallel, periodic
from ssl_jax.data import pipeline
from ssl_jax.methods import common
from ssl_jax.workdir import checkpoints, layout, metrics as metrics_lib, resume


class NonFiniteLossError(RuntimeError):
  """The loss or the state became NaN or Inf; the run stopped without saving the bad state in a checkpoint."""


class _StopRequest:
  """When to stop before the last step: after SIGTERM or SIGINT, at a step every process agrees on.

  One process: the signal sets a flag that the loop reads after each step. Several processes: a process
  that stopped alone would leave the others waiting in the next collective, so the stop goes through
  JAX's preemption service (the one orbax's `CheckpointManager.reached_preemption` asks), started by
  `jax.distributed.initialize`: its notifier owns SIGTERM in every process; when one process receives
  it, all of them agree on the next step that none has passed, and
  `multihost_utils.reached_preemption_sync_point` turns true at that step in each. SIGINT (Ctrl-C) is
  passed on to it as SIGTERM. The agreement is made once, when the signal comes; the check each step is
  a local read, not a collective. The service's counter is the step (as orbax's `should_save` passes it
  too), first set to the run's start step, which every process restored alike: a signal before the first
  step stops after the first step.
  """

  def __init__(self, start_step: int, multi_process: bool):
    self._start_step = start_step
    self._multi_process = multi_process
    self._signal_name: Optional[str] = None

  def _record(self, signum, frame) -> None:
    self._signal_name = signal.Signals(signum).name

  @staticmethod
  def _forward_to_preemption_service(signum, frame) -> None:
    signal.raise_signal(signal.SIGTERM)

  def check_available(self) -> None:
    """Raises ValueError when a multi-process run has no preemption service to agree on a stop.

    Sets the service's counter to the start step (a signal before the first step then stops after it).
    """
    if not self._multi_process:
      return
    try:
      multihost_utils.reached_preemption_sync_point(self._start_step)
    except RuntimeError as e:
      raise ValueError('a multi-process run needs JAX\'s preemption service to stop all processes at the '
                       'same step on SIGTERM; it is off (jax_enable_preemption_service=False?): ' + str(e)) from e

  @contextlib.contextmanager
  def installed(self):
    if self._multi_process:
      handlers = {signal.SIGINT: self._forward_to_preemption_service}  # SIGTERM stays with the service.
    else:
      handlers = {signal.SIGTERM: self._record, signal.SIGINT: self._record}
    previous = {}
    try:
      for s, handler in handlers.items():
        previous[s] = signal.getsignal(s)
        signal.signal(s, handler)
    except ValueError:  # Not the main thread: signals cannot be caught here.
      previous = {}
    try:
      yield self
    finally:
      for s, handler in previous.items():
        signal.signal(s, handler)

  def reason(self, step: int) -> Optional[str]:
    """Why to stop after `step` ('SIGTERM', 'SIGINT'; 'preempted' on several processes), or None.

    Multi-process: every process must call this after every step.
    """
    if self._multi_process:
      return 'preempted' if multihost_utils.reached_preemption_sync_point(step) else None
    return self._signal_name


_GUARDED = ('loss', 'param_norm')  # Metrics every method reports; non-finite params show in param_norm.


class _FiniteGuard:
  """Stops the run at the first log or checkpoint step where the loss, the parameter norm or the state is
  NaN or infinite: checks the metrics read at log steps, and saves through `Checkpointer.save`, which
  refuses a non-finite state. Raises NonFiniteLossError naming that step and the last good checkpoint."""

  def __init__(self, checkpointer: checkpoints.Checkpointer, start_step: int):
    self._checkpointer = checkpointer
    self._last_finite = start_step  # The last step whose values were read back and found finite.

  def check_metrics(self, step: int, scalars: dict[str, float]) -> None:
    values = {k: scalars[k] for k in _GUARDED}
    if not all(math.isfinite(v) for v in values.values()):
      raise self._error(step, ', '.join(f'{k} {v}' for k, v in values.items()))
    self._last_finite = step

  def check_members(self, step: int, alive: np.ndarray) -> None:
    """A member run: stops when no member is alive (each one diverged and was frozen)."""
    if not np.any(alive):
      raise self._error(step, 'every member diverged')
    self._last_finite = step

  def save(self, step: int, state) -> None:
    try:
      self._checkpointer.save(step, state)
    except checkpoints.NonFiniteStateError:
      raise self._error(step, 'the state holds a NaN or an infinity') from None
    self._last_finite = step

  def _error(self, step: int, what: str) -> NonFiniteLossError:
    latest = self._checkpointer.latest_step()
    kept = (f'The last good checkpoint (step {latest}) in {self._checkpointer.directory} is kept'
            if latest is not None else f'No checkpoint was written to {self._checkpointer.directory}')
    return NonFiniteLossError(
        f'non-finite training state at step {step} ({what}); stopped. Values are read back at log and '
        f'checkpoint steps: step {step} is the first of those where this was seen (step {self._last_finite} was '
        f'finite). {kept}. Lower config.optim.learning_rate or raise config.temperature.')


def build(config: ml_collections.ConfigDict, mesh, steps_per_epoch: int) -> dict[str, Any]:
  """Networks, optimiser, schedules, initial state (replicated on the mesh) and the parallel step.

  `step_fn(state, batch, step) -> (state, metrics)` (`methods.common.HostStep`) runs step `step`.
  `lower_step(state, batch, lengths)` lowers the step's program for one pair of view lengths without running
  it (`jax.stages.Lowered`: `.compile()`, `.cost_analysis()`; `experiments/full_scale_plan.py`).
  `config` is a plain run's (K = 1, `members.config_of`); a member run builds with `build_members`.
  """
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
  launched = parallel.data_parallel(per_device_step, mesh)
  return {'state': parallel.replicate(jax.device_get(state), mesh), 'num_steps': num_steps,
          'step_fn': common.host_step(config, launched), 'encoder': init_networks.encoder,
          'lower_step': launched.lower}


def build_members(config: ml_collections.ConfigDict, mesh, steps_per_epoch: int) -> dict[str, Any]:
  """`build` for a member run (K >= 2, `ssl_jax.members`): the state is a `members.MemberState` split over
  the mesh's member axis; `step_fn` runs every member's step (vmapped inside the shard_map) at once."""
  method = methods.get_method(config.method)
  configs = members.member_configs(config)
  shared = configs[0]  # every member's shapes; its member values are replaced by traced ones in the step
  num_steps = common.total_steps(shared, steps_per_epoch)
  tx = optim.create_optimizer(shared.optim, lambda step: 0.0)  # the optimiser state's structure only
  init_networks = method.create_networks(shared, bn_axis_name=None)
  init = jax.jit(lambda key: method.init_state(shared, init_networks, tx, key))  # one compile for all
  state = members.stack_states([jax.device_get(init(jax.random.PRNGKey(c.seed))) for c in configs])
  per_member_data = config.members.data_order == 'member'
  per_device = members.per_device_step(shared, method, steps_per_epoch, num_steps, per_member_data)
  launched = parallel.member_parallel(per_device, mesh, batch_per_member=per_member_data)
  hyper = parallel.place_members(members.hyperparameters(configs), mesh)
  step_fn = common.host_step(shared, lambda state, batch, lengths: launched(state, hyper, batch, lengths))
  return {'state': parallel.place_members(state, mesh), 'num_steps': num_steps, 'step_fn': step_fn,
          'encoder': init_networks.encoder,
          'lower_step': lambda state, batch, lengths: launched.lower(state, hyper, batch, lengths)}


def _host_batches(config: ml_collections.ConfigDict, start_step: int,
                  num_local_devices: Optional[int] = None) -> Iterator[dict[str, np.ndarray]]:
  order_seed = int(config.data.get('order_seed', -1))
  return pipeline.pretrain_batches(config.data, batch_size=config.batch_size,
                                   seed=config.seed if order_seed < 0 else order_seed,
                                   start_step=start_step, process_index=jax.process_index(),
                                   process_count=jax.process_count(),
                                   num_local_devices=num_local_devices or jax.local_device_count())


def _member_batches(config: ml_collections.ConfigDict, start_step: int,
                    mesh) -> Iterator[dict[str, jax.Array]]:
  """A member run's batches on the mesh: shared by all members, or (`data_order='member'`) one per member."""
  configs = members.member_configs(config)
  local_devices = parallel.batch_devices(mesh) // jax.process_count()
  if config.members.data_order == 'shared':
    for batch in _host_batches(configs[0], start_step, local_devices):
      yield parallel.shard_batch(batch, mesh)
    return
  streams = [_host_batches(c, start_step, local_devices) for c in configs]
  while True:
    batches = [next(stream) for stream in streams]
    yield parallel.shard_member_batch({k: np.stack([b[k] for b in batches]) for k in batches[0]}, mesh)


def _watch(online: Optional[monitor.OnlineMonitor], step: int, state, num_steps: int,
           console: console_lib.Console) -> dict[int | None, dict[str, float]]:
  """The online monitor's metrics at `step` when it is on and due, by member (None: a plain run), printed in
  one line; {} when it is off or not due."""
  if online is None or not online.due(step, num_steps):
    return {}
  if isinstance(state, members.MemberState):
    count = len(jax.device_get(state.alive))
    watched = {k: online.measure(step, jax.device_get(members.select(state, k)), num_steps) for k in range(count)}
  else:
    watched = {None: online.measure(step, state, num_steps)}
  console.line(monitor.describe(step, list(watched.values())))
  return watched


def pretrain(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Pretrains `config.method` into `workdir`; returns a summary (steps, final loss, views/s, stop reason).

  The console's last line is that summary in words (`summary_line`).

  Before the data is built, the config and paths are checked (`config_checks`) and a resume's config
  against the stored one (`ssl_jax.workdir.resume`: a change is refused, or applied on purpose and recorded);
  before anything compiles, a checkpoint past the run's total steps is refused. Raises WorkdirBusyError
  when another run writes into `workdir`, ValueError for a config that does not fit it,
  NonFiniteLossError when the loss diverges.
  """
  config_checks.check_pretrain_run(config, workdir)
  held = resume.lock_workdir(workdir)
  try:
    return _train(config, workdir)
  finally:
    if held is not None:
      held.release()


class _MemberLog:
  """What a member run's log steps show: one metrics row per member, the members that diverged.

  A member that diverged is reported once (console line, a last row with `alive` 0) and written no more;
  when no member is left the run stops as a plain run does (NonFiniteLossError, via `_FiniteGuard`).
  """

  def __init__(self, state: members.MemberState):
    self.alive = np.asarray(jax.device_get(state.alive)).astype(bool)

  def rows(self, metrics: dict) -> list[tuple[int, dict[str, float]]]:
    """(member, scalars) of the members alive before this log step (the newly dead ones included)."""
    values = {k: np.asarray(v) for k, v in jax.device_get(metrics).items()}
    rows = [(k, {name: float(column[k]) for name, column in values.items()}) for k in range(len(self.alive))
            if self.alive[k]]
    return rows

  def newly_dead(self, metrics: dict) -> list[int]:
    alive_now = np.asarray(jax.device_get(metrics['alive'])).astype(bool)
    dead = [k for k in range(len(self.alive)) if self.alive[k] and not alive_now[k]]
    self.alive = self.alive & alive_now
    return dead


def _start_step(state) -> int:
  """The step a (restored) state is at; a member run's: that of its members still alive."""
  if isinstance(state, members.MemberState):
    steps, alive = np.asarray(jax.device_get(state.state.step)), np.asarray(jax.device_get(state.alive))
    return int(np.max(steps[alive])) if alive.any() else int(np.max(steps))
  return int(jax.device_get(state.step))


def _spread(values: list[float], fmt: str) -> str:
  """One value, or the members' range 'min..max' (the progress bar's and log lines' spread)."""
  low, high = min(values), max(values)
  return format(low, fmt) if low == high else f'{format(low, fmt)}..{format(high, fmt)}'


def _train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  resume_changes = resume.check_workdir_resume(workdir, config)  # Under the lock, before the data.
  member_run = members.is_member_run(config)
  run_config = config if member_run else members.config_of(config)  # K = 1: member 0's values applied
  is_chief = jax.process_index() == 0
  console = console_lib.Console(enabled=is_chief)
  checkpointer = checkpoints.Checkpointer(workdir, keep=config.keep_checkpoints,
                                            every=config.checkpoint_every_steps)
  if member_run:
    if int(config.members.devices) > 1 and jax.process_count() > 1:
      raise ValueError(f'config.members.devices={config.members.devices}: members spread over devices need a '
                       f'single process (this run has {jax.process_count()}); use config.members.devices=1.')
    mesh = parallel.create_member_mesh(int(config.members.devices))
  else:
    mesh = parallel.create_mesh()
  parallel.check_batch_divides(config.batch_size, mesh)

  num_train = pipeline.num_examples(config.data, 'train')
  steps_per_epoch = pipeline.steps_per_epoch(config)
  resume.check_steps_left(workdir, common.total_steps(config, steps_per_epoch))
  built = (build_members if member_run else build)(run_config, mesh, steps_per_epoch)
  state, step_fn, num_steps = built['state'], built['step_fn'], built['num_steps']
  state, how = resume.resume_or_start(checkpointer, state, config, workdir, console, is_chief)
  start_step = _start_step(state)
  if is_chief:
    dropped = metrics_lib.drop_after(workdir, start_step)
    if dropped['jsonl_rows'] or dropped['tensorboard_events']:
      how += (f"; dropped {dropped['jsonl_rows']} metric rows and {dropped['tensorboard_events']} TensorBoard "
              f'events past step {start_step} (logged before the last run stopped)')
  if resume_changes and is_chief:
    resume.record_changes(workdir, config, resume_changes, start_step)
  stop = _StopRequest(start_step, multi_process=jax.process_count() > 1)
  stop.check_available()

  devices = jax.devices()
  k_members = members.count(config) if member_run else 1
  console.line(f'{config.method} pretraining: workdir {checkpointer.workdir} ({how})')
  console.line(f'devices: {len(devices)} x {devices[0].platform} over {jax.process_count()} process(es); '
               f'batch {config.batch_size}, {num_steps} steps ({steps_per_epoch} per epoch)')
  if member_run:
    console.line(f'members: {k_members} ({", ".join(members.given_names(config)) or "seeds"} differ), '
                 f'over {config.members.devices} device row(s) of the mesh; data order {config.members.data_order}')
  console.line(f'data: aoam {config.data.source}, L={config.data.length}, {num_train} train examples '
               f"({config.data.data_dir or '~/tensorflow_datasets'})")

  writer = metrics_lib.MetricWriter(workdir, enabled=is_chief)
  batches = _member_batches(config, start_step, mesh) if member_run else (
      parallel.shard_batch(b, mesh) for b in _host_batches(run_config, start_step))
  views_per_step = getattr(methods.get_method(config.method), 'VIEWS_PER_EXAMPLE', 2) * config.batch_size
  summary: dict[str, Any] = {'method': config.method, 'start_step': start_step, 'num_steps': num_steps,
                             'stop_reason': 'completed'}
  progress = console.progress(total=num_steps, initial=start_step, desc=f'{config.method} pretraining',
                              show=config.progress_bar)
  profile = periodic.Profile(layout.profile_dir(checkpointer.workdir),
                             config.profile_first_step if is_chief else 0, config.profile_num_steps)
  online = monitor.OnlineMonitor.for_run(config, built['encoder'], mesh)  # None when config.monitor is off
  if online is not None and start_step == 0:
    for member, values in _watch(online, 0, state, num_steps, console).items():
      writer.write(0, values, member=member)
  window = periodic.LogWindow(start_step)
  guard = _FiniteGuard(checkpointer, start_step)
  member_log = _MemberLog(state) if member_run else None
  metrics = None
  step = start_step
  try:
    with stop.installed():
      while step < num_steps:
        batch = next(batches)
        profile.before_step(step + 1)
        state, metrics = step_fn(state, batch, step)
        step += 1
        progress.update(1)
        if profile.after_step(step, metrics):
          console.line(f'profiled steps {profile.first}-{profile.last} into {profile.directory}')
        watched = _watch(online, step, state, num_steps, console)
        window.exclude(sum(values.get(monitor.SECONDS, 0.0) for values in watched.values()))
        if periodic.is_log_step(step, config.log_every_steps, num_steps):
          if member_run:
            rows = member_log.rows(metrics)  # Waits for the step.
            _report_dead(member_log.newly_dead(metrics), step, console)
            guard.check_members(step, member_log.alive)
          else:
            rows = [(None, {k: float(v) for k, v in jax.device_get(metrics).items()})]  # Waits for the step.
            guard.check_metrics(step, rows[0][1])
          window.close(step)
          for member, scalars in rows:
            scalars['views_per_second'] = views_per_step * window.steps_per_second  # per member
            scalars['epoch'] = step / steps_per_epoch
            writer.write(step, dict(scalars, **watched.pop(member, {})), member=member)
          alive_rows = [r for _, r in rows if r.get('alive', 1.0)] or [r for _, r in rows]
          loss_text = _spread([r['loss'] for r in alive_rows], '.4f')
          views = views_per_step * window.steps_per_second
          progress.set_postfix(loss=loss_text, views_s=f'{views:.0f}')
          members_text = f' ({len(alive_rows)}/{k_members} members alive)' if member_run else ''
          console.line(f"step {step}/{num_steps}  loss {loss_text}{members_text}  lr "
                       f"{_spread([r['learning_rate'] for r in alive_rows], '.3g')}  {views:.0f} views/s"
                       f"{' per member' if member_run else ''}  ETA {window.eta(step, num_steps)}")
          summary['views_per_second'] = views
        for member, values in watched.items():  # a measurement off the log steps (or of a dead member)
          writer.write(step, values, member=member)
        if checkpointer.should_save(step):
          guard.save(step, state)
        reason = stop.reason(step)
        if reason is not None:
          summary['stop_reason'] = reason
          console.line(f'{reason}: saving step {step} and stopping')
          break
      if metrics is not None:  # The last step's loss, checked as at a log step.
        if member_run:
          _report_dead(member_log.newly_dead(metrics), step, console)
          guard.check_members(step, member_log.alive)
          losses = np.asarray(jax.device_get(metrics['loss']), np.float64)
          summary['final_losses'] = [float(v) if a else None for v, a in zip(losses, member_log.alive)]
          summary['final_loss'] = float(np.mean(losses[member_log.alive]))
          summary['alive'] = [bool(a) for a in member_log.alive]
        else:
          last = {k: float(v) for k, v in jax.device_get({k: metrics[k] for k in _GUARDED}).items()}
          guard.check_metrics(step, last)
          summary['final_loss'] = last['loss']
      guard.save(step, state)
  finally:
    profile.stop()
    checkpointer.close()
    writer.close()
    progress.close()
  summary['final_step'] = step
  console.line(summary_line(summary, checkpointer.workdir))
  return summary


class PretrainingStopped(Exception):
  """A pretraining run stopped before its last step (SIGTERM, SIGINT, preemption), its checkpoint saved.

  For scripts that run more after pretraining (probes, reports): they stop there and say so, rather than go
  on with a half-trained encoder; `pretrain` with the same config and workdir resumes the run. `exit_code`
  is the shell's status for the signal (128 + its number).
  """

  def __init__(self, name: str, workdir: str, summary: dict[str, Any]):
    self.reason = str(summary['stop_reason'])
    self.exit_code = 128 + int(signal.SIGINT if self.reason == 'SIGINT' else signal.SIGTERM)
    super().__init__(f"pretraining {name} stopped by {self.reason} at step {summary['final_step']}/"
                     f"{summary['num_steps']} (checkpoint saved in {workdir}); nothing of it was probed or "
                     'reported. Run the same command to resume')


def check_completed(name: str, workdir: str, summary: dict[str, Any]) -> None:
  """Raises PretrainingStopped unless `pretrain`'s `summary` says run `name` reached its last step."""
  if summary['stop_reason'] != 'completed':
    raise PretrainingStopped(name, workdir, summary)


def summary_line(summary: Mapping[str, Any], workdir: str) -> str:
  """The run's last console line, from `pretrain`'s summary: why it stopped and at which step of how many,
  the steps this run made, the final loss and views/s (each when the summary holds it; a member run's loss
  is the mean over its members alive, its views/s per member), and the workdir with its last checkpoint."""
  final_step = int(summary['final_step'])
  text = (f"{summary['stop_reason']} at step {final_step}/{summary['num_steps']} "
          f"({final_step - int(summary['start_step'])} steps this run)")
  alive = summary.get('alive')
  if summary.get('final_loss') is not None:
    text += f", final loss {summary['final_loss']:.4f}"
    if alive is not None:
      text += f' (mean of the {sum(alive)}/{len(alive)} members alive)'
  if summary.get('views_per_second') is not None:
    text += f", {summary['views_per_second']:.0f} views/s{' per member' if alive is not None else ''}"
  return text + f'; workdir {workdir} (checkpoint {final_step})'


def _report_dead(dead: list[int], step: int, console: console_lib.Console) -> None:
  for k in dead:
    console.line(f'WARNING: member {k} diverged (a non-finite loss or state) at or before step {step}; it keeps '
                 'its last finite state (frozen) and the other members go on')
