"""The committed results under experiments/results/, for the tests that check them against the code."""

import json
import os

RESULTS_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'experiments', 'results')


def committed_results(name: str) -> tuple[str, dict]:
  """The directory `experiments/results/<name>` and its parsed results.json."""
  results_dir = os.path.join(RESULTS_ROOT, name)
  with open(os.path.join(results_dir, 'results.json')) as f:
    return results_dir, json.load(f)
