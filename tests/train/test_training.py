"""End to end on the CPU: 2-step runs per model family (dense and bdwp) write a checkpoint and a
results JSON; kill-and-resume reproduces an uninterrupted run exactly; non-finite loss stops the run;
FLOPs accounting follows SPEC §1."""

import json
import os

import jax
import numpy as np
import pytest

from experiments.config_io import apply_overrides, load_config
from nmsparse.train import NonFiniteLossError, train_and_evaluate
from nmsparse.train import flops as flops_lib
from nmsparse.train.loop import Run
from nmsparse.types import NMPattern

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC_KEYS = ("model", "dataset", "method", "pattern", "seed", "epochs", "test_accuracy", "device",
             "git_sha", "jax_version", "wall_time_s", "history", "config")


def smoke_config(name, **overrides):
  return apply_overrides(load_config(os.path.join(ROOT, "configs", f"{name}.py:smoke")), overrides)


def final_params(workdir):
  import orbax.checkpoint as ocp
  mngr = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  items = mngr.restore(mngr.latest_step(), args=ocp.args.StandardRestore())
  mngr.close()
  return items["params"], mngr.latest_step()


@pytest.mark.parametrize("family", ["resnet9_cifar10", "resnet18_cifar10", "resnet50_cifar10",
                                    "vgg19_cifar10", "vit_cifar10"])
@pytest.mark.parametrize("method", ["dense", "bdwp"])
def test_two_step_run_writes_checkpoint_and_results(tmp_path, family, method):
  config = smoke_config(family, method=method, results_dir=str(tmp_path / "results"))
  results = train_and_evaluate(config, str(tmp_path / "run"))
  assert all(k in results for k in SPEC_KEYS)
  assert results["steps"] == 2 and results["method"] == method
  assert results["pattern"] == (None if method == "dense" else "2:8")
  assert 0.0 <= results["test_accuracy"] <= 1.0
  assert np.isfinite(results["history"][0]["train_loss"])
  assert os.path.isdir(tmp_path / "run" / "checkpoints" / "2")
  with open(tmp_path / "run" / "results.json") as f:
    assert json.load(f)["test_accuracy"] == results["test_accuracy"]
  assert len(os.listdir(tmp_path / "results")) == 1
  if method == "bdwp":
    flips = results["mask_flips"]
    assert flips["epochs"] == [h["epoch"] for h in results["history"]]
    assert flips["layers"] and all(len(c) == len(flips["epochs"]) for c in flips["layers"].values())
    assert "mask_flips" not in results["history"][0] and "mask_flip_fraction" in results["history"][0]
    stages = results["gemm_flops_per_example"]
    assert stages["FF"]["sparse"] < stages["FF"]["dense"]
    assert stages["WU"]["sparse"] == stages["WU"]["dense"]


def test_vit_trains_with_stochastic_depth_and_attention_dropout(tmp_path):
  """The train step feeds the model's "dropout" stream (the ViT :full recipe's regularisers)."""
  config = smoke_config("vit_cifar10", **{"model_kwargs.drop_path": 0.2,
                                          "model_kwargs.attention_dropout": 0.1})
  results = train_and_evaluate(config, str(tmp_path / "run"))
  assert results["steps"] == 2 and np.isfinite(results["history"][0]["train_loss"])


def test_kill_and_resume_matches_uninterrupted_run(tmp_path):
  config = smoke_config("resnet9_cifar10", epochs=2, keep_checkpoints=3)  # 4 steps, ckpt every step
  config_ckpt2 = apply_overrides(config, {"checkpoint_every_steps": 2})
  full = train_and_evaluate(config_ckpt2, str(tmp_path / "full"))
  assert train_and_evaluate(config_ckpt2, str(tmp_path / "resumed"), stop_after_step=3) is None
  params_at_kill, step = final_params(str(tmp_path / "resumed"))
  assert step == 2  # the checkpoint before the "kill"; step 3 was lost
  resumed = train_and_evaluate(config_ckpt2, str(tmp_path / "resumed"))
  a, _ = final_params(str(tmp_path / "full"))
  b, _ = final_params(str(tmp_path / "resumed"))
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert not all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a),
                                                       jax.tree.leaves(params_at_kill)))
  assert resumed["test_accuracy"] == full["test_accuracy"]
  assert [h["epoch"] for h in resumed["history"]] == [1, 2]


