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


def model_sections(name: str, stored: dict, expected: dict) -> tuple[dict, dict]:
  """The `model` config section a committed result `name` ran (`stored`, the layout keys it predates filled in)
  and the one the code would run for it (`expected`, with the legacy layout for a result that ran it)."""
  from ssl_jax import models
  if name in RAN_THE_LEGACY_LAYOUT:
    assert not set(models.LAYOUT_KEYS) & set(stored), f'{name} names its layout: take it off RAN_THE_LEGACY_LAYOUT'
    return {**stored, **models.LEGACY_LAYOUT}, {**expected, **models.LEGACY_LAYOUT}
  return stored, expected
