"""bimask against a numpy port of Bi-Mask's mask code (zyxxmu/Bi-Mask, CnnModels/utils/conv_type.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import nmsparse as nms
from nmsparse.ops import pallas
from nmsparse.ops.config import LayerSpec
from nmsparse.ops.dense import make_config
from nmsparse.prune.methods import bp_mask, ff_mask
from nmsparse.prune.permutation import (SEARCH_COLLECTION, best_of, best_permutation,
                                        candidate_permutations, layer_key)
from nmsparse.prune.schedule import MASK_COLLECTION
from nmsparse.testing import assert_close
from nmsparse.types import NMPattern


# A numpy port of Bi-Mask's functions. Their ``w`` is ``weight.view(O, -1).t()``: [K, O] with
# K = C*kh*kw flattened C-major (PyTorch OIHW), groups of M consecutive entries of ``w.t()``.

def port_sparse(w, n, m):
  """get_n_m_sparse_matrix: drop the M - N smallest |w| of every M consecutive inputs."""
  w_t = np.abs(w.T).reshape(-1, m)
  index = np.argsort(w_t, axis=1, kind="stable")[:, : m - n]
  mask = np.ones(w_t.shape)
  np.put_along_axis(mask, index, 0.0, axis=1)
  mask = mask.reshape(w.T.shape).T
  return w * mask, mask


def port_backward(forward_mask, w_s, perm, n, m):
  """get_n_m_backward_matrix: N:M of W*M_ff along the permuted outputs, times M_ff, unpermuted."""
  w_s, forward_mask = w_s.T, forward_mask.T
  mask = forward_mask[perm]
  w_backward = w_s[perm].T
  w_tmp = np.abs(w_backward).reshape(-1, m)
  index = np.argsort(w_tmp, axis=1, kind="stable")[:, : m - n]
  mask_b = np.ones(w_tmp.shape)
  np.put_along_axis(mask_b, index, 0.0, axis=1)
  final = mask * mask_b.reshape(w_backward.shape).T
  out = np.zeros(w_s.shape)
  out[perm] = final
  return out.T


def port_best(w, candidates, n, m):
  """get_best_permutation with its random draws given: the first with the largest mask sum."""
  _, mask_f = port_sparse(w, n, m)
  best, best_sum = None, 0
  for p in candidates:
    total = port_backward(mask_f, w * mask_f, p, n, m).sum()
    if total > best_sum:
      best, best_sum = p, total
  return best


def torch_layout(w):
  """Our kernel ([K, O] dense, HWIO conv) as Bi-Mask's ``weight.view(O, -1).t()``."""
  if w.ndim == 2:
    return w
  return np.transpose(w, (3, 2, 0, 1)).reshape(w.shape[3], -1).T


def from_torch_layout(a, shape):
  if len(shape) == 2:
    return a
  kh, kw, c, o = shape
  return np.transpose(a.T.reshape(o, c, kh, kw), (2, 3, 1, 0))


SHAPES = [(16, 24), (3, 3, 8, 16), (1, 1, 16, 8), (2, 2, 2, 8)]


@pytest.mark.parametrize("pattern", ["2:4", "2:8", "1:4"])
@pytest.mark.parametrize("shape", SHAPES)
def test_masks_match_bimask_code(shape, pattern):
  p = NMPattern.parse(pattern)
  rng = np.random.default_rng(sum(shape) * 10 + p.m + p.n)
  w = rng.standard_normal(shape).astype(np.float32)
  perm = rng.permutation(shape[-1])
  w_s, m_ff = port_sparse(torch_layout(w), p.n, p.m)
  m_bp = port_backward(m_ff, w_s, perm, p.n, p.m)
  np.testing.assert_array_equal(ff_mask(jnp.asarray(w), p, "bimask"),
                                from_torch_layout(m_ff, shape).astype(bool))
  np.testing.assert_array_equal(bp_mask(jnp.asarray(w), p, "bimask", jnp.asarray(perm)),
                                from_torch_layout(m_bp, shape).astype(bool))


