"""Data parallelism: a 1-D ``data`` mesh over the local devices, ``shard_map`` across JAX versions,
and optional multi-host initialisation."""

from __future__ import annotations

import inspect
import os
from typing import Any, Callable, Sequence

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

try:  # jax >= 0.6 exports shard_map at the top level; older releases only in experimental.
  from jax import shard_map as _shard_map
except ImportError:  # pragma: no cover - depends on the installed jax
  from jax.experimental.shard_map import shard_map as _shard_map

_CHECK_KWARG = "check_vma" if "check_vma" in inspect.signature(_shard_map).parameters else "check_rep"

AXIS = "data"


def shard_map(f: Callable[..., Any], mesh: Mesh, in_specs: Any, out_specs: Any) -> Callable[..., Any]:
  """``shard_map`` without replication checks (custom sparse primitives carry no such rules)."""
  return _shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, **{_CHECK_KWARG: False})


def make_mesh(num_devices: int | None = None, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ``("data",)`` mesh over the first ``num_devices`` devices (all by default)."""
  devices = list(devices if devices is not None else jax.devices())
  if num_devices:
    if num_devices > len(devices):
      raise ValueError(f"Asked for {num_devices} devices but only {len(devices)} are visible.")
    devices = devices[:num_devices]
  return Mesh(np.asarray(devices), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def put_replicated(tree: Any, mesh: Mesh) -> Any:
  """Places host arrays (identical on every process) on every device of ``mesh``."""
  sharding = replicated(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_callback(np.shape(x), sharding, lambda idx: np.asarray(x)[idx]),
      tree)


def put_batch_sharded(array: np.ndarray, mesh: Mesh, axis: int = 0) -> jax.Array:
  """Places a host array sharded along ``axis`` over the ``data`` mesh axis."""
  spec = [None] * np.ndim(array)
  spec[axis] = AXIS
  sharding = NamedSharding(mesh, P(*spec))
  return jax.make_array_from_callback(np.shape(array), sharding, lambda idx: np.asarray(array)[idx])


def initialize_distributed(**kwargs: Any) -> None:
  """``jax.distributed.initialize(**kwargs)``, with gloo collectives for CPU processes (GPUs use
  NCCL), and a log line of where this process stands."""
  try:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  except (AttributeError, ValueError):  # pragma: no cover - depends on the installed jax
    pass
  jax.distributed.initialize(**kwargs)
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())


def maybe_initialize_distributed(enabled: bool) -> None:
  """:func:`initialize_distributed` when asked (``config.distributed``).

  On a cluster JAX finds the coordinates itself (SLURM, Open MPI, Kubernetes, TPU pods). For one
  process per GPU on a single host set ``JAX_COORDINATOR_ADDRESS`` (e.g. ``localhost:12345``),
  ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (plus ``CUDA_VISIBLE_DEVICES`` per process);
  ``scripts/launch_local.sh`` does that.
  """
  if not enabled:
    return
  kwargs = {}
  if os.environ.get("JAX_NUM_PROCESSES"):
    kwargs = dict(num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                  process_id=int(os.environ["JAX_PROCESS_ID"]))
  initialize_distributed(**kwargs)
