"""Weights between the Flax models of `ssl_jax.models` and the torch twins in `models.py`, both ways.

Names follow the table in `ssl_jax/models/shufflenet.py`: conv kernels `(kernel, in / groups, out)` <->
torch `(out, in / groups, kernel)` (a `transpose(2, 1, 0)` either way), Dense kernels `(in, out)` <-> Linear
weights `(out, in)`, BatchNorm scale/bias/mean/var <-> weight/bias/running_mean/running_var. torch's
`num_batches_tracked` has no Flax counterpart: it is written as 0 and ignored when read (it only matters
for BatchNorm with `momentum=None`, which these models do not use).

Command line (a pretraining workdir <-> a torch encoder `state_dict` file):

  python experiments/torch_baseline/convert.py to_torch --workdir=RUN --out=encoder.pt [--step=N] [--member=K]
  python experiments/torch_baseline/convert.py to_flax --state_dict=encoder.pt --config=configs/simclr.py \
      --workdir=NEW_RUN

`--member=K` exports member K of a member run (`ssl_jax.members`; required there).
`to_flax` writes a new workdir that `ssl_jax.encoders.load_encoder` (and so `ssl_jax.evaluate`) reads:
the run config and a step-0 checkpoint of the method's initial state with the encoder replaced by the torch
weights. It refuses a --workdir that is not empty (it never writes into a run). Both commands check their
inputs first and exit 1 with a message (a workdir without a checkpoint, a missing step, a bad --out).
"""

import collections
import os
import pickle
import re
import sys
from typing import Any, Mapping

if __name__ == '__main__':  # Run as a script: the checkout (configs/, ssl_jax/) goes first on the path.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ssl_jax.workdir import layout  # noqa: E402

PyTree = Any

# Flax module name inside a ShuffleUnit -> index inside torchvision's branch Sequential.
_UNIT_LAYERS = {
    'branch1_dw': 'branch1.0', 'branch1_dw_bn': 'branch1.1', 'branch1_pw': 'branch1.2', 'branch1_pw_bn': 'branch1.3',
    'branch2_pw1': 'branch2.0', 'branch2_pw1_bn': 'branch2.1', 'branch2_dw': 'branch2.3', 'branch2_dw_bn': 'branch2.4',
    'branch2_pw2': 'branch2.5', 'branch2_pw2_bn': 'branch2.6',
}
_TOP_LAYERS = {'stem_conv': 'conv1.0', 'stem_bn': 'conv1.1', 'final_conv': 'conv5.0', 'final_bn': 'conv5.1'}
_UNIT_NAME = re.compile(r'^stage([234])_unit(\d+)$')
_BN_PARAMS = {'scale': 'weight', 'bias': 'bias'}
_BN_STATS = {'mean': 'running_mean', 'var': 'running_var'}


def _torch_prefix(path: tuple[str, ...]) -> str:
  """Flax module path (e.g. ('stage2_unit0', 'branch1_dw')) -> torch module prefix ('stage2.0.branch1.0')."""
  if len(path) == 1 and path[0] in _TOP_LAYERS:
    return _TOP_LAYERS[path[0]]
  if len(path) == 2:
    match = _UNIT_NAME.match(path[0])
    if match and path[1] in _UNIT_LAYERS:
      return f'stage{match.group(1)}.{match.group(2)}.{_UNIT_LAYERS[path[1]]}'
  raise ValueError(f'encoder variables hold an unknown module {"/".join(path)!r}')


def _flax_path(prefix: str) -> tuple[str, ...]:
  """Inverse of `_torch_prefix`."""
  for flax_name, torch_name in _TOP_LAYERS.items():
    if prefix == torch_name:
      return (flax_name,)
  match = re.match(r'^stage([234])\.(\d+)\.(branch[12]\.\d+)$', prefix)
  if match:
    inverse = {v: k for k, v in _UNIT_LAYERS.items()}
    if match.group(3) in inverse:
      return (f'stage{match.group(1)}_unit{match.group(2)}', inverse[match.group(3)])
  raise ValueError(f'state_dict holds an unknown module {prefix!r}')


