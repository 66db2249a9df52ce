"""``mask_every`` (SPEC §1): ops with a given ``mask_source`` and layers that refresh a kernel snapshot
every ``mask_every`` training calls (linen and nnx); ``mask_every=1`` stays the plain path."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import nmsparse as nms
from nmsparse.ops import cards, pallas
from nmsparse.prune.schedule import MASK_COLLECTION
from nmsparse.testing import assert_close, decay, method_masks
from nmsparse.testing.op_suite import LAMBDA, OpSuite, stale_source
from nmsparse.types import NMPattern

SPARSE_METHODS = ("srste", "bdwp", "bimask")


# Ops -------------------------------------------------------------------------------------------

class TestMaskSourceXla(OpSuite):
  """The shared op suite with masks from ``stale_source(w)``: y, dx and dW (its SR-STE term from
  the stale ``M_ff``) against the numpy reference, eager, jit and vmap."""

  implementation = "xla"
  with_mask_source = True
  methods = SPARSE_METHODS
  patterns = ("2:4", "2:8")


class TestMaskSourcePallas(TestMaskSourceXla):
  implementation = "pallas"
  with_permutation = False  # pallas.supports refuses a permuted bimask mask and its conv groups

  @classmethod
  def cases(cls):
    return [c for c in super().cases()
            if (c.dtype == "bfloat16" or (c.method == "bdwp" and c.pattern == "2:8"))
            and not (c.method == "bimask" and c.op == "conv")]


@pytest.fixture
def fused_mask_source():
  """``pallas`` under this card's rule with ``fused_mask_source`` on (no card has it yet). The path
  is chosen at trace time, so jax's caches are cleared on both sides of the test."""
  jax.clear_caches()
  with cards.overridden(fused_mask_source=True) as rule:
    yield rule
  jax.clear_caches()


@pytest.mark.usefixtures("fused_mask_source")
class TestMaskSourcePallasFused(TestMaskSourcePallas):
  """The same cases through the fused prune pass that ranks the snapshot (``prune_pack(...,
  source=)``; interpreter on CPU, compiled on a GPU)."""


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("op", ["dense", "conv"])
def test_pallas_mask_source_path_follows_the_card_rule(op, fused, monkeypatch):
  """With a given source, pallas calls its prune kernel (with the source) only where the card's rule
  has ``fused_mask_source``; otherwise it runs the xla functions and no kernel."""
  sources = []

  def spy(*args, **kwargs):
    sources.append(kwargs.get("source"))
    return real(*args, **kwargs)

  real = pallas.prune_pack
  jax.clear_caches()
  monkeypatch.setattr(pallas, "prune_pack", spy)
  x, w, _ = _inputs(op)
  with cards.overridden(fused_mask_source=fused):
    y, pullback = jax.vjp(_op(op, "bdwp", "pallas", mask_source=stale_source(w)), x, w)
    pullback(jnp.ones_like(y))
  jax.clear_caches()
  assert len(sources) == (1 if fused else 0), sources
  assert all(s is not None for s in sources)


@pytest.mark.parametrize("op", ["dense", "conv"])
def test_pallas_pullback_follows_its_forward_when_the_rule_changes_between(op):
  """A forward traced on the xla path (rule off) leaves no kernel residuals; its pullback, traced
  with the rule on, must take the xla path too, and give xla's gradients."""
  x, w, _ = _inputs(op)
  src = stale_source(w)
  jax.clear_caches()
  y, pullback = jax.vjp(_op(op, "bdwp", "pallas", mask_source=src), x, w)
  dy = jnp.asarray(np.random.default_rng(3).standard_normal(y.shape), y.dtype)
  with cards.overridden(fused_mask_source=True):
    got = pullback(dy)
  jax.clear_caches()
  want = jax.vjp(_op(op, "bdwp", "xla", mask_source=src), x, w)[1](dy)
  for g, r in zip(got, want):
    np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-6, atol=1e-6)


def _inputs(op, seed=0):
  rng = np.random.default_rng(seed)
  x_shape, w_shape = ((6, 16), (16, 24)) if op == "dense" else ((2, 6, 6, 8), (3, 3, 8, 16))
  return (jnp.asarray(rng.standard_normal(x_shape), jnp.float32),
          jnp.asarray(rng.standard_normal(w_shape), jnp.float32), rng)


