"""Linen and nnx layers: stock parameter trees, exact dense behaviour, sparse checkpoints, dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import nmsparse as nms
from nmsparse.testing import assert_close

LINEN = [
    (nms.nn.NMDense, nn.Dense, dict(features=16), (3, 32)),
    (nms.nn.NMConv, nn.Conv, dict(features=16, kernel_size=(3, 3), strides=2), (2, 9, 9, 8)),
    (nms.nn.NMConv, nn.Conv, dict(features=8, kernel_size=(3, 3), padding="VALID", use_bias=False),
     (2, 9, 9, 8)),
]


@pytest.mark.parametrize("sparse_cls, stock_cls, kwargs, x_shape", LINEN)
def test_linen_matches_stock(sparse_cls, stock_cls, kwargs, x_shape):
  x = jax.random.normal(jax.random.key(0), x_shape)
  stock = stock_cls(**kwargs)
  params = stock.init(jax.random.key(1), x)
  for method in ("dense", "bdwp"):
    sparse = sparse_cls(**kwargs, pattern="2:8", method=method)
    sparse_params = sparse.init(jax.random.key(1), x)
    # Same structure, shapes, dtypes and initial values as the stock layer.
    assert jax.tree.structure(sparse_params) == jax.tree.structure(params)
    jax.tree.map(np.testing.assert_array_equal, sparse_params, params)
  np.testing.assert_array_equal(
      sparse_cls(**kwargs, pattern="2:8", method="dense").apply(params, x), stock.apply(params, x))
  np.testing.assert_array_equal(sparse_cls(**kwargs).apply(params, x), stock.apply(params, x))


@pytest.mark.parametrize("sparse_cls, stock_cls, kwargs, x_shape", LINEN)
def test_linen_sparse_loads_dense_checkpoint(sparse_cls, stock_cls, kwargs, x_shape):
  x = jax.random.normal(jax.random.key(0), x_shape)
  params = stock_cls(**kwargs).init(jax.random.key(1), x)
  sparse = sparse_cls(**kwargs, pattern="2:8", method="bdwp", implementation="xla")
  kernel = params["params"]["kernel"]
  masked = jax.tree.map(lambda a: a, params)
  masked["params"]["kernel"] = jnp.where(nms.nm_mask(kernel, "2:8", axis=-2), kernel, 0)
  assert_close(sparse.apply(params, x), stock_cls(**kwargs).apply(masked, x), jnp.float32,
               kernel.size // kernel.shape[-1])


def test_linen_mixed_precision_keeps_fp32_gradients():
  x = jax.random.normal(jax.random.key(0), (4, 32))
  layer = nms.nn.NMDense(16, pattern="2:4", dtype=jnp.bfloat16)
  params = layer.init(jax.random.key(1), x)
  y = layer.apply(params, x)
  grads = jax.grad(lambda p: layer.apply(p, x).astype(jnp.float32).sum())(params)
  assert y.dtype == jnp.bfloat16
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))


def test_linen_rules_resolve_by_path():
  rules = nms.LayerRules.create([("^first/", None), (".*", "2:4")])

  class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nms.nn.NMDense(16, pattern=rules, name="first")(x)
      return nms.nn.NMDense(8, pattern=rules, name="second")(x)

  x = jnp.ones((2, 16))
  params = Model().init(jax.random.key(0), x)
  jaxpr = str(jax.make_jaxpr(Model().apply)(params, x))
  assert jaxpr.count("nm_dense_fwd") == 1  # only "second" is sparse


def test_linen_error_names_layer():
  with pytest.raises(ValueError, match="layer 'odd'"):
    nms.nn.NMDense(8, pattern="2:8", name="odd").init(jax.random.key(0), jnp.ones((2, 12)))


NNX = [
    (lambda **kw: nms.nnx.NMLinear(32, 16, **kw), lambda **kw: nnx.Linear(32, 16, **kw), (3, 32)),
    (lambda **kw: nms.nnx.NMConv(8, 16, (3, 3), 2, **kw),
     lambda **kw: nnx.Conv(8, 16, (3, 3), 2, **kw), (2, 9, 9, 8)),
]


@pytest.mark.parametrize("make_sparse, make_stock, x_shape", NNX)
def test_nnx_matches_stock(make_sparse, make_stock, x_shape):
  x = jax.random.normal(jax.random.key(0), x_shape)
  stock = make_stock(rngs=nnx.Rngs(0))
  dense = make_sparse(rngs=nnx.Rngs(0), pattern="2:8", method="dense")
  sparse = make_sparse(rngs=nnx.Rngs(0), pattern="2:8", method="bdwp")
  for layer in (dense, sparse):
    jax.tree.map(np.testing.assert_array_equal, nnx.state(layer, nnx.Param),
                 nnx.state(stock, nnx.Param))
  np.testing.assert_array_equal(dense(x), stock(x))
  nnx.update(sparse, nnx.state(stock, nnx.Param))  # a dense checkpoint loads unchanged
  y = sparse(x)
  assert y.shape == stock(x).shape and not np.allclose(y, stock(x))
  grads = nnx.grad(lambda m: m(x).sum())(sparse)
  assert jax.tree.structure(grads) == jax.tree.structure(nnx.state(stock, nnx.Param))


def test_nnx_apply_rules():
  class Model(nnx.Module):
    def __init__(self, rngs):
      self.first = nms.nnx.NMLinear(16, 16, rngs=rngs)
      self.second = nms.nnx.NMLinear(16, 8, rngs=rngs)

    def __call__(self, x):
      return self.second(self.first(x))

  model = Model(nnx.Rngs(0))
  chosen = nms.nnx.apply_rules(model, nms.LayerRules.create([("first", None), (".*", "2:4")]))
  assert chosen == {"first/kernel": None, "second/kernel": nms.NMPattern(2, 4)}
  assert model.second.pattern == nms.NMPattern(2, 4) and model.first.pattern is None

