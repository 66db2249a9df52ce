"""Implementation dispatch: ``"xla"`` (reference), ``"pallas"`` (kernels), ``None`` (best available)."""

from __future__ import annotations

import importlib
from types import ModuleType

import jax

from nmsparse.types import IMPLEMENTATIONS

_MODULES = {"xla": "nmsparse.ops.xla", "pallas": "nmsparse.ops.pallas"}


def resolve_implementation(implementation: str | None) -> str:
  """``None`` -> ``"pallas"`` on GPU, ``"xla"`` elsewhere; a name is checked and passed through."""
  if implementation is None:
    return "pallas" if jax.default_backend() == "gpu" else "xla"
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"Unknown implementation {implementation!r}; expected one of "
                     f"{IMPLEMENTATIONS} or None (best available for the backend).")
  return implementation


def get_impl(implementation: str) -> ModuleType:
  """The module providing ``dense_fwd/dense_bwd/conv_fwd/conv_bwd`` for ``implementation``."""
  return importlib.import_module(_MODULES[resolve_implementation(implementation)])