@pytest.mark.parametrize("shape", SHAPES)
def test_best_permutation_matches_bimask_code(shape):
  p = NMPattern.parse("2:4")
  rng = np.random.default_rng(len(shape) + shape[-1])
  w = rng.standard_normal(shape).astype(np.float32)
  perms = candidate_permutations(jax.random.key(3), shape[-1], 12)
  want = port_best(torch_layout(w), np.asarray(perms), p.n, p.m)
  got = best_of(jnp.asarray(w), p, perms)
  np.testing.assert_array_equal(got, want)
  assert len(set(map(tuple, np.asarray(perms)))) > 1, "the candidates must differ"


def test_conv_groups_run_over_flattened_taps_not_channels():
  p = NMPattern.parse("2:8")
  w = jax.random.normal(jax.random.key(0), (3, 3, 8, 16))
  m = ff_mask(w, p, "bimask")
  groups = np.asarray(jnp.transpose(m, (2, 0, 1, 3)).reshape(72 // 8, 8, 16))
  np.testing.assert_array_equal(groups.sum(axis=1), np.full((9, 16), 2))
  assert (np.asarray(m) != np.asarray(ff_mask(w, p))).any(), "per-tap C groups are another mask"


def test_conv_needs_flattened_length_divisible_by_m_only():
  """C = 2 < M = 8 is fine for bimask when C*kh*kw = 8; bdwp groups along C and refuses it."""
  x = jax.random.normal(jax.random.key(0), (2, 5, 5, 2))
  w = jax.random.normal(jax.random.key(1), (2, 2, 2, 8))
  y = nms.nm_conv(x, w, "2:8", method="bimask", implementation="xla")
  assert y.shape == (2, 5, 5, 8)
  with pytest.raises(ValueError, match="not divisible by M=8"):
    nms.nm_conv(x, w, "2:8", method="bdwp", implementation="xla")
  with pytest.raises(ValueError, match=r"\(C, kh, kw\)"):
    nms.nm_conv(x, w[:, :1], "2:8", method="bimask", implementation="xla")


@pytest.mark.parametrize("op, given_permutation", [("dense", True), ("conv", False),
                                                   ("conv", True)])
def test_pallas_refuses_what_its_fused_kernel_cannot_compute(op, given_permutation):
  p = NMPattern.parse("2:8")
  w_shape = (16, 24) if op == "dense" else (3, 3, 8, 16)
  layer = LayerSpec(op, (4, 16), w_shape, jnp.float32, p, "bimask", False, None, given_permutation)
  assert "fused prune kernel cannot compute bimask" in pallas.supports(layer)
  with pytest.raises(ValueError, match="cannot run this"):
    make_config(w_shape, p, "bimask", 0.0, "pallas", None, op=op,
                given_permutation=given_permutation)
  assert make_config(w_shape, p, "bimask", 0.0, None, None, op=op,
                     given_permutation=given_permutation).implementation == "xla"


def test_permutation_is_checked():
  x, w = jnp.ones((2, 16)), jnp.ones((16, 24))
  with pytest.raises(ValueError, match="method='bdwp' takes none"):
    nms.nm_dense(x, w, "2:8", method="bdwp", permutation=jnp.arange(24))
  with pytest.raises(ValueError, match="output length 24"):
    nms.nm_dense(x, w, "2:8", method="bimask", permutation=jnp.arange(16))


def test_default_paths_bind_no_permutation():
  x, w = jnp.ones((2, 16)), jnp.ones((16, 24))
  for method in ("srste", "bdwp"):
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda w: nms.nm_dense(x, w, "2:8", method).sum()))(w))
    assert "given_permutation=False" in jaxpr and "given_permutation=True" not in jaxpr
  jaxpr = str(jax.make_jaxpr(lambda w: nms.nm_dense(x, w, "2:8", "bimask",
                                                    permutation=jnp.arange(24)))(w))
  assert "given_permutation=True" in jaxpr


