"""Export: inference from packed operands equals the masked dense model, Orbax round trips are exact,
the manifest describes the export, and bad exports raise naming the layer, shape and pattern."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nmsparse import export as ex
from nmsparse.models import create_model, default_rules
from nmsparse.nn import NMConv, NMDense
from nmsparse.pack import PackedNM, unpack
from nmsparse.prune import LayerRules, ff_mask
from nmsparse.testing import assert_close
from nmsparse.types import NMPattern

# The configs' smoke-size models (configs/quickstart.py, resnet18_cifar10.py, vit_cifar10.py).
MODELS = {
    "mlp": (dict(features=(32, 32)), (8, 8, 1)),
    "resnet18": (dict(width=8, stem="cifar", stage_sizes=(1, 1)), (8, 8, 3)),
    "vit": (dict(patch=4, width=16, depth=2, heads=2, mlp_ratio=2), (8, 8, 3)),
}


def build(name, pattern, dtype, method="bdwp", rules=None, **extra):
  rules = default_rules(pattern) if rules is None else rules
  layer = dict(pattern=rules, method=method, implementation="xla", dtype=dtype,
               param_dtype=jnp.float32, **extra)
  kwargs, _ = MODELS[name]
  model = create_model(name, num_classes=10, dense=functools.partial(NMDense, **layer),
                       conv=functools.partial(NMConv, **layer), dtype=dtype, **kwargs)
  return model, rules


@functools.lru_cache(maxsize=None)
def trained_variables(name):
  """Random variables with the stock tree of ``name`` (any method or pattern): kernels scaled by
  ``1/sqrt(fan_in)``, norm scales near 1, everything else (the ViT head, which starts at zero,
  included) small and nonzero, batch variances positive. Drawn in numpy: nothing to compile."""
  kwargs, image = MODELS[name]
  stock = create_model(name, num_classes=10, **kwargs)
  shapes = jax.eval_shape(lambda: stock.init(jax.random.key(0), jnp.zeros((1,) + image),
                                             train=False))
  rng = np.random.default_rng(0)

  def draw(path, leaf):
    noise = rng.standard_normal(leaf.shape).astype(np.float32)
    key = path[-1].key
    if key == "kernel":
      return jnp.asarray(noise / np.sqrt(np.prod(leaf.shape[:-1])))
    if key in ("scale", "var"):
      return jnp.asarray(1 + 0.1 * np.abs(noise))
    return jnp.asarray(0.1 * noise)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def images(name, batch, seed=3):
  return jax.random.normal(jax.random.key(seed), (batch,) + MODELS[name][1])


def max_reduction(params):
  """The longest reduction of any kernel (input features times taps): the tolerance's length."""
  return max(int(np.prod(k.shape[:-1])) for k in jax.tree.leaves(params) if k.ndim >= 2)


# Every model at both patterns and both compute dtypes, paired (the interpreted kernel makes each
# case cost seconds of compilation).
EQUALITY_CASES = [(name, p, d) for name in sorted(MODELS)
                  for p, d in (("2:8", "bf16"), ("2:4", "fp32"))]
DTYPES = {"bf16": jnp.bfloat16, "fp32": jnp.float32}


@pytest.mark.parametrize("name,pattern,dtype_name", EQUALITY_CASES,
                         ids=["-".join(c) for c in EQUALITY_CASES])
def test_inference_equals_masked_dense_model(name, pattern, dtype_name):
  dtype = DTYPES[dtype_name]
  model, rules = build(name, pattern, dtype)
  variables = trained_variables(name)
  exported = ex.export(variables, rules, "bdwp", dtype=dtype)
  masked = jax.jit(lambda v, x: model.apply(v, x, train=False))
  served = jax.jit(lambda v, x: ex.apply(model, v, x, train=False))
  for batch in (1, 8):
    x = images(name, batch)
    want = masked(variables, x)
    assert float(jnp.max(jnp.abs(want))) > 0, "the reference output is trivially zero"
    assert_close(served(exported.variables, x), want, dtype, max_reduction(variables["params"]),
                 err_msg=f"{name} {pattern} batch {batch}")
  packed = jax.tree.leaves(exported.variables[ex.PACKED],
                           is_leaf=lambda v: isinstance(v, PackedNM))
  assert packed and all(p.values.dtype == dtype for p in packed)
  exported_kernels = {"/".join(str(k.key) for k in path)
                      for path, _ in jax.tree_util.tree_flatten_with_path(
                          exported.variables["params"])[0] if path[-1].key == "kernel"}
  assert exported_kernels.isdisjoint(
      p for p, e in exported.manifest["layers"].items() if e["pattern"])  # no dense copies kept


