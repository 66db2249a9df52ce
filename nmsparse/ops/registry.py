"""Implementation dispatch: the static map of names to ``Implementation`` records, the choice."""

from __future__ import annotations

import jax

import math

from absl import logging

from nmsparse.ops import pallas, sparse_tc, xla
from nmsparse.ops.cards import prefers_sparse_tc
from nmsparse.ops.config import LayerSpec
from nmsparse.ops.impl import Implementation

IMPLEMENTATIONS: dict[str, Implementation] = {
    "xla": xla.IMPLEMENTATION,
    "pallas": pallas.IMPLEMENTATION,
    "sparse_tc": sparse_tc.IMPLEMENTATION,
}

# implementation=None: the first of these that supports the layer, per JAX backend; sparse_tc only
# where the card's measurements (nmsparse.ops.cards) say it beats the masked path for the layer.
PREFERENCE: dict[str, tuple[str, ...]] = {"gpu": ("sparse_tc", "pallas", "xla")}
DEFAULT_PREFERENCE: tuple[str, ...] = ("xla",)
MEASURED: dict[str, object] = {
    "sparse_tc": lambda layer: prefers_sparse_tc(layer.w_shape,
                                                 math.prod(layer.x_shape[:-1]) or 1),
}
# A named implementation that is available but cannot run a layer (its shape, pattern or method)
# hands that layer to this one, logged; an unavailable one (off-GPU, extension not built) raises.
FALLBACK: dict[str, str] = {"sparse_tc": "pallas"}
_LOGGED: set = set()


def _chosen(name: str, layer: LayerSpec) -> bool:
  return (IMPLEMENTATIONS[name].supports(layer) is None and
          (name not in MEASURED or MEASURED[name](layer)))


def _log_choice(layer: LayerSpec, name: str):
  key = (layer.op, layer.w_shape, layer.x_shape, layer.pattern, layer.method, name)
  if key not in _LOGGED:
    _LOGGED.add(key)
    logging.info("nmsparse %s %s x %s (%s %s): implementation=None -> %s", layer.op,
                 layer.x_shape, layer.w_shape, layer.method, layer.pattern, name)


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
  ``supports(layer)`` is None and, where :data:`MEASURED` has a rule for it, whose measurements on
  this card favour it (without a layer: the first one that needs no measurement); each choice is
  logged once. A name is checked and kept.

  A named implementation that is available but cannot run ``layer`` hands it to its
  :data:`FALLBACK` (``sparse_tc`` -> ``pallas``: a model asking for sparse tensor cores runs its
  other layers on the Pallas path), logged once per layer shape.

  Raises:
    ValueError: an unknown name, or a named implementation that cannot run ``layer`` and has no
      fallback for it, or is unavailable here (the reason is in the message).
  """
  if implementation is None:
    order = PREFERENCE.get(jax.default_backend(), DEFAULT_PREFERENCE)
    if layer is None:
      return next(n for n in order if n not in MEASURED)
    name = next((n for n in order if _chosen(n, layer)), "xla")
    _log_choice(layer, name)
    return name
  impl = get_implementation(implementation)
  reason = None if layer is None else impl.supports(layer)
  fallback = FALLBACK.get(implementation)
  if (reason is not None and fallback is not None and impl.available() is None
      and IMPLEMENTATIONS[fallback].supports(layer) is None):
    key = (layer.op, layer.w_shape, layer.x_shape, layer.pattern, layer.method, fallback)
    if key not in _LOGGED:
      _LOGGED.add(key)
      logging.info("nmsparse %s %s x %s (%s %s): %s cannot run it (%s) -> %s", layer.op,
                   layer.x_shape, layer.w_shape, layer.method, layer.pattern, implementation,
                   reason, fallback)
    return fallback
  if reason is not None:
    raise ValueError(f"implementation={implementation!r} cannot run this {layer.op} layer "
                     f"(kernel {layer.w_shape}, pattern {layer.pattern}, method {layer.method}): "
                     f"{reason}.")
  return implementation
