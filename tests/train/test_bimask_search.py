"""``bimask_search="marked_calls"`` in the runner: the loop's search step at every
``bimask_refresh``-th step gives the permutations (and so the training) of the every-call search."""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments.config_io import apply_overrides, load_config
from nmsparse.prune.rules import path_str
from nmsparse.prune.schedule import MASK_COLLECTION
from nmsparse.train import train_and_evaluate
from nmsparse.train.setup import validate_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REFRESH = 2


def _config(search):
  config = load_config(os.path.join(ROOT, "configs", "resnet9_cifar10.py:smoke"))
  # 3 epochs of 2 steps: searches at steps 0, 2 and 4, each from the kernels trained so far.
  return apply_overrides(config, {"method": "bimask", "pattern": "2:4", "epochs": 3,
                                  "bimask_refresh": REFRESH, "bimask_candidates": 4,
                                  "bimask_search": search})


def _final(workdir):
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  items = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore())
  manager.close()
  return items


def _perms(items):
  return {path_str(k): np.asarray(v) for k, v in
          jax.tree_util.tree_flatten_with_path(items[MASK_COLLECTION])[0]
          if path_str(k).endswith("/permutation")}


def test_marked_calls_train_as_every_call(tmp_path):
  assert load_config(os.path.join(ROOT, "configs", "resnet9_cifar10.py")).bimask_search == (
      "marked_calls")
  results = {}
  for search in ("every_call", "marked_calls"):
    train_and_evaluate(_config(search), str(tmp_path / search))
    results[search] = _final(str(tmp_path / search))
  every, marked = results["every_call"], results["marked_calls"]
  perms = _perms(every)
  assert perms and any(not np.array_equal(p, np.arange(p.size)) for p in perms.values())
  jax.tree.map(np.testing.assert_array_equal, perms, _perms(marked))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               every["params"], marked["params"])


def test_a_resumed_run_searches_at_the_same_steps(tmp_path):
  config = _config("marked_calls")
  train_and_evaluate(config, str(tmp_path / "full"))
  # Stops after step 3 (checkpoint at step 3), resumes into step 4: a search step.
  assert train_and_evaluate(config, str(tmp_path / "resumed"), stop_after_step=3) is None
  train_and_evaluate(config, str(tmp_path / "resumed"))
  full, resumed = _final(str(tmp_path / "full")), _final(str(tmp_path / "resumed"))
  jax.tree.map(np.testing.assert_array_equal, _perms(full), _perms(resumed))
  jax.tree.map(np.testing.assert_array_equal, full["params"], resumed["params"])


def test_search_mode_is_validated():
  with pytest.raises(ValueError, match="bimask_search='always'"):
    validate_config(_config("always"))
