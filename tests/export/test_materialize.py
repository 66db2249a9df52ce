"""materialize, the serving load step: every path (dense, packed, native) serves the exported
model's outputs, conv kernels stay packed unless dense, fallbacks are logged, layer_paths reports
the choices, and the input variables are left as they were."""

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from nmsparse import export as ex
from nmsparse import native
from nmsparse.kernels import reference_nm_matmul
from nmsparse.kernels import value_serial
from nmsparse.pack import PackedNM
from nmsparse.testing import assert_close
from tests.export.test_export import MODELS, build, images, max_reduction, trained_variables

SERVED = ["mlp", "vit"]  # the smoke models with sparse dense layers
BATCH = 2


def dense_rows(name, batch):
  """Rows of each dense product: the batch, times the tokens for the ViT (no class token)."""
  if name != "vit":
    return batch
  kwargs, (height, width, _) = MODELS[name]
  return batch * (height // kwargs["patch"]) * (width // kwargs["patch"])


@functools.lru_cache(maxsize=None)
def exported_model(name, pattern="2:8"):
  """The model and its bf16 export (the dtype the native kernel computes in)."""
  model, rules = build(name, pattern, jnp.bfloat16)
  return model, ex.export(trained_variables(name), rules, "bdwp")


def serve(model, variables, x):
  return jax.jit(lambda v, x: ex.apply(model, v, x, train=False))(variables, x)


@functools.lru_cache(maxsize=None)
def exported_outputs(name):
  model, exported = exported_model(name)
  return np.asarray(serve(model, exported.variables, images(name, BATCH)), np.float32)


def sparse_layers(exported):
  return {p.rsplit("/", 1)[0] for p, e in exported.manifest["layers"].items() if e["pattern"]}


def kernel_layers(collection):
  return {k.rsplit("/", 1)[0] for k in traverse_util.flatten_dict(collection, sep="/")
          if k.endswith("/kernel")}


def _blocked_oracle(x, b):
  """``reference_nm_matmul`` on the row layout of a ``BlockedNM`` (the blocked kernel's oracle)."""
  return reference_nm_matmul(x, value_serial.unblock_columns(b))


def leaves(tree):
  return jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda v: isinstance(v, PackedNM))[0]


@pytest.mark.parametrize("implementation", [i for i in ex.IMPLEMENTATIONS if i != "sparse_tc"])
@pytest.mark.parametrize("name", SERVED)
def test_every_path_serves_the_exported_outputs(name, implementation, monkeypatch):
  """``"native"`` / ``"tiled"`` run the jnp oracles (``reference_nm_matmul`` on the unblocked
  operand, ``value_serial.reference_tiled_matmul``) in place of the CUDA kernels: on CPU this tests
  the plumbing (``block_columns``, ``prepare``, the collections, the layer's reshapes and shape
  check), not the kernels
  (``tests/kernels/test_value_serial.py`` does, on GPU)."""
  monkeypatch.setattr(value_serial, "tiled_matmul", value_serial.reference_tiled_matmul)
  monkeypatch.setattr(value_serial, "blocked_matmul", _blocked_oracle)
  model, exported = exported_model(name)
  variables = ex.materialize(exported, dense_rows(name, BATCH), implementation)
  sparse = sparse_layers(exported)
  assert ex.layer_paths(variables, exported.manifest) == {p: implementation for p in sparse}
  moved = {"native": ex.NATIVE, "tiled": ex.TILED, "packed": ex.PACKED,
           "dense": "params"}[implementation]
  assert sparse <= kernel_layers(variables[moved])
  assert implementation == "packed" or kernel_layers(variables[ex.PACKED]) == set()
  assert_close(serve(model, variables, images(name, BATCH)), exported_outputs(name),
               jnp.bfloat16, max_reduction(trained_variables(name)["params"]),
               err_msg=f"{name} {implementation}")


@pytest.mark.skipif(native.status() is None, reason="the native extension is loaded here")
def test_native_without_the_extension_says_the_kernel_is_not_available():
  model, exported = exported_model("mlp")
  variables = ex.materialize(exported, BATCH, "native")
  with pytest.raises(ValueError, match="kernel is not available"):
    ex.apply(model, variables, images("mlp", BATCH), train=False)


@pytest.mark.skipif(native.status() is None,
                    reason="the native extension is loaded: decode_path follows the card's table")
