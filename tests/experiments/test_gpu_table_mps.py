"""scripts/gpu_table.sh's CUDA MPS daemon (on unless MPS=0): started with its pipe and log folders under
the table's state before the lanes, which then record gpu_mps; without the binary, or when it fails,
the lanes run as usual and the script says so."""

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.skipif(shutil.which("nvidia-cuda-mps-control") is not None,
                                reason="a real MPS daemon binary is installed: not started by tests")


def mps(tmp_path, fake_exit=None, **extra):
  """``gpu_table.sh mps`` with a fake ``nvidia-cuda-mps-control`` that logs its call and exits
  ``fake_exit`` (no fake: None); returns (stdout, the fake's log or None)."""
  state, fakebin = tmp_path / "state", tmp_path / "bin"
  os.makedirs(state / "results" / "runs", exist_ok=True)
  (state / "seeded").touch()
  os.makedirs(fakebin, exist_ok=True)
  log = tmp_path / "fake.log"
  if fake_exit is not None:
    (fakebin / "nvidia-cuda-mps-control").write_text(
        f'#!/bin/bash\necho "$@ $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY" > {log}\n'
        f"exit {fake_exit}\n")
    (fakebin / "nvidia-cuda-mps-control").chmod(0o755)
  env = {k: v for k, v in os.environ.items() if not k.startswith(("CUDA_MPS_", "NMS_GPU_MPS")) and k != "MPS"}
  env.update(PATH=f"{fakebin}{os.pathsep}{env['PATH']}", TABLE_STATE=str(state), **extra)
  proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "gpu_table.sh"), "mps"], env=env,
                        capture_output=True, text=True, cwd=ROOT, check=False)
  assert proc.returncode == 0, proc.stderr
  return proc.stdout, (log.read_text().strip() if log.exists() else None)


def test_mps_daemon_started_with_state_folders(tmp_path):
  out, call = mps(tmp_path, fake_exit=0, MPS="1")
  state = tmp_path / "state"
  assert "MPS: daemon started" in out
  assert call == f"-d {state}/mps/pipe {state}/mps/log"
  assert f"CUDA_MPS_PIPE_DIRECTORY={state}/mps/pipe" in out.splitlines()
  assert "NMS_GPU_MPS=1" in out.splitlines()
  assert os.path.isdir(state / "mps" / "pipe") and os.path.isdir(state / "mps" / "log")
  # what a lane started by a later call (finish ... SWEEP) sources, as start's lanes inherit it
  assert (state / "mps.env").read_text().split() == [
      "export", f"CUDA_MPS_PIPE_DIRECTORY={state}/mps/pipe",
      f"CUDA_MPS_LOG_DIRECTORY={state}/mps/log", "NMS_GPU_MPS=1"]


def test_mps_failure_or_absence_leaves_the_lanes_as_they_are(tmp_path):
  out, call = mps(tmp_path / "fails", fake_exit=1, MPS="1")
  assert "MPS: the daemon did not start" in out and call is not None
  assert "NMS_GPU_MPS" not in out and "CUDA_MPS_PIPE_DIRECTORY" not in out
  assert not (tmp_path / "fails" / "state" / "mps.env").exists()
  out, call = mps(tmp_path / "absent", MPS="1")
  assert "MPS: nvidia-cuda-mps-control not found" in out and call is None
  assert "NMS_GPU_MPS" not in out


def test_mps_is_on_by_default_and_MPS_0_turns_it_off(tmp_path):
  out, call = mps(tmp_path / "default", fake_exit=0)
  assert "MPS: daemon started" in out and call is not None
  out, call = mps(tmp_path / "off", fake_exit=0, MPS="0")
  assert call is None and "MPS" not in out
