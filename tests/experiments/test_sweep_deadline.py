"""``experiments.sweep --deadline``: a run starts only if its estimated time, from the runs recorded
in ``--results_dir``, ends before the deadline; the estimate takes the closest recorded runs (same
method, pattern and mask interval; else method; else config, scaled by the method's step-time ratio
on other configs, those on the same GPU where there are any), the slowest of them, those sharing
the GPU as this lane does first, and counts only the steps a resumed run has left; a dry run prints
each run's estimate."""

import json
import os
import subprocess
import sys
import time

import pytest

from experiments import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
R18 = os.path.join(ROOT, "configs", "resnet18_cifar10.py:full")


def record(results, config, method, pattern, seed, wall, steps=1000, lanes=1, every=1, mps=None,
           device=None):
  """A recorded run's JSON, with the fields the estimate reads, under a name of its own."""
  tag = method if pattern is None else f"{method}_{pattern.replace(':', 'x')}"
  name = f"{config}_{tag}{'' if every == 1 else f'_every{every}'}_s{seed}"
  os.makedirs(results, exist_ok=True)
  with open(os.path.join(results, name + ".json"), "w") as f:
    json.dump({"name": name, "method": method, "pattern": pattern, "seed": seed, "steps": steps,
               "wall_time_s": wall, "gpu_lanes": lanes,
               "config": {"name": config, "mask_every": every},
               **({} if mps is None else {"gpu_mps": mps}),
               **({} if device is None else {"device": device})}, f)


def spec(tmp_path, method, pattern, every=None, seed=0):
  tag = method if pattern is None else f"{method}_{pattern.replace(':', 'x')}"
  return sweep.RunSpec(R18, "resnet18_cifar10_full", method, pattern, seed,
                       str(tmp_path / "runs" / tag / f"seed{seed}"), every)


def test_the_closest_recorded_runs_set_the_estimate(tmp_path):
  results = str(tmp_path / "results")
  record(results, "resnet18_cifar10_full", "bdwp", "2:8", 0, 500.0)
  record(results, "resnet18_cifar10_full", "bdwp", "2:8", 1, 600.0)  # the slowest of the cell
  record(results, "resnet18_cifar10_full", "bdwp", "2:8", 0, 900.0, every=10)
  record(results, "resnet18_cifar10_full", "dense", None, 0, 400.0)
  record(results, "vgg19_cifar10_full", "bdwp", "2:8", 0, 5000.0)  # another config: never used
  seconds, source = sweep.estimate(spec(tmp_path, "bdwp", "2:8"), results)
  assert seconds == pytest.approx(600.0) and "of its method, pattern and mask interval" in source
  seconds, _ = sweep.estimate(spec(tmp_path, "bdwp", "2:8", every=10), results)
  assert seconds == pytest.approx(900.0)  # the interval run is its own cell
  seconds, source = sweep.estimate(spec(tmp_path, "bdwp", "1:4"), results)
  assert seconds == pytest.approx(900.0) and "of its method (" in source  # any bdwp run
  seconds, source = sweep.estimate(spec(tmp_path, "bdwp", "2:8"), str(tmp_path / "none"))
  assert seconds is None and "no run of resnet18_cifar10_full recorded" in source


def test_runs_sharing_the_gpu_as_this_lane_does_come_first(tmp_path):
  results = str(tmp_path / "results")
  record(results, "resnet18_cifar10_full", "dense", None, 0, 300.0, lanes=1)
  record(results, "resnet18_cifar10_full", "dense", None, 1, 500.0, lanes=2)
  assert sweep.estimate(spec(tmp_path, "dense", None), results, lanes=2)[0] == pytest.approx(500.0)
  assert sweep.estimate(spec(tmp_path, "dense", None), results, lanes=1)[0] == pytest.approx(300.0)
  # no run recorded with 3 lanes: all of them count, the slowest sets it
  assert sweep.estimate(spec(tmp_path, "dense", None), results, lanes=3)[0] == pytest.approx(500.0)
  # two lanes under MPS: those runs first; without MPS, those without (500 s, recorded without)
  record(results, "resnet18_cifar10_full", "dense", None, 2, 450.0, lanes=2, mps=True)
  assert sweep.estimate(spec(tmp_path, "dense", None), results, 2, mps=True)[0] == 450.0
  assert sweep.estimate(spec(tmp_path, "dense", None), results, 2, mps=False)[0] == 500.0


