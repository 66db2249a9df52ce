"""The small deterministic CPU run of the fault-injection tests (the quickstart MLP 64-32-32-10,
BDWP 2:4, on 320 real training digits: 4 epochs of 10 steps, a checkpoint every step) and the ways
they damage a checkpoint."""

import os

import numpy as np

from experiments.config_io import apply_overrides, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS_PER_EPOCH, EPOCHS = 10, 4
TOTAL_STEPS = STEPS_PER_EPOCH * EPOCHS


def write_digits(data_dir: str) -> None:
  """scikit-learn's digits in the array layout (``data_dir/digits/*.npy``), so that the runs read
  real data without importing scikit-learn in every process."""
  from nmsparse.data import load_sklearn_digits  # pylint: disable=g-import-not-at-top
  ds = load_sklearn_digits()
  os.makedirs(os.path.join(data_dir, "digits"), exist_ok=True)
  for key in ("train_images", "train_labels", "test_images", "test_labels"):
    np.save(os.path.join(data_dir, "digits", f"{key}.npy"), getattr(ds, key))


def fault_config(data_dir: str, **overrides):
  config = load_config(os.path.join(ROOT, "configs", "quickstart.py:smoke"))
  return apply_overrides(config, {
      "model_kwargs.features": (32, 32), "data.source": "arrays", "data.data_dir": data_dir,
      "data.train_limit": 32 * STEPS_PER_EPOCH, "data.test_limit": 60, "batch_size": 32,
      "eval_batch_size": 64, "epochs": EPOCHS, "checkpoint_every_steps": 1, "keep_checkpoints": 3,
      "track_mask_flips": True, "log_every_steps": 1, **overrides})


def _files(step_dir: str, under: str = "") -> list[str]:
  root = os.path.join(step_dir, under)
  return sorted((os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs),
                key=lambda p: (-os.path.getsize(p), p))


def _truncate(path: str) -> None:
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def _garble(path: str) -> None:
  size = os.path.getsize(path)
  with open(path, "wb") as f:
    f.write(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())


# name -> damage done to one step folder of ``workdir/checkpoints``.
CORRUPTIONS = {
    "truncated_array_file": lambda d: _truncate(_files(d, "default/ocdbt.process_0/d")[0]),
    "garbled_array_file": lambda d: _garble(_files(d, "default/ocdbt.process_0/d")[0]),
    "truncated_item_metadata": lambda d: _truncate(os.path.join(d, "default", "_METADATA")),
    "garbled_item_metadata": lambda d: _garble(os.path.join(d, "default", "_METADATA")),
    "garbled_manifest": lambda d: _garble(os.path.join(d, "default", "manifest.ocdbt")),
    "missing_array_files": lambda d: [os.remove(p) for p in _files(d, "default/ocdbt.process_0/d")],
}
