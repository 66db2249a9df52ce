"""The SAT model's own identities, its agreement with the runner's FLOP walk, and the command."""

import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest

from experiments.config_io import load_config
from nmsparse.sat import (Gemm, LayerShape, SATConfig, compression_ratio, gemm_bytes, gemm_cost,
                          gemm_cycles, layer_costs, layer_gemms, model_layers, speedup, step_cost,
                          weight_bytes)
from nmsparse.train import flops as flops_lib
from nmsparse.types import NMPattern

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PATTERNS = [NMPattern(2, 4), NMPattern(2, 8), NMPattern(1, 8), NMPattern(4, 8)]
FAST_MEMORY = SATConfig(dram_bandwidth=1e18)  # every GEMM compute-bound


@pytest.fixture(scope="module")
def smoke():
  return model_layers(load_config(os.path.join(ROOT, "configs", "resnet9_cifar10.py:smoke")))


def dense_layer(k=512, o=256, positions=64, pattern=None, needs_bp=True):
  return LayerShape("fc/kernel", (k, o), positions, positions * k, pattern, needs_bp,
                    2.0 * positions * k * o)


def test_walk_matches_the_runner_flop_accounting(smoke):
  stages = flops_lib.stage_flops(list(smoke.layers), "bdwp")
  assert sum(l.gemm_flops for l in smoke.layers) == stages["FF"]["dense"]
  batch = smoke.batch_size
  for layer in smoke.layers:
    gemms = layer_gemms(layer, batch, SATConfig())
    assert 2 * gemms["FF"].macs == pytest.approx(layer.gemm_flops * batch)
    assert 2 * gemms["WU"].macs == pytest.approx(layer.gemm_flops * batch)
    assert ("BP" in gemms) == layer.needs_bp
    if layer.needs_bp:
      assert gemms["BP"].macs == gemms["FF"].macs
  assert smoke.layers[0].pattern is None and smoke.layers[-1].pattern is None  # stem, head dense
  assert all(l.pattern == NMPattern(2, 8) for l in smoke.for_pattern("2:8")[1:-1])
  assert all(l.pattern is None for l in smoke.for_pattern(None))


def test_dense_configuration_is_one(smoke):
  hw = SATConfig()
  dense = step_cost(smoke.for_pattern(None), smoke.batch_size, smoke.optimizer_states, hw)
  assert speedup(dense, dense) == 1.0
  assert dense.stages["SORE"] == 0.0
  # A "sparse" run whose rules leave every layer dense costs exactly the dense step.
  all_dense = [dataclasses.replace(l, pattern=None) for l in smoke.for_pattern("2:8")]
  same = step_cost(all_dense, smoke.batch_size, smoke.optimizer_states, hw)
  assert same.stages == dense.stages and speedup(dense, same) == 1.0


@pytest.mark.parametrize("dataflow", ["ws", "os"])
@pytest.mark.parametrize("pattern", PATTERNS, ids=str)
def test_compute_bound_sparse_stage_scales_by_n_over_m(pattern, dataflow):
  hw = dataclasses.replace(FAST_MEMORY, tile_overhead_cycles=0, dataflow=dataflow)
  g = dict(rows=4096, reduction=32 * 8 * 3, cols=96, a_bytes=1.0, b_bytes=1.0, out_bytes=1.0)
  dense, sparse = Gemm(pattern=None, **g), Gemm(pattern=pattern, **g)
  assert gemm_cycles(sparse, hw, dataflow) / gemm_cycles(dense, hw, dataflow) == pattern.density
  # A whole layer's FF and BP too, when every stage is compute-bound.
  layer = dense_layer(k=768, o=256, positions=64)
  d = {c.stage: c for c in layer_costs(layer, 64, 1, hw)}
  s = {c.stage: c for c in layer_costs(dataclasses.replace(layer, pattern=pattern), 64, 1, hw)}
  for stage in ("FF", "BP"):
    assert s[stage].bound == "compute"
    assert s[stage].time_s / d[stage].time_s == pytest.approx(pattern.density)
  assert s["WU"].time_s == d["WU"].time_s  # WU stays dense


def test_dense_gemm_cycles_are_the_macs_over_the_array():
  hw = SATConfig(tile_overhead_cycles=0)
  g = Gemm(rows=1024, reduction=512, cols=64, pattern=None, a_bytes=1, b_bytes=1, out_bytes=1)
  for dataflow in ("ws", "os"):
    assert gemm_cycles(g, hw, dataflow) == g.macs / (hw.rows * hw.cols)
  with pytest.raises(ValueError, match="does not divide"):
    SATConfig(group=8).cycles_per_slot(NMPattern(1, 3))


