"""The one place test tolerances come from."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

_EPS = {
    "float64": 2.0**-52,
    "float32": 2.0**-23,
    "tf32": 2.0**-10,  # GPU matrix units' default float32 mode
    "bfloat16": 2.0**-8,
    "float16": 2.0**-10,
}


def tolerance(dtype, reduction_len: int) -> dict[str, float]:
  """``rtol``/``atol`` for comparing a product over ``reduction_len`` terms of O(1) values.

  Rounding of the compute dtype bounds the relative error; the absolute part grows like the
  square root of the reduction length (random-walk accumulation of rounding errors). float32 on a
  GPU is treated as tf32, the default precision of its matrix units.

  Returns:
    ``{"rtol": ..., "atol": ...}`` for ``np.testing.assert_allclose(**tolerance(...))``.
  """
  name = jnp.dtype(dtype).name
  if name == "float32" and jax.default_backend() == "gpu":
    name = "tf32"
  eps = _EPS[name]
  scale = max(1.0, math.sqrt(reduction_len))
  return {"rtol": 8 * eps, "atol": 8 * eps * scale}


def assert_close(actual, expected, dtype, reduction_len: int, err_msg: str = "") -> None:
  """``assert_allclose`` in float64 with :func:`tolerance`; NaN never passes."""
  actual = np.asarray(jnp.asarray(actual, jnp.float32), np.float64)
  expected = np.asarray(expected, np.float64)
  assert actual.shape == expected.shape, f"{err_msg}: shape {actual.shape} != {expected.shape}"
  assert np.all(np.isfinite(actual)), f"{err_msg}: non-finite values"
  np.testing.assert_allclose(actual, expected, err_msg=err_msg, **tolerance(dtype, reduction_len))
