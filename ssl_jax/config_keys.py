"""Dotted keys of a config (`'optim.learning_rate'`) and a config as plain JSON: the one place that walks them.

`get(config, 'a.b', default)` reads `config.a.b` (ConfigDicts and dicts alike), `default` where any part is
absent; `MISSING` is the default that tells "absent" apart from every value, None included. `set_existing`
writes a key the config already has and raises KeyError naming the key otherwise; `to_json` is the config as
JSON types (tuples become lists), as written to `config.json`; `split_keys` reads a comma-separated list of
keys (`config.allow_resume_changes`).
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import ml_collections

MISSING: Any = object()


def get(config: Any, dotted: str, default: Any = MISSING) -> Any:
  """`config.a.b` for `dotted='a.b'`; `default` (MISSING unless given) where a part is absent."""
  node = config
  for part in dotted.split('.'):
    if isinstance(node, (dict, ml_collections.ConfigDict)) and part in node:
      node = node[part]
    else:
      return default
  return node


def set_existing(config: ml_collections.ConfigDict, dotted: str, value: Any, *, ignore_type: bool = False) -> None:
  """Sets `config.a.b = value` for `dotted='a.b'`; KeyError naming `dotted` when the config has no such key.
  `ignore_type`: allow a value of another type than the key's (ConfigDict refuses it otherwise)."""
  *path, last = dotted.split('.')
  node = get(config, '.'.join(path)) if path else config
  if not isinstance(node, ml_collections.ConfigDict) or last not in node:
    raise KeyError(f'the config has no key {dotted!r}')
  if ignore_type:
    with node.ignore_type():
      node[last] = value
  else:
    node[last] = value


def to_json(config: ml_collections.ConfigDict | Mapping[str, Any]) -> dict[str, Any]:
  """The config as JSON types (a ConfigDict through `to_json_best_effort`, a mapping through `json`)."""
  if isinstance(config, ml_collections.ConfigDict):
    return json.loads(config.to_json_best_effort())
  return json.loads(json.dumps(config))


def split_keys(text: str) -> list[str]:
  """'a, b,c' -> ['a', 'b', 'c'] (empty parts dropped)."""
  return [part.strip() for part in text.split(',') if part.strip()]
