"""The op suite on the reference (``xla``) implementation, plus op-level behaviour checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nmsparse as nms
from nmsparse.ops import (IMPLEMENTATIONS, LayerSpec, nm_dense_bwd_p, nm_dense_fwd_p,
                          resolve_implementation)
from nmsparse.testing import assert_close
from nmsparse.testing.op_suite import OpSuite


class TestXla(OpSuite):
  implementation = "xla"


def _key(i):
  return jax.random.key(i)


def test_primitives_show_in_jaxpr():
  x = jax.random.normal(_key(0), (4, 16))
  w = jax.random.normal(_key(1), (16, 8))
  jaxpr = str(jax.make_jaxpr(jax.grad(lambda x, w: nms.nm_dense(x, w, "2:8").sum(), (0, 1)))(x, w))
  assert nm_dense_fwd_p.name in jaxpr and nm_dense_bwd_p.name in jaxpr
  conv_jaxpr = str(jax.make_jaxpr(lambda x, w: nms.nm_conv(x, w, "2:4"))(
      jnp.ones((1, 4, 4, 8)), jnp.ones((3, 3, 8, 8))))
  assert "nm_conv_fwd" in conv_jaxpr


def test_dense_method_is_plain_product():
  x = jax.random.normal(_key(0), (3, 5, 16))
  w = jax.random.normal(_key(1), (16, 8))
  np.testing.assert_array_equal(nms.nm_dense(x, w, method="dense"), x @ w)


def test_scan_and_checkpoint_match_unrolled():
  w = jax.random.normal(_key(1), (16, 16)) / 4
  x = jax.random.normal(_key(0), (4, 16))
  layer = lambda c: jnp.tanh(nms.nm_dense(c, w, "2:8"))

  def scanned(x):
    return jax.lax.scan(lambda c, _: (jax.checkpoint(layer)(c), None), x, None, length=3)[0].sum()

  def unrolled(x):
    return layer(layer(layer(x))).sum()

  assert_close(jax.grad(scanned)(x), jax.grad(unrolled)(x), jnp.float32, 16)


def test_vmap_over_weights():
  x = jax.random.normal(_key(0), (4, 16))
  ws = jax.random.normal(_key(1), (3, 16, 8))
  got = jax.vmap(lambda w: nms.nm_dense(x, w, "2:4"))(ws)
  want = jnp.stack([nms.nm_dense(x, w, "2:4") for w in ws])
  assert_close(got, want, jnp.float32, 16)


def test_forward_uses_input_axis_mask_and_backward_output_axis_mask():
  w = jax.random.normal(_key(1), (8, 8))
  x = jnp.eye(8)
  y, pullback = jax.vjp(lambda x: nms.nm_dense(x, w, "2:4", method="bdwp"), x)
  (dx,) = pullback(jnp.eye(8))
  np.testing.assert_array_equal(y != 0, nms.nm_mask(w, "2:4", axis=0))
  np.testing.assert_array_equal(dx.T != 0, nms.nm_mask(w, "2:4", axis=1))


def test_sr_ste_lambda_zero_gives_plain_weight_gradient():
  x = jax.random.normal(_key(0), (4, 16))
  w = jax.random.normal(_key(1), (16, 8))
  dw = jax.grad(lambda w: nms.nm_dense(x, w, "2:8", sr_ste_lambda=0.0).sum())(w)
  assert_close(dw, x.T @ jnp.ones((4, 8)), jnp.float32, 4)


@pytest.mark.parametrize("kwargs, message", [
    (dict(pattern="2:8", w_shape=(12, 16)), "not divisible by M=8"),
    (dict(pattern="2:8", w_shape=(16, 12)), "axis 1"),
    (dict(pattern=None, w_shape=(16, 16)), "needs an N:M pattern"),
    (dict(pattern="2:4", method="magic", w_shape=(16, 16)), "magic"),
    (dict(pattern="2:4", implementation="cuda", w_shape=(16, 16)), "cuda"),
])
def test_dense_errors_name_the_problem(kwargs, message):
  w_shape = kwargs.pop("w_shape")
  with pytest.raises(ValueError, match=message):
    nms.nm_dense(jnp.ones((2, w_shape[0])), jnp.ones(w_shape), **kwargs)


def test_srste_only_needs_input_axis_divisible():
  y = nms.nm_dense(jnp.ones((2, 16)), jnp.ones((16, 12)), "2:8", method="srste")
  assert y.shape == (2, 12)


def test_conv_rejects_mismatched_channels():
  with pytest.raises(ValueError, match="input channels"):
    nms.nm_conv(jnp.ones((1, 4, 4, 8)), jnp.ones((3, 3, 4, 8)), "2:4")


def test_integer_inputs_rejected():
  with pytest.raises(ValueError, match="int32"):
    nms.nm_dense(jnp.ones((2, 8), jnp.int32), jnp.ones((8, 8)), "2:4")


@pytest.mark.parametrize("op", ["dense", "conv"])
def test_unknown_keywords_are_type_errors(op):
  x, w = (jnp.ones((2, 16)), jnp.ones((16, 8))) if op == "dense" else (
      jnp.ones((1, 4, 4, 8)), jnp.ones((3, 3, 8, 8)))
  fn = nms.nm_dense if op == "dense" else nms.nm_conv
  with pytest.raises(TypeError, match="metod"):
    fn(x, w, "2:8", metod="dense")


def test_scalar_x_is_a_clear_error():
  with pytest.raises(ValueError, match=r"nm_dense needs x \[\.\.\., K\]"):
    nms.nm_dense(jnp.ones(()), jnp.ones((16, 8)), "2:8")
  with pytest.raises(ValueError, match="NHWC inputs"):
    nms.nm_conv(jnp.ones(()), jnp.ones((3, 3, 8, 8)), "2:8")


def test_conv_int_strides_and_padding_match_pairs():
  x = jax.random.normal(_key(0), (2, 8, 8, 8))
  w = jax.random.normal(_key(1), (3, 3, 8, 8))
  got = nms.nm_conv(x, w, "2:4", strides=2, padding=1)
  want = nms.nm_conv(x, w, "2:4", strides=(2, 2), padding=((1, 1), (1, 1)))
  assert got.shape == (2, 4, 4, 8)
  np.testing.assert_array_equal(got, want)
  dense = jax.lax.conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)),
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_array_equal(nms.nm_conv(x, w, method="dense", strides=2, padding=1), dense)


def test_conv_three_strides_is_a_clear_error():
  with pytest.raises(ValueError, match=r"strides needs 1 or 2 values, got \(1, 1, 1\)"):
    nms.nm_conv(jnp.ones((1, 4, 4, 8)), jnp.ones((3, 3, 8, 8)), "2:4", strides=(1, 1, 1))


def test_registry_is_static_records_with_supports():
  assert set(IMPLEMENTATIONS) == {"xla", "pallas", "sparse_tc"}
  assert all(IMPLEMENTATIONS[name].name == name for name in IMPLEMENTATIONS)
  layer = LayerSpec("dense", (4, 16), (16, 16), jnp.float32, nms.NMPattern(2, 16), "bdwp", False)
  assert IMPLEMENTATIONS["sparse_tc"].supports(layer)  # bf16 only, 64-multiples, and on CPU: off
  assert IMPLEMENTATIONS["xla"].supports(layer) is None
  assert "M in (2, 4, 8)" in IMPLEMENTATIONS["pallas"].supports(layer)
  with pytest.raises(ValueError, match="M in \\(2, 4, 8\\)"):
    resolve_implementation("pallas", layer)
  assert resolve_implementation(None, layer) == "xla"