def test_the_lanes_count_before_the_closer_tier(tmp_path):
  """A pattern recorded only alone does not set its two-lane estimate while other runs of the
  method were recorded with two lanes (as ResNet18's 4:8 seed 0, alone in 331 s, on 2026-12-03)."""
  results = str(tmp_path / "results")
  record(results, "resnet18_cifar10_full", "bdwp", "4:8", 0, 331.0, lanes=1)
  record(results, "resnet18_cifar10_full", "bdwp", "2:8", 0, 600.0, lanes=2, mps=True)
  record(results, "resnet18_cifar10_full", "bdwp", "2:4", 0, 500.0, lanes=2, mps=True)
  seconds, source = sweep.estimate(spec(tmp_path, "bdwp", "4:8", seed=1), results, 2, mps=True)
  assert seconds == pytest.approx(600.0) and "of its method (" in source
  seconds, source = sweep.estimate(spec(tmp_path, "bdwp", "4:8", seed=1), results, 1, mps=True)
  assert seconds == pytest.approx(331.0) and "its method, pattern and mask interval" in source
  # three lanes, recorded by none: the closest tier over every lane count, and said so
  seconds, source = sweep.estimate(spec(tmp_path, "bdwp", "4:8", seed=1), results, 3)
  assert seconds == pytest.approx(331.0) and "none recorded with 3 lane(s)" in source


def test_gpu_sharing_reads_what_the_runner_records(monkeypatch):
  monkeypatch.delenv("NMS_GPU_LANES", raising=False)
  monkeypatch.delenv("NMS_GPU_MPS", raising=False)
  assert sweep.gpu_sharing() == (1, False)
  monkeypatch.setenv("NMS_GPU_LANES", "2")
  monkeypatch.setenv("NMS_GPU_MPS", "1")
  assert sweep.gpu_sharing() == (2, True)


def test_another_methods_run_is_scaled_by_the_step_time_ratio_other_configs_show(tmp_path):
  results = str(tmp_path / "results")
  record(results, "resnet18_cifar10_full", "dense", None, 0, 400.0)
  for config, dense, bimask in (("a", 100.0, 110.0), ("b", 100.0, 130.0), ("c", 200.0, 240.0)):
    record(results, config, "dense", None, 0, dense)
    record(results, config, "bimask", "2:8", 0, bimask)
  seconds, source = sweep.estimate(spec(tmp_path, "bimask", "2:8"), results)
  assert seconds == pytest.approx(400.0 * 1.2)  # the median of 1.1, 1.3 and 1.2
  assert "x1.20: bimask/dense step time, median of 3 configs" in source
  factor, why = sweep.method_factor([], "srste", "dense")
  assert factor == 1.0 and "no config has runs of both srste and dense" in why


def test_a_resumed_run_is_estimated_for_the_steps_it_has_left(tmp_path):
  results = str(tmp_path / "results")
  record(results, "resnet18_cifar10_full", "dense", None, 0, 780.0, steps=78000)
  run = spec(tmp_path, "dense", None)
  for step in ("2000", "58500", "not-a-step"):
    os.makedirs(os.path.join(run.workdir, "checkpoints", step))
  seconds, source = sweep.estimate(run, results)
  assert seconds == pytest.approx(195.0) and "19500 of 78000 steps left" in source


def test_startable_leaves_a_run_that_would_end_after_the_deadline(tmp_path, monkeypatch):
  results = str(tmp_path / "results")
  monkeypatch.setenv("NMS_GPU_LANES", "1")
  monkeypatch.delenv("NMS_GPU_MPS", raising=False)
  record(results, "resnet18_cifar10_full", "dense", None, 0, 600.0)
  run = spec(tmp_path, "dense", None, seed=1)
  assert not sweep.startable(run, {}, results, deadline=time.time() + 300)
  assert sweep.startable(run, {}, results, deadline=time.time() + 900)
  assert sweep.startable(run, {}, results)  # no deadline
  # without an estimate the run starts
  assert sweep.startable(run, {}, str(tmp_path / "none"), deadline=time.time() + 1)


