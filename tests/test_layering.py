"""The dependency rules between the parts of the project, read from the source (no imports run)."""

import ast
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBRARY = os.path.join(REPO, 'ssl_jax')


def _library_modules() -> list[str]:
  paths = []
  for root, _, files in os.walk(LIBRARY):
    paths += [os.path.join(root, f) for f in files if f.endswith('.py')]
  return sorted(paths)


def _imported(path: str) -> set[str]:
  """Every module name `path` imports (`import a.b` -> 'a.b'; `from a import b` -> 'a', 'a.b')."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.add(node.module)
      names.update(f'{node.module}.{alias.name}' for alias in node.names)
  return names


def _top_level(names: set[str]) -> set[str]:
  return {name.split('.')[0] for name in names}


def test_checkpointing_knows_orbax_jax_and_ml_collections_alone():
  imported = _top_level(_imported(os.path.join(LIBRARY, 'workdir', 'checkpoints.py')))
  third_party = imported - set(sys.stdlib_module_names) - {'ssl_jax'}  # ssl_jax: test_the_workdir_package_...
  assert third_party <= {'jax', 'orbax', 'ml_collections', 'absl'}, third_party


# The leaf modules of ssl_jax (each imports no other ssl_jax module) that ssl_jax/workdir/ may import.
WORKDIR_MAY_IMPORT = {'ssl_jax.atomic_files', 'ssl_jax.config_keys', 'ssl_jax.console'}


def _workdir_modules() -> list[str]:
  folder = os.path.join(LIBRARY, 'workdir')
  return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith('.py'))


@pytest.mark.parametrize('path', _workdir_modules(), ids=lambda p: os.path.relpath(p, REPO))
def test_the_workdir_package_imports_nothing_above_it(path):
  """ssl_jax/workdir/ (a run's directory: its layout, lock, checkpoints, metrics, resume) stands on the leaf
  modules alone: every ssl_jax module it imports is in ssl_jax.workdir or in WORKDIR_MAY_IMPORT."""
  in_workdir = lambda name: name == 'ssl_jax.workdir' or name.startswith('ssl_jax.workdir.')
  outside = {name for name in _imported(path) if name.startswith('ssl_jax.') and not in_workdir(name)}
  assert outside <= WORKDIR_MAY_IMPORT, outside - WORKDIR_MAY_IMPORT


@pytest.mark.parametrize('name', sorted(WORKDIR_MAY_IMPORT))
def test_what_the_workdir_package_may_import_is_a_leaf(name):
  path = os.path.join(REPO, *name.split('.')) + '.py'
  assert not {n for n in _imported(path) if n.startswith('ssl_jax.')}


@pytest.mark.parametrize('path', _library_modules(), ids=lambda p: os.path.relpath(p, REPO))
def test_the_library_imports_no_script_folder(path):
  """ssl_jax works without the checkout's configs/ and experiments/ and never edits sys.path to reach them."""
  with open(path) as f:
    source = f.read()
  assert not _top_level(_imported(path)) & {'configs', 'experiments'}
  assert 'sys.path' not in source
  assert "import_module('experiments" not in source and "import_module('configs" not in source


def test_the_train_loop_knows_nothing_of_views():
  """The crop lengths are drawn by the method's host step (`methods.common.HostStep`), not by train.py."""
  path = os.path.join(LIBRARY, 'train.py')
  with open(path) as f:
    source = f.read()
  assert not {'ssl_jax.augment', 'augment'} & {name.split('ssl_jax.', 1)[-1] for name in _imported(path)}
  assert 'crop' not in source and 'AugmentPolicy' not in source
