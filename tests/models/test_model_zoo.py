"""Models: shapes, stock parameter trees, default rules, and loud errors for layers that cannot group."""

import functools

import jax
import jax.numpy as jnp
import pytest

from nmsparse.models import MODELS, create_model, default_rules
from nmsparse.nn import NMConv, NMDense
from nmsparse.prune.rules import LayerRules, sparsity_report

TINY = {
    "mlp": dict(features=(16,)),
    "resnet9": dict(width=8),
    "resnet18": dict(width=8, stage_sizes=(1, 1)),
    "resnet34": dict(width=8, stage_sizes=(1, 1)),
    "resnet50": dict(width=8, stage_sizes=(1, 1)),
    "vgg19": dict(layers=(8, "M", 16, "M")),
    "vit": dict(patch=4, width=16, depth=1, heads=2, mlp_ratio=2),
}


def build(name, rules, method="bdwp", **extra):
  layers = dict(pattern=rules, method=method)
  return create_model(name, num_classes=10, dense=functools.partial(NMDense, **layers),
                      conv=functools.partial(NMConv, **layers), **TINY[name], **extra)


def test_every_registered_model_has_a_tiny_variant():
  assert set(TINY) == set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_sparse_model_matches_stock_tree_and_runs(name):
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  sparse = build(name, default_rules("2:8"))
  stock = create_model(name, num_classes=10, **TINY[name])
  v_sparse = jax.eval_shape(lambda: sparse.init(jax.random.key(1), x, train=False))
  v_stock = jax.eval_shape(lambda: stock.init(jax.random.key(1), x, train=False))
  assert jax.tree.structure(v_sparse) == jax.tree.structure(v_stock)
  assert jax.tree.map(lambda a: a.shape, v_sparse) == jax.tree.map(lambda a: a.shape, v_stock)
  variables = sparse.init(jax.random.key(1), x, train=False)
  logits, _ = sparse.apply(variables, x, train=True, mutable=["batch_stats"])
  assert logits.shape == (2, 10) and logits.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_default_rules_keep_stem_and_head_dense(name):
  x = jnp.zeros((1, 16, 16, 3))
  variables = jax.eval_shape(lambda: build(name, default_rules("2:8")).init(
      jax.random.key(0), x, train=False))
  report = {r.path: r for r in sparsity_report(variables["params"], default_rules("2:8"),
                                               log=False)}
  assert report["head/kernel"].pattern is None
  stems = [p for p in report if p.split("/")[0] in ("conv_init", "embedding")]
  assert all(report[p].pattern is None for p in stems)
  others = [r for p, r in report.items() if p != "head/kernel" and p not in stems]
  assert others and all(str(r.pattern) == "2:8" for r in others)


def test_layer_that_cannot_group_is_an_error_not_silent():
  x = jnp.zeros((1, 16, 16, 3))
  model = build("resnet9", LayerRules.uniform("2:8"))  # stem conv has 3 input channels
  with pytest.raises(ValueError, match="conv_init"):
    model.init(jax.random.key(0), x, train=False)


def test_bf16_compute_keeps_fp32_params():
  x = jnp.ones((2, 16, 16, 3))
  model = build("resnet9", default_rules("2:8"), dtype=jnp.bfloat16)
  variables = model.init(jax.random.key(0), x, train=False)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))
  assert model.apply(variables, x, train=False).dtype == jnp.float32


def test_unknown_model_lists_known_ones():
  with pytest.raises(ValueError, match="resnet18"):
    create_model("resnet7", num_classes=10)
