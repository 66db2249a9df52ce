"""Getting data onto the devices: the in-memory path's size check, and device prefetch of streamed
host batches with the timings the logs report (input images/s, share of time waiting for input)."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from nmsparse.train.parallel import AXIS

# data.pipeline="device" may fill this share of a device's memory with the dataset (the rest is for
# the model, optimizer state and activations) when data.device_memory_limit_mb is 0.
DEVICE_DATA_FRACTION = 0.5


class DatasetTooLargeError(ValueError):
  """The dataset does not fit the device memory the in-memory path may use."""


def device_data_budget(limit_mb: float) -> tuple[int | None, str]:
  """Bytes the in-memory dataset may take per device and where that figure comes from:
  ``limit_mb`` when set, else ``DEVICE_DATA_FRACTION`` of ``memory_stats()["bytes_limit"]``, else
  ``None`` (a backend that reports no memory, such as the CPU)."""
  if limit_mb:
    return int(limit_mb * 2**20), f"data.device_memory_limit_mb={limit_mb}"
  stats = jax.local_devices()[0].memory_stats() or {}
  if stats.get("bytes_limit"):
    limit = int(stats["bytes_limit"])
    return int(limit * DEVICE_DATA_FRACTION), (
        f"{DEVICE_DATA_FRACTION:.0%} of the {limit / 2**30:.1f} GiB of "
        f"{jax.local_devices()[0].device_kind}")
  return None, "no device memory reported"


def check_fits_device(nbytes: int, what: str, limit_mb: float) -> None:
  """Stops a ``data.pipeline="device"`` run whose dataset would not fit in device memory.

  Raises:
    DatasetTooLargeError: naming the size, the budget and the streaming pipeline.
  """
  budget, where = device_data_budget(limit_mb)
  if budget is not None and nbytes > budget:
    raise DatasetTooLargeError(
        f"data.pipeline='device' would keep {what} ({nbytes / 2**30:.2f} GiB as uint8) on every "
        f"device, more than the {budget / 2**30:.2f} GiB it may use ({where}). Stream it instead: "
        "--config.data.pipeline=stream (host decode and augmentation per process; data.source "
        "folder, arrayrecord or tfds).")


def put_local_batch(mesh: Mesh, batch: tuple[np.ndarray, ...]) -> tuple[jax.Array, ...]:
  """This process's host batch as global arrays sharded over ``data`` (its rows on its devices)."""
  sharding = NamedSharding(mesh, P(AXIS))
  return tuple(jax.make_array_from_process_local_data(sharding, np.asarray(x)) for x in batch)


class _Failed:
  def __init__(self, error: BaseException):
    self.error = error


_END = object()


class DevicePrefetch:
  """Iterates ``put(batch)`` for the host ``batches`` in a background thread, keeping up to
  ``size`` batches on the devices ahead of the consumer (one more is being prepared).

  ``images``/``produce_s`` count the images put and the thread's time reading and placing them
  (not its time blocked on a full queue); ``wait_s`` is the consumer's time blocked in ``next``.
  An error in the thread is raised by the consumer's ``next``.
  """

  def __init__(self, batches: Iterator[Any], put: Callable[[Any], Any], size: int = 2):
    if size < 1:
      raise ValueError(f"data.prefetch={size}: must be >= 1 batch in flight.")
    self._batches, self._put = batches, put
    self._queue: queue.Queue = queue.Queue(maxsize=size)
    self._stop = threading.Event()
    self.images, self.produce_s, self.wait_s = 0, 0.0, 0.0
    self._thread = threading.Thread(target=self._run, name="device-prefetch", daemon=True)
    self._thread.start()

  def _run(self) -> None:
    item: Any = _END
    try:
      for batch in self._next_batches():
        if not self._offer(batch):
          return
    except BaseException as e:  # pylint: disable=broad-except  # re-raised by the consumer
      item = _Failed(e)
    self._offer(item)

  def _next_batches(self) -> Iterator[Any]:
    while not self._stop.is_set():
      start = time.perf_counter()
      try:
        batch = next(self._batches)
      except StopIteration:
        return
      placed = self._put(batch)
      self.produce_s += time.perf_counter() - start
      self.images += len(batch[0])
      yield placed

  def _offer(self, item: Any) -> bool:
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def __iter__(self) -> "DevicePrefetch":
    return self

  def __next__(self) -> Any:
    start = time.perf_counter()
    item = self._queue.get()
    self.wait_s += time.perf_counter() - start
    if item is _END:
      self._queue.put(_END)
      raise StopIteration
    if isinstance(item, _Failed):
      raise item.error
    return item

  def close(self) -> None:
    """Stops the thread, then closes the host iterator (its worker processes)."""
    self._stop.set()
    while self._thread.is_alive():
      try:
        self._queue.get(timeout=0.1)
      except queue.Empty:
        pass
    close = getattr(self._batches, "close", None)
    if close is not None:
      close()


class InputMeter:
  """Throughput over a logging window from a :class:`DevicePrefetch`: input-pipeline images/s
  and the share of the window the trainer spent waiting for input."""

  def __init__(self):
    self._last = (0, 0.0, 0.0, time.perf_counter())

  def window(self, prefetch: DevicePrefetch) -> dict[str, float]:
    images, produce_s, wait_s, start = self._last
    now = time.perf_counter()
    self._last = (prefetch.images, prefetch.produce_s, prefetch.wait_s, now)
    made, busy = prefetch.images - images, prefetch.produce_s - produce_s
    return {"input_images_per_s": made / busy if busy > 0 else float("nan"),
            "input_wait_fraction": (prefetch.wait_s - wait_s) / max(now - start, 1e-9)}

  def restart(self, prefetch: DevicePrefetch) -> None:
    """Starts the next window now (a new epoch's prefetch)."""
    self._last = (prefetch.images, prefetch.produce_s, prefetch.wait_s, time.perf_counter())
