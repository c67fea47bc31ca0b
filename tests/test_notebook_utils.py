"""ssl_jax.notebook_utils: batch rounding, devices, loss curve, tables, report."""

import os
import subprocess
import sys

import matplotlib

matplotlib.use('Agg')
import pytest  # noqa: E402

from ssl_jax import notebook_utils  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('value, multiple, expected', [(16, 8, 16), (16, 3, 18), (1, 8, 8), (17, 1, 17),
                                                       (256, 6, 258)])
def test_round_up_to_multiple(value, multiple, expected):
  assert notebook_utils.round_up_to_multiple(value, multiple) == expected


@pytest.mark.parametrize('value, multiple, name', [(0, 8, 'value'), (16, 0, 'multiple')])
def test_round_up_to_multiple_rejects_non_positive(value, multiple, name):
  with pytest.raises(ValueError, match=name):
    notebook_utils.round_up_to_multiple(value, multiple)


def test_importing_the_study_keeps_the_matplotlib_backend():
  """A notebook imports experiments/study.py (as compare_methods.ipynb does) and keeps its own backend."""
  code = ('import matplotlib; matplotlib.use("pdf"); from experiments import study; '
          'print(matplotlib.get_backend())')
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, cwd=REPO,
                       timeout=300, check=True).stdout
  assert out.strip().splitlines()[-1] == 'pdf'


def test_device_summary():
  summary = notebook_utils.device_summary()
  assert summary['device_count'] == len(summary['devices']) >= 1
  text = notebook_utils.format_devices(summary)
  assert text.startswith(f"backend {summary['backend']}: {summary['device_count']} device(s)")


def test_loss_curve_and_plot():
  records = [{'step': 2, 'loss': 3.0}, {'step': 3, 'eval': 1.0}, {'step': 4, 'loss': 2.5}]
  assert notebook_utils.loss_curve(records) == ([2, 4], [3.0, 2.5])
  ax = notebook_utils.plot_loss(records, title='t')
  (line,) = ax.get_lines()
  assert list(line.get_xdata()) == [2, 4] and list(line.get_ydata()) == [3.0, 2.5]
  assert ax.get_title() == 't'
  with pytest.raises(ValueError, match='loss'):
    notebook_utils.loss_curve([{'step': 1}])


def _evaluation(aoa_mean: float, silhouette):
  score = lambda mean: {'mean': mean, 'std': 0.01}
  return {'tasks': {
      'aoa': {'probe': {'1': {'accuracy': score(aoa_mean), 'mae_deg': score(30.0)},
                        '500': {'skipped': 'too few'}},
              'silhouette': silhouette},
      'amc': {'probe': {'1': {'accuracy': score(0.5)}, '500': {'skipped': 'too few'}}, 'silhouette': 0.25},
  }}


def test_probe_table():
  table = notebook_utils.probe_table({'simclr': _evaluation(0.125, None), 'random': _evaluation(0.5, 0.1)})
  lines = table.splitlines()
  assert lines[0] == '| task | labels / class | metric | simclr | random |'
  assert '| aoa | 1 | accuracy % | 12.5 ± 1.0 | 50.0 ± 1.0 |' in lines
  assert '| aoa | 1 | MAE deg | 30.0 ± 0.0 | 30.0 ± 0.0 |' in lines
  assert '| aoa | 500 | accuracy % | skipped | skipped |' in lines
  assert '| aoa | test | silhouette | undefined | 0.100 |' in lines
  assert '| amc | test | silhouette | 0.250 | 0.250 |' in lines
  assert not any('amc' in line and 'MAE' in line for line in lines)
  with pytest.raises(ValueError, match='empty'):
    notebook_utils.probe_table({})


def test_report_markdown_and_figures(tmp_path):
  (tmp_path / 'report.md').write_text('# Report\n\n| a |\n|---|\n\n![loss](loss.png)\n  ![x](b.png) \ntext ![inline](c.png) stays\n')
  for name in ('b.png', 'a.png', 'notes.txt'):
    (tmp_path / name).write_text('')
  text = notebook_utils.report_markdown(str(tmp_path))
  assert text == '# Report\n\n| a |\n|---|\n\ntext ![inline](c.png) stays'
  assert notebook_utils.report_figures(str(tmp_path)) == [str(tmp_path / 'a.png'), str(tmp_path / 'b.png')]
  with pytest.raises(FileNotFoundError, match='report.md'):
    notebook_utils.report_markdown(str(tmp_path / 'missing'))
  with pytest.raises(FileNotFoundError, match='not a directory'):
    notebook_utils.report_figures(str(tmp_path / 'missing'))
