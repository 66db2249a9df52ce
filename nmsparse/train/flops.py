"""Per-stage GEMM FLOPs of one training step (SPEC §1): forward (FF), backward-data (BP) and weight
update (WU), dense vs the run's method. FF costs ``N/M`` of dense for every sparse method; BP costs
``N/M`` for ``bdwp`` and ``bimask`` (their BP operand is N:M along the output axis) and stays dense for
``srste``; WU is always dense."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from absl import logging

from nmsparse.prune.rules import LayerRules
from nmsparse.types import BP_SPARSE_METHODS, NMPattern


@dataclasses.dataclass(frozen=True)
class LayerFlops:
  """One dense/conv layer's dense GEMM FLOPs per example (identical for FF, BP and WU)."""

  path: str
  gemm_flops: float
  pattern: NMPattern | None
  needs_bp: bool = True  # False for the layer applied to the input images (no dx is computed)


def layer_flops(model: nn.Module, variables: Any, example: jax.ShapeDtypeStruct,
                rules: LayerRules) -> list[LayerFlops]:
  """Traces ``model`` abstractly and records ``2 * (outputs / O) * kernel size`` per kernel call.

  For a dense layer that is ``2 * K * O`` per token; for a conv, ``2 * H' * W' * kh * kw * C * O``.
  The first kernel call (the one on the input images) has no BP product.
  """
  records, active = [], []

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name != "__call__" or module.path in active:
      return next_fun(*args, **kwargs)  # e.g. NMDense calling nn.Dense.__call__ for a dense layer
    active.append(module.path)
    try:
      out = next_fun(*args, **kwargs)
    finally:
      active.pop()
    if "kernel" in module.variables.get("params", {}):
      kernel = module.variables["params"]["kernel"]
      per_example = np.prod(out.shape[1:]) / out.shape[-1]
      path = "/".join(module.path) + "/kernel"
      records.append(LayerFlops(path, 2.0 * per_example * np.prod(kernel.shape),
                                rules.pattern_for(path), needs_bp=bool(records)))
    return out

  def apply(variables, x):
    with nn.intercept_methods(interceptor):
      return model.apply(variables, x, train=False)

  jax.eval_shape(apply, variables, jax.ShapeDtypeStruct((1,) + tuple(example.shape[1:]),
                                                         example.dtype))
  return records


def stage_flops(layers: list[LayerFlops], method: str) -> dict[str, dict[str, float]]:
  """``{"FF"|"BP"|"WU"|"total": {"dense": flops, "sparse": flops}}`` per example."""
  out = {stage: {"dense": 0.0, "sparse": 0.0} for stage in ("FF", "BP", "WU")}
  for layer in layers:
    density = 1.0 if layer.pattern is None or method == "dense" else layer.pattern.density
    out["FF"]["dense"] += layer.gemm_flops
    out["FF"]["sparse"] += layer.gemm_flops * density
    bp = layer.gemm_flops if layer.needs_bp else 0.0
    out["BP"]["dense"] += bp
    out["BP"]["sparse"] += bp * (density if method in BP_SPARSE_METHODS else 1.0)
    out["WU"]["dense"] += layer.gemm_flops
    out["WU"]["sparse"] += layer.gemm_flops
  out["total"] = {k: sum(out[s][k] for s in ("FF", "BP", "WU")) for k in ("dense", "sparse")}
  return out


def log_stage_flops(stages: dict[str, dict[str, float]], method: str, batch_size: int) -> None:
  """Logs the per-stage table for one training step at ``batch_size``."""
  logging.info("GEMM FLOPs per training step (batch %d, method %s):", batch_size, method)
  for stage, v in stages.items():
    logging.info("  %-5s dense %9.3f GFLOP  %-6s %9.3f GFLOP  (%5.1f%% of dense)", stage,
                 v["dense"] * batch_size / 1e9, method, v["sparse"] * batch_size / 1e9,
                 100.0 * v["sparse"] / max(v["dense"], 1e-30))
