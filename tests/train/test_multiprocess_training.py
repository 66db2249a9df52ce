"""Data-parallel training as two processes (scripts/launch_local.sh, jax.distributed over localhost,
gloo collectives on the CPU): both join, train together, and only process 0 writes the results."""

import json
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_two_processes_train_one_run(tmp_path):
  workdir = tmp_path / "run"
  proc = subprocess.run(
      ["bash", "scripts/launch_local.sh", "2", "python", "-m", "experiments.main", "--config",
       "configs/quickstart.py", "--workdir", str(workdir), "--config.epochs=2"],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for i in (0, 1):
    assert f"jax.distributed: process {i} of 2, 1 local / 2 global devices" in proc.stderr
  results = json.loads((workdir / "results.json").read_text())
  assert results["device"] == "cpu x2" and results["epochs"] == 2
  assert results["test_accuracy"] > 0.5  # digits after 2 epochs: ~0.93 measured
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["epoch"] for line in lines] == [1, 2]  # written once, by process 0
  steps = 2 * (1437 // 64)  # the digits training split, global batch 64 over both processes
  assert (workdir / "checkpoints" / str(steps)).is_dir()