def _modules(tree: Mapping, path: tuple[str, ...] = ()):
  """Yields (module path, leaf dict) for every innermost dict of arrays in a Flax variable tree."""
  leaves = {k: v for k, v in tree.items() if not isinstance(v, Mapping)}
  if leaves:
    yield path, leaves
  for key, value in tree.items():
    if isinstance(value, Mapping):
      yield from _modules(value, path + (key,))


def _tensor(x) -> torch.Tensor:
  """float64 stays float64 (float64 runs, `config.model.dtype='float64'`); anything else becomes float32."""
  x = np.asarray(x)
  return torch.from_numpy(np.array(x, dtype=np.float64 if x.dtype == np.float64 else np.float32))


def _set(tree: dict, path: tuple[str, ...], name: str, value: np.ndarray) -> None:
  node = tree
  for part in path:
    node = node.setdefault(part, {})
  node[name] = value


def encoder_to_torch(variables: Mapping) -> 'collections.OrderedDict[str, torch.Tensor]':
  """Flax encoder `{'params', 'batch_stats'}` -> a `models.ShuffleNetV2Encoder` state_dict."""
  for key in ('params', 'batch_stats'):
    if key not in variables:
      raise ValueError(f'variables must hold {key!r}, got keys {sorted(variables)}')
  state = collections.OrderedDict()
  for path, leaves in _modules(variables['params']):
    prefix = _torch_prefix(path)
    if 'kernel' in leaves:
      state[f'{prefix}.weight'] = _tensor(leaves['kernel']).permute(2, 1, 0).contiguous()
    elif set(leaves) == set(_BN_PARAMS):
      for flax_name, torch_name in _BN_PARAMS.items():
        state[f'{prefix}.{torch_name}'] = _tensor(leaves[flax_name])
    else:
      raise ValueError(f'unexpected parameters {sorted(leaves)} in {"/".join(path)!r}')
  for path, leaves in _modules(variables['batch_stats']):
    prefix = _torch_prefix(path)
    if set(leaves) != set(_BN_STATS):
      raise ValueError(f'unexpected batch_stats {sorted(leaves)} in {"/".join(path)!r}')
    for flax_name, torch_name in _BN_STATS.items():
      state[f'{prefix}.{torch_name}'] = _tensor(leaves[flax_name])
    state[f'{prefix}.num_batches_tracked'] = torch.zeros((), dtype=torch.long)
  return state


def encoder_to_flax(state_dict: Mapping[str, torch.Tensor]) -> dict:
  """A `models.ShuffleNetV2Encoder` state_dict -> Flax `{'params': ..., 'batch_stats': ...}` (numpy)."""
  params, batch_stats = {}, {}
  for key, value in state_dict.items():
    prefix, _, name = key.rpartition('.')
    value = value.detach().cpu().numpy()
    if name == 'num_batches_tracked':
      continue
    path = _flax_path(prefix)
    if name == 'weight' and value.ndim == 3:
      _set(params, path, 'kernel', np.ascontiguousarray(value.transpose(2, 1, 0)))
    elif name in ('weight', 'bias') and value.ndim == 1:
      _set(params, path, 'scale' if name == 'weight' else 'bias', value.copy())
    elif name in ('running_mean', 'running_var'):
      _set(batch_stats, path, 'mean' if name == 'running_mean' else 'var', value.copy())
    else:
      raise ValueError(f'state_dict key {key!r} with shape {value.shape} has no Flax counterpart')
  return {'params': params, 'batch_stats': batch_stats}


def _linear_to_torch(dense: Mapping, prefix: str, state: dict) -> None:
  state[f'{prefix}.weight'] = _tensor(dense['kernel']).T.contiguous()
  if 'bias' in dense:
    state[f'{prefix}.bias'] = _tensor(dense['bias'])


