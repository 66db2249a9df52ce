"""Issue 11 on the runner: start-up validation, the eval batch clipped to the data, checkpoints only
from finite arrays, the checkpointer closed on errors, wall time summed over segments."""

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.config_io import apply_overrides, load_config
from nmsparse.train import NonFiniteLossError, NonFiniteParamsError, train_and_evaluate
from nmsparse.train.checkpoint import Checkpointer, first_non_finite
from nmsparse.train.loop import eval_batch
from nmsparse.train.setup import validate_config
from nmsparse.train.state import TrainState

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def quick_config(**overrides):
  config = load_config(os.path.join(ROOT, "configs", "quickstart.py:smoke"))
  return apply_overrides(config, {"model_kwargs.features": (32, 32), "data.train_limit": 256,
                                  "data.test_limit": 60, "batch_size": 32, **overrides})


@pytest.mark.parametrize("field,value", [("epochs", 0), ("epochs", -2), ("batch_size", 0),
                                         ("batch_size", -8), ("eval_batch_size", 0),
                                         ("checkpoint_every_steps", -1), ("keep_checkpoints", 0),
                                         ("mask_every", 0), ("data.train_limit", -1),
                                         ("learning_rate", float("nan")), ("dtype", "fp8")])
def test_bad_settings_stop_at_start_up_naming_field_and_value(tmp_path, field, value):
  config = quick_config(**{field: value})
  with pytest.raises(ValueError, match=rf"{field}={value!r}"):
    validate_config(config)
  with pytest.raises(ValueError, match=rf"{field}={value!r}"):
    train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(tmp_path / "results.json")


def test_eval_batch_is_clipped_to_the_test_set(tmp_path):
  assert eval_batch(10**9, 60, 1) == 60 and eval_batch(10**9, 61, 2) == 62
  assert eval_batch(32, 60, 1) == 32
  results = train_and_evaluate(quick_config(eval_batch_size=10**9), str(tmp_path))
  assert 0.0 <= results["test_accuracy"] <= 1.0


def tiny_state(kernel):
  params = {"hidden": {"kernel": kernel, "bias": jnp.zeros(4)}}
  return TrainState.create(apply_fn=None, params=params, tx=optax.sgd(0.1))


def test_a_non_finite_checkpoint_is_never_written(tmp_path):
  ckpt = Checkpointer(str(tmp_path), keep=2)
  ckpt.save(tiny_state(jnp.ones((4, 4))).replace(step=1), {})
  bad = jnp.ones((4, 4)).at[2, 1].set(jnp.nan)
  with pytest.raises(NonFiniteParamsError, match=r"step 7: params/hidden/kernel holds NaN"):
    ckpt.save(tiny_state(bad).replace(step=7), {})
  ckpt.close()
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1"]
  assert first_non_finite({"a": jnp.ones(2), "b": {"c": jnp.array([1.0, jnp.inf])}}) == "b/c"
  assert first_non_finite({"a": jnp.ones(2), "n": jnp.arange(3)}) is None


def test_divergence_keeps_checkpoints_finite_and_leaves_no_tmp(tmp_path):
  config = quick_config(learning_rate=1e30, checkpoint_every_steps=1, log_every_steps=100,
                        epochs=3)
  with pytest.raises((NonFiniteLossError, NonFiniteParamsError), match=r"step \d+"):
    train_and_evaluate(config, str(tmp_path))
  folder = tmp_path / "checkpoints"
  assert all(name.isdigit() for name in os.listdir(folder)), os.listdir(folder)
  import orbax.checkpoint as ocp
  mngr = ocp.CheckpointManager(str(folder))
  for step in mngr.all_steps():
    items = mngr.restore(step, args=ocp.args.StandardRestore())
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(items["params"])), step
  mngr.close()


def test_wall_time_sums_the_segments(tmp_path):
  config = quick_config(epochs=2, checkpoint_every_steps=1)
  assert train_and_evaluate(config, str(tmp_path), stop_after_step=11) is None
  start = time.time()
  results = train_and_evaluate(config, str(tmp_path))
  second = time.time() - start
  assert results["wall_time_s"] > second
  assert [h["epoch"] for h in results["history"]] == [1, 2]
