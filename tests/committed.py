"""The committed results under experiments/results/, for the tests that check them against the code."""

import json
import os

RESULTS_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'experiments', 'results')


def committed_results(name: str) -> tuple[str, dict]:
  """The directory `experiments/results/<name>` and its parsed results.json."""
  results_dir = os.path.join(RESULTS_ROOT, name)
  with open(os.path.join(results_dir, 'results.json')) as f:
    return results_dir, json.load(f)


# Committed results that ran the encoder layout of every run before the layout keys existed
# (`models.LEGACY_LAYOUT`, 'v1'), and whose configs therefore hold no layout key. Each leaves this tuple when it
# is rerun on the default layout (experiments/results/README.md, "The encoder's layout").
RAN_THE_LEGACY_LAYOUT = ('study_cpu', 'study_cpu_methods', 'sweep_temperature')


def sections_that_ran(name: str, section: str, stored: dict, expected: dict) -> tuple[dict, dict]:
  """Config section `section` as committed result `name` ran it (`stored`, with the keys configs gained after
  it read as `ssl_jax.workdir.resume.ABSENT_MEANS`, the value that trains what it trained) and as the code would
  run it for that result (`expected`; for a result in RAN_THE_LEGACY_LAYOUT, with the legacy layout)."""
  from ssl_jax import models
  from ssl_jax.workdir import resume
  prefix = section + '.'
  absent = {k[len(prefix):]: v for k, v in resume.ABSENT_MEANS.items() if k.startswith(prefix)}
  if section == 'model' and name in RAN_THE_LEGACY_LAYOUT:
    assert not set(models.LAYOUT_KEYS) & set(stored), f'{name} names its layout: take it off RAN_THE_LEGACY_LAYOUT'
    expected = {**expected, **models.LEGACY_LAYOUT}
  return {**{k: v for k, v in absent.items() if k in expected}, **stored}, expected
