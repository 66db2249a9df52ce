"""The shared op suite on ``implementation="pallas"`` (Pallas interpreter on CPU, compiled on GPU).

Dense cases at batch 5 (and 15 under vmap) take the packed value-serial path for bdwp/bimask and the
masked path for srste; conv cases take the fused prune pass. Patterns and dtypes are trimmed to keep
the CPU interpreter inside CI's budget; tests/kernels covers every pattern at the kernel level.
"""

from nmsparse.testing.op_suite import OpSuite


class TestPallas(OpSuite):
  implementation = "pallas"
  methods = ("srste", "bdwp", "bimask")
  patterns = ("2:4", "2:8")

  @classmethod
  def cases(cls):
    """bdwp in full; srste and bimask (other masks, same kernels) on one pattern and dtype."""
    return [c for c in super().cases()
            if c.method == "bdwp" or (c.pattern == "2:8" and c.dtype == "bfloat16")]
