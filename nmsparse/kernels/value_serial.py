"""The native value-serial product ``x @ unpack(W_ff)`` for small batches (CUDA behind the XLA FFI).

At a few rows a dense layer's product is memory-bound: its time is the weight bytes. This kernel
reads only the packed operand (:mod:`nmsparse.pack`: 2:8 is 0.31 of the bf16 bytes, 2:4 0.56) and
decodes it in registers: every kept value is multiplied by its activations where it was loaded,
with the block's slice of ``x`` staged once in shared memory (``nmsparse/native/csrc/vs.cu`` says
how). It complements :func:`nmsparse.kernels.nm_matmul` (Pallas/Triton), which expands packed
tiles for the tensor cores and is instruction-bound at small batch on an H200.

``vs_matmul(x, ff)``: ``x [B, K]`` bf16, ``ff`` a packed ``[K, O]`` operand grouped along ``K``
with ``N <= 4`` and ``3 <= M <= 16`` (1:4 to 4:8 and 2:16), bf16 values. Any ``B`` (tiles of up
to 16 rows), any ``K`` the pattern divides, any ``O``. Its reference is
:func:`nmsparse.kernels.reference_nm_matmul`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nmsparse import native
from nmsparse.pack import PackedNM, fields_per_byte

COLS_PER_BLOCK = 64  # output columns of one block (vs.cu's kCols)
WARPS = 4  # warps of one block, each taking every WARPS-th position-byte row (vs.cu's kWarps)
MAX_BATCH_TILE = 16  # batch rows of one block; more rows run as more tiles
TARGET_BLOCKS = 4 * 132  # enough resident blocks to keep an H100/H200's 132 SMs' loads in flight
SMEM_X_BYTES = 64 * 1024  # the staged activation slice of one block stays below this


def batch_tile(batch: int) -> int:
  """Batch rows of one block: the largest of 16, 8, 4, 2, 1 not above ``batch``."""
  for bt in (16, 8, 4, 2):
    if batch >= bt:
      return bt
  return 1


def splits_for(batch: int, k: int, o: int, m: int) -> int:
  """How many slices the reduction is cut into (blocks per output tile).

  Enough blocks to fill the GPU (:data:`TARGET_BLOCKS`), each slice at least one byte row per warp
  and its activation slice under :data:`SMEM_X_BYTES` of shared memory.
  """
  q = fields_per_byte(m)
  gq = -(-(k // m) // q)  # position-byte rows
  bt = batch_tile(batch)
  tiles = -(-o // COLS_PER_BLOCK) * -(-batch // MAX_BATCH_TILE)
  most = max(1, gq // WARPS)  # at least a byte row per warp
  least = -(-gq * q * m * bt * 2 // SMEM_X_BYTES)  # shared memory bound on a slice
  want = -(-TARGET_BLOCKS // tiles)
  return int(min(most, max(least, want)))


def unsupported(x_dtype, ff: PackedNM) -> str | None:
  """``None`` if :func:`vs_matmul` takes this product, else why not."""
  n, m = ff.pattern.n, ff.pattern.m
  if len(ff.shape) != 2 or ff.axis != 0:
    return f"it needs a 2-D operand grouped along its input axis (got {ff.shape}, axis {ff.axis})"
  if not 1 <= n <= 4 or not 3 <= m <= 16:
    return f"its pattern {ff.pattern} is outside N <= 4, 3 <= M <= 16"
  if ff.values.dtype != jnp.bfloat16 or jnp.dtype(x_dtype) != jnp.bfloat16:
    return f"it computes in bfloat16 (values {ff.values.dtype}, activations {jnp.dtype(x_dtype)})"
  return None


def vs_matmul(x: jax.Array, ff: PackedNM, *, splits: int | None = None) -> jax.Array:
  """``x @ unpack(ff)`` reading only the packed operand (the native kernel).

  Args:
    x: ``[B, K]`` bf16 activations.
    ff: packed bf16 ``[K, O]`` operand grouped along ``K``.
    splits: reduction slices (default :func:`splits_for`).

  Returns:
    ``[B, O]`` bf16 (float32 accumulation).

  Raises:
    ValueError: off-GPU or without the native extension, or for an operand it does not take
      (the message says why).
  """
  native.library("the value-serial kernel")
  why = unsupported(x.dtype, ff)
  if why:
    raise ValueError(f"vs_matmul does not take this product: {why}.")
  batch, k = x.shape
  if k != ff.shape[0]:
    raise ValueError(f"Activation {x.shape} does not match the packed operand {ff.shape}.")
  o = ff.shape[1]
  splits = splits or splits_for(batch, k, o, ff.pattern.m)
  out = (jax.ShapeDtypeStruct((batch, o), jnp.bfloat16),
         jax.ShapeDtypeStruct((splits * batch * o * 4 if splits > 1 else 1,), jnp.uint8))
  call = jax.ffi.ffi_call("nms_vs_matmul", out, vmap_method="sequential")
  y, _ = call(x, ff.values, ff.positions, n=np.int64(ff.pattern.n), m=np.int64(ff.pattern.m),
              splits=np.int64(splits))
  return y
