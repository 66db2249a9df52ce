"""Static settings shared by every stage: the N:M pattern and the method sets.

``"2:8"`` is parsed here and nowhere else; the method sets below are the only lists of methods.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Union

METHODS: tuple[str, ...] = ("dense", "srste", "bdwp", "bimask")
# The methods that prune (every one but "dense"): FF uses W*M_ff, the weight gradient gets SR-STE.
SPARSE_METHODS: tuple[str, ...] = ("srste", "bdwp", "bimask")
# The sparse methods whose BP operand is N:M along the output axis (so that axis must divide by M,
# and the BP product costs N/M of dense). srste's BP operand W*M_ff is not.
BP_SPARSE_METHODS: tuple[str, ...] = ("bdwp", "bimask")

_PATTERN_RE = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


@dataclasses.dataclass(frozen=True, order=True)
class NMPattern:
  """Keep ``n`` of every ``m`` consecutive weights (``1 <= n <= m``, ``m >= 2``).

  Frozen and hashable, so it can be a static argument of ``jax.jit`` and a
  primitive parameter.
  """

  n: int
  m: int

  def __post_init__(self):
    for name in ("n", "m"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"NMPattern.{name} must be an int, got {value!r}.")
    if self.m < 2:
      raise ValueError(f"N:M pattern needs M >= 2, got M={self.m} ('{self.n}:{self.m}').")
    if self.n < 1:
      raise ValueError(f"N:M pattern needs N >= 1, got N={self.n} ('{self.n}:{self.m}').")
    if self.n > self.m:
      raise ValueError(
          f"N:M pattern needs N <= M, got N={self.n} > M={self.m} ('{self.n}:{self.m}').")

  @classmethod
  def parse(cls, spec: Union[str, "NMPattern"]) -> "NMPattern":
    """Parses ``"N:M"`` (or passes an ``NMPattern`` through).

    Raises:
      ValueError: for anything but two integers joined by one colon, or
        integers that break ``1 <= N <= M``, ``M >= 2``.
    """
    if isinstance(spec, NMPattern):
      return spec
    if not isinstance(spec, str):
      raise ValueError(f"An N:M pattern is a string like '2:8', got {spec!r}.")
    match = _PATTERN_RE.match(spec)
    if match is None:
      raise ValueError(
          f"Malformed N:M pattern {spec!r}: expected two integers joined by ':', e.g. '2:8'.")
    return cls(int(match.group(1)), int(match.group(2)))

  @property
  def density(self) -> float:
    """Fraction of weights kept, ``n / m``."""
    return self.n / self.m

  def __str__(self) -> str:
    return f"{self.n}:{self.m}"


PatternLike = Union[str, NMPattern]


def as_pattern(pattern: PatternLike | None) -> NMPattern | None:
  """``None`` stays ``None``; strings are parsed; patterns pass through."""
  return None if pattern is None else NMPattern.parse(pattern)


def pattern_density(spec: PatternLike | None) -> float:
  """``n / m`` of a pattern or ``"N:M"`` string; ``None`` (dense) is 1."""
  return 1.0 if spec is None else NMPattern.parse(spec).density


def check_method(method: str) -> str:
  """Returns ``method`` if it is one of :data:`METHODS`, else raises ``ValueError``."""
  if method not in METHODS:
    raise ValueError(f"Unknown method {method!r}; expected one of {METHODS}.")
  return method
