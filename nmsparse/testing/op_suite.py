"""The shared test suite of the sparse ops, subclassed once per implementation.

Each case draws fresh random inputs (seeded by the case's name), pulls a random cotangent through
``jax.vjp`` and checks ``y``, ``dx`` and ``dW`` against an independent reference built from explicit
numpy masks (SPEC §1 table), eagerly, under ``jit`` and under ``vmap`` over ``x``. With
``with_mask_source`` the op gets ``mask_source=stale_source(w)`` and the reference takes its masks
from that source (``mask_every > 1``); with ``with_permutation`` bimask cases get a random
backward-mask permutation drawn per case.
"""

from __future__ import annotations

import dataclasses
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from nmsparse.ops import nm_conv, nm_dense
from nmsparse.testing.reference import decay, method_masks
from nmsparse.testing.tolerance import assert_close
from nmsparse.types import METHODS, NMPattern

PATTERNS = ("1:4", "2:4", "2:8", "4:8")
DTYPES = ("float32", "bfloat16")
MODES = ("eager", "jit", "vmap")
CONV_GEOMETRIES = ((1, "SAME"), (2, "SAME"), (1, "VALID"), (2, "VALID"))
LAMBDA = 0.1  # large enough that a missing or wrong SR-STE term fails the dW check


def stale_source(w):
  """A mask source whose masks differ from ``w``'s: ``w`` rolled by one along both kernel axes."""
  return jnp.roll(w, 1, axis=(-2, -1))


@dataclasses.dataclass(frozen=True)
class OpCase:
  op: str
  method: str
  pattern: str
  dtype: str
  mode: str
  stride: int = 1
  padding: str = "SAME"

  @property
  def id(self) -> str:
    geometry = f"-s{self.stride}{self.padding}" if self.op == "conv" else ""
    return (f"{self.op}-{self.method}-{self.pattern.replace(':', 'of')}-{self.dtype}-{self.mode}"
            f"{geometry}")


def _rng(case: OpCase) -> np.random.Generator:
  return np.random.default_rng(zlib.crc32(case.id.encode()))


def case_permutation(case: OpCase, features: int) -> np.ndarray:
  """The case's bimask backward-mask permutation of ``features`` outputs (seeded by its name)."""
  return np.random.default_rng(zlib.crc32(f"{case.id}/permutation".encode())).permutation(features)