# Layers ----------------------------------------------------------------------------------------

REFRESH, STEPS = 3, 7


@pytest.mark.parametrize("mask_every", [1, 2])
@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_layer_refreshes_permutation_every_bimask_refresh_calls(kind, mask_every):
  if kind == "dense":
    layer = nms.nn.NMDense(16, pattern="2:4", method="bimask", bimask_refresh=REFRESH,
                           bimask_candidates=5, bimask_seed=7, mask_every=mask_every)
    x = jax.random.normal(jax.random.key(0), (3, 8))
  else:
    layer = nms.nn.NMConv(16, (3, 3), pattern="2:4", method="bimask", bimask_refresh=REFRESH,
                          bimask_candidates=5, bimask_seed=7, mask_every=mask_every)
    x = jax.random.normal(jax.random.key(0), (2, 5, 5, 8))
  variables = layer.init(jax.random.key(1), x)
  state = variables[MASK_COLLECTION]
  np.testing.assert_array_equal(state["permutation"], np.arange(16))
  key = layer_key(7, type(layer).__name__)  # a top-level layer is named by its class
  pattern = NMPattern.parse("2:4")
  perm, source = state["permutation"], variables["params"]["kernel"]
  for step in range(STEPS):
    kernel = jax.random.normal(jax.random.key(10 + step), variables["params"]["kernel"].shape)
    params = {**variables["params"], "kernel": kernel}
    _, new = layer.apply({"params": params, MASK_COLLECTION: state}, x,
                         mutable=[MASK_COLLECTION])
    state = new[MASK_COLLECTION]
    if step % mask_every == 0:
      source = kernel
    if step % REFRESH == 0:
      perm = best_permutation(source, pattern, jax.random.fold_in(key, step), 5)
    np.testing.assert_array_equal(state["permutation"], perm, err_msg=f"step {step}")
    assert int(state["count"]) == step + 1
  assert not (np.asarray(perm) == np.arange(16)).all()


def test_layer_backward_uses_its_permutation():
  layer = nms.nn.NMDense(16, pattern="2:4", method="bimask", use_bias=False)
  x = jax.random.normal(jax.random.key(0), (3, 8))
  variables = layer.init(jax.random.key(1), x)
  kernel = variables["params"]["kernel"]
  dy = jax.random.normal(jax.random.key(2), (3, 16))

  def apply(x):
    return layer.apply(variables, x, mutable=[MASK_COLLECTION])

  (y, new), pullback = jax.vjp(apply, x)
  (dx,) = pullback((dy, jax.tree.map(jnp.zeros_like, new)))
  perm = new[MASK_COLLECTION]["permutation"]
  w_bp = jnp.where(bp_mask(kernel, NMPattern.parse("2:4"), "bimask", perm), kernel, 0)
  assert_close(dx, np.asarray(dy @ w_bp.T), jnp.float32, 16)
  assert_close(y, np.asarray(x @ jnp.where(ff_mask(kernel, NMPattern.parse("2:4")), kernel, 0)),
               jnp.float32, 8)


def test_training_step_has_no_control_flow_on_the_gpu():
  """The refresh rule and its search lower to straight-line code for CUDA: an XLA conditional or
  loop there copies its predicate to the host once per layer and step (nmsparse.prune.permutation),
  and the candidates' draws use no loop (jax.random.permutation's rounds would)."""

  class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nms.nn.NMConv(16, (3, 3), pattern="2:8", method="bimask", bimask_refresh=3)(x)
      return nms.nn.NMDense(8, pattern="2:8", method="bimask")(x.mean((1, 2)))

  net = Net()
  x = jnp.ones((2, 6, 6, 16))
  variables = net.init(jax.random.key(0), x)

  def step(params, state):
    def loss(p):
      y, new = net.apply({"params": p, MASK_COLLECTION: state}, x, mutable=[MASK_COLLECTION])
      return y.sum(), new
    return jax.grad(loss, has_aux=True)(params)

  text = jax.jit(step).trace(variables["params"], variables[MASK_COLLECTION]).lower(
      lowering_platforms=("cuda",)).as_text()
  assert "bimask" in text or "NMConv" in text  # the layers were lowered
  for op in ("stablehlo.while", "stablehlo.case", "stablehlo.if"):
    assert op not in text, op


