"""``python -m experiments.export`` end to end on a run the runner trained: the export it writes
serves the checkpoint's masked model."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments import export as export_cli
from experiments.config_io import apply_overrides, load_config
from nmsparse import export as ex
from nmsparse.testing import assert_close
from nmsparse.train import NoReadableCheckpointError, train_and_evaluate
from nmsparse.train.setup import build_model, build_rules

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def run_workdir(tmp_path_factory):
  """The quickstart (MLP on digits, BDWP 2:4, fp32) trained for two steps."""
  config = apply_overrides(load_config("quickstart:smoke"),
                           {"data.train_limit": 128, "data.test_limit": 120})
  workdir = str(tmp_path_factory.mktemp("run"))
  results = train_and_evaluate(config, workdir)
  assert results["steps"] == 2
  return workdir, config


def checkpoint_params(workdir):
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  items = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore())
  manager.close()
  return items["params"]


def test_command_exports_the_latest_checkpoint(run_workdir, tmp_path):
  workdir, config = run_workdir
  out = tmp_path / "export"
  proc = subprocess.run([sys.executable, "-m", "experiments.export", "--workdir", workdir,
                         "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env={**os.environ, "PYTHONPATH": ROOT})
  assert proc.returncode == 0, proc.stderr[-3000:]
  *manifest_lines, summary, where = proc.stdout.splitlines()
  exported = ex.load_exported(str(out))
  assert json.loads("\n".join(manifest_lines)) == exported.manifest
  assert where == f"exported to {out}"
  assert summary == export_cli.summary(exported)
  # 2:4 with fp32 values (the run's dtype) against bf16 dense: (2 * 4 bytes + 2 * 2 bits) / 8 bytes
  assert "ratio 1.0625" in summary
  source = exported.manifest["source"]
  assert source["step"] == 2 and source["workdir"] == workdir
  assert source["checkpoint"] == os.path.join(workdir, "checkpoints", "2")
  assert source["config"]["pattern"] == "2:4" and exported.manifest["dtype"] == "float32"
  assert [p for p, e in exported.manifest["layers"].items() if e["pattern"]] == [
      "hidden_0/kernel", "hidden_1/kernel"]

  model = build_model(config, build_rules(config))
  x = jax.random.uniform(jax.random.key(0), (8, 8, 8, 1))
  want = model.apply({"params": checkpoint_params(workdir)}, x, train=False)
  for batch in (1, 8):
    assert_close(ex.apply(model, exported, x[:batch], train=False), want[:batch], jnp.float32,
                 256, err_msg=f"batch {batch}")


def test_export_run_refuses_what_it_cannot_export(run_workdir, tmp_path):
  workdir, _ = run_workdir
  with pytest.raises(FileNotFoundError, match="records no run config"):
    export_cli.export_run(str(tmp_path), str(tmp_path / "a"))
  os.makedirs(tmp_path / "empty")
  with open(tmp_path / "empty" / "config.json", "w") as f:
    json.dump({"model": "mlp"}, f)
  with pytest.raises(NoReadableCheckpointError, match="has no checkpoints"):
    export_cli.export_run(str(tmp_path / "empty"), str(tmp_path / "b"))
  with pytest.raises(ValueError, match=r"'hidden_0/kernel' of shape \(64, 256\) is not 2:4"):
    export_cli.export_run(workdir, str(tmp_path / "c"), require_pruned=True)
  exported = export_cli.export_run(workdir, str(tmp_path / "d"), dtype="bfloat16")
  assert exported.manifest["compression"]["ratio"] == 0.5625  # (2 * 2 bytes + 2 * 2 bits) / 8
  np.testing.assert_array_equal(ex.load_exported(str(tmp_path / "d")).operand(
      "hidden_0/kernel").values, exported.operand("hidden_0/kernel").values)
