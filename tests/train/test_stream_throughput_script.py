"""scripts/stream_throughput.py end to end on the CPU, tiny: it generates its JPEGs, measures the
pipeline and a smoke config's steps, and writes the JSON the GPU run commits."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_stream_throughput_script_writes_its_json(tmp_path):
  out = tmp_path / "stream.json"
  env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
  proc = subprocess.run(
      [sys.executable, "scripts/stream_throughput.py", "--data_dir", str(tmp_path / "jpegs"),
       "--num_images", "96", "--classes", "4", "--jpeg_size", "64x48", "--image_size", "32",
       "--workers", "0", "--batch", "8", "--pipeline_batches", "3", "--steps", "2",
       "--warmup", "1", "--configs", "configs/vit_b16_imagenet224.py:smoke", "--out", str(out)],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(out.read_text())
  assert result["pipeline_images_per_s"] > 0 and result["image_size"] == 32
  (row,) = result["runs"]
  assert row["model"] == "vit" and row["step_images_per_s_fixed_batch"] > 0
  assert row["streamed_images_per_s"] > 0 and 0.0 <= row["input_wait_fraction"] <= 1.0
