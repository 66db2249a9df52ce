"""Fault injection on a small deterministic CPU run (``fault_config.py``): 20 SIGKILLs at random
steps, each followed by a resume, end with final parameters and per-epoch metrics bit-identical to
the uninterrupted run; every kind of checkpoint damage falls back to the checkpoint before and
finishes identically; a changed config is refused with the workdir byte-identical."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from nmsparse.train import ConfigMismatchError, train_and_evaluate
from tests.train.fault_config import CORRUPTIONS, TOTAL_STEPS, fault_config

DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fault_driver.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# STOP_STEP: mid-epoch in the last epoch (31-40), past an epoch record (step 30), so that the six
# resumes from the fallback (step 34) each run 6 steps to the end rather than 26: where in the run
# the damage lies does not change what is checked (fallback to the step before, identical finish).
NUM_KILLS, STOP_STEP = 20, 35
COMPARED = ("epoch", "step", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
            "mask_flip_fraction", "learning_rate")
# One xdist worker runs the whole module (``--dist loadgroup``), so the 20-kill run of the
# module-scoped ``kill_report`` happens once, not once per worker that draws one of its tests.
pytestmark = pytest.mark.xdist_group("fault_injection")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("jax_cache"))


def drive(cache, *args):
  env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
         "JAX_COMPILATION_CACHE_DIR": cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
         "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0", "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, DRIVER, *args], env=env, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(args[1], "report.json")) as f:
    return json.load(f)


def final_params(workdir):
  mngr = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  step = mngr.latest_step()
  items = mngr.restore(step, args=ocp.args.StandardRestore())
  mngr.close()
  return items["params"], step


def assert_same_run(reference, workdir):
  a, step_a = final_params(reference)
  b, step_b = final_params(workdir)
  assert step_a == step_b == TOTAL_STEPS
  jax.tree.map(np.testing.assert_array_equal, a, b)
  with open(os.path.join(reference, "results.json")) as f:
    ref = json.load(f)
  with open(os.path.join(workdir, "results.json")) as f:
    got = json.load(f)
  assert got["test_accuracy"] == ref["test_accuracy"]
  assert [{k: h.get(k) for k in COMPARED} for h in got["history"]] == \
      [{k: h.get(k) for k in COMPARED} for h in ref["history"]]
  assert got["mask_flips"]["epochs"] == [h["epoch"] for h in ref["history"]]
  assert got["mask_flips"] == ref["mask_flips"]


@pytest.fixture(scope="module")
def kill_report(tmp_path_factory, cache_dir):
  root = str(tmp_path_factory.mktemp("kills"))
  return root, drive(cache_dir, "kills", root, str(NUM_KILLS), "0")


def test_twenty_sigkills_then_resume_match_the_uninterrupted_run(kill_report):
  root, report = kill_report
  assert report["reference_exit"] == 0 and report["final_exit"] == 0
  kills = report["kills"]
  assert len(kills) == NUM_KILLS and all(k["exit"] == -9 for k in kills), kills
  assert len({k["mode"] for k in kills}) >= 2 and len({k["kill_step"] for k in kills}) >= 10
  assert_same_run(os.path.join(root, "reference"), os.path.join(root, "killed"))
  leftovers = [d for d in os.listdir(os.path.join(root, "killed", "checkpoints"))
               if not d.isdigit()]
  assert not leftovers  # interrupted commits (*.orbax-checkpoint-tmp) were cleaned up


def test_each_corruption_falls_back_to_the_checkpoint_before(kill_report, tmp_path, cache_dir):
  report = drive(cache_dir, "corruptions", str(tmp_path), str(STOP_STEP))
  assert report["stop_exit"] == 0 and report["newest"] == STOP_STEP
  assert set(report["kinds"]) == set(CORRUPTIONS)
  for kind, status in report["kinds"].items():
    assert status == 0, (kind, open(tmp_path / f"{kind}.log").read()[-3000:])
    log = open(tmp_path / f"{kind}.log").read()
    assert f"Checkpoint of step {STOP_STEP}" in log and "is unreadable" in log, (kind, log[-2000:])
    assert f"newest readable checkpoint, step {STOP_STEP - 1}" in log, kind
    assert os.path.isdir(tmp_path / kind / "checkpoints_unreadable" / str(STOP_STEP))
    assert_same_run(os.path.join(kill_report[0], "reference"), str(tmp_path / kind))


def snapshot(workdir):
  out = {}
  for d, _, files in os.walk(workdir):
    for name in files:
      path = os.path.join(d, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, workdir)] = (f.read(), os.stat(path).st_mtime_ns)
  return out


@pytest.mark.parametrize("change", [{"pattern": "1:4"}, {"method": "srste"}, {"epochs": 5},
                                    {"seed": 1}, {"batch_size": 16}, {"learning_rate": 1e-3}])
def test_changed_config_is_refused_and_writes_nothing(kill_report, change):
  workdir = os.path.join(kill_report[0], "reference")
  before = snapshot(workdir)
  config = fault_config(os.path.join(kill_report[0], "data"), **change)
  with pytest.raises(ConfigMismatchError) as err:
    train_and_evaluate(config, workdir)
  assert all(field in str(err.value) for field in change), str(err.value)
  assert snapshot(workdir) == before  # results.json (and everything else) byte-identical


def test_finished_run_is_reported_and_left_as_it_is(kill_report):
  workdir = os.path.join(kill_report[0], "reference")
  before = snapshot(workdir)
  config = fault_config(os.path.join(kill_report[0], "data"), log_every_steps=5)  # bookkeeping only
  results = train_and_evaluate(config, workdir)
  assert results["steps"] == TOTAL_STEPS
  assert snapshot(workdir) == before
