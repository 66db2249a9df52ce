"""The ViT's stochastic depth and attention dropout: off at eval, random per example in training,
unbiased, and the same parameters as without them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nmsparse.models import create_model
from nmsparse.models.vit import DropPath

TINY = dict(patch=4, width=16, depth=3, heads=2, mlp_ratio=2)
X = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))


def _vit(**kw):
  return create_model("vit", num_classes=10, **TINY, **kw)


def _init(model):
  """Variables with a random head (its init is zeros, which would hide every difference)."""
  variables = model.init(jax.random.key(1), X, train=False)
  head = variables["params"]["head"]
  head = {**head, "kernel": jax.random.normal(jax.random.key(9), head["kernel"].shape)}
  return {**variables, "params": {**variables["params"], "head": head}}


def test_regularisers_add_no_parameters_and_vanish_at_eval():
  plain, reg = _vit(), _vit(drop_path=0.3, attention_dropout=0.2)
  variables = _init(plain)
  assert jax.tree.structure(reg.init(jax.random.key(1), X, train=False)) == \
      jax.tree.structure(variables)
  np.testing.assert_array_equal(reg.apply(variables, X, train=False),
                                plain.apply(variables, X, train=False))


def test_training_draws_from_the_dropout_stream():
  reg = _vit(drop_path=0.3, attention_dropout=0.2)
  variables = _init(reg)
  with pytest.raises(Exception, match="dropout"):
    reg.apply(variables, X, train=True)
  a = reg.apply(variables, X, train=True, rngs={"dropout": jax.random.key(2)})
  b = reg.apply(variables, X, train=True, rngs={"dropout": jax.random.key(2)})
  c = reg.apply(variables, X, train=True, rngs={"dropout": jax.random.key(3)})
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  assert not np.allclose(a, reg.apply(variables, X, train=False))


def test_drop_path_drops_whole_examples_and_is_unbiased():
  y = jnp.ones((4000, 3, 5))
  out = DropPath(0.25).apply({}, y, True, rngs={"dropout": jax.random.key(0)})
  per_example = np.asarray(out).reshape(4000, -1)
  kept = per_example != 0
  np.testing.assert_allclose(per_example[kept], 1.0 / 0.75, rtol=1e-6)
  assert (per_example == per_example[:, :1]).all()  # one draw per example
  dropped = float((per_example[:, 0] == 0).mean())
  assert abs(dropped - 0.25) < 0.03  # 4000 draws: std 0.007
  assert abs(float(out.mean()) - 1.0) < 0.05
  np.testing.assert_array_equal(DropPath(0.25).apply({}, y, False), y)


def test_depth_schedule_starts_at_zero():
  # block 0's rate is 0: with one block, drop_path changes nothing even in training
  one = create_model("vit", num_classes=10, **{**TINY, "depth": 1}, drop_path=0.5)
  plain = create_model("vit", num_classes=10, **{**TINY, "depth": 1})
  variables = _init(plain)
  np.testing.assert_array_equal(
      one.apply(variables, X, train=True, rngs={"dropout": jax.random.key(2)}),
      plain.apply(variables, X, train=True))


def test_bad_rates_and_fused_attention_dropout_are_refused():
  with pytest.raises(ValueError, match="drop_path"):
    _vit(drop_path=1.0).init(jax.random.key(0), X, train=False)
  with pytest.raises(ValueError, match="einsum"):
    _vit(attention_dropout=0.1, attention="xla").init(jax.random.key(0), X, train=False)