def test_memory_bound_stage_is_bytes_over_bandwidth():
  hw = SATConfig(dram_bandwidth=1e9, dram_efficiency=0.5)
  k, o, positions, batch = 512, 256, 4, 16
  costs = {c.stage: c for c in layer_costs(dense_layer(k, o, positions), batch, 1, hw)}
  ff = costs["FF"]
  assert ff.bound == "memory"
  b = hw.compute_bytes
  expected = batch * positions * k * b + k * o * b + batch * positions * o * b  # x, W, y once each
  assert ff.bytes == expected
  assert ff.time_s == expected / (1e9 * 0.5)
  wuve = costs["WUVE"]
  assert wuve.bound == "memory"  # dense: W, dW, momentum in, W, momentum and the copy out
  assert wuve.bytes == k * o * (4 * 5 + b)
  assert wuve.time_s == wuve.bytes / (1e9 * 0.5)


def test_weight_stationary_rereads_when_the_weights_do_not_fit():
  small = SATConfig(onchip_bytes=1e6, buffer_fraction=1.0, buffer_split=(0.5, 0.25, 0.25))
  w = 4e6  # 8 blocks of the 0.5 MB weight buffer
  g = Gemm(rows=4096, reduction=2048, cols=1024, pattern=None, a_bytes=3e6, b_bytes=w,
           out_bytes=1e6)
  assert gemm_bytes(g, small, "ws") == 3e6 * 8 + w + 1e6
  assert gemm_bytes(g, SATConfig(), "ws") == 3e6 + w + 1e6


@pytest.mark.parametrize("pattern", PATTERNS, ids=str)
def test_pregeneration_cuts_ff_bp_weight_traffic_by_the_compression_ratio(pattern):
  k, o = 1024, 512
  on, off = SATConfig(), SATConfig(pregenerate=False)
  ratio = weight_bytes(k, o, None, on) / weight_bytes(k, o, pattern, on)
  assert ratio == pytest.approx(compression_ratio(pattern, on))
  bits = math.ceil(math.log2(pattern.m))
  assert ratio == pytest.approx(2 / (pattern.density * (2 + bits / 8)))
  assert weight_bytes(k, o, pattern, off) == weight_bytes(k, o, None, on)
  layer = dense_layer(k, o, positions=8, pattern=pattern)
  g_on, g_off = layer_gemms(layer, 32, on), layer_gemms(layer, 32, off)
  for stage in ("FF", "BP"):
    assert g_off[stage].b_bytes / g_on[stage].b_bytes == pytest.approx(ratio)
    assert g_on[stage].a_bytes == g_off[stage].a_bytes
  assert g_on["WU"] == g_off["WU"]
  stages_on = {c.stage for c in layer_costs(layer, 32, 1, on)}
  stages_off = {c.stage for c in layer_costs(layer, 32, 1, off)}
  assert "SORE" in stages_on and "SORE" not in stages_off


def test_best_dataflow_is_the_faster_one():
  hw = SATConfig()
  g = Gemm(rows=27, reduction=4096 * 64, cols=64, pattern=None, a_bytes=1e6, b_bytes=1e6,
           out_bytes=1e4)
  best = gemm_cost(g, hw)
  ws = gemm_cost(g, dataclasses.replace(hw, dataflow="ws"))
  os_ = gemm_cost(g, dataclasses.replace(hw, dataflow="os"))
  assert best.time_s == min(ws.time_s, os_.time_s) and best.dataflow == "os"


def test_command_writes_the_table(tmp_path):
  smoke_cfg = os.path.join(ROOT, "configs", "resnet9_cifar10.py:smoke")
  speed = tmp_path / "speed.json"
  speed.write_text(json.dumps([dict(model="resnet9", method="bdwp", pattern="2:8",
                                    implementation="xla", batch=8, device="test GPU",
                                    dense_step_ms=2.0, sparse_step_ms=1.0, ratio=2.0)]))
  env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.sat", "--out", str(tmp_path), "--configs", smoke_cfg,
       "--sweep_config", smoke_cfg, "--patterns", "2:4,2:8", "--nocalibrate"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  md = (tmp_path / "sat.md").read_text()
  assert "| resnet9 | 8 | dense |" in md and "| resnet9 | 8 | 2:8 |" in md
  assert "test GPU" in md and "xla: 2.000x" in md
  result = json.loads((tmp_path / "sat.json").read_text())
  rows = {r["pattern"]: r for r in result["rows"]}
  assert set(rows) == {"dense", "2:4", "2:8"} and rows["dense"]["speedup"] == 1.0
  assert 1.0 < rows["2:4"]["speedup"] < rows["2:8"]["speedup"]
  assert result["sources"]["rows"].startswith("paper abstract")
  assert {r["axis"] for r in result["sweep"]} >= {"array (rows = cols)", "clock (MHz)",
                                                  "DRAM bandwidth (GB/s)"}
  assert (tmp_path / "sat_speedup.png").stat().st_size > 0
  assert (tmp_path / "sat_sensitivity.png").stat().st_size > 0
