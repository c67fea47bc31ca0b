"""The quiet console: the libraries' INFO off, each warning once, errors always; a run's own lines."""

import os
import subprocess
import sys

import pytest

from ssl_jax import console

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_LOGS = '''
import logging as py_logging
from absl import logging
from ssl_jax import console
def log_all(_=None):
  console.quiet_libraries()
  for _ in range(3):
    logging.info('absl info')
    logging.warning('absl warning')
    py_logging.getLogger('jax._src.some_module').warning('jax warning')
    logging.error('absl error')
'''


@pytest.mark.parametrize('entry', ['absl_app', 'plain_script'])
def test_quiet_libraries_hides_info_shows_each_warning_once_and_every_error(entry):
  script = _LOGS + ('from absl import app\napp.run(log_all)\n' if entry == 'absl_app' else 'log_all()\n')
  proc = subprocess.run([sys.executable, '-c', script], cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO),
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  err = proc.stderr
  assert 'absl info' not in err
  assert err.count('absl warning') == 1 and err.count('jax warning') == 1, err
  assert err.count('absl error') == 3, err


def test_console_prints_only_where_enabled(capsys):
  console.Console(enabled=True).line('shown')
  console.Console(enabled=False).line('hidden')
  assert capsys.readouterr().out == f'{console.PREFIX} shown\n'
