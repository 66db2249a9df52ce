"""The ``Implementation`` record: one backend's lowering of the four sparse primitives."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from nmsparse.ops.config import LayerSpec


@dataclasses.dataclass(frozen=True)
class Implementation:
  """One backend of ``nm_dense``/``nm_conv``; a module exports one as ``IMPLEMENTATION``.

  ``x``/``dy`` are in the compute dtype, ``w`` is the dense master kernel, ``src`` the mask source
  (the kernel itself unless ``cfg.given_mask_source``: then ignore it), ``res`` the
  implementation's residuals, an instance of ``residuals`` (a NamedTuple of arrays, the same
  fields for every call: the primitives pass its fields as operands). With
  ``cfg.given_permutation`` (bimask) the four functions also get the keyword ``perm`` (int32
  ``[O]``); an implementation without it refuses such layers in ``supports``.

  Attributes:
    name: the ``implementation=`` name.
    dense_fwd: ``(x [B, K], w [K, O], src, *, cfg) -> (y [B, O], res)``.
    dense_bwd: ``(x, w, src, dy, res, *, cfg) -> (dx, dw)``, ``dw`` in ``w``'s dtype with the
      SR-STE term.
    conv_fwd: ``(x [N, H, W, C], w [kh, kw, C, O], src, *, cfg, geom) -> (y, res)``.
    conv_bwd: ``(x, w, src, dy, res, *, cfg, geom) -> (dx, dw)``.
    supports: ``(LayerSpec) -> None`` if the layer can run here, else a sentence saying why not
      (e.g. a pattern the kernels lack, or a backend whose native part is not built).
    residuals: the residual NamedTuple class.
    available: ``() -> None`` if the backend can run here at all, else why not (e.g. no GPU, or
      its native part is not built).
  """

  name: str
  dense_fwd: Callable[..., tuple[Any, Any]]
  dense_bwd: Callable[..., tuple[Any, Any]]
  conv_fwd: Callable[..., tuple[Any, Any]]
  conv_bwd: Callable[..., tuple[Any, Any]]
  supports: Callable[[LayerSpec], str | None]
  residuals: type
  available: Callable[[], str | None] = lambda: None
