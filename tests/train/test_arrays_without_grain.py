"""An "arrays"-source run needs neither Grain nor array_record: the GPU table script carries only
the ml_collections wheel to a machine that has neither (scripts/gpu_table.sh, issue 14)."""

import json
import os
import subprocess
import sys

from tests.train.fault_config import ROOT, write_digits

# Blocks the two packages (and Grain's own dependencies) in a fresh interpreter, trains the
# quickstart MLP one epoch from the digits in the arrays layout and reports what it imported.
DRIVER = """
import json, sys
BLOCKED = ("grain", "array_record", "portpicker", "cloudpickle")
class Block:
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in BLOCKED:
      raise ImportError("blocked by the test: " + name)
sys.meta_path.insert(0, Block())
from experiments.config_io import apply_overrides, load_config
from nmsparse.train import train_and_evaluate
config = apply_overrides(load_config("configs/quickstart.py:smoke"), {
    "data.source": "arrays", "data.name": "digits", "data.data_dir": sys.argv[1],
    "data.num_classes": 10, "data.train_limit": 64, "data.test_limit": 32, "batch_size": 32,
    "eval_batch_size": 32, "epochs": 1, "method": "bdwp", "pattern": "2:4"})
result = train_and_evaluate(config, sys.argv[2])
print(json.dumps({"epochs": len(result["history"]), "test_accuracy": result["test_accuracy"],
                  "imported": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)}))
"""


def test_arrays_run_imports_neither_grain_nor_array_record(tmp_path):
  data_dir = str(tmp_path / "data")
  write_digits(data_dir)
  env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, "-c", DRIVER, data_dir, str(tmp_path / "run")],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(proc.stdout.strip().splitlines()[-1])
  assert report["epochs"] == 1 and 0.0 <= report["test_accuracy"] <= 1.0
  assert report["imported"] == []