@pytest.mark.parametrize("name", SERVED)
def test_auto_serves_dense_without_the_extension(name):
  _, exported = exported_model(name)
  sparse = sparse_layers(exported)
  auto = ex.materialize(exported, dense_rows(name, BATCH))
  assert ex.layer_paths(auto, exported.manifest) == {p: "dense" for p in sparse}
  assert ex.layer_paths(auto) == {}  # without the manifest, dense kernels are like any other
  assert ex.layer_paths(exported) == {p: "packed" for p in sparse}


def test_conv_kernels_stay_packed_unless_dense(monkeypatch):
  monkeypatch.setattr(value_serial, "tiled_matmul", value_serial.reference_tiled_matmul)
  monkeypatch.setattr(value_serial, "blocked_matmul", _blocked_oracle)
  model, exported = exported_model("resnet18")
  sparse = sparse_layers(exported)
  assert sparse and all(exported.operand(p + "/kernel").values.ndim == 5 for p in sparse)
  for implementation in ("native", "tiled", None):
    variables = ex.materialize(exported, BATCH, implementation)
    assert ex.TILED not in variables and ex.NATIVE not in variables
    assert ex.layer_paths(variables, exported.manifest) == {p: "packed" for p in sparse}
  dense = ex.materialize(exported, BATCH, "dense")
  assert dense[ex.PACKED] == {}
  assert ex.layer_paths(dense, exported.manifest) == {p: "dense" for p in sparse}
  x = images("resnet18", BATCH)
  assert_close(serve(model, dense, x), serve(model, exported.variables, x), jnp.bfloat16,
               max_reduction(trained_variables("resnet18")["params"]))


def test_tiled_falls_back_to_packed_with_a_logged_reason(caplog):
  _, exported = exported_model("mlp", "4:16")  # the tiled kernel decodes M = 4 and 8
  with caplog.at_level(logging.WARNING):
    variables = ex.materialize(exported, BATCH, "tiled")
  assert ex.layer_paths(variables, exported.manifest) == {"hidden_0": "packed",
                                                          "hidden_1": "packed"}
  for layer in ("hidden_0", "hidden_1"):
    why = value_serial.tiled_unsupported(jnp.bfloat16, exported.operand(layer + "/kernel"))
    assert why and any(layer in r.getMessage() and f"({why}) -> packed" in r.getMessage()
                       for r in caplog.records), caplog.text


def test_input_variables_are_left_as_they_were():
  _, exported = exported_model("mlp")
  before = leaves(exported.variables)
  for implementation in (*ex.IMPLEMENTATIONS, None):
    variables = ex.materialize(exported, BATCH, implementation)
    for name in variables:
      for layer in variables[name].values():
        if isinstance(layer, dict):
          layer.clear()
    after = leaves(exported.variables)
    assert [p for p, _ in after] == [p for p, _ in before]
    assert all(a is b for (_, a), (_, b) in zip(after, before))


def test_bad_calls_raise_clearly():
  _, exported = exported_model("mlp")
  with pytest.raises(ValueError, match=r"Unknown implementation 'pallas'; expected one of "
                                       r"\('native', 'tiled', 'sparse_tc', 'packed', 'dense'\) "
                                       "or None"):
    ex.materialize(exported, BATCH, "pallas")
  with pytest.raises(ValueError, match="materialized already"):
    ex.materialize(ex.materialize(exported, BATCH, "native"), BATCH)
  _, resnet = exported_model("resnet18")
  with pytest.raises(ValueError, match=r"'stage1_block1/conv1' is 2:8 in the manifest, but the "
                                       "variables hold no kernel for it"):
    ex.layer_paths(ex.materialize(exported, BATCH, "dense"), resnet.manifest)


# The sparse tensor-core path needs K and O in multiples of 64: an MLP of 64 features on 8x8x1.
WIDE = dict(features=(64, 64))


