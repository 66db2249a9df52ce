"""Where the Pallas kernels run: compiled through Triton on a GPU, or in interpret mode elsewhere.

``interpret()`` is True off-GPU (CPU CI runs every kernel in the Pallas interpreter) and can be
forced either way with ``NMSPARSE_PALLAS_INTERPRET=0/1`` or :func:`force_interpret`.
``triton_params`` names the Triton backend explicitly: JAX 0.11 lowers a ``pallas_call`` without
compiler parameters through Triton with a deprecation warning, or through Mosaic GPU when
``jax_pallas_use_mosaic_gpu`` is set, which rejects these kernels.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import jax

_FORCED: list[bool] = []


def interpret() -> bool:
  """Whether ``pallas_call`` should run in interpret mode now."""
  if _FORCED:
    return _FORCED[-1]
  env = os.environ.get("NMSPARSE_PALLAS_INTERPRET", "").strip().lower()
  if env in ("1", "true", "yes"):
    return True
  if env in ("0", "false", "no"):
    return False
  return jax.default_backend() != "gpu"


@contextlib.contextmanager
def force_interpret(flag: bool = True) -> Iterator[None]:
  """Runs the kernels traced inside the block in (or out of) interpret mode."""
  _FORCED.append(bool(flag))
  try:
    yield
  finally:
    _FORCED.pop()


def _triton_params_class():
  try:
    from jax.experimental.pallas import triton as pltriton
    cls = getattr(pltriton, "CompilerParams", None)
    if cls is not None:
      return cls
  except ImportError:
    pass
  from jax.experimental.pallas import gpu as plgpu  # older JAX
  return getattr(plgpu, "TritonCompilerParams")


def triton_params(num_warps: int = 4, num_stages: int = 2):
  """Triton compiler parameters (class name differs across JAX versions); None if interpreting."""
  if interpret():
    return None
  return _triton_params_class()(num_warps=num_warps, num_stages=num_stages)


def call_kwargs(num_warps: int = 4, num_stages: int = 2) -> dict:
  """``interpret``/``compiler_params`` keyword arguments for ``pl.pallas_call``."""
  return dict(interpret=interpret(), compiler_params=triton_params(num_warps, num_stages))
