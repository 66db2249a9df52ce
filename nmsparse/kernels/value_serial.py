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

``blocked_matmul(x, block_columns(ff))``: the same kernel on a layout with each block's 64
columns contiguous per slot (:class:`BlockedNM`); the row layout makes a block read 128-byte pieces
``O`` elements apart, and on an H200 the blocked one was faster at 21 of 24 products with
K, O >= 4096 (``benchmarks/h200_decode.md``). ``materialize(..., "native")`` serves it.

``tiled_matmul(x, prepare(ff))``: the tensor-core variant (``mma.m16n8k16`` fragments built in
registers from a per-lane layout, :class:`TiledNM`), N <= 2, M in 4, 8; its layout's oracle is
:func:`reference_tiled_matmul`. Its default kernel streams the operand through a ``cp.async`` ring
per warp (``kernel="pipe"``). Measured on an H200 (``benchmarks/h200_decode.md``, products timed as
intermediates of one executable): the blocked CUDA-core kernel beats dense ``jnp.dot`` at 1-4
rows (2:8, 1:8) on weights of at least 4096 x 11008, the tensor-core one at 2-8 rows (2:8; 2-4 at
2:4) where K >= 8192; ``nmsparse/ops/cards.py`` takes them only there.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from nmsparse import native
from nmsparse.pack import PackedNM, fields_per_byte, unpack_positions
from nmsparse.types import NMPattern

COLS_PER_BLOCK = 64  # output columns of one block (vs.cu's kCols)
WARPS = 4  # warps of one block, each taking every WARPS-th position-byte row (vs.cu's kWarps)
MAX_BATCH_TILE = 16  # batch rows of one block; more rows run as more tiles
TARGET_BLOCKS = 4 * 132  # enough resident blocks to keep an H100/H200's 132 SMs' loads in flight
SMEM_X_BYTES = 64 * 1024  # the staged activation slice of one block stays below this
MAX_CLUSTER = 8  # up to this many slices run as one cluster, summed in distributed shared memory
UNROLL = 4  # position-byte rows per batch of one warp's loads, by default (vs.cu's kUnroll)


def _partials_bytes(splits: int, batch: int, o: int) -> int:
  """The fp32 partials workspace: only beyond :data:`MAX_CLUSTER` slices (1 byte otherwise)."""
  return splits * batch * o * 4 if splits > MAX_CLUSTER else 1


