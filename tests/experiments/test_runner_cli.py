"""The quickstart, sweep expansion and subprocess mode, and the report."""

import collections
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments import report, sweep
from nmsparse.train import run_name

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def env():
  return {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_quickstart_bdwp_within_two_points_of_dense(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "experiments.sweep", "--config",
                         "configs/quickstart.py", "--workdir_root", str(tmp_path)], cwd=ROOT,
                        env={**env(), "NMS_GPU_LANES": "3", "NMS_GPU_MPS": "1"},
                        capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  acc = {}
  for method, tag in (("dense", "dense"), ("bdwp", "bdwp_2x4")):
    with open(tmp_path / "quickstart_digits" / tag / "seed0" / "results.json") as f:
      result = json.load(f)
    assert result["dataset"] == "digits" and result["method"] == method
    assert result["gpu_lanes"] == 3  # the launcher's lane count, for the report's GPU time
    assert result["gpu_mps"] is True  # the lanes ran under CUDA MPS
    assert result.get("xla_flags") == (os.environ.get("XLA_FLAGS", "").strip() or None)
    acc[method] = result["test_accuracy"]
  assert acc["dense"] > 0.9, acc
  assert acc["bdwp"] >= acc["dense"] - 0.02, acc
  assert "quickstart_digits" in proc.stdout and f"{acc['bdwp']:.4f}" in proc.stdout


def test_issue5_sweep_expansion():
  runs = sweep.expand(os.path.join(ROOT, "configs", "resnet18_cifar10.py"), "/w", {})
  got = sorted((r.method, r.pattern, r.seed) for r in runs)
  assert got == sorted([("dense", None, 0), ("dense", None, 1), ("bdwp", "2:8", 0),
                        ("bdwp", "2:8", 1), ("srste", "2:8", 0), ("bimask", "2:8", 0),
                        ("bdwp", "1:4", 0), ("bdwp", "2:4", 0), ("bdwp", "4:8", 0),
                        ("bdwp", "1:8", 0)])
  assert len({r.workdir for r in runs}) == len(runs)
  total = sum(len(sweep.expand(os.path.join(ROOT, "configs", f"{m}_cifar10.py"), "/w", {}))
              for m in ("resnet9", "vgg19", "resnet18", "resnet50", "vit"))
  assert total == 28


def test_overrides_reach_subprocess_flags():
  spec = sweep.expand(os.path.join(ROOT, "configs", "vit_cifar10.py"), "/w", {})[1]
  cmd = sweep.command(spec, {"epochs": "3"}, "results/runs")
  assert "--config.epochs=3" in cmd and f"--config.method={spec.method}" in cmd
  with pytest.raises(KeyError, match="no field"):
    sweep.apply_overrides(sweep.load_config(os.path.join(ROOT, "configs", "vit_cifar10.py")),
                          {"epoch": 3})


def test_one_subprocess_per_gpu(tmp_path):
  runs = sweep.expand(os.path.join(ROOT, "configs", "quickstart.py:smoke"), str(tmp_path), {})
  cwd = os.getcwd()
  os.chdir(ROOT)
  try:
    sweep.run_on_gpus(runs, 2, {}, str(tmp_path / "results"))
  finally:
    os.chdir(cwd)
  assert sorted(os.listdir(tmp_path / "results")) == ["quickstart_digits_smoke_bdwp_2x4_s0.json",
                                                      "quickstart_digits_smoke_dense_s0.json"]
  assert "bdwp" in sweep.summarize(runs)


def write_runs(runs, fixtures):
  """``fixtures`` as ``runs/<i>.json`` run files (the folder made if missing); returns ``runs``."""
  os.makedirs(runs, exist_ok=True)
  for i, r in enumerate(fixtures):
    with open(os.path.join(runs, f"{i}.json"), "w") as f:
      json.dump(r, f)
  return runs


def fixture_result(name, model, method, pattern, seed, acc):
  history = [{"epoch": e, "train_accuracy": acc * e / 3, "test_accuracy": acc * e / 3}
             for e in (1, 2, 3)]
  return {"model": model, "dataset": "cifar10", "method": method, "pattern": pattern,
          "seed": seed, "epochs": 3, "test_accuracy": acc, "device": "fixture", "git_sha": "x",
          "jax_version": "0", "wall_time_s": 1.0, "history": history, "config": {"name": name}}


def test_sweep_counts_a_committed_result_as_finished_and_checks_it(tmp_path):
  dense, bdwp = sweep.expand(os.path.join(ROOT, "configs", "quickstart.py:smoke"),
                             str(tmp_path / "w"), {})
  results = tmp_path / "results"
  os.makedirs(results)
  assert not sweep.finished(dense, {}, str(results))
  config = json.loads(sweep.run_config(dense, {}, str(results)).to_json_best_effort())
  path = results / "quickstart_digits_smoke_dense_s0.json"
  with open(path, "w") as f:
    json.dump({"test_accuracy": 0.5, "config": config}, f)
  assert sweep.finished(dense, {}, str(results)) and not sweep.finished(bdwp, {}, str(results))
  assert not sweep.finished(dense, {}, "")  # only --results_dir is consulted
  sweep.preflight([dense, bdwp], {}, str(results))
  assert "0.5000" in sweep.summarize([dense, bdwp], {}, str(results))
  with open(path, "w") as f:
    json.dump({"test_accuracy": 0.5, "config": {**config, "epochs": config["epochs"] + 1}}, f)
  with pytest.raises(ValueError, match=r"1 of 2 runs cannot run:\n.*dense.*records another run "
                                       r"\(epochs differ\)"):
    sweep.preflight([dense, bdwp], {}, str(results))


def test_report_renders_table_and_plots(tmp_path):
  runs = tmp_path / "runs"
  os.makedirs(runs / "nested")
  fixtures = [fixture_result("r18", "resnet18", "dense", None, 0, 0.90),
              fixture_result("r18", "resnet18", "dense", None, 1, 0.92),
              fixture_result("r18", "resnet18", "bdwp", "2:8", 0, 0.89),
              fixture_result("r18", "resnet18", "bdwp", "2:8", 1, 0.90),
              fixture_result("r18", "resnet18", "bdwp", "2:4", 0, 0.915)]
  write_runs(runs, fixtures[:4])
  with open(runs / "nested" / "list.json", "w") as f:
    json.dump([fixtures[4]], f)
  with open(runs / "not_a_run.json", "w") as f:
    json.dump({"hello": 1}, f)
  written = report.write_report(str(runs), str(tmp_path / "out"))
  md = open(tmp_path / "out" / "accuracy.md").read()
  bdwp28 = [l for l in md.splitlines() if "| cifar10 | bdwp | 2:8 |" in l]  # the main table's
  assert len(bdwp28) == 1
  assert f"{np.mean([89.0, 90.0]):.2f} ± {np.std([89.0, 90.0], ddof=1):.2f}" in bdwp28[0]
  assert "| -1.50 |" in bdwp28[0]  # 89.5 - 91.0
  assert "| +0.50 |" in [l for l in md.splitlines() if "| cifar10 | bdwp | 2:4 |" in l][0]
  pngs = [p for p in written if p.endswith(".png")]
  assert len(pngs) == 2
  for p in pngs:
    with open(p, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_ratio_plot_series_per_schedule_family():
  def run(name, method, pattern, seed, acc, **config):
    r = fixture_result(name, "resnet18", method, pattern, seed, acc)
    return {**r, "config": {**r["config"], **config}}
  results = [run("a", "dense", None, 0, 0.90), run("a", "dense", None, 1, 0.92),
             run("a", "bdwp", "2:8", 0, 0.88), run("a", "bdwp", "2:8", 1, 0.90),
             run("a", "bdwp", "2:4", 0, 0.91), run("a", "srste", "2:8", 0, 0.87),
             run("a_full", "dense", None, 0, 0.95),
             run("a_full", "bdwp", "2:8", 0, 0.94, mask_every=1),
             run("a_full", "bdwp", "2:8", 0, 0.93, mask_every=10)]
  series = report.ratio_series(report.group_runs(results))
  assert sorted(series) == ["full", "short"]
  short = {s.method: s for s in series["short"]}
  assert short["bdwp"].line and short["bdwp"].patterns == ["2:8", "2:4", "dense"]
  assert short["bdwp"].xs == [0.25, 0.5, 1.0] and short["bdwp"].config == "a"
  np.testing.assert_allclose(short["bdwp"].ys, [89.0, 91.0, 91.0])
  np.testing.assert_allclose(short["bdwp"].errs, [np.std([88, 90], ddof=1), 0.0,
                                                  np.std([90, 92], ddof=1)])
  assert not short["srste"].line and short["srste"].patterns == ["2:8"]  # a point, not a line
  full = sorted(series["full"], key=lambda s: s.ys[0])
  assert [(s.method, s.line, s.ys) for s in full] == [("bdwp", False, [93.0]),
                                                      ("bdwp", False, [94.0])]
  assert [s.note for s in full] == ["[mask_every=10]", "[mask_every=1]"]
  assert {s.config for s in full} == {"a_full"}


def test_report_counts_a_config_once_and_reports_mask_intervals_apart(tmp_path):
  def run(method, pattern, seed, acc, every=None):
    r = fixture_result("r_full", "resnet18", method, pattern, seed, acc)
    return {**r, "config": {**r["config"], **({} if every is None else {"mask_every": every})}}
  fixtures = [run("dense", None, 0, 0.95), run("dense", None, 1, 0.96),
              run("bdwp", "2:8", 0, 0.94, 1), run("bdwp", "2:8", 1, 0.95, 1),
              run("bdwp", "2:8", 0, 0.93, 10), run("bdwp", "2:8", 0, 0.90, 100)]
  runs = write_runs(tmp_path / "runs", fixtures)
  report.write_report(str(runs), str(tmp_path / "out"))
  md = open(tmp_path / "out" / "accuracy.md").read()
  # The summary counts r_full once, with its every-step cell (94.5 - 95.5), not three times.
  assert "Mean gap over 1 configs: **-1.00 ± 0.71 pts** (± its seed noise)" in md
  ablation = md[md.index("## Mask interval ablation"):]
  noise = np.sqrt(0.5 / 1 + 0.5 / 2)  # the pooled variance of dense and every step: both 0.5
  assert f"| r_full | bdwp | 2:8 | 10 | 93.00 | 1 | -1.50 | {noise:.2f} | -2.50 |" in ablation
  assert f"| r_full | bdwp | 2:8 | 100 | 90.00 | 1 | -4.50 | {noise:.2f} | -5.50 |" in ablation


def test_report_ratio_ablation_compares_patterns_of_equal_density(tmp_path):
  def run(name, method, pattern, seed, acc, every=1):
    r = fixture_result(name, "resnet18", method, pattern, seed, acc)
    return {**r, "config": {**r["config"], "mask_every": every}}
  fixtures = [run("q_full", "dense", None, 0, 0.95), run("q_full", "dense", None, 1, 0.97),
              run("q_full", "bdwp", "2:4", 0, 0.94), run("q_full", "bdwp", "2:4", 1, 0.96),
              run("q_full", "bdwp", "4:8", 0, 0.92),
              run("q_full", "bdwp", "2:8", 0, 0.93), run("q_full", "bdwp", "2:8", 1, 0.95),
              run("q_full", "bdwp", "2:8", 0, 0.80, every=10),  # an interval cell: not a ratio
              run("one_full", "dense", None, 0, 0.9), run("one_full", "bdwp", "2:8", 0, 0.9)]
  runs = write_runs(tmp_path / "runs", fixtures)
  report.write_report(str(runs), str(tmp_path / "out"))
  md = open(tmp_path / "out" / "accuracy.md").read()
  table = md[md.index("## N:M ratio ablation"):md.index("## Mask interval ablation")]
  rows = [line for line in table.splitlines() if line.startswith("| q_full")]
  assert len(rows) == 3 and "one_full" not in table  # one pattern is no ratio sweep
  assert [row.split(" | ")[2] for row in rows] == ["2:4", "4:8", "2:8"]  # densest first
  # every cell of q_full has variance 2 (two seeds 2 points apart), pooled 2 for the one seed
  two = np.sqrt(2 / 2 + 2 / 2)
  one = np.sqrt(2 / 1 + 2 / 2)
  assert f"| q_full [mask_every=1] | bdwp | 2:4 | 0.5 | 95.00 ± 1.41 | 2 | -1.00 | {two:.2f} | " \
         f"+3.00 ± {one:.2f} vs 4:8 |" in rows[0]
  assert f"| 4:8 | 0.5 | 92.00 | 1 | -4.00 | {one:.2f} | -3.00 ± {one:.2f} vs 2:4 |" in rows[1]
  assert rows[2].endswith(f"| 0.25 | 94.00 ± 1.41 | 2 | -2.00 | {two:.2f} | – |")


def test_one_seed_noise_pools_the_configs_cells_not_one_neighbour(tmp_path):
  a, b, one = np.array([90.0, 91.0, 92.0]), np.array([89.0, 89.2]), np.array([88.0])
  assert report.difference_noise(one, a) == pytest.approx(np.sqrt(1.0 / 1 + 1.0 / 3))
  assert report.difference_noise(one, a, pooled=0.25) == pytest.approx(np.sqrt(0.25 + 1.0 / 3))
  assert report.difference_noise(one, np.array([87.0])) is None
  assert report.difference_noise(one, np.array([87.0]), pooled=0.5) == pytest.approx(1.0)
  # Through the report: dense is loose (var 4, 3 seeds), bdwp tight (var 0.02, 2 seeds), so the
  # one-seed interval cell gets (2 * 4 + 1 * 0.02) / 3, not bdwp's 0.02.
  def run(method, pattern, seed, acc, every=1):
    r = fixture_result("p_full", "resnet18", method, pattern, seed, acc)
    return {**r, "config": {**r["config"], "mask_every": every}}
  fixtures = [run("dense", None, 0, 0.90), run("dense", None, 1, 0.92), run("dense", None, 2, 0.94),
              run("bdwp", "2:8", 0, 0.930), run("bdwp", "2:8", 1, 0.932),
              run("bdwp", "2:8", 0, 0.925, every=10)]
  runs = write_runs(tmp_path / "runs", fixtures)
  report.write_report(str(runs), str(tmp_path / "out"))
  md = open(tmp_path / "out" / "accuracy.md").read()
  pooled = (2 * 4.0 + 1 * np.var([93.0, 93.2], ddof=1)) / 3
  noise = np.sqrt(pooled / 1 + np.var([93.0, 93.2], ddof=1) / 2)
  assert noise > 1.0  # bdwp's own spread alone would have given 0.17
  assert f"| 10 | 92.50 | 1 | -0.60 | {noise:.2f} | +0.50 |" in md


def test_report_summary_and_not_run(tmp_path):
  runs = tmp_path / "runs"
  os.makedirs(runs)
  fixtures = [fixture_result("a", "resnet18", "dense", None, 0, 0.90),
              fixture_result("a", "resnet18", "bdwp", "2:8", 0, 0.88),
              fixture_result("a", "resnet18", "srste", "2:8", 0, 0.87),
              fixture_result("b", "vgg19", "dense", None, 0, 0.80),
              fixture_result("b", "vgg19", "bdwp", "2:8", 0, 0.81)]
  write_runs(runs, fixtures)
  report.write_report(str(runs), str(tmp_path / "out"), not_run=["c_cifar100=no data here"])
  md = open(tmp_path / "out" / "accuracy.md").read()
  assert "- c_cifar100: no data here" in md
  # (-2 + 1) / 2; one seed everywhere: no variance to give any gap a noise
  assert "Mean gap over 2 configs: **-0.50 pts**; worst: a -2.00 pts" in md
  assert "| a | -2.00 | – | 1 | 1 | +1.00 | – |" in md
  assert "| b | +1.00 | – | 1 | 1 | – | – |" in md


def test_report_lists_the_planned_runs_without_a_result(tmp_path):
  """--planned: ResNet9 :full plans issue 14's 8 runs (dense and bdwp x 3 seeds, srste and bimask x
  1); with one of their committed results copied, the other 7 are listed as not yet run."""
  import shutil  # pylint: disable=g-import-not-at-top
  config = os.path.join(ROOT, "configs", "resnet9_cifar10.py:full")
  committed = os.path.join(ROOT, "results", "runs")
  total, missing = report.planned_runs([config], committed)
  assert (total, missing) == (8, [])
  runs = tmp_path / "runs"
  os.makedirs(runs)
  shutil.copy(os.path.join(committed, "resnet9_cifar10_full_bdwp_2x8_s1.json"), runs)
  total, missing = report.planned_runs([config], str(runs))
  assert total == 8 and len(missing) == 7 and "resnet9_cifar10_full bdwp 2:8 seed 1" not in missing
  assert "resnet9_cifar10_full bdwp 2:8 seed 0" in missing
  assert "resnet9_cifar10_full bimask 2:8 seed 0" in missing
  report.write_report(str(runs), str(tmp_path / "out"), planned=[config])
  md = open(tmp_path / "out" / "accuracy.md").read()
  assert "8 runs, 1 with a result here; not yet run (7):" in md
  assert "- resnet9_cifar10_full dense - seed 2" in md


def test_summary_gives_each_gap_and_the_mean_gap_their_noise_and_the_bimask_gap(tmp_path):
  def run(config, method, pattern, seed, acc):
    return fixture_result(config, "resnet18", method, pattern, seed, acc)
  fixtures = [run("x_full", "dense", None, s, a) for s, a in enumerate((0.90, 0.91, 0.92))]
  fixtures += [run("x_full", "bdwp", "2:8", s, a) for s, a in enumerate((0.89, 0.90))]
  fixtures += [run("x_full", "bimask", "2:8", 0, 0.88)]
  fixtures += [run("y_full", "dense", None, s, a) for s, a in enumerate((0.80, 0.82))]
  fixtures += [run("y_full", "bdwp", "2:8", s, a) for s, a in enumerate((0.81, 0.815))]
  runs = write_runs(tmp_path / "runs", fixtures)
  report.write_report(str(runs), str(tmp_path / "out"))
  md = open(tmp_path / "out" / "accuracy.md").read()
  md = md[md.index("## Summary: bdwp 2:8 vs dense"):]
  nx = np.sqrt(np.var([89.0, 90.0], ddof=1) / 2 + np.var([90.0, 91.0, 92.0], ddof=1) / 3)
  ny = np.sqrt(np.var([81.0, 81.5], ddof=1) / 2 + np.var([80.0, 82.0], ddof=1) / 2)
  mean_gap, mean_noise = (-1.5 + 0.25) / 2, np.sqrt(nx ** 2 + ny ** 2) / 2
  assert f"**{mean_gap:+.2f} ± {mean_noise:.2f} pts** (± its seed noise)" in md
  assert f"| x_full | -1.50 | {nx:.2f} | 2 | 3 | – | +1.50 |" in md  # 89.5 - 88 for bimask
  assert f"| y_full | +0.25 | {ny:.2f} | 2 | 2 | – | – |" in md


def test_report_summarises_schedule_families_apart_and_marks_shared_gpus(tmp_path):
  runs = tmp_path / "runs"
  os.makedirs(runs)
  fixtures = [fixture_result("a", "resnet18", "dense", None, 0, 0.90),
              fixture_result("a", "resnet18", "bdwp", "2:8", 0, 0.88),
              {**fixture_result("a_full", "resnet18", "dense", None, 0, 0.95), "gpu_lanes": 2},
              fixture_result("a_full", "resnet18", "bdwp", "2:8", 0, 0.94)]
  write_runs(runs, fixtures)
  report.write_report(str(runs), str(tmp_path / "out"))
  md = open(tmp_path / "out" / "accuracy.md").read()
  full = md.index("## Summary: bdwp 2:8 vs dense (full schedules)")
  short = md.index("## Summary: bdwp 2:8 vs dense (short schedules)")
  assert "Mean gap over 1 configs: **-1.00 pts**" in md[full:short]
  assert "Mean gap over 1 configs: **-2.00 pts**" in md[short:]
  rows = {l.split(" | ")[3]: l for l in md.splitlines() if l.startswith("| a_full |")}
  assert f"| 0.00{report.SHARED} |" in rows["dense"] and report.SHARED not in rows["bdwp"]
  assert f"\n{report.SHARED} Some of the cell's runs shared their GPU" in md


def test_set_without_equals_is_a_usage_error():
  from absl import app
  assert sweep.parse_sets(["epochs=3", "data.data_dir=a=b"]) == {"epochs": "3",
                                                                 "data.data_dir": "a=b"}
  with pytest.raises(app.UsageError, match="--set 'epochs': expected key=value"):
    sweep.parse_sets(["epochs"])


def test_sweep_checks_every_run_before_starting_any(tmp_path):
  runs = sweep.expand(os.path.join(ROOT, "configs", "quickstart.py:smoke"), str(tmp_path), {})
  bad = runs[1]
  os.makedirs(bad.workdir)
  with open(os.path.join(bad.workdir, "config.json"), "w") as f:
    json.dump({**json.loads(sweep.run_config(bad, {}, "").to_json_best_effort()), "seed": 7}, f)
  with pytest.raises(ValueError, match=r"1 of 2 runs cannot run:\n.*bdwp 2:4 seed 0.*seed: 7 -> 0"):
    sweep.preflight(runs, {}, "")
  with pytest.raises(ValueError, match=r"(?s)2 of 2 runs cannot run.*batch_size=0"):
    sweep.preflight(runs, {"batch_size": 0}, "")
  proc = subprocess.run([sys.executable, "-m", "experiments.sweep", "--config",
                         "configs/quickstart.py:smoke", "--workdir_root", str(tmp_path)],
                        cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0 and "Not starting the sweep" in proc.stderr
  assert not os.path.exists(runs[0].workdir)  # the good run did not start


def test_report_separates_unlike_runs_and_flags_duplicates(tmp_path):
  runs = tmp_path / "runs"
  os.makedirs(runs)
  fixtures = [fixture_result("r", "resnet18", "dense", None, 0, 0.90),
              fixture_result("r", "resnet18", "bdwp", "2:8", 0, 0.88),
              {**fixture_result("r", "resnet18", "bdwp", "2:8", 1, 0.70), "epochs": 1},
              {**fixture_result("r", "resnet18", "bdwp", "2:8", 0, 0.50), "dataset": "cifar100"},
              fixture_result("r", "resnet18", "bdwp", "2:8", 0, 0.10)]  # seed 0 again
  write_runs(runs, fixtures)
  report.write_report(str(runs), str(tmp_path / "out"))
  md = open(tmp_path / "out" / "accuracy.md").read()
  rows = [l for l in md.splitlines() if "| bdwp | 2:8 |" in l]
  assert len(rows) == 3, rows  # epochs 3 (cifar10), epochs 1, cifar100: never averaged together
  main = [l for l in rows if "| cifar10 |" in l and "| 3 |" in l]
  assert len(main) == 1 and "| 88.00 | -2.00 |" in main[0]  # the duplicate is not counted
  assert any("epochs=1]" in l for l in rows)
  assert any('dataset="cifar100"' in l and "| – |" in l for l in rows)  # no cifar100 dense run
  assert "Duplicates" in md and "4.json" in md and "duplicates" in md and "1.json" in md


def test_report_run_times_per_cell(tmp_path):
  def run(method, pattern, seed, wall, epoch_times, train_acc, **extra):
    r = fixture_result("t", "resnet18", method, pattern, seed, 0.9)
    for h, t in zip(r["history"], epoch_times):
      h["epoch_time_s"] = t
    r["history"][-1]["train_accuracy"] = train_acc
    return {**r, "wall_time_s": wall, **extra}

  fixtures = [run("dense", None, 0, 100.0, [3.0, 1.0, 2.0], 0.98, gpu_lanes=2, gpu_mps=True),
              run("dense", None, 1, 150.4, [2.5, 2.5, 9.0], 0.99, gpu_lanes=2, gpu_mps=True),
              run("bdwp", "2:8", 0, 80.0, [1.5, 1.5, 1.5], 0.97),
              run("bdwp", "2:8", 1, 90.0, [1.0, 1.5, 1.25], 0.96, gpu_lanes=2, gpu_mps=True),
              fixture_result("t", "resnet18", "srste", "2:8", 0, 0.9)]  # no epoch times
  write_runs(tmp_path / "runs", fixtures)
  report.write_report(str(tmp_path / "runs"), str(tmp_path / "out"))
  md = open(tmp_path / "out" / "accuracy.md").read()
  table = md[md.index("## Run times"):]
  rows = [l for l in table.splitlines() if l.startswith("| t |")]
  # wall time range, median epoch range (2.0 and 2.5; 1.5 and 1.25), final train accuracy range
  assert rows == ["| t | dense | – | 2 | 100-150 | 2.00-2.50 | 98.00-99.00 | 2 | yes |",
                  "| t | bdwp | 2:8 | 2 | 80-90 | 1.25-1.50 | 96.00-97.00 | 1,2 | some |"]


def test_report_noise_comparisons_gpu_time_and_flip_curves(tmp_path):
  runs = tmp_path / "runs"
  os.makedirs(runs)

  def run(method, pattern, seed, acc, flips, **config):
    r = fixture_result("r", "resnet18", method, pattern, seed, acc)
    for h, f in zip(r["history"], flips):
      h["mask_flip_fraction"] = f
    return {**r, "wall_time_s": 1800.0, "config": {"name": "r", "method": method,
                                                   "pattern": pattern, **config}}

  fixtures = [run("dense", None, 0, 0.90, []), run("dense", None, 1, 0.92, []),
              run("bdwp", "2:8", 0, 0.89, [0.1, 0.01, 0.001]),
              run("bdwp", "2:8", 1, 0.91, [0.1, 0.02, 0.002]),
              run("srste", "2:8", 0, 0.88, [0.2, 0.02, 0.002]),
              run("bimask", "2:8", 0, 0.85, [0.3, 0.03, 0.003], bimask_candidates=10,
                  bimask_refresh=100),
              run("bimask", "2:8", 1, 0.87, [0.3, 0.03, 0.003], bimask_candidates=10,
                  bimask_refresh=100)]
  write_runs(runs, fixtures)
  written = report.write_report(str(runs), str(tmp_path / "out"))
  md = open(tmp_path / "out" / "accuracy.md").read()
  bdwp = [l for l in md.splitlines() if l.startswith("| r | resnet18 | cifar10 | bdwp |")][0]
  noise = np.sqrt(np.var([89.0, 91.0], ddof=1) / 2 + np.var([90.0, 92.0], ddof=1) / 2)
  assert f"| 90.00 ± 1.41 | -1.00 | {noise:.2f} | 1.00 |" in bdwp  # two 1800 s runs = 1 h
  assert "Total GPU time: 3.50 h." in md
  var = np.var([89.0, 91.0], ddof=1)
  srste_noise = np.sqrt(var / 2 + var / 1)  # the one srste seed: pooled variance, 2 in each cell
  bimask_noise = np.sqrt(np.var([89.0, 91.0], ddof=1) / 2 + np.var([85.0, 87.0], ddof=1) / 2)
  row = [l for l in md.splitlines() if l.startswith("| r | 2:8 | 90.00 ± 1.41 |")][0]
  assert row == (f"| r | 2:8 | 90.00 ± 1.41 | 88.00 | 86.00 ± 1.41 | +2.00 | {srste_noise:.2f} | "
                 f"+4.00 | {bimask_noise:.2f} |")
  curves = report.flip_curves(fixtures)
  assert curves["bdwp 2:8"] == ([1, 2, 3], [0.1, 0.015, 0.0015])
  assert set(curves) == {"bdwp 2:8", "srste 2:8", "bimask 2:8"}
  flips = tmp_path / "out" / "flips_r.png"
  assert str(flips) in written and open(flips, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_issue14_full_sweep_lists_exactly_its_runs():
  runs = {m: sweep.expand(os.path.join(ROOT, "configs", f"{m}_cifar10.py:full"), "/w", {})
          for m in ("resnet9", "resnet18", "resnet50", "vgg19", "vit")}
  cells = lambda rs: collections.Counter((r.method, r.pattern, r.mask_every) for r in rs)
  table = {("dense", None, None): 3, ("bdwp", "2:8", None): 3}
  ratio = {("bdwp", p, None): 2 for p in ("1:4", "2:4", "4:8", "1:8")}
  for m in ("resnet9", "resnet50", "vgg19"):
    assert cells(runs[m]) == {**table, ("srste", "2:8", None): 1, ("bimask", "2:8", None): 1}
  baselines = {("srste", "2:8", None): 3, ("bimask", "2:8", None): 3}
  assert cells(runs["vit"]) == {**table, **baselines, **ratio}
  assert cells(runs["resnet18"]) == {**table, **baselines, **ratio, ("bdwp", "2:8", 10): 1,
                                     ("bdwp", "2:8", 100): 1}
  every = [r for r in runs["resnet18"] if r.mask_every == 10][0]
  assert every.workdir == "/w/resnet18_cifar10_full/bdwp_2x8_every10/seed0"
  assert every.overrides()["mask_every"] == 10
  assert sum(map(len, runs.values())) == 66
  # Each of the 66 runs has its own results file: a mask_every run sharing the plain bdwp 2:8
  # run's file would count as finished once that one is, or fail the sweep's preflight.
  names = [run_name(sweep.run_config(r, {}, "")) for rs in runs.values() for r in rs]
  assert len(set(names)) == 66
  assert run_name(sweep.run_config(every, {}, "")) == "resnet18_cifar10_full_bdwp_2x8_every10_s0"


def test_a_mask_every_run_is_not_finished_by_the_plain_runs_result(tmp_path):
  runs = sweep.expand(os.path.join(ROOT, "configs", "resnet18_cifar10.py:full"), str(tmp_path), {})
  plain = next(r for r in runs if (r.method, r.pattern, r.seed, r.mask_every) == ("bdwp", "2:8", 0,
                                                                                    None))
  every = next(r for r in runs if r.mask_every == 100)
  config = json.loads(sweep.run_config(plain, {}, str(tmp_path)).to_json_best_effort())
  with open(tmp_path / f"{run_name(sweep.run_config(plain, {}, ''))}.json", "w") as f:
    json.dump({"test_accuracy": 0.95, "config": config}, f)
  assert sweep.finished(plain, {}, str(tmp_path)) and not sweep.finished(every, {}, str(tmp_path))
  sweep.check_recorded(every, {}, str(tmp_path))  # no other run's file stands for it