def _dense_layer(search):
  return nms.nn.NMDense(16, pattern="2:4", method="bimask", bimask_refresh=REFRESH,
                        bimask_candidates=5, bimask_seed=7, bimask_search=search)


def test_marked_calls_search_only_in_marked_calls():
  """``bimask_search="marked_calls"`` gives the every-call permutations when the refresh calls are
  marked, and keeps the stored permutation in an unmarked call, even at a refresh count."""
  x = jax.random.normal(jax.random.key(0), (3, 8))
  every, marked = _dense_layer("every_call"), _dense_layer("marked_calls")
  variables = every.init(jax.random.key(1), x)
  states = {"every": variables[MASK_COLLECTION], "marked": variables[MASK_COLLECTION],
            "unmarked": variables[MASK_COLLECTION]}
  for step in range(STEPS):
    kernel = jax.random.normal(jax.random.key(10 + step), variables["params"]["kernel"].shape)
    params = {**variables["params"], "kernel": kernel}
    search = [MASK_COLLECTION, SEARCH_COLLECTION] if step % REFRESH == 0 else [MASK_COLLECTION]
    for name, layer, mutable in (("every", every, [MASK_COLLECTION]), ("marked", marked, search),
                                 ("unmarked", marked, [MASK_COLLECTION])):
      _, new = layer.apply({"params": params, MASK_COLLECTION: states[name]}, x, mutable=mutable)
      states[name] = new[MASK_COLLECTION]
    np.testing.assert_array_equal(states["marked"]["permutation"], states["every"]["permutation"],
                                  err_msg=f"step {step}")
  assert not (np.asarray(states["every"]["permutation"]) == np.arange(16)).all()
  np.testing.assert_array_equal(states["unmarked"]["permutation"], np.arange(16))
  assert int(states["unmarked"]["count"]) == STEPS


def test_unmarked_call_lowers_without_the_search():
  """The search's candidate sort ([candidates, O] keys) is in the every-call and marked programs
  and missing from the unmarked one, whose sorts are the masks' own."""
  x = jnp.ones((3, 32))
  layer = nms.nn.NMDense(64, pattern="2:8", method="bimask", bimask_candidates=6,
                         bimask_search="marked_calls")
  variables = layer.init(jax.random.key(0), x)

  def sorts(layer, mutable):
    def step(params, state):
      def loss(p):
        y, new = layer.apply({"params": p, MASK_COLLECTION: state}, x, mutable=mutable)
        return y.sum(), new
      return jax.grad(loss, has_aux=True)(params)
    text = jax.jit(step).trace(variables["params"], variables[MASK_COLLECTION]).lower().as_text()
    return text.count("stablehlo.sort"), "tensor<6x64xui32>" in text

  every = sorts(layer.clone(bimask_search="every_call"), [MASK_COLLECTION])
  marked = sorts(layer, [MASK_COLLECTION, SEARCH_COLLECTION])
  unmarked = sorts(layer, [MASK_COLLECTION])
  assert every == marked and every[1]
  assert not unmarked[1] and unmarked[0] < marked[0]


def test_search_mode_is_checked():
  with pytest.raises(ValueError, match="bimask_search of layer 'NMDense' must be one of"):
    _dense_layer("sometimes").init(jax.random.key(0), jnp.ones((2, 8)))
