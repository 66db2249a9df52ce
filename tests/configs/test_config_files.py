"""Every config file loads, documents its command, and builds its model and optimizer (smoke
variant); the full-size models' layers group under every pattern of their sweep."""

import glob
import os

import jax
import jax.numpy as jnp
import pytest

from experiments.config_io import apply_overrides, load_config
from nmsparse.optim import create_optimizer
from nmsparse.prune.rules import sparsity_report
from nmsparse.train.setup import build_model, build_rules

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                 if os.path.basename(p) not in ("__init__.py", "base.py"))
REQUIRED = ("method", "pattern", "seed", "epochs", "batch_size", "implementation", "rules", "sweep")


def test_the_expected_configs_exist():
  names = {os.path.basename(p)[:-3] for p in CONFIGS}
  for model in ("resnet9", "vgg19", "resnet18", "resnet50", "vit"):
    assert {f"{model}_cifar10", f"{model}_cifar100"} <= names
  assert {"quickstart", "resnet50_imagenet", "vit_imagenet"} <= names


def shapes(config):
  rules = build_rules(config)
  model = build_model(config, rules)
  size, channels = config.data.image_size, config.data.channels
  return rules, model, jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, channels)), train=False))


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_loads_and_smoke_variant_builds(path):
  module_doc = open(path).read().split('"""')[1]
  assert "python -m experiments." in module_doc and "Expected" in module_doc
  config = load_config(path)
  assert all(k in config for k in REQUIRED)
  smoke = load_config(path + ":smoke")
  assert smoke.epochs <= config.epochs and smoke.name.endswith("_smoke")
  _, model, variables = shapes(smoke)
  tx, schedule = create_optimizer(smoke, steps_per_epoch=2)
  opt_state = jax.eval_shape(tx.init, variables["params"])
  assert jax.tree.leaves(opt_state) and float(schedule(0)) >= 0.0
  with pytest.raises(ValueError):
    load_config(path + ":no_such_variant")


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_full_size_model_groups_under_every_swept_pattern(path):
  config = load_config(path)
  combos = {(m, p) for grid in config.sweep for m in grid["methods"] for p in grid["patterns"]}
  for method, pattern in sorted(combos):
    run_config = apply_overrides(config, {"method": method, "pattern": pattern})
    rules, _, variables = shapes(run_config)
    reports = sparsity_report(variables["params"], rules, method, log=False)  # raises if not
    sparse = [r for r in reports if r.pattern is not None]
    assert (method == "dense") == (not sparse)
