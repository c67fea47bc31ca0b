"""The notebooks in experiments/notebooks: stored without outputs, and run top to bottom at the smoke scale.

Execution follows papermill's convention without needing papermill: a cell with the run's parameters is
inserted right after the cell tagged `parameters`, and the notebook runs with nbclient in a fresh kernel
(the current interpreter) whose working directory is a temporary directory.
"""

import json
import os
import sys

import pytest

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK_DIR = os.path.join(REPO, 'experiments', 'notebooks')
NOTEBOOKS = ('quickstart.ipynb', 'compare_methods.ipynb')
CELL_TIMEOUT_S = 900


def _read(name: str):
  return nbformat.read(os.path.join(NOTEBOOK_DIR, name), as_version=4)


def _parameters_index(nb) -> int:
  tagged = [i for i, c in enumerate(nb.cells) if 'parameters' in c.get('metadata', {}).get('tags', [])]
  assert len(tagged) == 1, f'expected one cell tagged "parameters", found {len(tagged)}'
  return tagged[0]


def _with_parameters(nb, parameters: dict):
  """A copy of `nb` with a cell setting `parameters` right after the tagged cell (papermill style)."""
  nb = nbformat.from_dict(json.loads(json.dumps(nb)))
  source = '\n'.join(f'{key} = {value!r}' for key, value in parameters.items())
  cell = nbformat.v4.new_code_cell(source)
  cell.metadata['tags'] = ['injected-parameters']
  nb.cells.insert(_parameters_index(nb) + 1, cell)
  return nb


def _execute(nb, cwd: str, env: dict | None = None):
  """Runs every cell in a fresh kernel of this interpreter; raises CellExecutionError on any cell error."""
  client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name='python3',
                                   resources={'metadata': {'path': cwd}})
  kernel_env = dict(os.environ, **(env or {}))
  # The kernel imports ssl_jax and configs from the checkout under test, wherever it is installed from.
  kernel_env['PYTHONPATH'] = os.pathsep.join([REPO] + [p for p in [os.environ.get('PYTHONPATH')] if p])
  client.execute(env=kernel_env)
  return nb


def _outputs(nb, mime: str) -> list[str]:
  found = []
  for cell in nb.cells:
    for output in cell.get('outputs', []):
      if output.get('output_type') == 'stream' and mime == 'text/plain':
        found.append(output['text'])
      elif mime in output.get('data', {}):
        found.append(output['data'][mime])
  return found


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_stored_without_outputs(name):
  nb = _read(name)
  nbformat.validate(nb)
  for i, cell in enumerate(nb.cells):
    if cell.cell_type == 'code':
      assert cell.outputs == [], f'{name} cell {i} has outputs: clear them before committing'
      assert cell.execution_count is None, f'{name} cell {i} has an execution count'


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_colab_cell_and_parameters(name):
  nb = _read(name)
  first_code = next(c for c in nb.cells if c.cell_type == 'code')
  assert "'google.colab' in sys.modules" in first_code.source
  assert 'pip install' in first_code.source
  parameters = nb.cells[_parameters_index(nb)].source
  assert "scale = 'smoke'" in parameters


def test_parameters_injected_after_tagged_cell():
  nb = _with_parameters(_read('quickstart.ipynb'), {'scale': 'tiny', 'workdir': '/x'})
  index = _parameters_index(nb)
  assert nb.cells[index + 1].source == "scale = 'tiny'\nworkdir = '/x'"
  assert len(nb.cells) == len(_read('quickstart.ipynb').cells) + 1


@pytest.mark.slow
def test_quickstart_runs_at_smoke_scale_on_two_devices(tmp_path):
  nb = _with_parameters(_read('quickstart.ipynb'), {
      'method': 'moco', 'scale': 'smoke', 'workdir': str(tmp_path / 'run'),
      'data_dir': str(tmp_path / 'tfds')})
  # Two host devices: the batch is sharded over both, as over the cores of a TPU.
  env = {'XLA_FLAGS': '--xla_force_host_platform_device_count=2', 'JAX_PLATFORMS': 'cpu'}
  _execute(nb, str(tmp_path), env)
  text = ''.join(_outputs(nb, 'text/plain'))
  assert 'backend cpu: 2 device(s)' in text
  assert '(8 per device)' in text
  assert len(_outputs(nb, 'image/png')) == 2  # the example's IQ and the loss curve
  tables = _outputs(nb, 'text/markdown')
  assert len(tables) == 1 and 'moco (pretrained)' in tables[0] and 'random init' in tables[0]
  assert os.path.exists(tmp_path / 'run' / 'metrics.jsonl')


@pytest.mark.slow
def test_compare_methods_runs_at_smoke_scale(tmp_path):
  nb = _with_parameters(_read('compare_methods.ipynb'), {
      'scale': 'smoke', 'out_dir': str(tmp_path / 'study'), 'data_dir': str(tmp_path / 'tfds')})
  _execute(nb, str(tmp_path), {'JAX_PLATFORMS': 'cpu'})
  assert os.path.exists(tmp_path / 'study' / 'results.json')
  figures = [f for f in os.listdir(tmp_path / 'study') if f.endswith('.png')]
  assert figures and len(_outputs(nb, 'image/png')) == len(figures)
  assert any('|' in table for table in _outputs(nb, 'text/markdown'))


if __name__ == '__main__':
  sys.exit(pytest.main([__file__, '-v']))
