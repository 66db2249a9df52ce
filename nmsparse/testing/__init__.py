"""Shared test helpers: tolerances, independent references, the per-op suite."""

from nmsparse.testing.reference import decay, method_masks, np_nm_mask
from nmsparse.testing.tolerance import assert_close, tolerance

__all__ = ["assert_close", "decay", "method_masks", "np_nm_mask", "tolerance"]
