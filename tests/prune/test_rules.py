"""Layer rules: first match wins, dense by default, the report, and errors that name the layer."""

import jax
import jax.numpy as jnp
import pytest

import nmsparse as nms


def _params():
  k = jax.random.key(0)
  return {"stem": {"kernel": jnp.ones((3, 3, 3, 16))},
          "block": {"conv": {"kernel": jax.random.normal(k, (3, 3, 16, 16)), "bias": jnp.ones(16)}},
          "head": {"kernel": jnp.ones((16, 10))}}


def test_first_match_wins():
  rules = nms.LayerRules.create([("block/conv", "2:4"), ("block", None), (".*", "2:8")])
  assert rules.pattern_for("block/conv/kernel") == nms.NMPattern(2, 4)
  assert rules.pattern_for("block/other/kernel") is None
  assert rules.pattern_for("x/kernel") == nms.NMPattern(2, 8)
  assert nms.LayerRules.create([("a", "2:4")]).match("b/kernel") == (None, None)


def test_report_lists_every_kernel_with_rule_and_sparsity():
  rules = nms.LayerRules.uniform("2:8", dense=["^stem", "^head"])
  report = {r.path: r for r in nms.sparsity_report(_params(), rules, method="bdwp", log=False)}
  assert set(report) == {"stem/kernel", "block/conv/kernel", "head/kernel"}
  conv = report["block/conv/kernel"]
  assert conv.pattern == nms.NMPattern(2, 8) and conv.rule == ".*"
  assert conv.ff_sparsity == pytest.approx(0.75) and conv.bp_sparsity == pytest.approx(0.75)
  assert report["stem/kernel"].pattern is None and report["stem/kernel"].ff_sparsity == 0.0
  assert "2:8" in str(conv)


def test_bimask_backward_is_sparser_than_forward():
  rules = nms.LayerRules.uniform("2:4", dense=["^stem", "^head"])
  conv = [r for r in nms.sparsity_report(_params(), rules, "bimask", log=False)
          if r.path == "block/conv/kernel"][0]
  assert conv.bp_sparsity > conv.ff_sparsity


def test_report_error_names_the_layer():
  with pytest.raises(ValueError, match="kernel '(stem|head)/kernel'"):
    nms.sparsity_report(_params(), nms.LayerRules.uniform("2:8"), log=False)


def test_bad_regex():
  with pytest.raises(ValueError, match="does not compile"):
    nms.LayerRules.create([("(", "2:4")])
