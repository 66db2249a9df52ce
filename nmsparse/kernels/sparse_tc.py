"""2:4 sparse tensor-core kernels (cuSPARSELt behind the XLA FFI), each beside its jnp reference.

Layout: a structured operand ``A [m, k]`` (every 4 consecutive entries of a row hold at most 2
nonzeros) is kept *compressed* (cuSPARSELt's opaque byte layout, ``compressed_size(m, k)`` bytes);
``spmm(a, x)`` computes ``x @ A^T`` for ``x [n, k]``. For a dense layer ``y = x @ W`` with
``W [K, O]``: the forward operand is ``A_ff = (W * M_ff)^T [O, K]`` and the backward-data operand
``A_bp = W * M_bp [K, O]`` (``dx = dy @ A_bp^T``). Any N:M pattern with N <= 2 and M a multiple of
4 is such a matrix.

* ``prune(w, pattern, bp)``: fp32 ``W [K, O]`` -> masked bf16 ``A_ff``, ``A_bp`` and the ``M_ff``
  keep bits ``[K/M, O]`` (bit ``r`` = row ``g*M + r`` kept), one pass.
* ``compress(w, pattern, bp)``: fp32 ``W [K, O]`` -> compressed ``A_ff``, ``A_bp`` and the keep
  bits in one pass (our kernel, writing the library's layout: see ``reference_compress_operand``).
* ``lib_compress(a)``: the library's compressor (``cusparseLtSpMMACompress2``), the oracle of ours.
* ``spmm(a_comp, x, m, k)``: the product; ``n`` is padded up to a multiple of 16 here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nmsparse import native
from nmsparse.pack import pack_keep_bits
from nmsparse.prune.methods import ff_mask, bp_mask
from nmsparse.types import NMPattern

ROW_MULTIPLE = 16  # tokens are padded to this multiple (cuSPARSELt's dense-operand alignment)
DIM_MULTIPLE = 64  # m and k of the structured operand: whole 64 x 32 metadata blocks, no padding
META_ROWS, META_COLS = 64, 32  # one metadata block: 64 rows x 32 columns, 256 bytes


def eligible_shape(m: int, k: int) -> str | None:
  """``None`` if a structured ``[m, k]`` operand fits the kernels, else why not."""
  if m % DIM_MULTIPLE or k % DIM_MULTIPLE:
    return f"its operand [{m}, {k}] is not a multiple of {DIM_MULTIPLE} in both dimensions"
  return None


def compressed_bytes(m: int, k: int) -> int:
  """Bytes of a compressed ``[m, k]`` operand: ``m*k/2`` bf16 values, ``m*k/8`` bytes of codes."""
  return m * k + m * k // 8


def _meta_nibble(i, g):
  """Nibble index, inside its block, of the code of row ``i % 64``, group of 4 ``g % 8``."""
  i, g = i % META_ROWS, g % (META_COLS // 4)
  return (i // 16) * 128 + (i % 8) * 16 + (i // 8) % 2 + (g % 4) * 4 + (g // 4) * 2


def reference_compress_operand(a: jax.Array, keep: jax.Array) -> jax.Array:
  """The compressed bytes of ``a [m, k]`` keeping the entries where ``keep`` (at most 2 of every
  4 consecutive entries of a row), in cuSPARSELt's layout (worked out from the library's output
  by ``scripts/bench_sptc.py``'s probe; tests hold it to the library's bytes):

  * values: ``[m, k/2]`` bf16, row-major, each group of 4 giving its 2 stored entries in column
    order; a group with fewer than 2 kept entries stores zeros at its lowest free positions;
  * codes: ``p0 | p1 << 2`` (``p0 < p1`` the stored positions) per group, 4 bits, in blocks of
    64 rows x 32 columns (256 bytes) that run row-major over ``(row / 64, column / 32)``; inside a
    block at the nibble :func:`_meta_nibble` gives, low nibble first.
  """
  m, k = a.shape
  if m % DIM_MULTIPLE or k % DIM_MULTIPLE:
    raise ValueError(f"compressed operands are [m, k] with m, k multiples of {DIM_MULTIPLE}; got "
                     f"[{m}, {k}].")
  g = keep.reshape(m, k // 4, 4)
  v = jnp.where(g, a.reshape(m, k // 4, 4), 0)
  order = jnp.argsort(jnp.where(g, 0, 4) + jnp.arange(4), axis=-1)[..., :2]  # kept, then free
  pos = jnp.sort(order, axis=-1)
  values = jnp.take_along_axis(v, pos, axis=-1).astype(jnp.bfloat16).reshape(m, k // 2)
  codes = (pos[..., 0] | (pos[..., 1] << 2)).astype(jnp.uint8)
  rows, groups = np.indices((m, k // 4))
  block = (rows // META_ROWS) * (k // META_COLS) + (4 * groups) // META_COLS
  nib = block * (META_ROWS * META_COLS // 4) + _meta_nibble(rows, groups)
  meta = jnp.zeros((m * k // 8,), jnp.uint8).at[(nib // 2).ravel()].add(
      (codes << (4 * (nib % 2)).astype(np.uint8)).ravel())
  value_bytes = jax.lax.bitcast_convert_type(values, jnp.uint8).reshape(-1)
  return jnp.concatenate([value_bytes, meta])


def reference_compress(w: jax.Array, pattern: NMPattern, bp: bool = True):
  """jnp reference of :func:`compress`: the compressed ``A_ff``, ``A_bp`` (``None`` without
  ``bp``) and the ``M_ff`` keep bits, from ``nm_mask``'s masks."""
  m_ff = ff_mask(w, pattern)
  ff = reference_compress_operand(w.T, m_ff.T)
  out_bp = None
  if bp:
    out_bp = reference_compress_operand(w, bp_mask(w, pattern, "bdwp"))
  return ff, out_bp, pack_keep_bits(m_ff, pattern, axis=0)


