"""The shared op suite on ``implementation="sparse_tc"`` (compiled on a GPU with the native
extension built; skipped elsewhere with the reason), plus its refusals, which run everywhere."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nmsparse import native
from nmsparse.ops import nm_conv, nm_dense
from nmsparse.ops.cards import CARDS, DEFAULT, H200, prefers_sparse_tc
from nmsparse.ops.config import ConvDims, LayerSpec
from nmsparse.ops.registry import resolve_implementation
from nmsparse.ops.sparse_tc import supports
from nmsparse.types import NMPattern
from nmsparse.testing.op_suite import OpSuite


@pytest.mark.skipif(native.status() is not None,
                    reason=f"sparse_tc unavailable: {native.status()}")
class TestSparseTC(OpSuite):
  implementation = "sparse_tc"
  methods = ("srste", "bdwp")
  patterns = ("1:4", "2:4", "2:8", "1:8")
  dtypes = ("bfloat16",)

  @classmethod
  def cases(cls):
    """Dense cases and the 1x1 stride-1 convolutions sparse_tc runs (others are refused)."""
    return [c for c in super().cases() if c.op == "dense" or c.stride == 1]

  def _shapes(self, case):
    if case.op == "dense":
      return (37, 128), (128, 192)
    return (2, 5, 5, 64), (1, 1, 64, 128)


def test_layers_it_cannot_run_go_to_pallas_when_available_else_raise():
  x = jnp.ones((1, 6, 6, 64), jnp.bfloat16)
  w = jax.random.normal(jax.random.key(0), (3, 3, 64, 128), jnp.float32)
  layer = LayerSpec("conv", x.shape, w.shape, jnp.bfloat16, NMPattern(2, 8), "bdwp", False,
                    ConvDims.create(x.shape, w.shape, 1, "SAME", None))
  if native.status() is None:
    assert "1x1" in supports(layer)
    assert resolve_implementation("sparse_tc", layer) == "pallas"
    np.testing.assert_array_equal(
        nm_conv(x, w, "2:8", "bdwp", implementation="sparse_tc"),
        nm_conv(x, w, "2:8", "bdwp", implementation="pallas"))
  else:
    assert supports(layer) == native.status()
    with pytest.raises(ValueError, match="sparse_tc"):
      nm_conv(x, w, "2:8", "bdwp", implementation="sparse_tc")
    with pytest.raises(ValueError, match="sparse_tc"):
      nm_dense(jnp.ones((4, 128), jnp.bfloat16), jnp.ones((128, 192)), "2:8", "bdwp",
               implementation="sparse_tc")


def test_h200_rule_picks_sparse_tc_only_where_it_measured_faster():
  """ViT-B/16's layers at batch 256 (50176 tokens, dims >= 768) take sparse_tc on an H200; the
  CIFAR ViT (width 384) and ResNet50's 1x1 convs, which measured slower, do not; an unmeasured
  card never picks it."""
  h200 = CARDS[H200]
  for w_shape in ((768, 2304), (768, 768), (768, 3072), (3072, 768)):
    assert prefers_sparse_tc(w_shape, 256 * 196, h200)
  for w_shape, rows in (((384, 1536), 512 * 64), ((1536, 384), 512 * 64), ((2048, 512), 3136),
                        ((256, 64), 200704), ((768, 3072), 8)):
    assert not prefers_sparse_tc(w_shape, rows, h200)
  assert not prefers_sparse_tc((768, 3072), 50176, DEFAULT)
