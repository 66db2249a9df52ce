"""Loading ``get_config(arg)`` configs (packaged by name, or files by path) and applying
``key=value`` overrides (no flags here, so scripts can import it)."""

from __future__ import annotations

import ast
import importlib.util
import os
from typing import Any, Sequence

import configs

PACKAGED_CONFIGS = os.path.dirname(os.path.abspath(configs.__file__))


def packaged_config_names() -> list[str]:
  """The configs that ship with the package (``configs/*.py`` with a ``get_config``)."""
  return sorted(f[:-3] for f in os.listdir(PACKAGED_CONFIGS)
                if f.endswith(".py") and f not in ("__init__.py", "base.py"))


def resolve_config(spec: str) -> str:
  """``NAME[:arg]`` (a packaged config) -> its file ``.../configs/NAME.py[:arg]``; a path is kept.

  A path ends in ``.py`` (before ``:arg``); anything else names a packaged config.

  Raises:
    ValueError: a name that is no packaged config.
  """
  path, sep, arg = spec.partition(":")
  if path.endswith(".py"):
    return spec
  if path not in packaged_config_names():
    raise ValueError(f"--config {spec!r}: no packaged config {path!r} (packaged: "
                     f"{', '.join(packaged_config_names())}); a config file is a path ending in "
                     ".py.")
  return os.path.join(PACKAGED_CONFIGS, path + ".py") + sep + arg


def resolve_config_argv(argv: Sequence[str]) -> list[str]:
  """``argv`` with every ``--config`` value passed through :func:`resolve_config`."""
  out = list(argv)
  for i, a in enumerate(out):
    if a.startswith("--config="):
      out[i] = "--config=" + resolve_config(a[len("--config="):])
    elif a == "--config" and i + 1 < len(out):
      out[i + 1] = resolve_config(out[i + 1])
  return out


def load_config(config_path: str) -> Any:
  """``get_config(arg)`` of ``NAME[:arg]`` or ``path.py[:arg]`` (as ``--config`` of nms-train)."""
  path, _, arg = resolve_config(config_path).partition(":")
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