def test_run_moved_to_another_workdir_resumes_and_records_its_segments(tmp_path, monkeypatch):
  """What scripts/gpu_table.sh's export/import does between two machines: the workdir, with only
  its newest checkpoint, travels to another path, and other code (another git SHA) finishes it."""
  import shutil
  config = smoke_config("resnet9_cifar10", epochs=2, keep_checkpoints=3, checkpoint_every_steps=2)
  full = train_and_evaluate(config, str(tmp_path / "full"))
  monkeypatch.setenv("NMSPARSE_GIT_SHA", "a" * 40)
  assert train_and_evaluate(config, str(tmp_path / "here"), stop_after_step=3) is None
  ckpts = tmp_path / "here" / "checkpoints"
  for older in sorted((d for d in os.listdir(ckpts) if d.isdigit()), key=int)[:-1]:
    shutil.rmtree(ckpts / older)
  shutil.move(str(tmp_path / "here"), str(tmp_path / "there"))
  monkeypatch.setenv("NMSPARSE_GIT_SHA", "b" * 40)
  moved = train_and_evaluate(config, str(tmp_path / "there"))
  jax.tree.map(np.testing.assert_array_equal, final_params(str(tmp_path / "full"))[0],
               final_params(str(tmp_path / "there"))[0])
  assert moved["test_accuracy"] == full["test_accuracy"] and moved["git_sha"] == "b" * 40
  assert [(s["step"], s["git_sha"]) for s in moved["segments"]] == [(0, "a" * 40), (2, "b" * 40)]
  assert "segments" not in full


def test_non_finite_loss_names_the_step(tmp_path):
  config = smoke_config("vit_cifar10", learning_rate=1e30, grad_clip=0.0, epochs=3)
  with pytest.raises(NonFiniteLossError, match=r"at step \d+"):
    train_and_evaluate(config, str(tmp_path))


def test_stage_flops_follow_the_spec():
  layers = [flops_lib.LayerFlops("a/kernel", 100.0, NMPattern(2, 8)),
            flops_lib.LayerFlops("b/kernel", 100.0, NMPattern(2, 8))]
  bdwp = flops_lib.stage_flops(layers, "bdwp")
  assert bdwp["FF"]["sparse"] == 50.0 and bdwp["BP"]["sparse"] == 50.0
  assert bdwp["total"]["sparse"] / bdwp["total"]["dense"] == 0.5  # SPEC: bdwp 2:8 = 50%
  srste = flops_lib.stage_flops(layers, "srste")
  assert srste["total"]["sparse"] / srste["total"]["dense"] == 0.75  # SPEC: srste 2:8 = 75%
  assert flops_lib.stage_flops(layers, "dense")["total"]["sparse"] == 600.0


def test_layer_flops_of_an_mlp(tmp_path):
  config = apply_overrides(load_config(os.path.join(ROOT, "configs", "quickstart.py:smoke")),
                           {"checkpoint_every_steps": 0})
  run = Run(config, str(tmp_path))
  example = jax.ShapeDtypeStruct((1, 8, 8, 1), np.float32)
  layers = flops_lib.layer_flops(run.model, run.state.variables(), example, run.rules)
  assert [(l.path, l.gemm_flops, str(l.pattern), l.needs_bp) for l in layers] == [
      ("hidden_0/kernel", 2 * 64 * 256, "2:4", False),
      ("hidden_1/kernel", 2 * 256 * 256, "2:4", True),
      ("head/kernel", 2 * 256 * 10, "None", True)]


def test_data_parallel_on_two_cpu_devices(tmp_path):
  import subprocess
  import sys
  flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2".strip()
  env = {**os.environ, "XLA_FLAGS": flags,
         "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
  proc = subprocess.run([sys.executable, "-m", "experiments.main",
                         "--config", os.path.join(ROOT, "configs", "resnet9_cifar10.py:smoke"),
                         "--workdir", str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(tmp_path / "results.json") as f:
    results = json.load(f)
  assert results["device"].endswith("x2") and results["steps"] == 2


def test_runner_reads_the_array_layout(tmp_path):
  rng = np.random.default_rng(0)
  os.makedirs(tmp_path / "data" / "cifar10")
  for split, n in (("train", 16), ("test", 8)):
    np.save(tmp_path / "data" / "cifar10" / f"{split}_images.npy",
            rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8))
    np.save(tmp_path / "data" / "cifar10" / f"{split}_labels.npy",
            rng.integers(0, 10, n).astype(np.uint8))
  config = smoke_config("resnet9_cifar10", **{"data.source": "arrays",
                                              "data.data_dir": str(tmp_path / "data")})
  results = train_and_evaluate(config, str(tmp_path / "run"))
  assert results["dataset"] == "cifar10" and results["steps"] == 2


def test_tensorboard_events_written(tmp_path):
  pytest.importorskip("tensorboardX", reason="TensorBoard events need tensorboardX (test extra)")
  config = smoke_config("resnet9_cifar10", tensorboard=True)
  train_and_evaluate(config, str(tmp_path / "run"))
  events = os.listdir(tmp_path / "run" / "tensorboard")
  assert any(name.startswith("events.out.tfevents") for name in events), events
  with open(tmp_path / "run" / "metrics.jsonl") as f:
    assert json.loads(f.readline())["epoch"] == 1
