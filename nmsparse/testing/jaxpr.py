"""Walking a jaxpr with the jaxprs nested in its equations (``jit``, ``custom_vjp``, ``scan``...)."""

from __future__ import annotations

from typing import Iterator

from jax.extend.core import ClosedJaxpr, Jaxpr, JaxprEqn


def _nested(eqn: JaxprEqn) -> list[Jaxpr]:
  out = []
  for value in eqn.params.values():
    for v in value if isinstance(value, (list, tuple)) else (value,):
      if isinstance(v, ClosedJaxpr):
        out.append(v.jaxpr)
      elif isinstance(v, Jaxpr):
        out.append(v)
  return out


def equations(jaxpr: Jaxpr | ClosedJaxpr) -> Iterator[JaxprEqn]:
  """Every equation of ``jaxpr`` and of the jaxprs nested in its equations' parameters."""
  todo = [jaxpr.jaxpr if isinstance(jaxpr, ClosedJaxpr) else jaxpr]
  while todo:
    for eqn in todo.pop().eqns:
      yield eqn
      todo.extend(_nested(eqn))
