"""Exports a run for serving: ``nms-export --workdir RUN_WORKDIR --out DIR [--dtype bfloat16]``.

Reads the run's recorded ``config.json`` and its newest readable checkpoint (read-only), packs every
sparse kernel's forward operand (``nmsparse.export``), saves the export to ``DIR`` and prints the
manifest and the compression ratio; ``python -m experiments.export`` takes the same flags.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections
import orbax.checkpoint as ocp
from absl import app, flags, logging

from nmsparse.export import Exported, export, save_exported
from nmsparse.prune.schedule import MASK_COLLECTION
from nmsparse.train import NoReadableCheckpointError
from nmsparse.train.metrics import git_sha
from nmsparse.train.setup import DTYPES, build_rules, compute_dtype
from nmsparse.train.workdir import recorded_config

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags, defined when it runs (``--out``/``--workdir`` are also other commands'
  flags, and tests import those modules together)."""
  flags.DEFINE_string("workdir", None, "The run's workdir (its config.json and checkpoints/).")
  flags.DEFINE_string("out", None, "Directory to write the export to (must not exist).")
  flags.DEFINE_enum("dtype", "", ["", *DTYPES], "Packed values' dtype; default: the run's dtype.")
  flags.DEFINE_bool("require_pruned", False, "Fail on kernels that are not N:M already.")
  flags.DEFINE_bool("overwrite", False, "Replace an existing --out directory.")
  flags.mark_flags_as_required(["workdir", "out"])


def run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config the run in ``workdir`` recorded.

  Raises:
    FileNotFoundError: the workdir records no config (it is no run's workdir).
  """
  recorded = recorded_config(workdir)
  if recorded is None:
    raise FileNotFoundError(f"{workdir} records no run config (config.json): it is not the "
                            "workdir of an nms-train run.")
  return ml_collections.ConfigDict(recorded)


def latest_variables(workdir: str) -> tuple[dict[str, Any], int, str]:
  """``(apply variables, step, checkpoint path)`` of the newest readable checkpoint; an unreadable
  one is skipped with a warning (and left in place).

  Raises:
    NoReadableCheckpointError: no checkpoint, or none that restores.
  """
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  if not os.path.isdir(directory):
    raise NoReadableCheckpointError(f"{workdir} has no checkpoints ({directory} is missing).")
  manager = ocp.CheckpointManager(directory,
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  failures = []
  try:
    for step in sorted(manager.all_steps(), reverse=True):
      try:
        items = manager.restore(step, args=ocp.args.StandardRestore())
      except Exception as e:  # Orbax, Tensorstore and JSON raise many types for damaged files
        failures.append(f"step {step} ({type(e).__name__}: {(str(e).splitlines() or [''])[0]})")
        logging.warning("Checkpoint of step %d in %s is unreadable; trying an older one.", step,
                        directory)
        continue
      variables = {name: items[name] for name in ("params", "batch_stats", MASK_COLLECTION)
                   if items.get(name)}
      return variables, step, os.path.join(directory, str(step))
  finally:
    manager.close()
  raise NoReadableCheckpointError(f"No checkpoint in {directory} restores"
                                  f"{': ' + '; '.join(failures) if failures else ' (none saved)'}.")


def export_run(workdir: str, out: str, dtype: str = "", require_pruned: bool = False,
               overwrite: bool = False) -> Exported:
  """Exports the newest checkpoint of the run in ``workdir`` to ``out`` and returns the export.

  Args:
    workdir: an ``nms-train`` workdir.
    out: the export directory (see :func:`nmsparse.export.save_exported`).
    dtype: the packed values' dtype name; ``""`` = the run's compute dtype.
    require_pruned, overwrite: as in :func:`nmsparse.export.export` / ``save_exported``.
  """
  config = run_config(workdir)
  variables, step, checkpoint = latest_variables(workdir)
  values_dtype = DTYPES[dtype] if dtype else compute_dtype(config)
  source = {"workdir": os.path.abspath(workdir), "checkpoint": checkpoint, "step": step,
            "config": config.to_dict()}
  exported = export(variables, build_rules(config), config.method, dtype=values_dtype,
                    require_pruned=require_pruned, source=source, git_sha=git_sha())
  save_exported(out, exported, overwrite=overwrite)
  return exported


def summary(exported: Exported) -> str:
  """One line: packed bytes of the sparse kernels against their bf16 dense bytes."""
  c = exported.manifest["compression"]
  return (f"compression: {c['sparse_layers']} sparse kernels, {c['packed_bytes']} packed bytes vs "
          f"{c['dense_bf16_bytes']} bf16 dense bytes, ratio {c['ratio']:.4f}")


def main(argv):
  del argv
  exported = export_run(FLAGS.workdir, FLAGS.out, FLAGS.dtype, FLAGS.require_pruned,
                        FLAGS.overwrite)
  print(json.dumps(exported.manifest, indent=1))
  print(summary(exported))
  print(f"exported to {os.path.abspath(FLAGS.out)}")


def run() -> None:
  """The ``nms-export`` entry point."""
  define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
