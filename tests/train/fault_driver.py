"""Drives the fault-injection runs of ``test_fault_injection.py`` (a helper process, not a test).

  python tests/train/fault_driver.py kills WORKROOT NUM_KILLS SEED
  python tests/train/fault_driver.py corruptions WORKROOT STOP_STEP

The driver imports JAX without starting a backend and forks one child per run segment, so each
segment pays only for its backend and the (persistently cached) compilations, not for imports.
``kills``: an uninterrupted reference run in WORKROOT/reference, then, in WORKROOT/killed, segments
that SIGKILL themselves at random steps (fixed seed) until NUM_KILLS kills, and a last segment that
finishes. ``corruptions``: a run stopped after STOP_STEP, copied once per kind of damage, that
copy's newest checkpoint damaged, then resumed to the end (each segment's stderr in
WORKROOT/<kind>.log). Both write WORKROOT/report.json.
"""

import json
import os
import shutil
import signal
import sys
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np

from nmsparse.train import checkpoint, metrics, train_and_evaluate
from tests.train.fault_config import (CORRUPTIONS, STEPS_PER_EPOCH, TOTAL_STEPS, fault_config,
                                      write_digits)

MODES = ("before_save", "after_save")  # plus "after_record" at an epoch's last step


def segment(workdir: str, data_dir: str, kill_step: int = 0, mode: str = "", log: str = "",
            stop_after_step: int | None = None) -> int:
  """Runs one segment in a forked child; returns its exit status (negative: killed by signal).

  ``mode`` says where in step ``kill_step`` the child SIGKILLs itself: ``before_save`` (the step
  ran, its checkpoint was never started), ``after_save`` (inside Orbax's background commit of its
  checkpoint) or ``after_record`` (an epoch's record appended to metrics.jsonl, its checkpoint not
  yet written).
  """
  pid = os.fork()
  if pid:
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
  try:
    if log:
      fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
      os.dup2(fd, 2)
    import jax
    save, write = checkpoint.Checkpointer.save, metrics.MetricWriter.write

    def save_then_maybe_kill(self, state, progress):
      step = int(jax.device_get(state.step))
      if step == kill_step and mode == "before_save":
        os.kill(os.getpid(), signal.SIGKILL)
      save(self, state, progress)
      if step == kill_step and mode == "after_save":
        os.kill(os.getpid(), signal.SIGKILL)

    def write_then_maybe_kill(self, record):
      write(self, record)
      if record["step"] == kill_step and mode == "after_record":
        os.kill(os.getpid(), signal.SIGKILL)

    checkpoint.Checkpointer.save = save_then_maybe_kill
    metrics.MetricWriter.write = write_then_maybe_kill
    train_and_evaluate(fault_config(data_dir), workdir, stop_after_step=stop_after_step)
    sys.stderr.flush()
    os._exit(0)
  except BaseException:  # pylint: disable=broad-except
    traceback.print_exc()
    sys.stderr.flush()
    os._exit(1)


def newest_step(workdir: str) -> int:
  folder = os.path.join(workdir, "checkpoints")
  steps = [int(d) for d in os.listdir(folder) if d.isdigit()] if os.path.isdir(folder) else []
  return max(steps, default=0)


def kills(root: str, data_dir: str, num_kills: int, seed: int) -> dict:
  report = {"reference_exit": segment(os.path.join(root, "reference"), data_dir), "kills": []}
  workdir = os.path.join(root, "killed")
  rng = np.random.default_rng(seed)
  while len(report["kills"]) < num_kills:
    resumed = newest_step(workdir)
    if resumed >= TOTAL_STEPS:
      break  # every step is checkpointed: nothing left to interrupt
    step = min(resumed + int(rng.integers(1, 4)), TOTAL_STEPS)
    modes = MODES + (("after_record",) if step % STEPS_PER_EPOCH == 0 else ())
    mode = modes[int(rng.integers(len(modes)))]
    status = segment(workdir, data_dir, step, mode)
    report["kills"].append({"resumed_from": resumed, "kill_step": step, "mode": mode,
                            "exit": status})
  report["final_exit"] = segment(workdir, data_dir)
  return report


def corruptions(root: str, data_dir: str, stop_step: int) -> dict:
  base = os.path.join(root, "stopped")
  report = {"stop_exit": segment(base, data_dir, stop_after_step=stop_step), "kinds": {}}
  report["newest"] = newest_step(base)
  for kind, damage in CORRUPTIONS.items():
    workdir = os.path.join(root, kind)
    shutil.copytree(base, workdir)
    damage(os.path.join(workdir, "checkpoints", str(report["newest"])))
    report["kinds"][kind] = segment(workdir, data_dir, log=os.path.join(root, f"{kind}.log"))
  return report


def main(argv: list[str]) -> None:
  command, root = argv[1], argv[2]
  os.makedirs(root, exist_ok=True)
  data_dir = os.path.join(root, "data")
  write_digits(data_dir)
  if command == "kills":
    report = kills(root, data_dir, int(argv[3]), int(argv[4]))
  else:
    report = corruptions(root, data_dir, int(argv[3]))
  with open(os.path.join(root, "report.json"), "w") as f:
    json.dump(report, f, indent=1)


if __name__ == "__main__":
  main(sys.argv)
