"""When masks are recomputed: the ``mask_every`` snapshot rule (SPEC §1), shared by the layers.

With ``mask_every = k > 1`` a layer keeps a copy of its kernel (the *mask source*) and a call
counter in the ``nm_masks`` variable collection; the masks of step ``t`` come from the kernel of step
``t - t % k``. ``k = 1`` (the default) keeps no state: masks come from the current kernel.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

MASK_COLLECTION = "nm_masks"


def check_mask_every(mask_every: int, name: str | None = None) -> int:
  """Returns ``mask_every`` if it is an integer >= 1.

  Raises:
    ValueError: for anything else (the message names the layer when ``name`` is given).
  """
  if isinstance(mask_every, bool) or not isinstance(mask_every, int) or mask_every < 1:
    where = "" if name is None else f" of layer {name!r}"
    raise ValueError(f"mask_every{where} must be an integer >= 1 (1 = recompute the masks every "
                     f"step), got {mask_every!r}.")
  return mask_every


def refresh_mask_source(kernel: jax.Array, snapshot: jax.Array, count: jax.Array,
                        mask_every: int) -> tuple[jax.Array, jax.Array]:
  """One training step of the snapshot rule.

  Args:
    kernel: the current dense kernel.
    snapshot: the stored mask source (kernel dtype and shape).
    count: int32 scalar, the number of training calls so far.
    mask_every: the refresh period ``k``.

  Returns:
    ``(snapshot, count + 1)``: the snapshot to use now (the current kernel when ``count % k == 0``,
    else the stored one, never differentiated) and the next count.
  """
  fresh = lax.stop_gradient(kernel).astype(snapshot.dtype)
  snapshot = jnp.where(count % mask_every == 0, fresh, snapshot)
  return snapshot, count + 1
