"""``mask_every`` in the runner: the config key reaches the layers, the train state carries and
checkpoints ``nm_masks``, the train step refreshes the snapshots on schedule, and a step that does
not is caught."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments.config_io import apply_overrides, load_config
from nmsparse.prune.rules import path_str
from nmsparse.prune.schedule import MASK_COLLECTION
from nmsparse.train import train_and_evaluate
from nmsparse.train.loop import check_mask_counts, sparse_kernels
from nmsparse.train.parallel import make_mesh, put_replicated
from nmsparse.train.setup import build_model, build_rules, create_state
from nmsparse.train.step import make_batch_train_step

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EVERY = 2
# One xdist worker runs the module (``--dist loadgroup``): its tests build the same two states, and
# on one worker the later ones load the 5 s parameter-init compilation from the run's compilation
# cache (tests/conftest.py) instead of both workers compiling it at the same time.
pytestmark = pytest.mark.xdist_group("mask_every_training")


def smoke_config(**overrides):
  config = load_config(os.path.join(ROOT, "configs", "resnet9_cifar10.py:smoke"))
  return apply_overrides(config, {"mask_every": EVERY, **overrides})


def _flat(tree, suffix):
  return {path_str(k)[: -len(suffix)]: v for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]
          if path_str(k).endswith(suffix)}


def _init(config):
  rules = build_rules(config)
  model = build_model(config, rules)
  image_shape = (config.data.image_size,) * 2 + (config.data.channels,)
  state, _ = create_state(config, model, image_shape, steps_per_epoch=2, key=jax.random.key(0))
  return rules, model, state


def test_config_key_reaches_the_sparse_layers():
  assert load_config(os.path.join(ROOT, "configs", "resnet9_cifar10.py")).mask_every == 1
  rules, _, state = _init(smoke_config())
  sparse = sparse_kernels(state.params, rules, "bdwp")
  snapshots = _flat(state.nm_masks, "/kernel_snapshot")
  assert sparse and set(snapshots) == {p[: -len("/kernel")] for p in sparse}
  kernels = _flat(state.params, "/kernel")
  for path, snapshot in snapshots.items():
    np.testing.assert_array_equal(snapshot, kernels[path])
  assert all(int(c) == 0 for c in _flat(state.nm_masks, "/count").values())
  # The default keeps no snapshot: no nm_masks in the state, its variables or its checkpoints.
  _, _, plain = _init(smoke_config(mask_every=1))
  assert plain.nm_masks == {} and MASK_COLLECTION not in plain.variables()
  assert MASK_COLLECTION not in plain.checkpoint_items()
  assert MASK_COLLECTION in state.checkpoint_items() and MASK_COLLECTION in state.variables()


def test_check_mask_counts_catches_a_step_that_froze_the_masks():
  _, _, state = _init(smoke_config())
  check_mask_counts(state)  # step 0, counts 0
  with pytest.raises(RuntimeError, match=r"count = 0 after step 1: .*'nm_masks' mutable"):
    check_mask_counts(state.replace(step=state.step + 1))
  _, _, plain = _init(smoke_config(mask_every=1))
  check_mask_counts(plain.replace(step=plain.step + 5))  # nothing to check


def test_train_step_refreshes_the_snapshots_every_mask_every_steps():
  config = smoke_config()
  _, model, state = _init(config)
  mesh = make_mesh(1)
  state = put_replicated(jax.device_get(state), mesh)
  step = make_batch_train_step(model, mesh, config.data.num_classes, config.label_smoothing)
  rng = np.random.default_rng(0)
  kernels_before = []
  for t in range(5):
    kernels_before.append(_flat(jax.device_get(state.params), "/kernel"))
    x = jnp.asarray(rng.standard_normal((8, 32, 32, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, 8), jnp.int32)
    state, _ = step(state, x, y)
    check_mask_counts(state)
    for path, snapshot in _flat(jax.device_get(state.nm_masks), "/kernel_snapshot").items():
      np.testing.assert_array_equal(snapshot, kernels_before[t - t % EVERY][path],
                                    err_msg=f"{path} after step {t}")
  assert any(not np.array_equal(a, b) for a, b in zip(kernels_before[0].values(),
                                                      kernels_before[2].values()))


def test_kill_and_resume_restores_the_snapshots(tmp_path):
  config = smoke_config(epochs=2, checkpoint_every_steps=2, keep_checkpoints=3)  # 4 steps
  train_and_evaluate(config, str(tmp_path / "full"))
  assert train_and_evaluate(config, str(tmp_path / "resumed"), stop_after_step=3) is None
  train_and_evaluate(config, str(tmp_path / "resumed"))  # resumes from step 2, mid-period

  def final(workdir):
    manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
    items = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore())
    manager.close()
    return items

  full, resumed = final(str(tmp_path / "full")), final(str(tmp_path / "resumed"))
  assert all(int(c) == 4 for c in _flat(full[MASK_COLLECTION], "/count").values())
  jax.tree.map(np.testing.assert_array_equal, full[MASK_COLLECTION], resumed[MASK_COLLECTION])
  jax.tree.map(np.testing.assert_array_equal, full["params"], resumed["params"])
