"""lightly's `NTXentLoss` without importing the parts of lightly that need torchvision.

lightly 1.6.0 imports torchvision from `lightly/loss/__init__.py` (via `dense_relational_utils`) and from
`lightly/models/utils.py` (`torchvision.ops.StochasticDepth`), which `lightly.models.modules.memory_bank`
imports. torchvision is not installed beside our torch build, so `from lightly.loss import NTXentLoss`
fails. `NTXentLoss` itself needs only three of lightly's files:

  lightly/utils/dist.py                    rank / world size / gather (torch only)
  lightly/models/modules/memory_bank.py    MemoryBankModule (MoCo's queue)
  lightly/loss/ntx_ent_loss.py             NTXentLoss

`load_ntxent_loss_class` executes exactly those three files, unmodified, from the installed package
(`load_dcl_loss_classes` and `load_swav_loss` do the same for `lightly/loss/dcl_loss.py` and
`lightly/loss/swav_loss.py`, which import nothing more of lightly than `lightly/utils/dist.py`). While
it does, `sys.modules` holds empty stand-in package objects for `lightly`, `lightly.utils`,
`lightly.models`, `lightly.models.modules` and `lightly.loss` (their `__path__` is the installed
directory, their `__init__.py` is never run) and, for `lightly.models.utils`, a module whose only member
`concat_all_gather` raises: memory_bank.py reaches it only with `gather_distributed=True`, which this
baseline (one process) never uses. Afterwards every `lightly*` entry is put back the way it was, so an
import of the real lightly elsewhere in the process is unaffected.
"""

import functools
import importlib
import importlib.util
import os
import sys
import types

import torch

LIGHTLY_VERSION = '1.6.0'
_PACKAGES = ('lightly', 'lightly.utils', 'lightly.models', 'lightly.models.modules', 'lightly.loss')
_FILES = ('lightly.utils.dist', 'lightly.models.modules.memory_bank', 'lightly.loss.ntx_ent_loss')


def _lightly_dir() -> str:
  spec = importlib.util.find_spec('lightly')  # Finds the package without executing its __init__.
  if spec is None or not spec.submodule_search_locations:
    raise ImportError(f'lightly is not installed: pip install --no-deps lightly=={LIGHTLY_VERSION}')
  return list(spec.submodule_search_locations)[0]


def _concat_all_gather(x: torch.Tensor) -> torch.Tensor:
  raise NotImplementedError('gather_distributed=True is not supported by the torchvision-free lightly loader.')


@functools.lru_cache(maxsize=None)
def _load_lightly_module(name: str) -> types.ModuleType:
  """Executes lightly's file `name` (and the two it may import, `_FILES[:2]`) without lightly's __init__s."""
  root = _lightly_dir()
  saved = {key: mod for key, mod in sys.modules.items() if key == 'lightly' or key.startswith('lightly.')}
  for key in saved:
    del sys.modules[key]
  try:
    for package_name in _PACKAGES:
      package = types.ModuleType(package_name)
      package.__path__ = [os.path.join(root, *package_name.split('.')[1:])]
      sys.modules[package_name] = package
    model_utils = types.ModuleType('lightly.models.utils')
    model_utils.concat_all_gather = _concat_all_gather
    sys.modules['lightly.models.utils'] = model_utils
    sys.modules['lightly.models'].utils = model_utils
    modules = [importlib.import_module(n) for n in (*_FILES[:2], name)]
    return modules[-1]
  finally:
    for key in [n for n in sys.modules if n == 'lightly' or n.startswith('lightly.')]:
      del sys.modules[key]
    sys.modules.update(saved)


def load_ntxent_loss_class() -> type:
  """lightly's `NTXentLoss` class, executed from the installed files (see the module docstring)."""
  return _load_lightly_module('lightly.loss.ntx_ent_loss').NTXentLoss


def load_dcl_loss_classes() -> tuple[type, type]:
  """lightly's `(DCLLoss, DCLWLoss)` from `lightly/loss/dcl_loss.py` (imports only `lightly.utils.dist`)."""
  module = _load_lightly_module('lightly.loss.dcl_loss')
  return module.DCLLoss, module.DCLWLoss


def load_swav_loss() -> tuple[type, object]:
  """lightly's `(SwaVLoss, sinkhorn)` from `lightly/loss/swav_loss.py` (imports only torch)."""
  module = _load_lightly_module('lightly.loss.swav_loss')
  return module.SwaVLoss, module.sinkhorn


def ntxent_loss(temperature: float, memory_bank_size: int = 0, dim: int | None = None) -> torch.nn.Module:
  """`NTXentLoss(temperature, memory_bank_size=(size, dim))`: SimCLR with size 0, MoCo's queue with size > 0."""
  cls = load_ntxent_loss_class()
  if memory_bank_size < 0:
    raise ValueError(f'memory_bank_size must be >= 0, got {memory_bank_size}')
  if memory_bank_size == 0:
    return cls(temperature=temperature, memory_bank_size=0)
  if dim is None or dim <= 0:
    raise ValueError(f'dim (projection size) must be a positive int when memory_bank_size > 0, got {dim!r}')
  return cls(temperature=temperature, memory_bank_size=(memory_bank_size, dim))