@functools.lru_cache(maxsize=None)
def wide_mlp():
  """A bf16 MLP whose two hidden kernels ([64, 64]) the sparse tensor cores take, its export and
  its exported outputs (the head, 64 -> 10, stays dense under the default rules)."""
  from nmsparse.models import create_model, default_rules
  from nmsparse.nn import NMConv, NMDense
  rules = default_rules("2:8")
  layer = dict(pattern=rules, method="bdwp", implementation="xla", dtype=jnp.bfloat16,
               param_dtype=jnp.float32)
  model = create_model("mlp", num_classes=10, dense=functools.partial(NMDense, **layer),
                       conv=functools.partial(NMConv, **layer), dtype=jnp.bfloat16, **WIDE)
  x = jax.random.normal(jax.random.key(3), (BATCH, 8, 8, 1))
  variables = model.init(jax.random.key(0), x, train=False)
  params = jax.tree.map(lambda a: jax.random.normal(jax.random.key(a.size), a.shape) /
                        np.sqrt(a.shape[0] if a.ndim > 1 else 10.0), variables["params"])
  exported = ex.export({**variables, "params": params}, rules, "bdwp")
  return model, exported, x, np.asarray(serve(model, exported.variables, x), np.float32)


def test_sparse_tc_path_plumbing(monkeypatch):
  """The collection, the operand's shape check and the layer's reshapes, with the library's
  compressor and product replaced by a stand-in that keeps the dense operand (the CUDA path is
  tested on the GPU below)."""
  from nmsparse.kernels import sparse_tc
  monkeypatch.setattr(ex.inference.native, "library", lambda what="": None)
  monkeypatch.setattr(sparse_tc, "lib_compress", lambda a: a)
  monkeypatch.setattr(sparse_tc, "spmm", lambda a, x, m, k: sparse_tc.reference_spmm(a, x))
  model, exported, x, want = wide_mlp()
  variables = ex.materialize(exported, BATCH, "sparse_tc")
  assert ex.layer_paths(variables, exported.manifest) == {"hidden_0": "sparse_tc",
                                                          "hidden_1": "sparse_tc"}
  operand = variables[ex.SPARSE_TC]["hidden_0"]["kernel"]
  assert isinstance(operand, ex.CompressedFF) and operand.shape == (64, 64)
  assert kernel_layers(variables[ex.PACKED]) == set()
  assert_close(serve(model, variables, x), want, jnp.bfloat16, 64)
  with pytest.raises(ValueError, match="materialized already"):
    ex.materialize(variables, BATCH)


def test_sparse_tc_falls_back_to_packed_with_a_logged_reason(caplog):
  _, exported = exported_model("mlp")  # kernels [64, 32] and [32, 32]: not multiples of 64
  with caplog.at_level(logging.WARNING):
    variables = ex.materialize(exported, BATCH, "sparse_tc")
  assert ex.SPARSE_TC not in variables
  assert ex.layer_paths(variables, exported.manifest) == {"hidden_0": "packed",
                                                          "hidden_1": "packed"}
  assert all(any(layer in r.getMessage() and "not a multiple of 64" in r.getMessage()
                 for r in caplog.records) for layer in ("hidden_0", "hidden_1")), caplog.text


@pytest.mark.skipif(native.status() is None, reason="the native extension is loaded here")
def test_sparse_tc_without_the_extension_says_so():
  _, exported, _, _ = wide_mlp()
  with pytest.raises(Exception, match="sparse tensor-core serving path"):
    ex.materialize(exported, BATCH, "sparse_tc")


@pytest.mark.skipif(native.status() is not None, reason=f"GPU only: {native.status()}")
def test_sparse_tc_path_serves_the_exported_outputs():
  model, exported, x, want = wide_mlp()
  variables = ex.materialize(exported, BATCH, "sparse_tc")
  assert ex.layer_paths(variables, exported.manifest) == {"hidden_0": "sparse_tc",
                                                          "hidden_1": "sparse_tc"}
  assert_close(serve(model, variables, x), want, jnp.bfloat16, 64)


@pytest.mark.skipif(native.status() is not None, reason=f"GPU only: {native.status()}")
@pytest.mark.parametrize("implementation", ["native", "tiled"])
def test_native_kernels_serve_the_exported_outputs(implementation):
  """The CUDA kernels themselves (blocked CUDA-core, pipelined tensor-core) behind materialize."""
  model, exported, x, want = wide_mlp()
  variables = ex.materialize(exported, BATCH, implementation)
  assert ex.layer_paths(variables, exported.manifest) == {"hidden_0": implementation,
                                                          "hidden_1": implementation}
  assert_close(serve(model, variables, x), want, jnp.bfloat16, 64)
