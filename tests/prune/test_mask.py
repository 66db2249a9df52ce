"""nm_mask and NMPattern: properties (hypothesis), the independent reference, and every error."""

import hypothesis.extra.numpy as hnp
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import nmsparse as nms
from nmsparse.testing import np_nm_mask

PATTERNS = [nms.NMPattern(n, m) for m in (2, 4, 8, 16) for n in range(1, m + 1)]


@st.composite
def weights_and_pattern(draw):
  pattern = draw(st.sampled_from(PATTERNS))
  hwio = draw(st.booleans())
  groups = draw(st.integers(1, 3))
  other = draw(st.integers(1, 3))
  shape = (draw(st.integers(1, 2)), 3, pattern.m * groups, other) if hwio else (
      pattern.m * groups, other)
  axis = 2 if hwio else 0
  if draw(st.booleans()):  # grouping along the output axis instead
    shape = shape[:-2] + (other, pattern.m * groups)
    axis = len(shape) - 1
  # Few distinct values: ties are common, so the tie rule is exercised.
  elements = st.sampled_from([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]) if draw(
      st.booleans()) else st.floats(-1e3, 1e3, width=32)
  w = draw(hnp.arrays(np.float32, shape, elements=elements))
  return w, pattern, axis


def _grouped(a, axis, m):
  a = np.moveaxis(np.asarray(a), axis, -1)
  return a.reshape(a.shape[:-1] + (a.shape[-1] // m, m))


@settings(max_examples=120, deadline=None)  # every new shape compiles: 300 took 87 s of CI
@given(weights_and_pattern())
def test_mask_properties(case):
  w, pattern, axis = case
  mask = np.asarray(nms.nm_mask(jnp.asarray(w), pattern, axis=axis))
  assert mask.shape == w.shape and mask.dtype == bool
  keep = _grouped(mask, axis, pattern.m)
  mag = _grouped(np.abs(w), axis, pattern.m)
  assert np.all(keep.sum(-1) == pattern.n), "exactly N kept per group"
  smallest_kept = np.where(keep, mag, np.inf).min(-1)
  largest_dropped = np.where(keep, -np.inf, mag).max(-1)
  assert np.all(largest_dropped <= smallest_kept), "no dropped |w| exceeds a kept one"
  np.testing.assert_array_equal(mask, np_nm_mask(w, pattern, axis))  # ties to the lower index


def test_ties_go_to_lower_index():
  w = jnp.array([1.0, -1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
  np.testing.assert_array_equal(nms.nm_mask(w, "2:4", axis=0),
                                [True, True, False, False, True, True, False, False])


def test_mask_is_deterministic():
  w = jnp.asarray(np.random.default_rng(0).integers(-2, 3, (64, 32)), jnp.float32)
  first = nms.nm_mask(w, "2:8", 0)
  for _ in range(3):
    np.testing.assert_array_equal(nms.nm_mask(w, "2:8", 0), first)


@pytest.mark.parametrize("spec", ["2-4", "a:b", "", "2:4:8", "2:", ":4", "2.0:4"])
def test_malformed_strings(spec):
  with pytest.raises(ValueError, match="Malformed") as info:
    nms.NMPattern.parse(spec)
  assert repr(spec) in str(info.value)


@pytest.mark.parametrize("spec, message", [
    ("0:4", "N >= 1, got N=0"), ("5:4", "N <= M, got N=5 > M=4"), ("1:1", "M >= 2, got M=1"),
])
def test_out_of_range_patterns(spec, message):
  with pytest.raises(ValueError, match=message):
    nms.NMPattern.parse(spec)


def test_pattern_roundtrip_and_hash():
  p = nms.NMPattern.parse("2:8")
  assert p == nms.NMPattern(2, 8) and str(p) == "2:8" and hash(p) == hash(nms.NMPattern(2, 8))
  assert nms.NMPattern.parse(p) is p and p.density == 0.25


def test_axis_not_divisible_names_shape_axis_and_m():
  with pytest.raises(ValueError) as info:
    nms.nm_mask(jnp.ones((3, 3, 12, 16)), "2:8", axis=2)
  message = str(info.value)
  assert "(3, 3, 12, 16)" in message and "axis 2" in message and "M=8" in message


@pytest.mark.parametrize("length, fit", [(5, "nearest length that fits: 8, the smallest"),
                                         (12, "nearest length that fits: 8 or 16")])
def test_axis_not_divisible_hint_names_lengths_that_fit(length, fit):
  with pytest.raises(ValueError, match=fit):
    nms.nm_mask(jnp.ones((length, 4)), "2:8", axis=0)


def test_non_floating_weights():
  with pytest.raises(ValueError, match="int32"):
    nms.nm_mask(jnp.ones((8, 8), jnp.int32), "2:4", axis=0)


def test_axis_out_of_range():
  with pytest.raises(ValueError, match="axis 3"):
    nms.nm_mask(jnp.ones((8, 8)), "2:4", axis=3)


def test_subnormal_magnitudes_beat_zero():
  # XLA flushes float32 subnormals to zero in float compares; the mask must not.
  w = jnp.asarray(np.array([0.0, 3.9965e-41, -0.0, -1e-45], np.float32))
  np.testing.assert_array_equal(nms.nm_mask(w, "1:2", axis=0), [False, True, False, True])