class OpSuite:
  """Subclass and set ``implementation``; ``tests/conftest.py`` parametrises ``case`` from ``cases``."""

  implementation: str = "xla"
  patterns: tuple[str, ...] = PATTERNS
  dtypes: tuple[str, ...] = DTYPES
  methods: tuple[str, ...] = METHODS
  with_mask_source: bool = False
  with_permutation: bool = True

  @classmethod
  def cases(cls) -> list[OpCase]:
    cases = []
    for method in cls.methods:
      for pattern in cls.patterns:
        for dtype in cls.dtypes:
          for mode in MODES:
            cases.append(OpCase("dense", method, pattern, dtype, mode))
          for stride, padding in CONV_GEOMETRIES:
            cases.append(OpCase("conv", method, pattern, dtype, "jit", stride, padding))
          stride, padding = CONV_GEOMETRIES[len(cases) % len(CONV_GEOMETRIES)]
          for mode in ("eager", "vmap"):
            cases.append(OpCase("conv", method, pattern, dtype, mode, stride, padding))
    return cases

  # The op under test and its independent reference -------------------------------------------

  def _permutation(self, case: OpCase) -> np.ndarray | None:
    if case.method != "bimask" or not self.with_permutation:
      return None
    return case_permutation(case, self._shapes(case)[1][-1])

  def _op(self, case: OpCase):
    kwargs = dict(pattern=case.pattern, method=case.method, sr_ste_lambda=LAMBDA,
                  implementation=self.implementation)
    perm = self._permutation(case)
    if perm is not None:
      kwargs["permutation"] = jnp.asarray(perm, jnp.int32)
    source = lambda w: {"mask_source": stale_source(w)} if self.with_mask_source else {}
    if case.op == "dense":
      return lambda x, w: nm_dense(x, w, **kwargs, **source(w))
    return lambda x, w: nm_conv(x, w, strides=(case.stride,) * 2, padding=case.padding, **kwargs,
                                **source(w))

  def _reference(self, case: OpCase, x, w, dy):
    """``(y, dx, dw)`` in float64/float32 from explicit masks; ``x``, ``dy`` one example batch."""
    pattern = NMPattern.parse(case.pattern)
    w64 = np.asarray(w, np.float64)
    src = stale_source(w) if self.with_mask_source else w
    m_ff, m_bp = method_masks(np.asarray(src, np.float64), pattern, case.method,
                              self._permutation(case))
    cast = lambda a: np.asarray(jnp.asarray(a, case.dtype).astype(jnp.float32), np.float64)
    w_ff, w_bp = cast(w64 * m_ff), cast(w64 * m_bp)
    x64, dy64 = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    if case.op == "dense":
      y = x64 @ w_ff
      dx = dy64 @ w_bp.T
      dw = x64.T @ dy64
    else:
      conv = lambda a, b: jax.lax.conv_general_dilated(
          a, b, (case.stride,) * 2, case.padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
          precision=jax.lax.Precision.HIGHEST)
      f32 = lambda a: jnp.asarray(a, jnp.float32)
      y = conv(f32(x64), f32(w_ff))
      (dx,) = jax.vjp(lambda a: conv(a, f32(w_bp)), f32(x64))[1](f32(dy64))
      (dw,) = jax.vjp(lambda b: conv(f32(x64), b), f32(w64))[1](f32(dy64))
    return np.asarray(y), np.asarray(dx), np.asarray(dw) + decay(w64, m_ff, case.method, LAMBDA)

  def _shapes(self, case: OpCase):
    m = NMPattern.parse(case.pattern).m
    if case.op == "dense":
      return (5, 2 * m), (2 * m, 3 * m)
    return (2, 7, 7, m), (3, 3, m, 2 * m)

  def _reduction_lens(self, case: OpCase, x_shape, w_shape):
    if case.op == "dense":
      return w_shape[0], w_shape[1], x_shape[0]
    kh, kw, c, o = w_shape
    return kh * kw * c, kh * kw * o, int(np.prod(x_shape[:3]))

  # The test ------------------------------------------------------------------------------------

  def test_matches_reference(self, case: OpCase):
    rng = _rng(case)
    x_shape, w_shape = self._shapes(case)
    if case.mode == "vmap":
      x_shape = (3,) + x_shape
    x = jnp.asarray(rng.standard_normal(x_shape), case.dtype)
    w = jnp.asarray(rng.standard_normal(w_shape), jnp.float32)
    op = self._op(case)
    y_shape = jax.eval_shape(op, x[0] if case.mode == "vmap" else x, w).shape
    dy = jnp.asarray(rng.standard_normal(((3,) if case.mode == "vmap" else ()) + y_shape),
                     case.dtype)

    def forward_backward(x, dy):
      y, pullback = jax.vjp(op, x, w)
      return (y, *pullback(dy))

    if case.mode == "eager":
      y, dx, dw = forward_backward(x, dy)
    elif case.mode == "jit":
      y, dx, dw = jax.jit(forward_backward)(x, dy)
    else:
      y, dx, dw = jax.vmap(forward_backward)(x, dy)

    assert y.dtype == x.dtype and dx.dtype == x.dtype, (y.dtype, dx.dtype)
    assert dw.dtype == jnp.float32, f"weight gradient must stay in the master dtype, got {dw.dtype}"
    lens = self._reduction_lens(case, x_shape[1:] if case.mode == "vmap" else x_shape, w_shape)
    examples = range(3) if case.mode == "vmap" else [None]
    for v in examples:
      pick = (lambda a: a) if v is None else (lambda a: a[v])
      y_ref, dx_ref, dw_ref = self._reference(case, pick(x), w, pick(dy))
      assert_close(pick(y), y_ref, case.dtype, lens[0], f"{case.id} y")
      assert_close(pick(dx), dx_ref, case.dtype, lens[1], f"{case.id} dx")
      assert_close(pick(dw), dw_ref, case.dtype, lens[2], f"{case.id} dW")
