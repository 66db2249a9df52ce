"""``implementation=None`` on an NVIDIA H200 runs every sparse layer of the five CIFAR-10 configs on
``pallas``: none is eligible for ``sparse_tc`` under the card's measured rule, so the automatic
choice and ``pallas`` build the same train step. Checked on CPU by tracing (no compilation), with
the registry deciding as on an H200 GPU whose native extension is built."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import pytest

from experiments.config_io import load_config
from nmsparse import native
from nmsparse.ops import cards, pallas, registry, sparse_tc
from nmsparse.ops.config import LayerSpec
from nmsparse.testing.jaxpr import equations
from nmsparse.train.setup import build_model, build_rules
from nmsparse.train.step import cross_entropy
from nmsparse.types import NMPattern

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CIFAR10 = ("resnet9", "resnet18", "resnet50", "vgg19", "vit")
SPARSE_PRIMITIVES = ("nm_dense_fwd", "nm_dense_bwd", "nm_conv_fwd", "nm_conv_bwd")


@pytest.fixture
def h200(monkeypatch):
  """The registry decides as on a GPU (its ``PREFERENCE["gpu"]`` order) under the H200 card rule,
  with ``sparse_tc`` available, so that only the layer shape, pattern and method decide.

  ``sparse_tc`` keeps its own ``supports`` but traces with ``pallas``'s functions (the real ones
  need the built extension even abstractly), so a layer it would take shows up by name in the
  jaxpr instead of stopping the trace.
  """
  monkeypatch.setitem(registry.PREFERENCE, jax.default_backend(), registry.PREFERENCE["gpu"])
  monkeypatch.setattr(cards, "card_rule", lambda: cards.CARDS[cards.H200])
  monkeypatch.setattr(native, "status", lambda: None)
  monkeypatch.setitem(registry.IMPLEMENTATIONS, "sparse_tc", dataclasses.replace(
      pallas.IMPLEMENTATION, name="sparse_tc", supports=sparse_tc.supports,
      available=lambda: None))
  assert registry.IMPLEMENTATIONS["pallas"].available() is None
  assert registry.resolve_implementation(None) == "pallas"  # the GPU order, not the CPU one


def sparse_calls(fn, *args) -> list[tuple[str, tuple, tuple, str]]:
  """``(primitive, x shape, kernel shape, implementation)`` of every sparse primitive in the jaxpr
  of ``fn(*args)`` (nested jaxprs included), where ``implementation=None`` is already resolved."""
  calls = []
  for eqn in equations(jax.make_jaxpr(fn)(*args)):
    if eqn.primitive.name in SPARSE_PRIMITIVES:
      x, w = eqn.invars[:2]
      calls.append((eqn.primitive.name, x.aval.shape, w.aval.shape,
                    eqn.params["cfg"].implementation))
  return calls


def train_step_calls(config) -> list[tuple[str, tuple, tuple, str]]:
  """The sparse calls of the config's training forward and backward at its batch size."""
  model = build_model(config, build_rules(config))
  size, channels = config.data.image_size, config.data.channels
  images = jax.ShapeDtypeStruct((config.batch_size, size, size, channels), jnp.float32)
  labels = jax.ShapeDtypeStruct((config.batch_size,), jnp.int32)
  variables = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, size, size, channels)), train=False))

  def loss(params, variables, images, labels):
    logits, _ = model.apply({**variables, "params": params}, images, train=True,
                            mutable=["batch_stats", "nm_masks"])
    return cross_entropy(logits, labels, config.data.num_classes, config.label_smoothing).mean()

  return sparse_calls(jax.grad(loss), variables["params"], variables, images, labels)


@pytest.mark.parametrize("model", CIFAR10)
def test_every_sparse_layer_of_the_cifar10_configs_runs_pallas_on_h200(model, h200):
  config = load_config(os.path.join(ROOT, "configs", f"{model}_cifar10.py"))
  assert (config.method, config.pattern, config.implementation, config.dtype,
          config.batch_size) == ("bdwp", "2:8", None, "bfloat16", 512)
  calls = train_step_calls(config)
  forward = [c for c in calls if c[0].endswith("_fwd")]
  assert forward and len(forward) == len(calls) - len(forward)  # each layer's backward traced
  not_pallas = [c for c in calls if c[3] != "pallas"]
  assert not not_pallas, f"{model}_cifar10 layers not on pallas: {not_pallas}"


def test_a_layer_eligible_for_sparse_tc_takes_it_on_h200(h200):
  """The converse, so the check above can fail: a 4096x4096 bdwp 2:8 dense layer over 16384 rows
  measured faster on sparse_tc and takes it."""
  layer = LayerSpec("dense", (16384, 4096), (4096, 4096), jnp.bfloat16, NMPattern(2, 8), "bdwp",
                    False)
  assert registry.resolve_implementation(None, layer) == "sparse_tc"
