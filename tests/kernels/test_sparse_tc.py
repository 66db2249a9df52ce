"""The sparse tensor-core kernels: the compressed layout against bytes the library wrote (CPU), and
the native kernels against their jnp references bit for bit (GPU, with the extension built)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nmsparse import native
from nmsparse.kernels import sparse_tc
from nmsparse.prune import nm_mask
from nmsparse.testing.tolerance import assert_close
from nmsparse.types import NMPattern

# cuSPARSELt 0.8.0's compressed bytes of 2:4 bf16 operands whose entries are their row index + 1,
# recorded on an NVIDIA H200 by `scripts/bench_sptc.py --sections probe` (mask_*, bytes_*).
FIXTURE = os.path.join(os.path.dirname(__file__), "data", "cusparselt_compressed_h200.npz")

needs_native = pytest.mark.skipif(native.status() is not None,
                                  reason=f"sparse_tc unavailable: {native.status()}")


def test_reference_layout_reproduces_the_librarys_bytes():
  data = np.load(FIXTURE)
  names = sorted(k[:-5] for k in data.files if k.endswith("_mask"))
  assert len(names) == 9
  for name in names:
    mask = data[name + "_mask"]
    rows = np.broadcast_to(np.arange(mask.shape[0])[:, None] + 1.0, mask.shape)
    got = sparse_tc.reference_compress_operand(jnp.asarray(np.where(mask, rows, 0)),
                                               jnp.asarray(mask))
    np.testing.assert_array_equal(np.asarray(got), data[name + "_bytes"], err_msg=name)


@pytest.mark.parametrize("pattern", ["2:4", "2:8", "1:8"])
def test_reference_compress_decodes_to_the_masked_operands(pattern):
  """Values and codes of the reference decode back to W*M_ff (transposed) and W*M_bp."""
  p = NMPattern.parse(pattern)
  w = jax.random.normal(jax.random.key(3), (128, 192), jnp.float32)
  ff, bp, keep = sparse_tc.reference_compress(w, p)
  for comp, (m, k), mask, dense in ((ff, (192, 128), nm_mask(w, p, axis=0).T, w.T),
                                    (bp, (128, 192), nm_mask(w, p, axis=1), w)):
    assert comp.shape == (sparse_tc.compressed_bytes(m, k),)
    values = jax.lax.bitcast_convert_type(comp[:m * k].reshape(m, k // 2, 2), jnp.bfloat16)
    meta = np.unpackbits(np.asarray(comp[m * k:]), bitorder="little").reshape(-1, 4)
    codes = meta[:, 0] + 2 * meta[:, 1] + 4 * meta[:, 2] + 8 * meta[:, 3]
    rows, groups = np.indices((m, k // 4))
    block = (rows // 64) * (k // 32) + (4 * groups) // 32
    nib = block * 512 + sparse_tc._meta_nibble(rows, groups)
    code = codes[nib]
    pos = np.stack([code & 3, code >> 2], -1)
    decoded = np.zeros((m, k // 4, 4), np.float32)
    np.put_along_axis(decoded, pos, np.asarray(values, np.float32).reshape(m, k // 4, 2), -1)
    want = np.asarray(jnp.where(mask, dense, 0).astype(jnp.bfloat16), np.float32)
    np.testing.assert_array_equal(decoded.reshape(m, k), want)
  assert keep.shape == (128 // p.m, 192)


def test_unavailable_backend_says_why():
  if native.status() is None:
    pytest.skip("the extension is available here; this checks the message where it is not")
  with pytest.raises(ValueError, match="sparse_tc"):
    native.library()


@needs_native
@pytest.mark.parametrize("pattern", ["2:4", "2:8", "1:4", "1:8", "2:16"])
@pytest.mark.parametrize("shape", [(64, 128), (256, 192), (768, 384)])
def test_native_compress_equals_reference(pattern, shape):
  p = NMPattern.parse(pattern)
  w = jax.random.normal(jax.random.key(sum(shape)), shape, jnp.float32)
  for got, want in zip(jax.jit(lambda w: sparse_tc.compress(w, p))(w),
                       sparse_tc.reference_compress(w, p)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@needs_native
def test_native_compress_equals_the_library_on_exact_2of4():
  w = jax.random.normal(jax.random.key(0), (256, 320), jnp.float32)
  p = NMPattern.parse("2:4")
  ff, bp, _ = sparse_tc.compress(w, p)
  a_ff, a_bp, _ = sparse_tc.prune(w, p)
  np.testing.assert_array_equal(np.asarray(ff), np.asarray(sparse_tc.lib_compress(a_ff)))
  np.testing.assert_array_equal(np.asarray(bp), np.asarray(sparse_tc.lib_compress(a_bp)))


@needs_native
@pytest.mark.parametrize("rows", [1, 7, 16, 100])
def test_spmm_matches_reference(rows):
  p = NMPattern.parse("2:8")
  w = jax.random.normal(jax.random.key(rows), (192, 256), jnp.float32)
  x = jax.random.normal(jax.random.key(rows + 1), (rows, 192), jnp.float32).astype(jnp.bfloat16)
  ff, _, _ = sparse_tc.compress(w, p)
  a_ff, _, _ = sparse_tc.reference_prune(w, p)
  want = np.asarray(sparse_tc.reference_spmm(a_ff, x).astype(jnp.float32))
  assert_close(sparse_tc.spmm(ff, x, 256, 192), want, "bfloat16", 192)
