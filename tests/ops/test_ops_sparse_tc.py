"""The shared op suite on ``implementation="sparse_tc"`` (compiled on a GPU with the native
extension built; skipped elsewhere with the reason), plus its refusals, which run everywhere."""

import jax.numpy as jnp
import pytest

from nmsparse import native
from nmsparse.ops import nm_conv, nm_dense
from nmsparse.ops.sparse_tc import supports
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


def test_unavailable_or_unsupported_layers_raise_with_the_reason():
  x = jnp.ones((4, 128), jnp.bfloat16)
  w = jnp.ones((128, 192), jnp.float32)
  with pytest.raises(ValueError, match="sparse_tc"):
    if native.status() is None:  # available: a pattern it cannot run must be refused
      nm_dense(x, w, "4:8", "bdwp", implementation="sparse_tc")
    else:
      nm_dense(x, w, "2:8", "bdwp", implementation="sparse_tc")
  with pytest.raises(ValueError, match="sparse_tc"):
    nm_conv(jnp.ones((1, 6, 6, 64), jnp.bfloat16), jnp.ones((3, 3, 64, 128)), "2:8", "bdwp",
            implementation="sparse_tc")
