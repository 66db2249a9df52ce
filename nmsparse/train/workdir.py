"""A workdir belongs to one run (SPEC §4): the run's config is recorded in ``workdir/config.json``
when the run starts, and a resume whose run-defining fields differ is refused before anything is
written. While a process trains the run it holds ``workdir/.lock`` (``hold_workdir``), so a second
process (another sweep lane, a second ``nms-train``) cannot train it into the same checkpoints."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
from typing import Any, Iterator

from absl import logging

from nmsparse.data.augment import augment_active
from nmsparse.train.metrics import write_json

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
SEGMENTS_FILE = "segments.jsonl"
LOCK_FILE = ".lock"
# The fields that define what a run computes (SPEC §4: model, data, method, pattern, rules, seed,
# schedule, optimizer, batch). Bookkeeping (checkpoint/log cadence, progress bar, results_dir,
# devices, implementation, data_dir) may change between segments.
RUN_DEFINING = (
    "model", "model_kwargs", "data", "method", "pattern", "sr_ste_lambda", "rules", "mask_every",
    "seed", "epochs", "schedule", "learning_rate", "warmup_epochs", "optimizer", "momentum",
    "nesterov", "weight_decay", "label_smoothing", "grad_clip", "batch_size", "dtype")
# Where the data lives may change (another machine, another mount), and how fast it is read; what
# it is may not.
NOT_RUN_DEFINING_DATA = ("data_dir", "num_workers", "prefetch", "device_memory_limit_mb")
# Data fields added after workdirs were first recorded, with the value older runs had.
ADDED_DATA_DEFAULTS = {"pipeline": "device", "on_corrupt": "fail", "crop_fraction": 0.875,
                       "min_scale": 0.08}
# Run-defining for method="bimask" only (its permutation search), so other runs' records still match.
BIMASK_DEFINING = ("bimask_candidates", "bimask_refresh")


class ConfigMismatchError(ValueError):
  """The workdir holds a run of another config; the message names the fields that differ."""


class WorkdirBusyError(RuntimeError):
  """Another live process trains the run in this workdir (it holds ``workdir/.lock``)."""


@contextlib.contextmanager
def hold_workdir(workdir: str) -> Iterator[None]:
  """Holds an exclusive advisory lock (``flock``) on ``workdir/.lock`` for the block.

  The kernel drops the lock with its process, so a killed run leaves nothing to clean up and its
  next process resumes at once. The file names the holder (pid and host) for the error message.
  On a filesystem without ``flock`` (some network mounts) the block runs unlocked, with a warning.

  Raises:
    WorkdirBusyError: another process holds the lock (nothing was written).
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  locked = True
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
      holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
      os.close(fd)
      raise WorkdirBusyError(f"Workdir {workdir} is being trained by another process ({holder}, "
                             f"holding {path}); nothing was written.") from None
    logging.warning("Workdir %s: cannot lock %s (%s); training it unlocked.", workdir, path, e)
    locked = False
  try:
    if locked:
      os.ftruncate(fd, 0)
      os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    yield
  finally:
    if locked:
      fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def workdir_busy(workdir: str) -> bool:
  """Whether another process holds ``workdir``'s lock now (creates nothing)."""
  path = os.path.join(workdir, LOCK_FILE)
  if not os.path.exists(path):
    return False
  fd = os.open(path, os.O_RDONLY)
  try:
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
  except OSError as e:
    return e.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
  else:
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False
  finally:
    os.close(fd)


def run_defining(config: Any) -> dict[str, Any]:
  """The run-defining fields of ``config`` (a ConfigDict or its JSON dict), JSON-normalised."""
  as_dict = config if isinstance(config, dict) else json.loads(config.to_json_best_effort())
  fields = {k: as_dict.get(k) for k in RUN_DEFINING}
  if as_dict.get("method") == "bimask":
    fields.update({k: as_dict.get(k) for k in BIMASK_DEFINING})
  if augment_active(as_dict.get("augment")):  # off: records from before the field still match
    fields["augment"] = as_dict["augment"]
  if isinstance(fields["data"], dict):
    fields["data"] = {k: v for k, v in {**ADDED_DATA_DEFAULTS, **fields["data"]}.items()
                      if k not in NOT_RUN_DEFINING_DATA}
  if fields["method"] == "dense":  # a dense run ignores the pattern
    fields["pattern"] = None
  return json.loads(json.dumps(fields))


