"""Implementation dispatch: the static map of names to ``Implementation`` records, the choice."""

from __future__ import annotations

import jax

from nmsparse.ops import pallas, xla
from nmsparse.ops.config import LayerSpec
from nmsparse.ops.impl import Implementation

IMPLEMENTATIONS: dict[str, Implementation] = {
    "xla": xla.IMPLEMENTATION,
    "pallas": pallas.IMPLEMENTATION,
}

# implementation=None: the first of these that supports the layer, per JAX backend.
PREFERENCE: dict[str, tuple[str, ...]] = {"gpu": ("pallas", "xla")}
DEFAULT_PREFERENCE: tuple[str, ...] = ("xla",)


def get_implementation(name: str) -> Implementation:
  """The record called ``name``.

  Raises:
    ValueError: an unknown name.
  """
  if name not in IMPLEMENTATIONS:
    raise ValueError(f"Unknown implementation {name!r}; expected one of "
                     f"{tuple(IMPLEMENTATIONS)} or None (best available for the backend).")
  return IMPLEMENTATIONS[name]


def resolve_implementation(implementation: str | None, layer: LayerSpec | None = None) -> str:
  """The implementation that runs ``layer``.

  ``None`` picks, per layer, the first implementation of the backend's :data:`PREFERENCE` whose
  ``supports(layer)`` is None (without a layer: the first one). A name is checked and kept.

  Raises:
    ValueError: an unknown name, or a named implementation that cannot run ``layer`` (the reason
      is in the message; there is no silent fallback).
  """
  if implementation is None:
    order = PREFERENCE.get(jax.default_backend(), DEFAULT_PREFERENCE)
    if layer is None:
      return order[0]
    return next((n for n in order if IMPLEMENTATIONS[n].supports(layer) is None), "xla")
  impl = get_implementation(implementation)
  reason = None if layer is None else impl.supports(layer)
  if reason is not None:
    raise ValueError(f"implementation={implementation!r} cannot run this {layer.op} layer "
                     f"(kernel {layer.w_shape}, pattern {layer.pattern}, method {layer.method}): "
                     f"{reason}.")
  return implementation
