"""The shared op suite on ``implementation="pallas"`` (Pallas interpreter on CPU, compiled on GPU).

Dense cases at batch 5 (and 15 under vmap) take the packed value-serial path for bdwp/bimask (where
the card's measured ``packed_max_batch()`` covers them: off-GPU, and on an H100) and the
masked path for srste; conv cases take the fused prune pass; the last test covers the masked path
that larger batches take. Patterns and dtypes are trimmed to keep
the CPU interpreter inside CI's budget; tests/kernels covers every pattern at the kernel level.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nmsparse.ops import nm_dense
from nmsparse.ops.dense import make_config
from nmsparse.ops.pallas import packed_max_batch, use_packed
from nmsparse.testing.op_suite import OpSuite
from nmsparse.testing.tolerance import assert_close


class TestPallas(OpSuite):
  implementation = "pallas"
  methods = ("srste", "bdwp", "bimask")
  patterns = ("2:4", "2:8")

  with_permutation = False  # pallas.supports refuses a permuted bimask mask (test below)

  @classmethod
  def cases(cls):
    """bdwp 2:8 in both dtypes; other methods and 2:4 (same kernels, other masks) in bf16; bimask
    dense only (its flattened conv groups are refused, test below)."""
    return [c for c in super().cases()
            if (c.dtype == "bfloat16" or (c.method == "bdwp" and c.pattern == "2:8"))
            and not (c.method == "bimask" and c.op == "conv")]


@pytest.mark.parametrize("method", ["bdwp", "bimask"])
def test_large_batch_takes_masked_path_and_matches_xla(method):
  """Above packed_max_batch() rows the operands are masked dense; same function as xla."""
  rows = packed_max_batch() + 3
  rng = np.random.default_rng(7)
  x = jnp.asarray(rng.standard_normal((rows, 16)), jnp.bfloat16)
  w = jnp.asarray(rng.standard_normal((16, 24)), jnp.float32)
  dy = jnp.asarray(rng.standard_normal((rows, 24)), jnp.bfloat16)
  cfg = make_config(w.shape, "2:8", method, 0.1, "pallas", None)
  assert not use_packed(rows, cfg)
  if packed_max_batch():
    assert use_packed(packed_max_batch(), cfg)
  outs = {}
  for impl in ("xla", "pallas"):
    y, pull = jax.vjp(lambda x, w, impl=impl: nm_dense(x, w, "2:8", method, 0.1, impl), x, w)
    outs[impl] = (y, *pull(dy))
  for got, want, red in zip(outs["pallas"], outs["xla"], (16, 24, rows)):
    assert_close(got, np.asarray(want.astype(jnp.float32)), want.dtype, red)