def compress(w: jax.Array, pattern: NMPattern, bp: bool = True):
  """Native :func:`reference_compress`: one pass over ``w``, the same bytes."""
  native.library()
  k, o = w.shape
  size = compressed_bytes(k, o)
  keep_dtype = jnp.uint16 if pattern.m > 8 else jnp.uint8
  out = (jax.ShapeDtypeStruct((size,), jnp.uint8),
         jax.ShapeDtypeStruct((size if bp else 0,), jnp.uint8),
         jax.ShapeDtypeStruct((k // pattern.m, o), keep_dtype))
  ff, bp_c, keep = jax.ffi.ffi_call("nms_sptc_compress", out, vmap_method="sequential")(
      w.astype(jnp.float32), n=np.int64(pattern.n), m=np.int64(pattern.m), bp=bool(bp))
  return ff, (bp_c if bp else None), keep


def reference_prune(w: jax.Array, pattern: NMPattern, bp: bool = True):
  """jnp reference of :func:`prune`: ``nm_mask`` masks (bdwp's BP mask when ``bp``)."""
  m_ff = ff_mask(w, pattern)
  a_ff = jnp.where(m_ff, w, 0).astype(jnp.bfloat16).T
  a_bp = jnp.where(bp_mask(w, pattern, "bdwp"), w, 0).astype(jnp.bfloat16) if bp else None
  return a_ff, a_bp, pack_keep_bits(m_ff, pattern, axis=0)


def prune(w: jax.Array, pattern: NMPattern, bp: bool = True):
  """Native :func:`reference_prune` (same outputs, bit for bit)."""
  native.library()
  k, o = w.shape
  out = (jax.ShapeDtypeStruct((o, k), jnp.bfloat16),
         jax.ShapeDtypeStruct((k, o) if bp else (0, 0), jnp.bfloat16),
         jax.ShapeDtypeStruct((k // pattern.m, o), jnp.uint16 if pattern.m > 8 else jnp.uint8))
  a_ff, a_bp, keep = jax.ffi.ffi_call("nms_sptc_prune", out, vmap_method="sequential")(
      w.astype(jnp.float32), n=np.int64(pattern.n), m=np.int64(pattern.m), bp=bool(bp))
  return a_ff, (a_bp if bp else None), keep


def lib_compress(a: jax.Array) -> jax.Array:
  """cuSPARSELt's compressed bytes of a 2:4 bf16 ``a [m, k]``."""
  m, k = a.shape
  size, buf = native.compressed_size(m, k)
  out = (jax.ShapeDtypeStruct((size,), jnp.uint8), jax.ShapeDtypeStruct((max(buf, 1),), jnp.uint8))
  call = jax.ffi.ffi_call("nms_sptc_lib_compress", out, vmap_method="sequential")
  return call(a.astype(jnp.bfloat16))[0]


def reference_spmm(a: jax.Array, x: jax.Array) -> jax.Array:
  """``x @ a^T`` from the dense structured operand ``a [m, k]``, fp32 accumulate."""
  return jnp.dot(x, a.T.astype(x.dtype), preferred_element_type=jnp.float32).astype(x.dtype)


def spmm(a_comp: jax.Array, x: jax.Array, m: int, k: int) -> jax.Array:
  """``x @ A^T`` with ``A [m, k]`` given compressed; ``x [n, k]`` bf16 -> ``[n, m]`` bf16."""
  n = x.shape[0]
  pad = (-n) % ROW_MULTIPLE
  xp = jnp.pad(x.astype(jnp.bfloat16), ((0, pad), (0, 0))) if pad else x.astype(jnp.bfloat16)
  ws, _ = native.prepare_spmm(m, n + pad, k)
  out = (jax.ShapeDtypeStruct((n + pad, m), jnp.bfloat16),
         jax.ShapeDtypeStruct((max(ws, 1),), jnp.uint8))
  call = jax.ffi.ffi_call("nms_sptc_spmm", out, vmap_method="sequential")
  y, _ = call(a_comp, xp, m=np.int64(m), k=np.int64(k))
  return (y[:n] if pad else y).astype(x.dtype)
