"""What was measured on each GPU kind, and the per-layer path choices that follow from it.

``implementation=None`` and the ``pallas`` backend's packed/masked choice read this table, keyed by
``jax.Device.device_kind``. Every entry names the benchmark it comes from. A card not listed gets
the conservative rule: no ``sparse_tc`` unless asked for, and the packed path at the batch sizes
the first (H100) measurements chose.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator

import jax


@dataclasses.dataclass(frozen=True)
class CardRule:
  """Measured path choices for one GPU kind.

  Attributes:
    sparse_tc_min_dim: ``sparse_tc`` takes a layer whose smaller kernel dim is at least this (and
      whose product has at least ``sparse_tc_min_rows`` rows); ``None``: never measured, never
      chosen.
    sparse_tc_min_rows: see above.
    packed_max_batch: the largest batch at which ``pallas`` uses its packed value-serial products
      (0: the packed products lost to dense at every measured batch; the masked path runs).
    source: the benchmark files behind the numbers.
    native_decode: ``((pattern, max_rows), ...)``: the exported model's forward runs the native
      CUDA-core kernel (``value_serial.blocked_matmul`` on the blocked layout ``materialize``
      makes; ``vs_matmul`` for an operand used as packed) for a product of at most ``max_rows`` rows at
      that pattern whose kernel has ``K * O >= native_decode_min_size`` (it measured no slower
      than dense ``jnp.dot`` on every such shape there), unless ``tiled_decode`` takes it.
    native_decode_min_size: see above.
    tiled_decode: ``((pattern, min_rows, max_rows), ...)``: the native pipelined tensor-core
      kernel (``value_serial.tiled_matmul``) for ``min_rows <= rows <= max_rows`` at that pattern
      whose kernel has ``K >= tiled_decode_min_k`` and ``K * O >= native_decode_min_size``.
    tiled_decode_min_k: see above.
    Everything else runs dense.
    fused_mask_source: ``pallas`` with a given mask source (``mask_every > 1``) runs its fused
      prune pass ranking the snapshot (``prune_pack(..., source=)``) rather than the ``xla``
      functions; False until that pass has been compiled and timed on the card.
  """

  sparse_tc_min_dim: int | None
  sparse_tc_min_rows: int
  packed_max_batch: int
  source: str
  native_decode: tuple[tuple[str, int], ...] = ()
  native_decode_min_size: int = 4096 * 11008
  tiled_decode: tuple[tuple[str, int, int], ...] = ()
  tiled_decode_min_k: int = 8192
  fused_mask_source: bool = False


H100 = "NVIDIA H100 80GB HBM3"
H200 = "NVIDIA H200"

CARDS: dict[str, CardRule] = {
    # Packed forward 1.01-1.14x dense at batch 8-16, 0.81x at 64 (4096x4096, 2:8).
    H100: CardRule(None, 0, 16, "benchmarks/h100_run2_kernels.md"),
    # sparse_tc GEMMs with the compression included beat dense from min(K, O) = 768 at >= 16384
    # rows (ViT-B shapes 1.03-1.41x); 384-wide CIFAR-ViT layers ran 0.94-1.07x and ResNet50's
    # 1x1 convs 0.44-1.21x. The packed forward ran 0.59-0.78x dense at batch 8-16.
    # The native small-batch forward (benchmarks/h200_decode.md, git 4914cb7; products timed as
    # intermediates of one executable, where dense jnp.dot reads ~3 TB/s): the CUDA-core kernel
    # at 2:8 1 row 1.35-1.93x dense on the three shapes of >= 4096 x 11008 weights, 4 rows
    # 0.99-1.03x at 8192^2 and 4096x11008 (11008x4096 goes tiled), 1:8 at 1-4 rows 1.17-2.56x;
    # the pipelined tensor-core kernel at K >= 8192 and 4-8 rows 1.03-1.34x (2:8), 0.98-1.26x
    # (2:4), 1.24-1.94x (1:8, 8 rows). 4096^2 (0.58-1.02x), 16 rows and the ViT-B shapes lost:
    # dense. A third grid (git 710a55f, benchmarks/h200_decode/grid_blocked_710a55f.json) timed the
    # blocked layout the native path now serves: 1.13-3.11x on the products the rule gives it;
    # there the pipelined kernel ran 2:4 at 8 rows of 11008x4096 at 0.76x, so 2:4 tiled stops at
    # 4 rows.
    H200: CardRule(768, 16384, 0,
                   "benchmarks/h200_sptc/gemm.json, benchmarks/h200_grid.md, "
                   "benchmarks/h200_decode.json, benchmarks/h200_decode/grid_blocked_710a55f.json",
                   native_decode=(("2:8", 4), ("1:8", 4)), native_decode_min_size=4096 * 11008,
                   tiled_decode=(("2:8", 2, 8), ("2:4", 2, 4), ("1:8", 5, 8)),
                   tiled_decode_min_k=8192),
}
DEFAULT = CardRule(None, 0, 16, "no measurements: the H100 defaults, sparse_tc only when asked")


_OVERRIDE: dict[str, Any] = {}


def card_rule() -> CardRule:
  """The rule of the default device's GPU kind (``DEFAULT`` off-GPU or for an unlisted card),
  with the fields of an enclosing :func:`overridden` replaced."""
  if jax.default_backend() != "gpu":
    rule = DEFAULT
  else:
    rule = CARDS.get(jax.devices()[0].device_kind, DEFAULT)
  return dataclasses.replace(rule, **_OVERRIDE) if _OVERRIDE else rule


@contextlib.contextmanager
def overridden(**fields: Any) -> Iterator[CardRule]:
  """``card_rule()`` with ``fields`` replaced inside the block: to time or test a path on a card
  before its measured rule takes it (``scripts/step_time.py --card_rule``). Paths are chosen when
  a function is traced, so trace inside the block (``jax.clear_caches()`` first where the same
  function was traced outside it)."""
  unknown = set(fields) - {f.name for f in dataclasses.fields(CardRule)}
  if unknown:
    raise ValueError(f"overridden: CardRule has no field(s) {sorted(unknown)}.")
  saved = dict(_OVERRIDE)
  _OVERRIDE.update(fields)
  try:
    yield card_rule()
  finally:
    _OVERRIDE.clear()
    _OVERRIDE.update(saved)


def prefers_sparse_tc(w_shape: tuple[int, ...], rows: int, rule: CardRule | None = None) -> bool:
  """Whether the card (``rule``, default this one's) measured ``sparse_tc`` faster than the masked
  path for a product of ``rows`` rows with a kernel of ``w_shape``."""
  rule = card_rule() if rule is None else rule
  k, o = w_shape[-2:]
  return (rule.sparse_tc_min_dim is not None and min(k, o) >= rule.sparse_tc_min_dim
          and rows >= rule.sparse_tc_min_rows)


def decode_choice(k: int, o: int, pattern, rows: int, rule: CardRule | None = None) -> str:
  """``"tiled"``, ``"native"`` or ``"dense"``: the kernel the card (``rule``, default this
  one's) measured fastest for ``x [rows, k] @ W [k, o]`` at ``pattern`` (see :class:`CardRule`)."""
  rule = card_rule() if rule is None else rule
  if rows <= 0 or k * o < rule.native_decode_min_size:
    return "dense"
  for p, lo, hi in rule.tiled_decode:
    if p == str(pattern) and lo <= rows <= hi and k >= rule.tiled_decode_min_k:
      return "tiled"
  return "native" if rows <= dict(rule.native_decode).get(str(pattern), 0) else "dense"


def prefers_native_decode(k: int, o: int, pattern, rows: int,
                          rule: CardRule | None = None) -> bool:
  """Whether the card (``rule``, default this one's) measured a native small-batch kernel
  (either of :func:`decode_choice`'s) faster than dense for ``x [rows, k] @ W [k, o]``."""
  return decode_choice(k, o, pattern, rows, rule) != "dense"
