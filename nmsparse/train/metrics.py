"""Run outputs: per-epoch JSONL, TensorBoard events (tensorboardX when importable), a progress bar
(tqdm when importable, else log lines) and the results JSON of SPEC §3."""

from __future__ import annotations

import json
import logging as py_logging
import os
import subprocess
import sys
from typing import Any

import jax
from absl import logging

METRICS_FILE = "metrics.jsonl"
LIBRARY_PATHS = ("/orbax/", "/jax/_src/")


class _LibraryInfoFilter(py_logging.Filter):
  """Drops INFO lines logged through absl by orbax and jax internals (warnings pass)."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    return record.levelno >= py_logging.WARNING or not any(
        p in record.pathname for p in LIBRARY_PATHS)


def quiet_library_logs() -> None:
  """Keeps the run's own INFO log readable (idempotent)."""
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _LibraryInfoFilter) for f in handler.filters):
    handler.addFilter(_LibraryInfoFilter())


class MetricWriter:
  """Appends one JSON object per epoch to ``workdir/metrics.jsonl`` and scalars to TensorBoard."""

  def __init__(self, workdir: str, enable_tensorboard: bool = True):
    self.path = os.path.join(workdir, METRICS_FILE)
    self.tb = None
    if enable_tensorboard and jax.process_index() == 0:
      try:
        from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
        self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
      except ImportError:
        logging.info("tensorboardX is not installed: TensorBoard events skipped (JSONL only).")

  def history(self, completed_epochs: int) -> list[dict[str, Any]]:
    """Records already on disk for the first ``completed_epochs`` epochs (``epoch`` counts from 1);
    later ones (written after the checkpoint a resumed run restarts from) are dropped from the file."""
    if not os.path.exists(self.path):
      return []
    with open(self.path) as f:
      records = [json.loads(line) for line in f if line.strip()]
    kept = [r for r in records if r["epoch"] <= completed_epochs]
    if len(kept) != len(records):
      self._rewrite(kept)
    return kept

  def _rewrite(self, records: list[dict[str, Any]]) -> None:
    with open(self.path, "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in records)

  def write(self, record: dict[str, Any]) -> None:
    if jax.process_index() != 0:
      return
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if self.tb is not None:
      for key, value in record.items():
        if isinstance(value, (int, float)) and key != "epoch":
          self.tb.add_scalar(key, value, record["epoch"])
      self.tb.flush()

  def close(self) -> None:
    if self.tb is not None:
      self.tb.close()


class Progress:
  """A tqdm bar over the run's steps when enabled, tqdm is importable and stderr is a terminal;
  else periodic log lines (readable in the log files of sweep subprocesses)."""

  def __init__(self, total: int, initial: int, enabled: bool):
    self.bar = None
    if enabled and sys.stderr.isatty():
      try:
        from tqdm import tqdm  # pylint: disable=g-import-not-at-top
        self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
      except ImportError:
        logging.info("tqdm is not installed: progress goes to the log instead.")
    self.step = initial
    self.total = total

  def update(self, step: int, loss: float, accuracy: float, images_per_s: float) -> None:
    if self.bar is not None:
      self.bar.update(step - self.step)
      self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{accuracy:.3f}", img_s=f"{images_per_s:.0f}")
    else:
      logging.info("step %d/%d  loss %.4f  acc %.3f  %.0f images/s", step, self.total, loss,
                   accuracy, images_per_s)
    self.step = step

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()


def git_sha() -> str:
  """The checked-out commit (``+dirty`` if the tree has changes), or ``"unknown"``.

  ``NMSPARSE_GIT_SHA`` or ``GIT_SHA`` overrides it, for copies of the tree whose ``.git`` is
  missing or stale (e.g. a GPU machine).
  """
  for var in ("NMSPARSE_GIT_SHA", "GIT_SHA"):
    if os.environ.get(var):
      return os.environ[var]
  try:
    sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                         timeout=10).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=10).stdout.strip()
    return sha + ("+dirty" if dirty else "")
  except (OSError, subprocess.SubprocessError):
    return "unknown"


def device_name() -> str:
  """e.g. ``"NVIDIA H100 80GB HBM3 x4"`` or ``"cpu x1"``."""
  devices = jax.devices()
  return f"{devices[0].device_kind} x{len(devices)}"


def _is_scalar(x: Any) -> bool:
  return not isinstance(x, (dict, list, tuple))


def format_json(obj: Any, indent: int = 1) -> str:
  """``json.dumps(obj, indent=indent)``'s layout, except that an object or list holding scalars
  only goes on one line: a run's epoch records read one per line, a per-layer series as one row.

  ``json.loads`` of the result equals ``json.loads(json.dumps(obj))``.
  """
  def fmt(x: Any, level: int) -> str:
    if _is_scalar(x) or not x or all(_is_scalar(v) for v in (x.values() if isinstance(x, dict)
                                                             else x)):
      return json.dumps(x)
    pad, end = "\n" + " " * indent * (level + 1), "\n" + " " * indent * level
    if isinstance(x, dict):
      items = (f"{json.dumps({k: 0})[1:-4]}: {fmt(v, level + 1)}" for k, v in x.items())
      return "{" + pad + ("," + pad).join(items) + end + "}"
    return "[" + pad + ("," + pad).join(fmt(v, level + 1) for v in x) + end + "]"
  return fmt(obj, 0)


def write_json(path: str, obj: Any) -> None:
  """Writes ``obj`` as ``format_json`` lays it out, atomically (a reader never sees half a file)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(format_json(obj) + "\n")
  os.replace(tmp, path)


def split_mask_flips(history: list[dict[str, Any]]
                     ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
  """Moves the per-layer ``mask_flips`` counts out of a run's epoch records into one columnar
  record, ``{"epochs": [epoch, ...], "layers": {layer: [count per epoch, ...]}}`` (``None`` when
  no epoch tracked flips); each record keeps its ``mask_flip_fraction``. A layer some epochs did
  not count (a resume under changed rules) has ``None`` there: the end of a run never fails here.

  The per-epoch layout repeated every layer's name in every epoch: 70 % of a 200-epoch ViT run's
  JSON. ``epoch_mask_flips`` reads either layout back per epoch.
  """
  tracked = [h for h in history if "mask_flips" in h]
  if not tracked:
    return history, None
  layers = list(dict.fromkeys(p for h in tracked for p in h["mask_flips"]))
  return ([{k: v for k, v in h.items() if k != "mask_flips"} for h in history],
          {"epochs": [h["epoch"] for h in tracked],
           "layers": {p: [h["mask_flips"].get(p) for h in tracked] for p in layers}})


def epoch_mask_flips(results: dict[str, Any]) -> dict[int, dict[str, int]]:
  """``{epoch: {layer: FF mask flips since the epoch before}}`` of a run's results, in the
  columnar layout ``split_mask_flips`` writes or the per-epoch one of run files written before it."""
  columns = results.get("mask_flips")
  if columns is None:
    return {h["epoch"]: h["mask_flips"] for h in results["history"] if "mask_flips" in h}
  return {e: {p: counts[i] for p, counts in columns["layers"].items() if counts[i] is not None}
          for i, e in enumerate(columns["epochs"])}