def _fwd_call(target: str, x: jax.Array, values: jax.Array, positions: jax.Array,
              pattern: NMPattern, o: int, splits: int | None, **attrs: int) -> jax.Array:
  """``y [B, o]`` of the CUDA-core kernel's handler ``target`` (its partials workspace sized for
  ``splits``, default :func:`splits_for`); ``attrs``: the handler's further attributes."""
  batch, k = x.shape
  splits = splits or splits_for(batch, k, o, pattern.m)
  out = (jax.ShapeDtypeStruct((batch, o), jnp.bfloat16),
         jax.ShapeDtypeStruct((_partials_bytes(splits, batch, o),), jnp.uint8))
  call = jax.ffi.ffi_call(target, out, vmap_method="sequential")
  y, _ = call(x, values, positions, n=np.int64(pattern.n), m=np.int64(pattern.m),
              splits=np.int64(splits), **{name: np.int64(v) for name, v in attrs.items()})
  return y


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
  want = min(-(-TARGET_BLOCKS // tiles), MAX_CLUSTER)
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


def unroll_built(batch: int, pattern: NMPattern, unroll: int) -> bool:
  """Whether the kernel is built with ``unroll`` byte rows per batch of loads for this product
  (vs.cu's ``UnrollBuilt``): :data:`UNROLL` always; 8 and 16 for batch tiles of at most 4 rows
  where the batch's registers, ``N (Q + 1) unroll`` words (Q fields per byte), stay within 96."""
  q = fields_per_byte(pattern.m)
  return unroll == UNROLL or (unroll in (8, 16) and batch_tile(batch) <= 4
                              and pattern.n * (q + 1) * unroll <= 96)


def vs_matmul(x: jax.Array, ff: PackedNM, *, splits: int | None = None,
              unroll: int | None = None) -> jax.Array:
  """``x @ unpack(ff)`` reading only the packed operand (the native kernel).

  Args:
    x: ``[B, K]`` bf16 activations.
    ff: packed bf16 ``[K, O]`` operand grouped along ``K``.
    splits: reduction slices (default :func:`splits_for`).
    unroll: byte rows per batch of each warp's loads (default :data:`UNROLL`; the others
      :func:`unroll_built` lists).

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
  unroll = unroll or UNROLL
  if not unroll_built(batch, ff.pattern, unroll):
    raise ValueError(f"vs_matmul is not built with unroll {unroll} for {ff.pattern} at "
                     f"{batch} rows (unroll_built says which are).")
  return _fwd_call("nms_vs_matmul", x, ff.values, ff.positions, ff.pattern, ff.shape[1], splits,
                   unroll=unroll)


@dataclasses.dataclass(frozen=True)
class BlockedNM:
  """A packed FF operand with each block's columns contiguous, for :func:`blocked_matmul` (a
  pytree: ``values``, ``positions``).

  The row layout of :class:`nmsparse.pack.PackedNM` strides by ``O`` from one byte row to the
  next, so a block of :data:`COLS_PER_BLOCK` columns reads 128-byte pieces that far apart; here
  its whole slice of the reduction is one contiguous run per slot.

  Attributes:
    values: bf16 ``[OB, N, Gp, 64]``: ``values[b, j, g, l]`` is the packed ``values[j, g, 64 b + l]``
      (zeros past ``O``).
    positions: uint8 ``[OB, N, Gq, 64]``, the same for the position bytes.
    pattern: the N:M pattern.
    shape: the dense ``(K, O)``.
  """

  values: jax.Array
  positions: jax.Array
  pattern: NMPattern
  shape: tuple[int, int]


jax.tree_util.register_dataclass(BlockedNM, data_fields=["values", "positions"],
                                 meta_fields=["pattern", "shape"])


def block_columns(ff: PackedNM) -> BlockedNM:
  """Lays a packed FF operand out for :func:`blocked_matmul` (once per weight: a transpose)."""
  why = unsupported(ff.values.dtype, ff)
  if why:
    raise ValueError(f"block_columns does not take this operand: {why}.")
  o = ff.shape[1]
  ob = -(-o // COLS_PER_BLOCK)

  def lay(a):  # [N, G, O] -> [OB, N, G, 64]
    a = jnp.pad(a, ((0, 0), (0, 0), (0, ob * COLS_PER_BLOCK - o)))
    return jnp.transpose(a.reshape(a.shape[0], a.shape[1], ob, COLS_PER_BLOCK), (2, 0, 1, 3))

  return BlockedNM(lay(ff.values), lay(ff.positions), ff.pattern, tuple(ff.shape))


def unblock_columns(b: BlockedNM) -> PackedNM:
  """The row layout back (the oracle of the blocked layout's tests)."""
  k, o = b.shape

  def unlay(a):  # [OB, N, G, 64] -> [N, G, O]
    ob, n, g, c = a.shape
    return jnp.transpose(a, (1, 2, 0, 3)).reshape(n, g, ob * c)[:, :, :o]

  return PackedNM(unlay(b.values), unlay(b.positions), b.pattern, 0, k)


def blocked_matmul(x: jax.Array, b: BlockedNM, *, splits: int | None = None) -> jax.Array:
  """:func:`vs_matmul` on the blocked layout (:func:`block_columns`); same arguments, same result."""
  native.library("the value-serial kernel")
  if jnp.dtype(x.dtype) != jnp.bfloat16 or b.values.dtype != jnp.bfloat16:
    raise ValueError(f"blocked_matmul computes in bfloat16 (values {b.values.dtype}, "
                     f"activations {jnp.dtype(x.dtype)}).")
  if x.shape[1] != b.shape[0]:
    raise ValueError(f"Activation {x.shape} does not match the blocked operand {b.shape}.")
  return _fwd_call("nms_vs_blocked_matmul", x, b.values, b.positions, b.pattern, b.shape[1],
                   splits)


# ------------------------------------------------------------------------------------------------
# The tensor-core value-serial kernel: packed weights decoded into mma fragments in registers.

TILE_K = 16  # reduction elements of one mma k-tile
TILE_O = 16  # output columns of one mma tile (its M dimension)
STEP_TILES = 4  # k-tiles a warp loads per step (vs.cu's kStepTiles); K pads to a multiple
BLOCK_O = 64  # output columns of one block (4 mma tiles)
TILED_M = (4, 8)  # group sizes the tiled kernel decodes


@dataclasses.dataclass(frozen=True)
class TiledNM:
  """A packed FF operand laid out for :func:`tiled_matmul` (a pytree: ``values``, ``positions``).

  The kernel feeds ``W^T`` to ``mma.m16n8k16`` in 16 x 16 tiles with the k-columns of a tile
  permuted so that lane ``(g, t)`` (``g = lane // 4``, ``t = lane % 4``) holds rows ``o0 + g`` and
  ``o0 + g + 8`` at the contiguous k ``4t .. 4t + 3`` of the tile: half a group for M = 8 (group
  ``q = t // 2``, in-group offsets from ``4 (t % 2)``), a whole group for M = 4 (``q = t``). Its
  *slice* is group ``q`` of both rows: ``2N`` kept values (field ``f = r N + j``, ``r`` the row
  half, ``j`` the slot) and their positions (2 bits for M = 4, 4 for M = 8).

  Attributes:
    values: bf16 ``[OT, KT, 8, Q, 2N]`` (``Q = 16 / M`` groups per k-tile), one slice per group.
    positions: uint32 ``[OT, KT / pk, 8, Q]``: slot ``kt % pk`` of a word holds k-tile ``kt``'s
      slice (``slot_bits`` each, field ``f`` at bit ``f * bits``).
    pattern: the N:M pattern.
    shape: the dense ``(K, O)``.
  """

  values: jax.Array
  positions: jax.Array
  pattern: NMPattern
  shape: tuple[int, int]

  @property
  def slot_bits(self) -> int:
    return _slot_bits(self.pattern)


jax.tree_util.register_dataclass(TiledNM, data_fields=["values", "positions"],
                                 meta_fields=["pattern", "shape"])


def _bits(m: int) -> int:
  return 2 if m <= 4 else 4


def _slot_bits(pattern: NMPattern) -> int:
  need = 2 * pattern.n * _bits(pattern.m)
  return max(8, 1 << (need - 1).bit_length())


def tiled_unsupported(x_dtype, ff: PackedNM) -> str | None:
  """``None`` if :func:`prepare` / :func:`tiled_matmul` take this operand, else why not."""
  why = unsupported(x_dtype, ff)
  if why:
    return why
  if ff.pattern.m not in TILED_M or ff.pattern.n > 2:
    return f"the tiled kernel decodes N <= 2 and M in {TILED_M}, not {ff.pattern}"
  return None


def prepare(ff: PackedNM) -> TiledNM:
  """Lays a packed FF operand out for :func:`tiled_matmul` (once per weight: a gather).

  Pads ``O`` to a multiple of :data:`BLOCK_O` and the k-tiles to a multiple of
  :data:`STEP_TILES` with zero values at position 0.
  """
  why = tiled_unsupported(jnp.bfloat16, ff)
  if why:
    raise ValueError(f"prepare does not take this operand: {why}.")
  n, m = ff.pattern.n, ff.pattern.m
  k, o = ff.shape
  q = TILE_K // m  # groups per k-tile
  kt = -(-(k // m) // q)
  kt = -(-kt // STEP_TILES) * STEP_TILES
  ot = -(-o // BLOCK_O) * (BLOCK_O // TILE_O)
  values = ff.values  # [N, Gp, O]
  pos = jnp.moveaxis(unpack_positions(jnp.moveaxis(ff.positions, 1, -1), m), -1, 1)
  groups = kt * q
  pad = ((0, 0), (0, max(0, groups - values.shape[1])), (0, ot * TILE_O - o))
  values = jnp.pad(values, pad)[:, :groups]
  pos = jnp.pad(pos, pad)[:, :groups]
  i_ot, i_kt, i_g, i_q, i_r, i_j = np.indices((ot, kt, 8, q, 2, n))  # slice fields f = r N + j
  col = TILE_O * i_ot + i_g + 8 * i_r
  grp = i_kt * q + i_q
  shape5 = (ot, kt, 8, q, 2 * n)
  tv = values[i_j, grp, col].reshape(shape5).astype(jnp.bfloat16)
  tp = pos[i_j, grp, col].reshape(shape5).astype(jnp.uint32)
  bits, slot_bits = _bits(m), _slot_bits(ff.pattern)
  slots = jnp.sum(tp << (jnp.arange(2 * n, dtype=jnp.uint32) * bits), axis=-1, dtype=jnp.uint32)
  pk = 32 // slot_bits
  slots = slots.reshape(ot, kt // pk, pk, 8, q)
  shifts = (jnp.arange(pk, dtype=jnp.uint32) * slot_bits)[None, None, :, None, None]
  words = jnp.sum(slots << shifts, axis=2, dtype=jnp.uint32)
  return TiledNM(tv, words, ff.pattern, (k, o))


def reference_tiled_matmul(x: jax.Array, t: TiledNM) -> jax.Array:
  """``x @ W`` decoded from the tiled layout in jnp, field by field as the kernel's lanes decode
  it (the oracle of :func:`prepare`: it must equal ``reference_nm_matmul`` of the packed
  operand)."""
  n, m = t.pattern.n, t.pattern.m
  k, o = t.shape
  ot, kt, _, q, _ = t.values.shape
  bits, slot_bits = _bits(m), t.slot_bits
  pk = 32 // slot_bits
  words = jnp.repeat(t.positions, pk, axis=1)  # [OT, KT, 8, Q]
  slot = words >> (np.arange(kt) % pk * slot_bits).astype(np.uint32)[None, :, None, None]
  f = np.arange(2 * n)
  fields = (slot[..., None] >> (f * bits).astype(np.uint32)) & ((1 << bits) - 1)
  fields = fields.reshape(ot, kt, 8, q, 2, n)
  vals = t.values.reshape(ot, kt, 8, q, 2, n)
  dense = jnp.zeros((ot, kt, 8, q, 2, m), jnp.bfloat16)
  r = np.arange(m)
  for j in range(n):  # filler slots hold +0 at position 0, so adding them changes nothing
    dense = dense + jnp.where(fields[..., j, None] == r, vals[..., j, None], 0)
  # dense[ot, kt, g, q, r, e] = W[k, o] with o = 16 ot + 8 r + g, k = 16 kt + M q + e
  w = dense.transpose(0, 4, 2, 1, 3, 5).reshape(ot * TILE_O, kt * TILE_K)[:o, :k].T
  return jnp.dot(x, w.astype(x.dtype), preferred_element_type=jnp.float32).astype(x.dtype)


def tiled_splits_for(batch: int, k_tiles: int, o_tiles: int) -> int:
  """Reduction slices of :func:`tiled_matmul`: enough blocks for :data:`TARGET_BLOCKS`, at least
  one step of :data:`STEP_TILES` k-tiles per warp, and at most :data:`MAX_CLUSTER` (one kernel,
  the slices summed over distributed shared memory)."""
  steps = k_tiles // STEP_TILES
  batch_tiles = -(-batch // 16) if batch > 8 else 1
  tiles = (o_tiles * TILE_O // BLOCK_O) * batch_tiles
  want = -(-TARGET_BLOCKS // tiles)
  return int(max(1, min(MAX_CLUSTER, steps // WARPS, want)))


TILED_KERNELS = ("pipe", "bulk", "regs")  # tiled_matmul's kernels (vs.cu)
PIPE_STAGES = (0, 2, 3, 4)  # ring depths of the pipelined kernel; 0: the kernel's rule (vs.cu)
PIPE_WARPS = 8  # warps of one block of the pipelined kernel (vs.cu's kPipeWarps)
SMS = 132  # multiprocessors of an H100 / H200


def pipe_splits_for(batch: int, k_tiles: int, o_tiles: int) -> int:
  """Reduction slices of the pipelined kernel: about one block per multiprocessor (:data:`SMS`;
  its blocks are 8 warps with their own load rings), at least one step per warp, at most
  :data:`MAX_CLUSTER`."""
  steps = k_tiles // STEP_TILES
  tiles = (o_tiles * TILE_O // BLOCK_O) * -(-batch // 16)
  want = max(1, round(SMS / tiles))
  return int(max(1, min(MAX_CLUSTER, steps // PIPE_WARPS, want)))


def tiled_matmul(x: jax.Array, t: TiledNM, *, splits: int | None = None,
                 command_buffer: bool = True, kernel: str = "pipe",
                 stages: int = 0, probe: int = 0) -> jax.Array:
  """``x @ W`` from a :func:`prepare`-d operand on the tensor cores (the native kernel).

  Args:
    x: ``[B, K]`` bf16 activations (any ``B``; blocks take 8 or 16 rows).
    t: the tiled operand of ``W [K, O]``.
    splits: reduction slices (default :func:`tiled_splits_for`, :func:`pipe_splits_for`).
    command_buffer: register the ``"regs"`` call as CUDA-graph compatible (XLA may capture it;
      ``"pipe"`` always is).
    kernel: ``"pipe"`` (a ``stages``-deep ``cp.async`` ring per warp, table-and-permute decode;
      1.5-2.8x faster than ``"regs"`` on the H200), ``"bulk"`` (the same kernel with its ring
      filled by bulk copies of the copy engine, one per contiguous chunk, completing an mbarrier
      per stage) or ``"regs"`` (loads double-buffered in registers, compare-and-select decode).
    stages: the ring depth of ``"pipe"`` and ``"bulk"``, one of :data:`PIPE_STAGES` (0: the
      deepest that lets two blocks share a multiprocessor, else the deepest that fits).
    probe: timing diagnostics of ``"pipe"`` and ``"bulk"`` at 2:8 (``scripts/decode_diag.py``):
      1 leaves the MMA out, 2 also the decode. The product is then wrong; 0 (the default)
      computes it.

  Returns:
    ``[B, O]`` bf16 (float32 accumulation).
  """
  if kernel not in TILED_KERNELS:
    raise ValueError(f"kernel must be one of {TILED_KERNELS}, got {kernel!r}.")
  if kernel != "regs" and stages not in PIPE_STAGES:
    raise ValueError(f"stages must be one of {PIPE_STAGES}, got {stages}.")
  native.library("the value-serial kernel")
  if jnp.dtype(x.dtype) != jnp.bfloat16:
    raise ValueError(f"tiled_matmul computes in bfloat16, got activations of {x.dtype}.")
  batch, k = x.shape
  if k != t.shape[0]:
    raise ValueError(f"Activation {x.shape} does not match the tiled operand {t.shape}.")
  o = t.shape[1]
  ot, kt = t.values.shape[:2]
  splits = splits or (tiled_splits_for if kernel == "regs" else pipe_splits_for)(batch, kt, ot)
  out = (jax.ShapeDtypeStruct((batch, o), jnp.bfloat16),
         jax.ShapeDtypeStruct((_partials_bytes(splits, batch, o),), jnp.uint8))
  attrs = dict(n=np.int64(t.pattern.n), m=np.int64(t.pattern.m), splits=np.int64(splits))
  if kernel != "regs":
    target, attrs["stages"] = "nms_vs_pipe_matmul", np.int64(stages)
    attrs.update(probe=np.int64(probe), bulk=np.int64(kernel == "bulk"))
  else:
    target = "nms_vs_tiled_matmul" if command_buffer else "nms_vs_tiled_matmul_nocb"
  call = jax.ffi.ffi_call(target, out, vmap_method="sequential")
  y, _ = call(x, t.values, t.positions, **attrs)
  return y
