"""scripts/speed.py end to end on the CPU: measure a smoke config, merge into json + markdown."""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _env():
  """The repository's packages (``experiments``, ``configs``) importable by the script."""
  return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_speed_measure_and_merge(tmp_path):
  per_model = tmp_path / "speed" / "resnet9.json"
  cmd = [sys.executable, "scripts/speed.py", "measure", "--config",
         "configs/resnet9_cifar10.py:smoke", "--set", "data.source=synthetic", "--steps", "2",
         "--warmup", "1", "--variants", "bdwp:2:8:xla", "--with_data", "--out", str(per_model)]
  subprocess.run(cmd, cwd=ROOT, env=_env(), check=True, capture_output=True, timeout=600)
  subprocess.run([sys.executable, "scripts/speed.py", "merge", "--inputs",
                  str(tmp_path / "speed" / "*.json"), "--out_dir", str(tmp_path)],
                 cwd=ROOT, env=_env(), check=True, capture_output=True, timeout=120)
  rows = json.loads((tmp_path / "speed.json").read_text())
  required = {"model", "method", "pattern", "implementation", "batch", "device", "dense_step_ms",
              "sparse_step_ms", "ratio"}
  assert len(rows) == 1 and required <= set(rows[0])
  row = rows[0]
  assert row["model"] == "resnet9" and row["pattern"] == "2:8" and row["implementation"] == "xla"
  assert row["dense_step_ms"] > 0 and row["sparse_step_ms"] > 0
  assert abs(row["ratio"] - row["dense_step_ms"] / row["sparse_step_ms"]) < 1e-9
  assert "| resnet9 |" in (tmp_path / "speed.md").read_text()
