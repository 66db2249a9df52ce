"""Loading ``get_config(arg)`` files by path and applying ``key=value`` overrides (no flags here, so
scripts can import it)."""

from __future__ import annotations

import ast
import importlib.util
from typing import Any


def load_config(config_path: str) -> Any:
  """``get_config(arg)`` of ``path[:arg]`` (the same syntax as ``--config`` of experiments.main)."""
  path, _, arg = config_path.partition(":")
  spec = importlib.util.spec_from_file_location(f"_sweep_config_{abs(hash(path))}", path)
  if spec is None or spec.loader is None:
    raise FileNotFoundError(f"Config file {path!r} not found.")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg or None)


def parse_value(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def apply_overrides(config: Any, overrides: dict[str, Any]) -> Any:
  """Sets dotted keys (``data.data_dir``) on a copy of ``config``; only ``model_kwargs.*`` may add a
  field, any other unknown key is a ``KeyError``."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    for key, value in overrides.items():
      *parents, leaf = key.split(".")
      node = config
      for parent in parents:
        node = node[parent]
      if leaf not in node and parents != ["model_kwargs"]:  # model fields may be new
        raise KeyError(f"Override {key!r}: the config has no field {leaf!r}.")
      node[leaf] = value
  return config
