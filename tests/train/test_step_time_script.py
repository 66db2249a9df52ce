"""scripts/step_time.py end to end on the CPU: one process, and the --processes path (two
jax.distributed processes joined over localhost with gloo collectives), then dp_report.py."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
COMMON = ["--config", "configs/quickstart.py", "--steps", "10", "--warmup", "1",
          "--without_data=false"]


def _env():
  """The repository's packages (``experiments``, ``configs``) importable by the script."""
  return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _run(args, tmp_path, name, timeout=600):
  out = tmp_path / f"{name}.json"
  proc = subprocess.run([sys.executable, "scripts/step_time.py", *COMMON, *args, f"--out={out}"],
                        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(out.read_text())


def test_single_process_rows_and_probes(tmp_path):
  rows = _run(["--num_devices=1", "--probes"], tmp_path, "single")
  (row,) = rows
  assert row["num_devices"] == 1 and row["global_batch"] == 64
  for key in ("step_ms_with_data", "pipelined_step_ms_with_data", "host_dispatch_ms",
              "no_sync_step_ms", "allreduce_ms"):
    assert row[key] > 0, key
  assert row["step_ms_without_data"] is None  # --without_data=false skipped it
  assert row["scaling_vs_first"] == 1.0 and row["param_bytes"] > 0
  assert row["mask_every"] == 1 and row["card_rule_override"] == {}


def test_row_records_the_mask_interval(tmp_path):
  (row,) = _run(["--num_devices=1", "--set", "mask_every=100"], tmp_path, "every100")
  assert row["mask_every"] == 100 and row["step_ms_with_data"] > 0


def test_row_records_a_card_rule_override(tmp_path):
  (row,) = _run(["--num_devices=1", "--set", "mask_every=100", "--card_rule",
                 "fused_mask_source=true"], tmp_path, "override")
  assert row["card_rule_override"] == {"fused_mask_source": True} and row["step_ms_with_data"] > 0
  out = tmp_path / "bad.json"
  proc = subprocess.run([sys.executable, "scripts/step_time.py", *COMMON, "--card_rule",
                         "no_such_field=1", f"--out={out}"], cwd=ROOT, env=_env(),
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode != 0 and "no field" in proc.stderr and not out.exists()


def test_processes_joins_two_processes(tmp_path):
  try:
    rows = _run(["--num_devices=1,2", "--processes=2"], tmp_path, "multi")
  except AssertionError as e:  # only a missing CPU collectives backend may excuse this
    if "gloo" in str(e).lower() and "not" in str(e).lower():
      pytest.skip(f"this jax has no gloo CPU collectives: {str(e)[-300:]}")
    raise
  one, two = rows
  assert one["num_devices"] == 1 and "processes" not in one
  assert two["num_devices"] == 2 and two["processes"] == 2 and two["local_devices"] == 1
  assert two["global_batch"] == 2 * one["global_batch"]
  assert two["pipelined_scaling_vs_first"] > 0
  report = tmp_path / "dp.md"
  subprocess.run([sys.executable, "scripts/dp_report.py", "--inputs", str(tmp_path / "multi.json"),
                  "--out", str(report)], cwd=ROOT, check=True, capture_output=True, timeout=120)
  assert report.read_text().count("| `multi.json` |") == 2
