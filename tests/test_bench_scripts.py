"""scripts/bench_kernels.py (one grid cell of a CI shape, Pallas interpreter) and
scripts/bench_report.py end to end on the CPU: the rows carry SPEC §3's keys and the report shows
them. The times mean nothing here; the GPU runs are in benchmarks/."""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
SPEC_KEYS = {"op", "shape", "pattern", "batch", "implementation", "device", "dense_ms", "ms",
             "ratio"}


def test_grid_cell_and_report(tmp_path):
  # One timed sample per op: the checks are on the rows' keys and ratio = dense / this, which hold
  # for a median of one sample as for one of 50 (3 cost 10% more of this test).
  env = {**os.environ, "BENCH_SAMPLES": "1",
         "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
  subprocess.run([sys.executable, "scripts/bench_kernels.py", "--smoke", "--cells",
                  "odd_24x56:2:8", "--max_rotate", "1", "--out", str(tmp_path / "gpu0")],
                 cwd=ROOT, env=env, check=True, capture_output=True, timeout=900)
  doc = json.loads((tmp_path / "gpu0" / "kernels.json").read_text())
  rows = doc["rows"]
  ops = {(r["op"], r["implementation"], r["batch"]) for r in rows}
  for batch in (8, 16, 4096, 16384):
    for impl in ("xla", "pallas"):
      assert ("layer_fwd_bwd", impl, batch) in ops and ("layer_fwd", impl, batch) in ops
  assert {("fwd_packed", "pallas", 8), ("bwd_data_packed", "pallas", 16)} <= ops
  assert {r["variant"] for r in rows if r["op"] == "prune_pack"} == {"packed", "masked"}
  for r in rows:
    assert SPEC_KEYS <= set(r), SPEC_KEYS - set(r)
    assert r["ms"] > 0 and abs(r["ratio"] - r["dense_ms"] / r["ms"]) < 1e-9
  assert doc["meta"]["max_rotate"] == 1 and not doc["meta"]["not_run"]
  out = tmp_path / "grid"
  subprocess.run([sys.executable, "scripts/bench_report.py", "--inputs",
                  str(tmp_path / "gpu*" / "kernels.json"), "--out", str(out)],
                 cwd=ROOT, check=True, capture_output=True, timeout=120)
  merged = json.loads(out.with_suffix(".json").read_text())
  assert len(merged["rows"]) == len(rows)
  md = out.with_suffix(".md").read_text()
  assert "| odd_24x56 | 24x56 | 2:8 |" in md and f"{len(rows)} rows from 1 processes" in md


def test_sptc_report_rows_follow_the_committed_measurements():
  """scripts/sptc_report.py: every kernel row has SPEC §3's keys and ratio = dense / this, the
  'incl.' rows charge half the compression, and each speed row's ratio is baseline / this step."""
  sys.path.insert(0, str(ROOT / "scripts"))
  try:
    import sptc_report  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.pop(0)
  gemm = json.loads((ROOT / "benchmarks" / "h200_sptc" / "gemm.json").read_text())
  rows = sptc_report.kernel_rows(gemm)
  assert len(rows) == 7 * len(gemm) and all(SPEC_KEYS <= set(r) for r in rows)
  for r in rows:
    assert abs(r["ratio"] - r["dense_ms"] / r["ms"]) < 1e-12
  first = gemm[0]
  incl = next(r for r in rows if r["op"] == "ff+compress/2" and r["batch"] == first["tokens"])
  assert abs(incl["ms"] - (first["spmm_ff_ms"] + first["own_compress_ms"] / 2)) < 1e-12
  speed = sptc_report.speed_rows()
  assert {(r["model"], r["pattern"], r["implementation"]) for r in speed} >= {
      ("vit_b16_224", "2:4", "sparse_tc"), ("vit_b16_224", "2:8", "sparse_tc"),
      ("vit_cifar10", "2:8", "auto"), ("resnet50_224", "2:4", "sparse_tc")}
  for r in speed:
    assert abs(r["ratio"] - r["dense_step_ms"] / r["sparse_step_ms"]) < 1e-12


def test_bimask_cost_rows(tmp_path):
  """scripts/bimask_cost.py end to end on a smoke config: both back-mappings give one mask, and the
  three train steps are timed (the times mean nothing here)."""
  env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
  out = tmp_path / "bimask.json"
  subprocess.run([sys.executable, "scripts/bimask_cost.py", "--config",
                  "configs/resnet9_cifar10.py:smoke", "--kernel", "3,3,8,16", "--pattern", "2:4",
                  "--batch", "2", "--steps", "1", "--repeats", "1", "--out", str(out)],
                 cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
  doc = json.loads(out.read_text())
  assert {"device", "jax_version", "git_sha"} <= set(doc["meta"])
  assert len(doc["masks"]) == 3 and all(r["same_mask"] and r["ms"] > 0 for r in doc["masks"])
  assert [(r["method"], r["bimask_search"], r["searches"]) for r in doc["steps"]] == [
      ("bdwp", "every_call", False), ("bimask", "every_call", True),
      ("bimask", "marked_calls", False)]
  assert all(r["step_ms"] > 0 for r in doc["steps"])


def test_seed_batch_probe_rows(tmp_path):
  """scripts/seed_batch_probe.py end to end on a smoke BDWP config: the step vmapped over two
  stacked states trains copy 0 as the unbatched step trains the one state, and each row's per-run
  time is its step time over K (the times mean nothing here; benchmarks/h200_seed_batch/ has the
  H200's)."""
  env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
  out = tmp_path / "probe.json"
  subprocess.run([sys.executable, "scripts/seed_batch_probe.py", "--config",
                  "configs/resnet9_cifar10.py:smoke", "--set", "method=bdwp", "--set",
                  "data.source=synthetic", "--set", "data.data_dir=", "--k", "1,2", "--steps", "2",
                  "--warmup", "1", "--out", str(out)],
                 cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
  doc = json.loads(out.read_text())
  assert {"device", "jax_version", "git_sha"} <= set(doc) and doc["method"] == "bdwp"
  assert [r["k"] for r in doc["rows"]] == [1, 2]
  for r in doc["rows"]:
    assert r["pipelined_step_ms"] > 0 and r["synced_step_ms"] > 0
    assert abs(r["pipelined_ms_per_run_step"] * r["k"] - r["pipelined_step_ms"]) < 1e-9
  assert doc["rows"][0]["speedup_vs_first"] == 1.0
  # copy 0 of the vmapped states trained on the K=1 run's batches: the same weights
  assert doc["rows"][1]["copy0_params_max_abs_diff"] < 1e-4


def test_count_fusions_rows(tmp_path):
  """scripts/count_fusions.py on a smoke config: one row per method, the fusions among the entry
  computation's instructions, the state's leaves counted."""
  env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
  out = tmp_path / "fusions.json"
  subprocess.run([sys.executable, "scripts/count_fusions.py", "--config",
                  "configs/resnet9_cifar10.py:smoke", "--methods", "dense,bdwp", "--out", str(out)],
                 cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
  doc = json.loads(out.read_text())
  assert {"device", "jax_version", "git_sha"} <= set(doc)
  assert [r["method"] for r in doc["rows"]] == ["dense", "bdwp"]
  for r in doc["rows"]:
    assert 0 < r["fusions"] <= r["entry_instructions"] and r["state_leaves"] > 0