def pallas_calls(jaxpr):
  """Names of the ``pallas_call``s in a jaxpr, nested jaxprs included."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "pallas_call":
      yield eqn.params["name"]
    for value in eqn.params.values():
      inner = getattr(value, "jaxpr", value)
      if hasattr(inner, "eqns"):
        yield from pallas_calls(inner)


def test_dense_products_run_the_value_serial_kernel():
  model, rules = build("vit", "2:8", jnp.bfloat16)
  exported = ex.export(trained_variables("vit"), rules, "bdwp")
  jaxpr = jax.make_jaxpr(lambda v, x: ex.apply(model, v, x, train=False))(
      exported.variables, images("vit", 1))
  sparse_dense = [p for p, e in exported.manifest["layers"].items()
                  if e["pattern"] and e["kind"] == "dense"]
  assert list(pallas_calls(jaxpr.jaxpr)) == ["nm_matmul_2of8"] * len(sparse_dense)
  assert len(sparse_dense) == 8  # qkv, out, mlp1, mlp2 of both blocks


def test_patterns_the_kernel_lacks_use_its_reference():
  model, rules = build("mlp", "4:16", jnp.float32)
  variables = trained_variables("mlp")
  exported = ex.export(variables, rules, "bdwp", dtype=jnp.float32)
  x = images("mlp", 8)
  assert_close(ex.apply(model, exported, x, train=False), model.apply(variables, x, train=False),
               jnp.float32, 64)


def test_mask_every_exports_the_snapshot_masks():
  model, rules = build("mlp", "2:4", jnp.float32, mask_every=4)
  x = images("mlp", 8)
  variables = dict(trained_variables("mlp"))
  rng = np.random.default_rng(1)
  # Kernel snapshots of an earlier step, one per sparse layer (the dense head keeps none).
  variables["nm_masks"] = {
      layer: {"kernel_snapshot": jnp.asarray(rng.standard_normal(v["kernel"].shape), jnp.float32),
              "count": jnp.ones((), jnp.int32)}
      for layer, v in variables["params"].items() if layer != "head"}
  kernel = variables["params"]["hidden_0"]["kernel"]
  snapshot = variables["nm_masks"]["hidden_0"]["kernel_snapshot"]
  p = NMPattern.parse("2:4")
  assert not jnp.array_equal(ff_mask(kernel, p), ff_mask(snapshot, p))
  exported = ex.export(variables, rules, "bdwp", dtype=jnp.float32)
  assert "nm_masks" not in exported.variables
  np.testing.assert_array_equal(unpack(exported.operand("hidden_0/kernel")),
                                jnp.where(ff_mask(snapshot, p), kernel, 0))
  assert_close(ex.apply(model, exported, x, train=False), model.apply(variables, x, train=False),
               jnp.float32, 64)


def test_dense_method_exports_everything_as_it_is():
  model, rules = build("mlp", "2:8", jnp.float32, method="dense")
  variables = trained_variables("mlp")
  exported = ex.export(variables, rules, "dense", dtype=jnp.float32)
  assert exported.variables[ex.PACKED] == {}
  assert exported.manifest["compression"]["sparse_layers"] == 0
  x = images("mlp", 2)
  np.testing.assert_array_equal(ex.apply(model, exported, x, train=False),
                                model.apply(variables, x, train=False))


def flat(tree):
  return jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda v: isinstance(v, PackedNM))[0]


def test_orbax_round_trip_is_exact(tmp_path):
  model, rules = build("resnet18", "2:8", jnp.bfloat16)
  variables = trained_variables("resnet18")
  exported = ex.export(variables, rules, "bdwp", source={"checkpoint": "/runs/r/7", "step": 7})
  loaded = ex.load_exported(ex.save_exported(str(tmp_path / "export"), exported))
  assert loaded.manifest == exported.manifest
  assert jax.tree.structure(loaded.variables) == jax.tree.structure(exported.variables)
  for (path, a), (path_b, b) in zip(flat(exported.variables), flat(loaded.variables)):
    assert path == path_b
    if isinstance(a, PackedNM):
      assert (a.pattern, a.axis, a.length) == (b.pattern, b.axis, b.length)
      pairs = [(a.values, b.values), (a.positions, b.positions)]
    else:
      pairs = [(a, b)]
    for x, y in pairs:
      assert x.dtype == y.dtype and x.shape == y.shape, path
      np.testing.assert_array_equal(np.asarray(x).view(np.uint8), np.asarray(y).view(np.uint8))
  served = jax.jit(lambda v, x: ex.apply(model, v, x, train=False))
  x = images("resnet18", 2)
  np.testing.assert_array_equal(served(loaded.variables, x), served(exported.variables, x))


def test_manifest_describes_the_export():
  model, rules = build("mlp", "2:8", jnp.bfloat16)
  variables = trained_variables("mlp")
  exported = ex.export(variables, rules, "bdwp", source={"step": 3}, git_sha="abc")
  m = exported.manifest
  assert (m["format"], m["method"], m["dtype"], m["git_sha"]) == ("nmsparse-export", "bdwp",
                                                                  "bfloat16", "abc")
  assert m["source"] == {"step": 3} and m["nmsparse_version"] and m["jax_version"]
  assert m["layers"]["hidden_0/kernel"] == {
      "kind": "dense", "shape": [64, 32], "pattern": "2:8", "axis": 0, "values_shape": [2, 8, 32],
      "positions_shape": [2, 4, 32], "packed_bytes": 2 * 8 * 32 * 2 + 2 * 4 * 32,
      "dense_bf16_bytes": 64 * 32 * 2}
  assert m["layers"]["head/kernel"]["pattern"] is None
  assert m["compression"]["ratio"] == pytest.approx(0.3125)
  assert m["rules"][-1] == [".*", "2:8"]


def test_require_pruned_names_the_unpruned_layer():
  model, rules = build("mlp", "2:4", jnp.float32)
  variables = trained_variables("mlp")
  with pytest.raises(ValueError, match=r"'hidden_0/kernel' of shape \(64, 32\) is not 2:4"):
    ex.export(variables, rules, "bdwp", require_pruned=True)
  p = NMPattern.parse("2:4")
  pruned = jax.tree_util.tree_map_with_path(
      lambda path, w: jnp.where(ff_mask(w, p), w, 0) if path[0].key != "head" and w.ndim == 2
      else w, variables["params"])
  strict = ex.export({"params": pruned}, rules, "bdwp", require_pruned=True)
  lenient = ex.export({"params": pruned}, rules, "bdwp")
  for a, b in zip(jax.tree.leaves(strict.variables), jax.tree.leaves(lenient.variables)):
    np.testing.assert_array_equal(a, b)


def test_bad_exports_raise_clearly(tmp_path):
  model, rules = build("resnet18", "2:8", jnp.float32)
  variables = trained_variables("resnet18")
  with pytest.raises(ValueError, match="Unknown method 'bdwq'"):
    ex.export(variables, rules, "bdwq")
  with pytest.raises(ValueError, match=r"2:8 to a kernel 'conv_init/kernel' of shape "
                                       r"\(3, 3, 3, 8\) along axis 2"):
    ex.export(variables, LayerRules.uniform("2:8"), "bdwp")
  with pytest.raises(ValueError, match="apply variables"):
    ex.export(variables["params"], rules, "bdwp")
  with pytest.raises(ValueError, match=r"bimask groups a conv kernel's forward mask along the "
                                       r"flattened \(C, kh, kw\) axis"):
    ex.export(variables, rules, "bimask")
  with pytest.raises(TypeError, match="not JSON-able"):
    ex.export(variables, rules, "bdwp", source={"step": object()})
  exported = ex.export(variables, rules, "bdwp")
  path = ex.save_exported(str(tmp_path / "e"), exported)
  with pytest.raises(FileExistsError, match="overwrite=True"):
    ex.save_exported(path, exported)
  with pytest.raises(FileNotFoundError, match="manifest.json is missing"):
    ex.load_exported(str(tmp_path))
  other, _ = build("mlp", "2:8", jnp.float32)
  with pytest.raises(ValueError, match="no injectable dense or conv"):
    ex.inference_model(NMDense(4))
  mlp_export = ex.export(trained_variables("mlp"), rules, "bdwp")
  wider = other.clone(features=(48, 32))
  with pytest.raises(ValueError, match="'hidden_0' takes 64 input features to 48 outputs"):
    ex.apply(wider, mlp_export, images("mlp", 1), train=False)