def test_the_cli_skips_what_cannot_end_before_the_deadline_and_trains_what_can(tmp_path):
  """The quickstart's two smoke runs, estimated from a run recorded under another file name (so
  it estimates them without counting as either): with 10^6 s a run recorded, both are left; with a
  deadline they fit in, both train."""
  results = str(tmp_path / "results")
  record(results, "quickstart_digits_smoke", "dense", None, 9, 1e6, steps=10)
  base = [sys.executable, "-m", "experiments.sweep", "--config", "configs/quickstart.py:smoke",
          "--workdir_root", str(tmp_path / "runs"), "--results_dir", results]
  env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
  proc = subprocess.run(base + [f"--deadline={time.time() + 3600}"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stderr.count("left for a later sweep") == 2
  assert not os.path.exists(tmp_path / "runs")  # nothing started
  record(results, "quickstart_digits_smoke", "dense", None, 9, 1.0, steps=10)
  proc = subprocess.run(base + [f"--deadline={time.time() + 3600}"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "left for a later sweep" not in proc.stderr
  assert "s before the deadline, estimated" in proc.stderr
  for tag in ("dense", "bdwp_2x4"):
    assert os.path.exists(tmp_path / "runs" / "quickstart_digits_smoke" / tag / "seed0" /
                          "results.json"), proc.stdout


def test_a_dry_run_prints_each_runs_estimate(tmp_path):
  results = str(tmp_path / "results")
  record(results, "quickstart_digits_smoke", "dense", None, 9, 50.0, steps=10)
  proc = subprocess.run([sys.executable, "-m", "experiments.sweep", "--config",
                         "configs/quickstart.py:smoke", "--workdir_root", str(tmp_path / "runs"),
                         "--results_dir", results, "--dry_run"], cwd=ROOT, capture_output=True,
                        text=True, timeout=600,
                        env={**os.environ, "PYTHONPATH": ROOT + os.pathsep +
                             os.environ.get("PYTHONPATH", "")})
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = {line.split()[1]: line for line in proc.stdout.splitlines() if "->" in line}
  assert ("(estimated: 50 s, the slowest of 1 recorded run(s) of its method, pattern and mask "
          "interval (quickstart_digits_smoke_dense_s9), 10 of 10 steps left)") in lines["dense"]
  assert ("(estimated: 50 s, the slowest of 1 recorded run(s) of its config "
          "(quickstart_digits_smoke_dense_s9, x1.00: no config has runs of both bdwp and dense)"
          in lines["bdwp"])
  assert not os.path.exists(tmp_path / "runs")


def test_the_step_time_ratio_comes_from_the_same_gpu_where_it_can(tmp_path):
  """The run it scales was on an H200: the configs with both methods on the H200 set the ratio, not
  the H100's short-schedule ones; a GPU with no such configs takes them all."""
  results = str(tmp_path / "results")
  record(results, "resnet18_cifar10_full", "dense", None, 0, 400.0, device="H200")
  record(results, "a", "dense", None, 0, 100.0, device="H200")
  record(results, "a", "bimask", "2:8", 0, 150.0, device="H200")
  for config in ("b", "c"):
    record(results, config, "dense", None, 0, 100.0, device="H100")
    record(results, config, "bimask", "2:8", 0, 110.0, device="H100")
  seconds, source = sweep.estimate(spec(tmp_path, "bimask", "2:8"), results)
  assert seconds == pytest.approx(400.0 * 1.5)  # the H100's 1.1 (two configs of three) left out
  assert "median of 1 configs on H200" in source
  recorded = [json.load(open(os.path.join(results, f))) for f in os.listdir(results)]
  assert sweep.method_factor(recorded, "bimask", "dense", "B200")[0] == pytest.approx(1.1)
