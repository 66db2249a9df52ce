"""Which layers are sparse: an ordered list of regex rules over parameter paths, first match wins."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterable, Sequence

import jax
import numpy as np
from absl import logging

from nmsparse.prune.mask import check_groupable
from nmsparse.prune.methods import IN_AXIS, OUT_AXIS, bp_mask, ff_mask
from nmsparse.types import NMPattern, PatternLike, as_pattern


def path_str(path: Iterable[Any]) -> str:
  """``("Block_0", "Conv_0", "kernel")`` or a ``jax.tree_util`` key path -> ``"Block_0/Conv_0/kernel"``."""
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        key = getattr(key, attr)
        break
    parts.append(str(key))
  return "/".join(parts)


@dataclasses.dataclass(frozen=True)
class LayerRules:
  """Ordered ``(regex, pattern or None)`` rules; ``re.search`` over ``"a/b/kernel"`` paths.

  The first rule whose regex matches a kernel's path decides its pattern (``None`` = dense). A
  path that no rule matches stays dense. Frozen and hashable, so layers can hold it as a field.
  """

  rules: tuple[tuple[str, NMPattern | None], ...] = ()

  @classmethod
  def create(cls, rules: Sequence[tuple[str, PatternLike | None]] | "LayerRules") -> "LayerRules":
    """Builds rules from ``[(regex, "2:8" | NMPattern | None), ...]``; validates every regex."""
    if isinstance(rules, LayerRules):
      return rules
    parsed = []
    for regex, pattern in rules:
      try:
        re.compile(regex)
      except re.error as e:
        raise ValueError(f"Layer rule regex {regex!r} does not compile: {e}") from e
      parsed.append((regex, as_pattern(pattern)))
    return cls(tuple(parsed))

  @classmethod
  def uniform(cls, pattern: PatternLike | None, dense: Sequence[str] = ()) -> "LayerRules":
    """Every kernel under ``pattern`` except those matching one of the ``dense`` regexes."""
    return cls.create([(r, None) for r in dense] + [(".*", pattern)])

  def match(self, path: str) -> tuple[int | None, NMPattern | None]:
    """Returns ``(index of the first matching rule or None, its pattern)``."""
    for i, (regex, pattern) in enumerate(self.rules):
      if re.search(regex, path):
        return i, pattern
    return None, None

  def pattern_for(self, path: str) -> NMPattern | None:
    return self.match(path)[1]


@dataclasses.dataclass(frozen=True)
class KernelReport:
  """One kernel's line of a sparsity report."""

  path: str
  shape: tuple[int, ...]
  rule: str | None
  pattern: NMPattern | None
  ff_sparsity: float
  bp_sparsity: float

  def __str__(self) -> str:
    rule = "(no rule: dense)" if self.rule is None else f"rule {self.rule!r}"
    pattern = "dense" if self.pattern is None else str(self.pattern)
    return (f"{self.path:<48} {str(self.shape):<20} {pattern:>6}  FF {self.ff_sparsity:5.1%}  "
            f"BP {self.bp_sparsity:5.1%}  <- {rule}")


def is_kernel(path: str, leaf: Any) -> bool:
  """Kernels of dense and conv layers: leaves named ``kernel`` with rank >= 2."""
  return path.split("/")[-1] == "kernel" and getattr(leaf, "ndim", 0) >= 2


def sparsity_report(params: Any, rules: LayerRules, method: str = "bdwp",
                    log: bool = True) -> list[KernelReport]:
  """Which rule each kernel matched, its shape and the sparsity its FF and BP masks achieve.

  Args:
    params: a parameter tree (linen variables or ``nnx.state``); arrays or shape structs.
    rules: the layer rules.
    method: decides the BP mask (SPEC §1); ``dense`` reports 0% everywhere.
    log: also log one line per kernel (absl, INFO).

  Raises:
    ValueError: if a rule puts a pattern on a kernel whose grouping axes do not divide by M.
  """
  reports = []
  for key_path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    path = path_str(key_path)
    if path.endswith("/value"):  # nnx.Param state leaves
      path = path[: -len("/value")]
    if not is_kernel(path, leaf):
      continue
    index, pattern = rules.match(path)
    rule = None if index is None else rules.rules[index][0]
    ff = bp = 0.0
    if pattern is not None and method != "dense":
      for axis in (IN_AXIS, OUT_AXIS):
        check_groupable(tuple(leaf.shape), axis, pattern, what=f"kernel {path!r}")
      if isinstance(leaf, (jax.Array, np.ndarray)):
        ff = 1.0 - float(np.mean(ff_mask(leaf, pattern, method)))
        bp = 1.0 - float(np.mean(bp_mask(leaf, pattern, method)))
      else:
        ff = bp = 1.0 - pattern.density
    reports.append(KernelReport(path, tuple(leaf.shape), rule, pattern, ff, bp))
    if log:
      logging.info("layer rule: %s", reports[-1])
  return reports