def changed_fields(recorded: dict[str, Any], config: Any) -> list[str]:
  """Dotted names of the run-defining fields where ``config`` differs from ``recorded``."""
  old, new = run_defining(recorded), run_defining(config)
  changed = []
  for key in RUN_DEFINING:
    if isinstance(old[key], dict) and isinstance(new[key], dict):
      changed += [f"{key}.{k}" for k in sorted(set(old[key]) | set(new[key]))
                  if old[key].get(k) != new[key].get(k)]
    elif old[key] != new[key]:
      changed.append(key)
  return changed


def recorded_config(workdir: str) -> dict[str, Any] | None:
  """The config the workdir's run started with: ``config.json``, else the ``config`` key of a
  ``results.json`` written before workdirs recorded their config, else ``None``."""
  for name, key in ((CONFIG_FILE, None), (RESULTS_FILE, "config")):
    path = os.path.join(workdir, name)
    if os.path.exists(path):
      with open(path) as f:
        data = json.load(f)
      if key is None:
        return data
      if key in data:
        return data[key]
  return None


def check_workdir(config: Any, workdir: str) -> dict[str, Any] | None:
  """Checks that ``config`` may run in ``workdir``; writes nothing.

  Returns:
    The finished run's results (``workdir/results.json``) when the run is finished, else ``None``.
  Raises:
    ConfigMismatchError: naming every run-defining field (old -> new) where ``config`` differs from
      the config the workdir's run was started with, unless ``config.allow_config_change``.
  """
  recorded = recorded_config(workdir)
  if recorded is not None:
    changed = changed_fields(recorded, config)
    if changed and not config.get("allow_config_change", False):
      old, new = run_defining(recorded), run_defining(config)
      detail = "; ".join(f"{f}: {_lookup(old, f)!r} -> {_lookup(new, f)!r}" for f in changed)
      raise ConfigMismatchError(
          f"Workdir {workdir} holds a run of another config: {detail}. Nothing was written. Use a "
          f"fresh --workdir for the new config, or set --config.allow_config_change=True to "
          f"continue this run's checkpoints under the new config.")
    if changed:
      logging.warning("Workdir %s: continuing under a changed config (allow_config_change=True): "
                      "%s", workdir, ", ".join(changed))
  results = os.path.join(workdir, RESULTS_FILE)
  if os.path.exists(results):
    with open(results) as f:
      return json.load(f)
  return None


def record_config(config: Any, workdir: str) -> None:
  """Writes ``workdir/config.json`` when the workdir has none (or the change was allowed)."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path) or config.get("allow_config_change", False):
    write_json(path, json.loads(config.to_json_best_effort()))


def record_segment(workdir: str, step: int, **fields: Any) -> None:
  """Appends one line to ``workdir/segments.jsonl`` for a process that trains the run from
  ``step`` on (0, or the checkpoint it resumed from), with ``fields`` (its git SHA, JAX version,
  device): a run continued elsewhere, or by other code, says so in its results."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, SEGMENTS_FILE), "a") as f:
    f.write(json.dumps({"step": int(step), **fields}) + "\n")


def read_segments(workdir: str) -> list[dict[str, Any]]:
  """The records of ``record_segment``, oldest first (empty for workdirs from before them)."""
  path = os.path.join(workdir, SEGMENTS_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _lookup(fields: dict[str, Any], dotted: str) -> Any:
  node = fields
  for part in dotted.split("."):
    node = node.get(part) if isinstance(node, dict) else None
  return node
