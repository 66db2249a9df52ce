"""Test oracles written independently of the library: numpy masks by stable sort, SPEC §1 table."""

from __future__ import annotations

import numpy as np

from nmsparse.types import NMPattern


def np_nm_mask(w: np.ndarray, pattern: NMPattern, axis: int) -> np.ndarray:
  """N:M mask by a stable argsort of ``-|w|`` in every group (ties to the lower index)."""
  w = np.moveaxis(np.abs(np.asarray(w, np.float64)), axis, -1)
  groups = w.reshape(w.shape[:-1] + (w.shape[-1] // pattern.m, pattern.m))
  order = np.argsort(-groups, axis=-1, kind="stable")
  keep = np.zeros(groups.shape, bool)
  np.put_along_axis(keep, order[..., : pattern.n], True, axis=-1)
  return np.moveaxis(keep.reshape(w.shape), -1, axis)


def np_bimask_ff(w: np.ndarray, pattern: NMPattern) -> np.ndarray:
  """bimask's FF mask: an HWIO kernel grouped along the flattened ``(C, kh, kw)`` axis (C slowest),
  a dense kernel along its input axis."""
  w = np.asarray(w)
  if w.ndim != 4:
    return np_nm_mask(w, pattern, 0)
  kh, kw, c, o = w.shape
  flat = np.transpose(w, (2, 0, 1, 3)).reshape(c * kh * kw, o)
  return np.transpose(np_nm_mask(flat, pattern, 0).reshape(c, kh, kw, o), (1, 2, 0, 3))


def method_masks(w: np.ndarray, pattern: NMPattern, method: str,
                 perm: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
  """``(FF mask, BP mask)`` of the SPEC §1 table; input channels on axis -2, outputs on -1.

  ``bimask``'s BP groups run along the output order ``perm`` (``None`` = identity).
  """
  if method == "dense":
    ones = np.ones(np.shape(w), bool)
    return ones, ones
  if method == "bimask":
    m_ff = np_bimask_ff(w, pattern)
    perm = np.arange(np.shape(w)[-1]) if perm is None else np.asarray(perm)
    m_b = np.empty(m_ff.shape, bool)
    m_b[..., perm] = np_nm_mask(np.where(m_ff, w, 0.0)[..., perm], pattern, -1)
    return m_ff, m_ff & m_b
  m_ff = np_nm_mask(w, pattern, -2)
  if method == "srste":
    return m_ff, m_ff
  if method == "bdwp":
    return m_ff, np_nm_mask(w, pattern, -1)
  raise ValueError(method)


def decay(w: np.ndarray, m_ff: np.ndarray, method: str, lam: float) -> np.ndarray:
  """The SR-STE term ``lam * (1 - M_ff) * W`` (zero for dense)."""
  if method == "dense":
    return np.zeros(np.shape(w))
  return lam * (~m_ff) * np.asarray(w, np.float64)