def _linear_to_flax(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict:
  key = f'{prefix}.weight'
  if key not in state_dict:
    raise ValueError(f'state_dict has no {key!r} (keys: {sorted(state_dict)})')
  dense = {'kernel': np.ascontiguousarray(state_dict[key].detach().cpu().numpy().T)}
  if f'{prefix}.bias' in state_dict:
    dense['bias'] = state_dict[f'{prefix}.bias'].detach().cpu().numpy().copy()
  return dense


def head_to_torch(params: Mapping) -> 'collections.OrderedDict[str, torch.Tensor]':
  """Flax `ProjectionHead` params (`fc1`, `fc2`) -> `models.projection_head` state_dict (`0.*`, `2.*`)."""
  state = collections.OrderedDict()
  _linear_to_torch(params['fc1'], '0', state)
  _linear_to_torch(params['fc2'], '2', state)
  return state


def head_to_flax(state_dict: Mapping[str, torch.Tensor]) -> dict:
  """Inverse of `head_to_torch`: the head's Flax `params`."""
  return {'fc1': _linear_to_flax(state_dict, '0'), 'fc2': _linear_to_flax(state_dict, '2')}


def predictor_to_torch(params: Mapping, batch_stats: Mapping) -> 'collections.OrderedDict[str, torch.Tensor]':
  """Flax MoCo v3 `Predictor` -> `models.predictor` state_dict (`0` fc1, `1` bn1, `3` fc2)."""
  state = collections.OrderedDict()
  _linear_to_torch(params['fc1'], '0', state)
  state['1.weight'], state['1.bias'] = _tensor(params['bn1']['scale']), _tensor(params['bn1']['bias'])
  state['1.running_mean'] = _tensor(batch_stats['bn1']['mean'])
  state['1.running_var'] = _tensor(batch_stats['bn1']['var'])
  state['1.num_batches_tracked'] = torch.zeros((), dtype=torch.long)
  _linear_to_torch(params['fc2'], '3', state)
  return state


def predictor_to_flax(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict, dict]:
  """Inverse of `predictor_to_torch`: (params, batch_stats)."""
  numpy = {k: v.detach().cpu().numpy().copy() for k, v in state_dict.items()}
  params = {'fc1': _linear_to_flax(state_dict, '0'), 'fc2': _linear_to_flax(state_dict, '3'),
            'bn1': {'scale': numpy['1.weight'], 'bias': numpy['1.bias']}}
  return params, {'bn1': {'mean': numpy['1.running_mean'], 'var': numpy['1.running_var']}}


def model_to_torch(params: Mapping, batch_stats: Mapping) -> 'collections.OrderedDict[str, torch.Tensor]':
  """Method params/batch_stats (keyed 'encoder', 'head') -> a `models.ContrastiveModel` state_dict."""
  state = collections.OrderedDict()
  encoder = encoder_to_torch({'params': params['encoder'], 'batch_stats': batch_stats['encoder']})
  state.update((f'encoder.{k}', v) for k, v in encoder.items())
  state.update((f'head.{k}', v) for k, v in head_to_torch(params['head']).items())
  return state


def model_to_flax(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict, dict]:
  """A `models.ContrastiveModel` state_dict -> (params, batch_stats) keyed 'encoder', 'head'."""
  encoder = encoder_to_flax({k[len('encoder.'):]: v for k, v in state_dict.items() if k.startswith('encoder.')})
  head = head_to_flax({k[len('head.'):]: v for k, v in state_dict.items() if k.startswith('head.')})
  return {'encoder': encoder['params'], 'head': head}, {'encoder': encoder['batch_stats']}


def workdir_to_state_dict(workdir: str, step: int | None = None, member: int | None = None):
  """(config, torch encoder state_dict) of the query/online encoder of a pretraining workdir (of its member
  `member` for a member run; the config is that member's)."""
  from ssl_jax import encoders
  encoder = encoders.load_encoder(workdir, step, member)
  return encoder.config, encoder_to_torch(encoder.variables)


def state_dict_to_workdir(state_dict: Mapping[str, torch.Tensor], config, workdir: str, seed: int = 0) -> None:
  """Writes a new workdir (config + step-0 checkpoint) whose encoder is `state_dict`; see the module docstring.

  Raises ValueError when `workdir` is not empty (a run is never overwritten), `config` is out of range,
  or the state_dict does not fit `config.model`.
  """
  import jax
  from ssl_jax import config_checks, methods, optim, path_checks
  from ssl_jax.workdir import checkpoints
  path_checks.check_nothing_to_overwrite(workdir, '--workdir')
  config_checks.check_pretrain_config(config)
  encoder = encoder_to_flax(state_dict)
  method = methods.get_method(config.method)
  networks = method.create_networks(config, bn_axis_name=None)
  tx = optim.create_optimizer(config.optim, lambda step: 0.0)
  state = jax.jit(lambda key: method.init_state(config, networks, tx, key))(jax.random.PRNGKey(seed))
  _check_same_structure(state.params['encoder'], encoder['params'], 'params')
  _check_same_structure(state.batch_stats['encoder'], encoder['batch_stats'], 'batch_stats')
  params = dict(state.params, encoder=jax.tree.map(jax.numpy.asarray, encoder['params']))
  batch_stats = dict(state.batch_stats, encoder=jax.tree.map(jax.numpy.asarray, encoder['batch_stats']))
  replace = {'params': params, 'batch_stats': batch_stats, 'opt_state': tx.init(params)}
  if hasattr(state, 'ema_params'):  # MoCo v2, v3, MoCHi: the key encoder starts as a copy, as in init_state.
    replace['ema_params'] = dict(state.ema_params, encoder=params['encoder'])
    replace['ema_batch_stats'] = dict(state.ema_batch_stats, encoder=batch_stats['encoder'])
  state = state.replace(**replace)
  layout.write_config(workdir, config)
  checkpointer = checkpoints.Checkpointer(workdir)
  checkpointer.save(0, state)
  checkpointer.close()


def _check_same_structure(expected: PyTree, got: PyTree, what: str) -> None:
  """Raises ValueError naming the first module path whose shape (or presence) differs."""
  import jax
  flat = lambda tree: {jax.tree_util.keystr(p): tuple(np.shape(x)) for p, x in jax.tree_util.tree_leaves_with_path(tree)}
  want, have = flat(expected), flat(got)
  for key in sorted(set(want) | set(have)):
    if want.get(key) != have.get(key):
      raise ValueError(f'the torch encoder {what} do not fit config.model (other stage_repeats?): {key} is '
                       f'{have.get(key, "missing")} in the state_dict, {want.get(key, "absent")} in the model')


def main(argv: list[str]) -> None:
  from absl import flags
  from ssl_jax import config_checks, path_checks
  flags_ = flags.FLAGS
  if len(argv) != 2 or argv[1] not in ('to_torch', 'to_flax'):
    raise SystemExit(f'usage: convert.py to_torch|to_flax [flags]; got {argv[1:]}')
  try:  # Every input and output checked before anything is loaded or written.
    if argv[1] == 'to_torch':
      if not flags_.workdir or not flags_.out:
        raise SystemExit('to_torch needs --workdir and --out')
      path_checks.check_trained_workdir(flags_.workdir, flags_.step)
      path_checks.check_output_file(flags_.out, '--out')
      _, state_dict = workdir_to_state_dict(flags_.workdir, flags_.step, flags_.member)
      torch.save(state_dict, flags_.out)
      print(f'wrote {len(state_dict)} tensors to {flags_.out}')
    else:
      if not flags_.state_dict or flags_.config is None or not flags_.workdir:
        raise SystemExit('to_flax needs --state_dict, --config and --workdir')
      path_checks.check_input_file(flags_.state_dict, '--state_dict')
      config_checks.check_pretrain_config(flags_.config)
      path_checks.check_new_workdir(flags_.workdir, '--workdir')
      try:
        state_dict = torch.load(flags_.state_dict, weights_only=True)
      except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise ValueError(f'--state_dict {flags_.state_dict!r} is not a torch state_dict file: {e}') from None
      state_dict_to_workdir(state_dict, flags_.config, flags_.workdir)
      print(f'wrote {flags_.workdir}')
  except (ValueError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    raise SystemExit(1) from None


if __name__ == '__main__':
  from absl import app, flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file('config', None, 'Config of the run (to_flax).', lock_config=False)
  flags.DEFINE_string('workdir', None, 'Pretraining workdir (read by to_torch, written by to_flax).')
  flags.DEFINE_string('out', None, 'torch state_dict file to write (to_torch).')
  flags.DEFINE_string('state_dict', None, 'torch encoder state_dict file to read (to_flax).')
  flags.DEFINE_integer('step', None, 'Checkpoint step (to_torch; default: the latest).')
  flags.DEFINE_integer('member', None, 'Member of a member run to export (to_torch; required for one).')
  app.run(main)
