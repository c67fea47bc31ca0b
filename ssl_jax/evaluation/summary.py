"""The console summary of an evaluation: one row per task and label budget (`python -m ssl_jax.evaluate`).

`summary_table(results)` reads the results dict of `ssl_jax.evaluate.run` (the contents of
`eval/results.json`) and returns text lines, no I/O: a title, a header, one row per task and budget with
the pretrained encoder's probe accuracy, the random-init encoder's beside it (when the results hold one)
and the pretrained encoder's AoA error in degrees (when the results hold one), then a line saying what the
± is: the std over probe seeds, or for a member run's pretrained scores the half-width of the 95%
confidence interval over its members (`ssl_jax.evaluation.intervals`).
"""

from typing import Any, Mapping, Optional

_TASK_NAMES = {'aoa': 'AoA', 'amc': 'AMC'}
_MISSING = '-'
_SKIPPED = 'skipped'


def _spread(score: Mapping[str, Any]) -> Optional[float]:
  """The ± of a score: its 95% CI half-width when it has one, else its std over probe seeds (None: neither)."""
  if score.get('half_width') is not None:
    return float(score['half_width'])
  if score.get('std') is not None:
    return float(score['std'])
  return None


def _cell(scores: Optional[Mapping[str, Any]], key: str, digits: int) -> str:
  """`mean ± spread` of `scores[key]`, 'skipped' for a skipped budget, '-' where there is no such score."""
  if scores is None:
    return _MISSING
  if 'skipped' in scores:
    return _SKIPPED
  if key not in scores:
    return _MISSING
  spread = _spread(scores[key])
  mean = f"{float(scores[key]['mean']):.{digits}f}"
  return mean if spread is None else f'{mean} ± {spread:.{digits}f}'


def _probe_table(encoder: Optional[Mapping[str, Any]], task: str) -> Mapping[str, Any]:
  """{budget string: scores} of an encoder's probes for `task`; {} when the encoder or task is absent."""
  if not encoder:
    return {}
  return encoder.get('tasks', {}).get(task, {}).get('probe', {})


def _first_score(encoder: Optional[Mapping[str, Any]]) -> Optional[Mapping[str, Any]]:
  """The accuracy score of an encoder's first probe that ran (not skipped), or None."""
  for task in (encoder or {}).get('tasks', {}):
    for scores in _probe_table(encoder, task).values():
      if 'accuracy' in scores:
        return scores['accuracy']
  return None


def _spread_legend(score: Optional[Mapping[str, Any]]) -> Optional[str]:
  if score is None:
    return None
  if score.get('half_width') is not None:
    return f"mean of {int(score['n'])} members ± the half-width of its 95% confidence interval"
  return f"mean ± std over {len(score['values'])} probe seeds"


def summary_table(results: Mapping[str, Any]) -> list[str]:
  """The lines of the console summary of `results` (see the module docstring); [] without pretrained results.

  Tasks come in the order of `results['probe_config']['tasks']` (else of `results['pretrained']['tasks']`),
  budgets in increasing order. A budget the results skipped reads 'skipped'; a score the results do not
  hold reads '-'.
  """
  pretrained = results.get('pretrained')
  if not pretrained or not pretrained.get('tasks'):
    return []
  random_init = results.get('random_init')
  listed = list((results.get('probe_config') or {}).get('tasks') or [])
  tasks = [t for t in listed if t in pretrained['tasks']] + [t for t in pretrained['tasks'] if t not in listed]
  show_error = any('mae_deg' in scores for task in tasks for scores in _probe_table(pretrained, task).values())
  header = ['task', 'labels/class', 'pretrained'] + (['random init'] if random_init else []) + (
      ['AoA error (deg)'] if show_error else [])
  rows = []
  for task in tasks:
    table = _probe_table(pretrained, task)
    for budget in sorted(table, key=int):
      row = [_TASK_NAMES.get(task, task), budget, _cell(table[budget], 'accuracy', 3)]
      if random_init:
        row.append(_cell(_probe_table(random_init, task).get(budget), 'accuracy', 3))
      if show_error:
        row.append(_cell(table[budget], 'mae_deg', 1) if task == 'aoa' else _MISSING)
      rows.append(row)
  widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

  def line(row: list[str]) -> str:
    cells = [text.rjust(width) if i == 1 else text.ljust(width) for i, (text, width) in enumerate(zip(row, widths))]
    return '  '.join(cells).rstrip()

  method, step = results.get('method'), results.get('step')
  title = 'linear probes on the test split' + (f': {method}' if method else '') + (
      f' at step {step}' if step is not None else '')
  legends = []
  pretrained_legend = _spread_legend(_first_score(pretrained))
  random_legend = _spread_legend(_first_score(random_init))
  if pretrained_legend and random_legend and pretrained_legend != random_legend:
    legends = [f'pretrained: {pretrained_legend}', f'random init: {random_legend}']
  elif pretrained_legend:
    legends = [pretrained_legend]
  return ([title, line(header)] + [line(r) for r in rows] +
          ([f"cells: {'; '.join(legends)}"] if legends else []))
