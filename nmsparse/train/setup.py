"""From a run config to the pieces of a run: layer rules, the model with injected sparse layers, the
optimizer and an initialised train state."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nmsparse.data.stream import ON_CORRUPT, STREAM_SOURCES
from nmsparse.models import create_model
from nmsparse.nn import NMConv, NMDense
from nmsparse.optim import create_optimizer
from nmsparse.prune.permutation import (DEFAULT_CANDIDATES, DEFAULT_REFRESH, DEFAULT_SEARCH,
                                        SEARCH_MODES)
from nmsparse.prune.rules import LayerRules
from nmsparse.prune.schedule import MASK_COLLECTION
from nmsparse.train.state import TrainState
from nmsparse.types import NMPattern, check_method

DENSE, DEFAULT = "dense", "default"
PIPELINES = ("device", "stream")


def run_pattern(config: Any) -> NMPattern | None:
  """The run's pattern: ``None`` for ``method="dense"``, else ``config.pattern`` parsed."""
  check_method(config.method)
  if config.method == "dense":
    return None
  if not config.pattern:
    raise ValueError(f"method={config.method!r} needs config.pattern (e.g. '2:8').")
  return NMPattern.parse(config.pattern)


def build_rules(config: Any) -> LayerRules:
  """``config.rules``: ordered ``(regex, "dense" | "default" | "N:M")``; ``default`` = the run's
  pattern (dense for ``method="dense"``)."""
  pattern = run_pattern(config)
  rules = []
  for regex, value in config.rules:
    if value == DENSE:
      rules.append((regex, None))
    elif value == DEFAULT:
      rules.append((regex, pattern))
    else:
      rules.append((regex, None if pattern is None else NMPattern.parse(value)))
  return LayerRules.create(rules)


DTYPES = {"bfloat16": jnp.bfloat16, "float32": jnp.float32, "float16": jnp.float16}
# (field, smallest allowed value) of the integer fields checked at start-up.
POSITIVE_INTS = (("epochs", 1), ("batch_size", 1), ("eval_batch_size", 1), ("mask_every", 1),
                 ("eval_every_epochs", 1), ("keep_checkpoints", 1), ("checkpoint_every_steps", 0),
                 ("log_every_steps", 0), ("data.train_limit", 0), ("data.test_limit", 0),
                 ("bimask_candidates", 1), ("bimask_refresh", 1))


def compute_dtype(config: Any) -> Any:
  """``config.dtype`` as a jnp dtype.

  Raises:
    ValueError: for a name not in ``DTYPES``.
  """
  if config.dtype not in DTYPES:
    raise ValueError(f"dtype={config.dtype!r} is not a compute dtype; use one of {list(DTYPES)}.")
  return DTYPES[config.dtype]


def validate_config(config: Any) -> None:
  """Start-up checks of a run config, before any data is loaded or anything is written.

  Raises:
    ValueError: naming the first field whose value cannot run, and what would.
  """
  for field, low in POSITIVE_INTS:
    node, *rest = field.split(".")
    value = config.get(node) if not rest else config[node].get(rest[0], 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      raise ValueError(f"{field}={value!r}: must be an integer >= {low}.")
  for field in ("learning_rate", "warmup_epochs", "weight_decay", "label_smoothing", "grad_clip",
                "sr_ste_lambda"):
    value = config.get(field, 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
      raise ValueError(f"{field}={value!r}: must be a finite number >= 0.")
  data = config.data
  pipeline = data.get("pipeline", "device")
  if pipeline not in PIPELINES:
    raise ValueError(f"data.pipeline={pipeline!r}; use one of {list(PIPELINES)}.")
  if pipeline == "stream":
    for field, allowed in (("source", STREAM_SOURCES), ("on_corrupt", ON_CORRUPT)):
      if data.get(field) not in allowed:
        raise ValueError(f"data.{field}={data.get(field)!r} with data.pipeline='stream'; use one "
                         f"of {list(allowed)}.")
    for field, low in (("num_workers", 0), ("prefetch", 1)):
      value = data.get(field, low)
      if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"data.{field}={value!r}: must be an integer >= {low}.")
  search = config.get("bimask_search", DEFAULT_SEARCH)
  if search not in SEARCH_MODES:
    raise ValueError(f"bimask_search={search!r}; use one of {list(SEARCH_MODES)}.")
  compute_dtype(config)
  run_pattern(config)


def build_model(config: Any, rules: LayerRules) -> nn.Module:
  """``config.model`` with ``config.model_kwargs``; dense and conv layers are the nmsparse layers
  carrying the rules, method, lambda, implementation, ``mask_every`` (default 1), bimask's
  permutation search (candidates, refresh, seeded by ``config.seed``, and where it is computed:
  ``bimask_search``, default ``"every_call"``) and compute dtype (params
  stay fp32)."""
  layer_args = dict(pattern=rules, method=config.method, sr_ste_lambda=config.sr_ste_lambda,
                    implementation=config.implementation, dtype=compute_dtype(config),
                    param_dtype=jnp.float32, mask_every=config.mask_every,
                    bimask_candidates=config.get("bimask_candidates", DEFAULT_CANDIDATES),
                    bimask_refresh=config.get("bimask_refresh", DEFAULT_REFRESH),
                    bimask_seed=config.seed,
                    bimask_search=config.get("bimask_search", DEFAULT_SEARCH))
  return create_model(config.model, num_classes=config.data.num_classes,
                      dense=functools.partial(NMDense, **layer_args),
                      conv=functools.partial(NMConv, **layer_args), dtype=compute_dtype(config),
                      **config.model_kwargs.to_dict())


def create_state(config: Any, model: nn.Module, image_shape: tuple[int, ...],
                 steps_per_epoch: int, key: jax.Array) -> tuple[TrainState, Any]:
  """Initialises parameters (fp32), ``nm_masks`` (``mask_every > 1``) and the optimizer; returns
  the state and the LR schedule."""
  tx, schedule = create_optimizer(config, steps_per_epoch)

  @jax.jit
  def init(key):
    variables = model.init(key, jnp.zeros((1,) + tuple(image_shape), jnp.float32), train=False)
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                             batch_stats=variables.get("batch_stats", {}),
                             nm_masks=variables.get(MASK_COLLECTION, {}))

  return init(key), schedule