def _op(op, method, implementation, **kwargs):
  if op == "dense":
    return lambda x, w: nms.nm_dense(x, w, "2:8", method, LAMBDA, implementation, **kwargs)
  return lambda x, w: nms.nm_conv(x, w, "2:8", method, sr_ste_lambda=LAMBDA,
                                  implementation=implementation, **kwargs)


@pytest.mark.parametrize("implementation", ["xla", "pallas"])
@pytest.mark.parametrize("method", SPARSE_METHODS)
@pytest.mark.parametrize("op", ["dense", "conv"])
def test_mask_source_w_matches_default_path(op, method, implementation):
  if (op, method, implementation) == ("conv", "bimask", "pallas"):
    pytest.skip("pallas.supports refuses bimask's (C, kh, kw) conv groups (test_ops_pallas.py)")
  x, w, rng = _inputs(op)
  default = _op(op, method, implementation)
  y, pullback = jax.vjp(default, x, w)
  dy = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
  expected = (y, *pullback(dy))
  y_src, pullback_src = jax.vjp(lambda x, w, s: _op(op, method, implementation, mask_source=s)(x, w),
                                x, w, w)
  got = (y_src, *pullback_src(dy))
  np.testing.assert_array_equal(got[3], jnp.zeros_like(w))  # the mask source gets no gradient
  reduction = max(w.size // w.shape[-1], w.size // w.shape[-2], x.size // x.shape[-1])
  for name, a, b in zip(("y", "dx", "dW"), got[:3], expected):
    if implementation == "xla":  # the same computation: bit for bit
      np.testing.assert_array_equal(a, b, err_msg=name)
    else:  # the xla masked path against the fused prune kernel
      assert_close(a, b, jnp.float32, reduction, f"{op} {method} {name}")


@pytest.mark.parametrize("implementation", ["xla", "pallas"])
@pytest.mark.parametrize("method", SPARSE_METHODS)
def test_stale_masks_set_forward_and_sr_ste_term(method, implementation):
  """y = x @ (W * M_ff(src)) and dW - x^T dy = lam * (1 - M_ff(src)) * W, not the fresh masks."""
  x, w, rng = _inputs("dense", seed=1)
  src = stale_source(w)
  pattern = NMPattern.parse("2:8")
  m_ff, _ = method_masks(np.asarray(src, np.float64), pattern, method)
  fresh_ff, _ = method_masks(np.asarray(w, np.float64), pattern, method)
  assert (m_ff != fresh_ff).any(), "the test needs a source whose masks differ from w's"
  dy = jnp.asarray(rng.standard_normal((x.shape[0], w.shape[1])), jnp.float32)
  y, pullback = jax.vjp(_op("dense", method, implementation, mask_source=src), x, w)
  _, dw = pullback(dy)
  x64, w64, dy64 = (np.asarray(a, np.float64) for a in (x, w, dy))
  assert_close(y, x64 @ (w64 * m_ff), jnp.float32, w.shape[0], "y")
  term = np.asarray(dw, np.float64) - x64.T @ dy64
  assert_close(term, decay(w64, m_ff, method, LAMBDA), jnp.float32, x.shape[0], "SR-STE term")
  assert np.abs(decay(w64, m_ff, method, LAMBDA) - decay(w64, fresh_ff, method, LAMBDA)).max() > 0.01


def test_mask_source_shape_must_match_kernel():
  x, w, _ = _inputs("dense")
  with pytest.raises(ValueError, match=r"mask_source must have the kernel's shape \(16, 24\)"):
    nms.nm_dense(x, w, "2:8", mask_source=w[:8])


def test_mask_source_binds_the_same_primitives_with_the_flag():
  x, w, _ = _inputs("dense")
  grad = jax.grad(lambda w, s: nms.nm_dense(x, w, "2:8", mask_source=s).sum())
  jaxpr = str(jax.make_jaxpr(grad)(w, stale_source(w)))
  assert "nm_dense_fwd[" in jaxpr and "nm_dense_bwd[" in jaxpr
  assert "given_mask_source=True" in jaxpr and "given_mask_source=False" not in jaxpr


# Layers ----------------------------------------------------------------------------------------

EVERY, STEPS = 3, 7
REFRESH_STEPS = (0, 3, 6)

LINEN = [
    (lambda **kw: nms.nn.NMDense(24, pattern="2:8", method="bdwp", **kw), (4, 16)),
    (lambda **kw: nms.nn.NMConv(16, (3, 3), pattern="2:8", method="bdwp", **kw), (2, 6, 6, 8)),
]
NNX = [
    (lambda **kw: nms.nnx.NMLinear(16, 24, pattern="2:8", method="bdwp", rngs=nnx.Rngs(0), **kw),
     (4, 16)),
    (lambda **kw: nms.nnx.NMConv(8, 16, (3, 3), pattern="2:8", method="bdwp", rngs=nnx.Rngs(0),
                                 **kw), (2, 6, 6, 8)),
]


def _apply_op(x, kernel, bias, source):
  """What a bdwp 2:8 layer computes with masks from ``source`` (``None``: from the kernel)."""
  if kernel.ndim == 2:
    y = nms.nm_dense(x, kernel, "2:8", "bdwp", mask_source=source)
  else:
    y = nms.nm_conv(x, kernel, "2:8", "bdwp", mask_source=source)
  return y + bias


def _kernels(shape, seed=0):
  """A new random kernel per step, so every step's fresh masks differ from the stale ones."""
  keys = jax.random.split(jax.random.key(seed), STEPS)
  return [jax.random.normal(k, shape) for k in keys]


def _check_schedule(snapshots, kernels, outputs, fresh_outputs, initial):
  """Snapshots change exactly at the refresh steps, to that step's kernel; outputs use them."""
  previous = initial
  for t in range(STEPS):
    changed = not np.array_equal(snapshots[t], previous)
    assert changed == (t in REFRESH_STEPS), f"step {t}: snapshot changed={changed}"
    np.testing.assert_array_equal(snapshots[t], kernels[t - t % EVERY], err_msg=f"step {t}")
    previous = snapshots[t]
  for t in range(STEPS):
    stale = not np.allclose(outputs[t], fresh_outputs[t])
    assert stale == (t not in REFRESH_STEPS), f"step {t}: output stale={stale}"


@pytest.mark.parametrize("make, x_shape", LINEN)
def test_linen_refreshes_every_mask_every_training_calls(make, x_shape):
  layer = make(mask_every=EVERY)
  x = jax.random.normal(jax.random.key(1), x_shape)
  variables = layer.init(jax.random.key(2), x)
  initial = variables[MASK_COLLECTION]
  np.testing.assert_array_equal(initial["kernel_snapshot"], variables["params"]["kernel"])
  assert initial["count"].dtype == jnp.int32 and int(initial["count"]) == 0
  assert initial["kernel_snapshot"].dtype == variables["params"]["kernel"].dtype

  kernels = _kernels(variables["params"]["kernel"].shape)
  bias = variables["params"]["bias"]
  train = jax.jit(lambda v: layer.apply(v, x, mutable=[MASK_COLLECTION]))
  snapshots, outputs, fresh = [], [], []
  for t, kernel in enumerate(kernels):
    variables = {"params": {"kernel": kernel, "bias": bias},
                 MASK_COLLECTION: variables[MASK_COLLECTION]}
    y, updates = train(variables)
    variables = {**variables, **updates}
    assert int(variables[MASK_COLLECTION]["count"]) == t + 1
    snapshots.append(variables[MASK_COLLECTION]["kernel_snapshot"])
    outputs.append(y)
    fresh.append(_apply_op(x, kernel, bias, None))
    assert_close(y, _apply_op(x, kernel, bias, snapshots[-1]), jnp.float32, 72, f"step {t}")
  _check_schedule(snapshots, kernels, outputs, fresh, initial["kernel_snapshot"])

  # Evaluation (nm_masks not mutable) uses the stored snapshot, with a newer kernel too.
  newer = {"kernel": kernels[0] * 2, "bias": bias}
  y_eval = layer.apply({"params": newer, MASK_COLLECTION: variables[MASK_COLLECTION]}, x)
  assert_close(y_eval, _apply_op(x, newer["kernel"], bias, snapshots[-1]), jnp.float32, 72, "eval")
  assert not np.allclose(y_eval, _apply_op(x, newer["kernel"], bias, None))


@pytest.mark.parametrize("make, x_shape", NNX)
def test_nnx_refreshes_every_mask_every_training_calls(make, x_shape):
  layer = make(mask_every=EVERY)
  x = jax.random.normal(jax.random.key(1), x_shape)
  state = nnx.state(layer, nms.nnx.NMMasks)
  initial = layer.kernel_snapshot[...]
  np.testing.assert_array_equal(initial, layer.kernel[...])
  assert set(state.keys()) == {"kernel_snapshot", "count"}
  assert layer.count[...].dtype == jnp.int32 and int(layer.count[...]) == 0

  kernels = _kernels(layer.kernel[...].shape)
  bias = layer.bias[...]
  train = nnx.jit(lambda m: m(x))
  snapshots, outputs, fresh = [], [], []
  for t, kernel in enumerate(kernels):
    layer.kernel[...] = kernel
    y = train(layer)
    assert int(layer.count[...]) == t + 1
    snapshots.append(layer.kernel_snapshot[...])
    outputs.append(y)
    fresh.append(_apply_op(x, kernel, bias, None))
    assert_close(y, _apply_op(x, kernel, bias, snapshots[-1]), jnp.float32, 72, f"step {t}")
  _check_schedule(snapshots, kernels, outputs, fresh, initial)

  # model.eval() (use_running_average=True, as for BatchNorm) uses the stored snapshot.
  layer.eval()
  layer.kernel[...] = kernels[0] * 2
  y_eval = layer(x)
  assert int(layer.count[...]) == STEPS
  np.testing.assert_array_equal(layer.kernel_snapshot[...], snapshots[-1])
  assert_close(y_eval, _apply_op(x, kernels[0] * 2, bias, snapshots[-1]), jnp.float32, 72, "eval")
  layer.train()
  layer(x)
  assert int(layer.count[...]) == STEPS + 1


def test_nnx_gradients_reach_the_kernel_only():
  layer = NNX[0][0](mask_every=EVERY)
  x = jax.random.normal(jax.random.key(1), (4, 16))
  grads = nnx.grad(lambda m: m(x).sum())(layer)
  assert set(grads.keys()) == {"kernel", "bias"}
  assert int(layer.count[...]) == 1  # a training call under nnx.grad still counts


@pytest.mark.parametrize("make, x_shape", LINEN)
def test_linen_mask_every_one_has_no_collection(make, x_shape):
  x = jax.random.normal(jax.random.key(1), x_shape)
  layer = make()
  variables = layer.init(jax.random.key(2), x)
  assert set(variables) == {"params"}
  _, updates = layer.apply(variables, x, mutable=True)
  assert MASK_COLLECTION not in updates
  jaxpr = str(jax.make_jaxpr(lambda v: layer.apply(v, x))(variables))
  assert "given_mask_source=True" not in jaxpr
  # mask_every only acts on sparse layers: a dense layer keeps no snapshot either.
  assert set(nn.Dense(4).init(jax.random.key(0), x)) == {"params"}
  dense = make(mask_every=EVERY).clone(method="dense")
  assert set(dense.init(jax.random.key(2), x)) == {"params"}


@pytest.mark.parametrize("make, x_shape", NNX)
def test_nnx_mask_every_one_has_no_masks(make, x_shape):
  layer = make()
  assert not jax.tree.leaves(nnx.state(layer, nms.nnx.NMMasks))
  assert not hasattr(layer, "kernel_snapshot")
  x = jax.random.normal(jax.random.key(1), x_shape)
  jaxpr = str(jax.make_jaxpr(lambda: layer(x))())
  assert "given_mask_source=True" not in jaxpr


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_mask_every_must_be_a_positive_int(bad):
  x = jnp.ones((2, 16))
  with pytest.raises(ValueError, match="mask_every"):
    nms.nn.NMDense(8, pattern="2:8", mask_every=bad).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="mask_every"):
    nms.nnx.NMLinear(16, 8, pattern="2:8", mask_every=bad, rngs=nnx.Rngs(0))
