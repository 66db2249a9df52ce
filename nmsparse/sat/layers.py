"""The layers of a run config as GEMMs for the SAT model: the runner's FLOP walk
(:func:`nmsparse.train.flops.layer_flops`) plus each kernel call's input size."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nmsparse.prune.rules import LayerRules
from nmsparse.train import flops as flops_lib
from nmsparse.train.setup import build_model, build_rules
from nmsparse.types import NMPattern

OPTIMIZER_STATES = {"sgd": 1, "adamw": 2, "adam": 2, "lamb": 2}  # fp32 words per weight


@dataclasses.dataclass(frozen=True)
class LayerShape:
  """One kernel call of the walk, per example.

  ``kernel_shape`` is HWIO for a conv and ``[K, O]`` for a dense layer; ``positions`` is the number
  of output positions (pixels or tokens), so the forward GEMM is ``[positions, K] @ [K, O]`` with
  ``K = prod(kernel_shape[:-1])``; ``in_elems`` is the size of the input activation (read from
  DRAM once, im2col formed on chip).
  """

  path: str
  kernel_shape: tuple[int, ...]
  positions: int
  in_elems: int
  pattern: NMPattern | None
  needs_bp: bool
  gemm_flops: float

  @property
  def k(self) -> int:
    return math.prod(self.kernel_shape[:-1])

  @property
  def out_channels(self) -> int:
    return self.kernel_shape[-1]

  @property
  def in_channels(self) -> int:
    return self.kernel_shape[-2]

  @property
  def taps(self) -> int:
    return math.prod(self.kernel_shape[:-2])

  def with_pattern(self, pattern: NMPattern | None) -> "LayerShape":
    return dataclasses.replace(self, pattern=pattern)


def walk(model: nn.Module, variables: Any, example: jax.ShapeDtypeStruct,
         rules: LayerRules) -> list[LayerShape]:
  """``layer_flops`` of the runner, each record joined with its kernel shape and input size.

  Raises:
    RuntimeError: if the two walks disagree (the FLOP walk changed its rule for what a layer is).
  """
  inputs, active = [], []

  def record_inputs(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name != "__call__" or module.path in active:
      return next_fun(*args, **kwargs)
    active.append(module.path)
    try:
      out = next_fun(*args, **kwargs)
    finally:
      active.pop()
    params = module.variables.get("params", {})
    if "kernel" in params:
      inputs.append(("/".join(module.path) + "/kernel", tuple(params["kernel"].shape),
                     tuple(args[0].shape)))
    return out

  with nn.intercept_methods(record_inputs):
    records = flops_lib.layer_flops(model, variables, example, rules)
  if [r.path for r in records] != [p for p, _, _ in inputs]:
    raise RuntimeError("The input-shape walk and nmsparse.train.flops.layer_flops disagree: "
                       f"{[r.path for r in records]} vs {[p for p, _, _ in inputs]}.")
  layers = []
  for record, (_, kernel_shape, in_shape) in zip(records, inputs):
    positions = record.gemm_flops / (2.0 * math.prod(kernel_shape))
    layers.append(LayerShape(record.path, kernel_shape, int(round(positions)),
                             int(np.prod(in_shape[1:])), record.pattern, record.needs_bp,
                             record.gemm_flops))
  return layers


@dataclasses.dataclass(frozen=True)
class ModelLayers:
  """A config's layers, batch and optimizer, and its rules for re-patterning."""

  name: str
  model: str
  batch_size: int
  optimizer_states: int
  layers: tuple[LayerShape, ...]
  config: Any

  def for_pattern(self, pattern: NMPattern | str | None) -> tuple[LayerShape, ...]:
    """The layers with the config's rules applied to ``pattern`` (``None``: all dense)."""
    config = self.config.copy_and_resolve_references()
    with config.unlocked():
      config.method = "dense" if pattern is None else "bdwp"
      config.pattern = None if pattern is None else str(pattern)
    rules = build_rules(config)
    return tuple(l.with_pattern(rules.pattern_for(l.path)) for l in self.layers)


def model_layers(config: Any) -> ModelLayers:
  """Walks the model of a run config (shapes only, no parameters are materialised)."""
  rules = build_rules(config)
  model = build_model(config, rules)
  d = config.data
  image = (d.image_size, d.image_size, d.channels)
  variables = jax.eval_shape(
      lambda key: model.init(key, jnp.zeros((1,) + image, jnp.float32), train=False),
      jax.random.key(0))
  example = jax.ShapeDtypeStruct((1,) + image, jnp.float32)
  if config.optimizer not in OPTIMIZER_STATES:
    raise ValueError(f"Unknown optimizer {config.optimizer!r} for the WUVE state count; known: "
                     f"{sorted(OPTIMIZER_STATES)}.")
  states = OPTIMIZER_STATES[config.optimizer]
  if config.optimizer == "sgd" and not config.get("momentum", 0.0):
    states = 0
  return ModelLayers(config.name, config.model, int(config.batch_size), states,
                     tuple(walk(model, variables, example, rules)), config)
