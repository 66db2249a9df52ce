"""The native value-serial kernel (``nms_vs_matmul``): its schedule rules (CPU) and its products
against ``reference_nm_matmul`` (GPU, with the extension built: ``python -m nmsparse.native.build``).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nmsparse import native
from nmsparse.kernels import reference_nm_matmul
from nmsparse.kernels import value_serial as vs
from nmsparse.pack import fields_per_byte, pack_nm
from nmsparse.testing.tolerance import assert_close
from nmsparse.types import NMPattern

needs_native = pytest.mark.skipif(native.status() is not None,
                                  reason=f"native kernel unavailable: {native.status()}")


def _operands(batch, k, o, pattern, seed=0):
  kx, kw = jax.random.split(jax.random.key(seed))
  x = jax.random.normal(kx, (batch, k), jnp.float32).astype(jnp.bfloat16)
  w = jax.random.normal(kw, (k, o), jnp.float32)
  return x, pack_nm(w, pattern, axis=0, dtype=jnp.bfloat16)


@pytest.mark.parametrize("batch,k,o,m", [(1, 4096, 4096, 8), (16, 4096, 4096, 8),
                                         (16, 768, 3072, 4), (64, 11008, 4096, 8),
                                         (3, 40, 100, 8), (8, 3072, 768, 4)])
def test_splits_respect_the_kernels_limits(batch, k, o, m):
  splits = vs.splits_for(batch, k, o, m)
  gq = -(-(k // m) // fields_per_byte(m))
  rows = -(-gq // splits)
  assert 1 <= splits <= max(1, gq // vs.WARPS)
  assert rows * fields_per_byte(m) * m * vs.batch_tile(batch) * 2 <= vs.SMEM_X_BYTES
  tiles = -(-o // vs.COLS_PER_BLOCK) * -(-batch // vs.MAX_BATCH_TILE)
  if splits < min(vs.MAX_CLUSTER, max(1, gq // vs.WARPS)):  # more were possible, not needed
    assert tiles * splits >= vs.TARGET_BLOCKS


def test_batch_tiles():
  assert [vs.batch_tile(b) for b in (1, 2, 3, 5, 8, 15, 16, 64)] == [1, 2, 2, 4, 8, 8, 16, 16]


def test_unsupported_says_why():
  x, ff = _operands(2, 64, 32, "2:8")
  assert vs.unsupported(x.dtype, ff) is None
  assert "bfloat16" in vs.unsupported(jnp.float32, ff)
  assert "outside" in vs.unsupported(x.dtype, pack_nm(jnp.ones((64, 32)), "1:2", axis=0,
                                                      dtype=jnp.bfloat16))
  assert "input axis" in vs.unsupported(x.dtype, pack_nm(jnp.ones((64, 32)), "2:8", axis=1,
                                                         dtype=jnp.bfloat16))


@pytest.mark.skipif(native.status() is None, reason="the extension is loaded here")
def test_without_the_extension_the_error_names_what_is_missing():
  x, ff = _operands(2, 64, 32, "2:8")
  with pytest.raises(ValueError, match="value-serial kernel is not available"):
    vs.vs_matmul(x, ff)


@needs_native
@pytest.mark.parametrize("pattern", ["1:4", "2:4", "1:8", "2:8", "4:8", "2:16"])
@pytest.mark.parametrize("batch", [1, 3, 8, 16, 17, 64])
def test_matches_the_reference(pattern, batch):
  x, ff = _operands(batch, 1024, 768, pattern, seed=batch)
  got = jax.jit(vs.vs_matmul)(x, ff)
  assert got.dtype == jnp.bfloat16 and got.shape == (batch, 768)
  assert_close(got, np.asarray(reference_nm_matmul(x, ff), np.float32), jnp.bfloat16, 1024,
               f"{pattern} batch {batch}")


@needs_native
@pytest.mark.parametrize("k,o,pattern", [(40, 100, "2:8"), (24, 33, "2:4"), (8, 64, "2:8"),
                                         (4096, 130, "2:8"), (48, 1, "1:4")])
def test_ragged_shapes(k, o, pattern):
  """Group counts that leave padding bytes, odd widths (unaligned value pairs), a lone column."""
  x, ff = _operands(5, k, o, pattern)
  assert_close(vs.vs_matmul(x, ff), np.asarray(reference_nm_matmul(x, ff), np.float32),
               jnp.bfloat16, k, f"{k}x{o} {pattern}")


@needs_native
@pytest.mark.parametrize("splits", [1, 2, 7, 8, 9, 64])
def test_any_split_count_gives_the_same_product(splits):
  x, ff = _operands(16, 4096, 256, "2:8")
  ref = np.asarray(reference_nm_matmul(x, ff), np.float32)
  assert_close(vs.vs_matmul(x, ff, splits=splits), ref, jnp.bfloat16, 4096, f"splits {splits}")


def test_unroll_built_mirrors_the_kernels_rule():
  """The default everywhere; 8 and 16 only for tiles of <= 4 rows within 96 batch registers."""
  p28, p24, p48 = (NMPattern.parse(p) for p in ("2:8", "2:4", "4:8"))
  assert all(vs.unroll_built(b, p, vs.UNROLL) for b in (1, 16, 64) for p in (p28, p24, p48))
  assert vs.unroll_built(1, p28, 16) and vs.unroll_built(4, p28, 8)  # 2 * 3 * 16 = 96 words
  assert not vs.unroll_built(8, p28, 8)  # an 8-row tile
  assert vs.unroll_built(3, p24, 8) and not vs.unroll_built(3, p24, 16)  # 2 * 5 * 16 = 160
  assert not vs.unroll_built(1, p48, 16) and not vs.unroll_built(1, p28, 6)


@needs_native
def test_an_unbuilt_unroll_is_refused():
  x, ff = _operands(8, 256, 128, "2:8")
  with pytest.raises(ValueError, match="not built with unroll 8"):
    vs.vs_matmul(x, ff, unroll=8)


@needs_native
@pytest.mark.parametrize("pattern", ["1:4", "2:4", "1:8", "2:8", "4:8"])
@pytest.mark.parametrize("unroll", [8, 16])
@pytest.mark.parametrize("batch,k,o,splits", [(1, 4096, 256, None), (3, 4096, 130, 3),
                                              (4, 1000, 192, 12), (2, 40, 100, 1)])
def test_every_built_unroll_gives_the_same_product(pattern, unroll, batch, k, o, splits):
  """Batches of 8 and 16 rows per warp: full and ragged slices, odd widths, partial sums."""
  x, ff = _operands(batch, k, o, pattern, seed=unroll + batch)
  if not vs.unroll_built(batch, ff.pattern, unroll):
    pytest.skip(f"unroll {unroll} is not built for {pattern} at {batch} rows (too many registers)")
  ref = np.asarray(reference_nm_matmul(x, ff), np.float32)
  assert_close(vs.vs_matmul(x, ff, splits=splits, unroll=unroll), ref, jnp.bfloat16, k,
               f"{pattern} unroll {unroll} batch {batch} {k}x{o} splits {splits}")


@pytest.mark.parametrize("k,o,pattern", [(64, 100, "2:8"), (48, 64, "1:4"), (1024, 130, "4:8")])
def test_blocked_layout_round_trips(k, o, pattern):
  """Each block's 64 columns contiguous per slot, zeros past O, and the row layout back."""
  _, ff = _operands(1, k, o, pattern)
  b = vs.block_columns(ff)
  ob = -(-o // vs.COLS_PER_BLOCK)
  n = ff.pattern.n
  assert b.values.shape == (ob, n, ff.values.shape[1], vs.COLS_PER_BLOCK)
  assert b.positions.shape == (ob, n, ff.positions.shape[1], vs.COLS_PER_BLOCK)
  last = o - 1  # the last real column: block last // 64, lane last % 64
  np.testing.assert_array_equal(b.values[last // 64, n - 1, 3, last % 64], ff.values[n - 1, 3, last])
  np.testing.assert_array_equal(b.positions[last // 64, 0, 1, last % 64], ff.positions[0, 1, last])
  assert not np.any(np.asarray(b.values, np.float32)[-1, :, :, o - 64 * (ob - 1):])
  back = vs.unblock_columns(b)
  assert back.shape == ff.shape
  np.testing.assert_array_equal(back.values, ff.values)
  np.testing.assert_array_equal(back.positions, ff.positions)


@needs_native
@pytest.mark.parametrize("pattern", ["1:4", "2:4", "1:8", "2:8", "4:8", "2:16"])
@pytest.mark.parametrize("batch,k,o,splits", [(1, 4096, 256, None), (3, 1000, 130, 3),
                                              (16, 4096, 192, 12), (8, 40, 100, 1),
                                              (17, 512, 64, None)])
def test_blocked_gives_the_row_layouts_product(pattern, batch, k, o, splits):
  if k % NMPattern.parse(pattern).m:
    pytest.skip(f"{pattern} does not divide K = {k}")
  x, ff = _operands(batch, k, o, pattern, seed=batch)
  ref = np.asarray(reference_nm_matmul(x, ff), np.float32)
  got = jax.jit(lambda x, b: vs.blocked_matmul(x, b, splits=splits))(x, vs.block_columns(ff))
  assert got.shape == (batch, o)
  assert_close(got, ref, jnp.bfloat16, k, f"blocked {pattern} batch {batch} {k}x{o}")


@needs_native
def test_vmap_over_rows_and_under_jit():
  x, ff = _operands(12, 512, 256, "2:4")
  got = jax.jit(jax.vmap(lambda r: vs.vs_matmul(r, ff)))(x.reshape(3, 4, 512))
  assert_close(got.reshape(12, 256), np.asarray(reference_nm_matmul(x, ff), np.float32),
               jnp.bfloat16, 512)


# --- the tensor-core kernel (tiled operands) -----------------------------------------------------

TILED_PATTERNS = ["1:4", "2:4", "1:8", "2:8"]


@pytest.mark.parametrize("pattern,k,o", [(p, k, o) for p in TILED_PATTERNS
                                          for k, o in ((200, 100), (8, 1))] +
                         [("2:8", 1024, 768), ("2:4", 1024, 768)])
def test_tiled_layout_decodes_to_the_packed_operand(pattern, k, o):
  """``prepare`` only moves bytes: decoding its layout the way the kernel's lanes do gives the
  packed operand's product bit for bit (CPU; the kernel itself is checked on the GPU below)."""
  x, ff = _operands(5, k, o, pattern)
  t = vs.prepare(ff)
  assert t.values.shape[0] * vs.TILE_O % vs.BLOCK_O == 0
  assert t.values.shape[1] % vs.STEP_TILES == 0
  np.testing.assert_array_equal(np.asarray(vs.reference_tiled_matmul(x, t), np.float32),
                                np.asarray(reference_nm_matmul(x, ff), np.float32))


def test_tiled_kernel_arguments_are_checked():
  x, ff = _operands(2, 64, 32, "2:8")
  t = vs.prepare(ff)
  with pytest.raises(ValueError, match="kernel must be one of"):
    vs.tiled_matmul(x, t, kernel="fast")
  with pytest.raises(ValueError, match="stages must be one of"):
    vs.tiled_matmul(x, t, kernel="pipe", stages=1)


def test_tiled_refuses_what_it_cannot_decode():
  x, ff = _operands(2, 64, 32, "4:8")
  assert "N <= 2" in vs.tiled_unsupported(x.dtype, ff)
  with pytest.raises(ValueError, match="N <= 2"):
    vs.prepare(ff)


@pytest.mark.parametrize("batch,kt,ot", [(1, 256, 256), (16, 256, 256), (16, 48, 192),
                                         (8, 192, 48), (64, 688, 256), (1, 4, 4)])
def test_tiled_splits_respect_the_kernels_limits(batch, kt, ot):
  splits = vs.tiled_splits_for(batch, kt, ot)
  steps = kt // vs.STEP_TILES
  assert 1 <= splits <= vs.MAX_CLUSTER
  assert splits == 1 or splits <= steps // vs.WARPS  # every warp of a slice has a step
  blocks = ot * vs.TILE_O // vs.BLOCK_O * (-(-batch // 16) if batch > 8 else 1)
  if splits < min(vs.MAX_CLUSTER, steps // vs.WARPS):
    assert blocks * splits >= vs.TARGET_BLOCKS


KERNELS = [dict(kernel="regs"), dict(kernel="pipe", stages=0), dict(kernel="pipe", stages=2),
           dict(kernel="pipe", stages=3), dict(kernel="bulk", stages=0),
           dict(kernel="bulk", stages=2)]


@pytest.mark.parametrize("batch,kt,ot", [(1, 256, 256), (16, 256, 256), (16, 48, 192),
                                         (8, 192, 48), (64, 688, 256), (1, 4, 4), (4, 512, 512)])
def test_pipe_splits_respect_the_kernels_limits(batch, kt, ot):
  splits = vs.pipe_splits_for(batch, kt, ot)
  steps = kt // vs.STEP_TILES
  assert 1 <= splits <= vs.MAX_CLUSTER
  assert splits == 1 or splits <= steps // vs.PIPE_WARPS  # every warp of a slice has a step
  blocks = ot * vs.TILE_O // vs.BLOCK_O * -(-batch // 16)
  assert splits == 1 or blocks * (splits - 1) < vs.SMS  # no more slices than the SMs need


@needs_native
@pytest.mark.parametrize("kw", KERNELS, ids=lambda kw: "-".join(map(str, kw.values())))
@pytest.mark.parametrize("pattern", TILED_PATTERNS)
@pytest.mark.parametrize("batch", [1, 3, 8, 9, 16, 17, 64])
def test_tiled_matches_the_reference(pattern, batch, kw):
  x, ff = _operands(batch, 1024, 768, pattern, seed=batch)
  got = jax.jit(lambda x, t: vs.tiled_matmul(x, t, **kw))(x, vs.prepare(ff))
  assert got.dtype == jnp.bfloat16 and got.shape == (batch, 768)
  assert_close(got, np.asarray(reference_nm_matmul(x, ff), np.float32), jnp.bfloat16, 1024,
               f"{pattern} batch {batch}")


@needs_native
@pytest.mark.parametrize("kw", KERNELS, ids=lambda kw: "-".join(map(str, kw.values())))
@pytest.mark.parametrize("k,o,pattern", [(40, 100, "2:8"), (24, 33, "2:4"), (8, 64, "1:8"),
                                         (4096, 130, "2:8"), (48, 1, "1:4"), (4100, 64, "2:4"),
                                         (4092, 64, "2:4")])
def test_tiled_ragged_shapes(k, o, pattern, kw):
  x, ff = _operands(5, k, o, pattern)
  assert_close(vs.tiled_matmul(x, vs.prepare(ff), **kw),
               np.asarray(reference_nm_matmul(x, ff), np.float32), jnp.bfloat16, k,
               f"{k}x{o} {pattern}")


@needs_native
@pytest.mark.parametrize("splits", [1, 2, 7, 8, 16])
@pytest.mark.parametrize("kw", [dict(kernel="regs", command_buffer=True),
                                dict(kernel="regs", command_buffer=False),
                                dict(kernel="pipe", stages=0), dict(kernel="pipe", stages=3),
                                dict(kernel="bulk", stages=0), dict(kernel="bulk", stages=3)],
                         ids=lambda kw: "-".join(map(str, kw.values())))
def test_tiled_any_split_count_gives_the_same_product(splits, kw):
  x, ff = _operands(16, 4096, 256, "2:8")
  ref = np.asarray(reference_nm_matmul(x, ff), np.float32)
  got = vs.tiled_matmul(x, vs.prepare(ff), splits=splits, **kw)
  assert_close(got, ref, jnp.bfloat16, 4096, f"splits {splits}")


@needs_native
def test_pipe_refuses_a_ring_that_does_not_fit():
  x, ff = _operands(16, 256, 64, "2:4")  # 8 warps x 4 stages of 7 KB: over 227 KB
  for kernel in ("pipe", "bulk"):
    with pytest.raises(Exception, match="does not fit in shared memory"):
      jax.block_until_ready(vs.tiled_matmul(x, vs.prepare(ff), kernel=kernel, stages=4))


@needs_native
def test_tiled_under_vmap_and_jit():
  x, ff = _operands(12, 512, 256, "2:4")
  t = vs.prepare(ff)
  got = jax.jit(jax.vmap(lambda r: vs.tiled_matmul(r, t)))(x.reshape(3, 4, 512))
  assert_close(got.reshape(12, 256), np.asarray(reference_nm_matmul(x, ff), np.float32),
               jnp.bfloat16, 512)
