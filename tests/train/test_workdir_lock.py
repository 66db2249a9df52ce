"""One process trains a workdir at a time: its lock refuses a second trainer, dies with its holder,
and sweeps sharing a workdir root skip the run another process holds."""

import json
import os
import signal
import subprocess
import sys

import pytest

from experiments import sweep
from experiments.config_io import load_config
from nmsparse.train import WorkdirBusyError, train_and_evaluate
from nmsparse.train.workdir import hold_workdir, workdir_busy

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOLD = ("import sys, time\n"
        "from nmsparse.train.workdir import hold_workdir\n"
        "with hold_workdir(sys.argv[1]):\n"
        "  print('held', flush=True)\n"
        "  time.sleep(120)\n")


def env():
  return {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_lock_refuses_a_second_holder_and_dies_with_its_process(tmp_path):
  wd = str(tmp_path / "run")
  assert not workdir_busy(wd) and not os.path.exists(wd)  # asking creates nothing
  proc = subprocess.Popen([sys.executable, "-c", HOLD, wd], env=env(), stdout=subprocess.PIPE,
                          text=True)
  try:
    assert proc.stdout.readline().strip() == "held"
    assert workdir_busy(wd)
    with pytest.raises(WorkdirBusyError, match=f"pid {proc.pid} on "):
      with hold_workdir(wd):
        pass
  finally:
    proc.send_signal(signal.SIGKILL)  # no clean-up code runs: the kernel drops the lock
    proc.wait()
  assert not workdir_busy(wd)
  with hold_workdir(wd):
    assert open(os.path.join(wd, ".lock")).read() == f"pid {os.getpid()} on {os.uname()[1]}\n"
  assert not workdir_busy(wd)  # released on leaving the block


def test_training_a_held_workdir_raises_and_writes_nothing(tmp_path):
  wd = str(tmp_path / "run")
  config = load_config(os.path.join(ROOT, "configs", "quickstart.py:smoke"))
  with hold_workdir(wd):  # another open file description: flock refuses it, same process or not
    with pytest.raises(WorkdirBusyError, match="being trained by another process"):
      train_and_evaluate(config, wd)
  assert os.listdir(wd) == [".lock"]


def test_sweeps_skip_the_run_another_process_trains(tmp_path):
  root = tmp_path / "w"
  dense, bdwp = sweep.expand(os.path.join(ROOT, "configs", "quickstart.py:smoke"), str(root), {})
  assert sweep.startable(dense, {}, "") and sweep.startable(bdwp, {}, "")
  with hold_workdir(dense.workdir):
    assert not sweep.startable(dense, {}, "") and sweep.startable(bdwp, {}, "")
    # In-process sweep (--gpus 0): trains bdwp, leaves dense to its holder.
    proc = subprocess.run([sys.executable, "-m", "experiments.sweep", "--config",
                           "configs/quickstart.py:smoke", "--workdir_root", str(root)], cwd=ROOT,
                          env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "another process trains it" in proc.stderr
    assert os.path.exists(os.path.join(bdwp.workdir, "results.json"))
    assert os.listdir(dense.workdir) == [".lock"]
    summary = {line.split()[1]: line.split()[4] for line in proc.stdout.splitlines()
               if line.startswith("quickstart_digits_smoke ")}
    assert summary["dense"] == "missing" and summary["bdwp"] != "missing", proc.stdout
  # Once bdwp is finished, a subprocess sweep (--gpus N) skips it as finished and trains dense.
  results = tmp_path / "results"
  cwd = os.getcwd()
  os.chdir(ROOT)
  try:
    sweep.run_on_gpus([dense, bdwp], 1, {}, str(results))
  finally:
    os.chdir(cwd)
  assert os.listdir(results) == ["quickstart_digits_smoke_dense_s0.json"]
  with open(os.path.join(dense.workdir, "results.json")) as f:
    assert json.load(f)["method"] == "dense"
