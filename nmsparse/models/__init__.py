"""Models (linen) with injectable dense/conv layer classes, a name registry and default layer rules.

Every model takes ``num_classes``, ``dense``, ``conv`` and ``dtype`` and is called as
``model.apply(variables, images, train=...)``; it names its first conv (or patch embedding)
``conv_init``/``embedding`` and its classifier ``head``, which :func:`default_rules` keep dense.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn

from nmsparse.models.mlp import MLP
from nmsparse.models.resnet import ResNet, ResNet9, ResNet18, ResNet34, ResNet50
from nmsparse.models.vgg import VGG
from nmsparse.models.vit import ViT
from nmsparse.prune.rules import LayerRules
from nmsparse.types import PatternLike

MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "resnet9": ResNet9,
    "resnet18": ResNet18,
    "resnet34": ResNet34,
    "resnet50": ResNet50,
    "vgg19": VGG,
    "vit": ViT,
}

# The stem conv / patch embedding (3 input channels) and the classifier (num_classes outputs) stay
# dense: their grouping axes do not divide by M, and they are a tiny share of the FLOPs.
DEFAULT_DENSE = (r"(^|/)conv_init/kernel$", r"(^|/)embedding/kernel$", r"(^|/)head/kernel$")


def default_rules(pattern: PatternLike | None) -> LayerRules:
  """Stem and classifier dense, every other conv and dense kernel under ``pattern``."""
  return LayerRules.uniform(pattern, dense=DEFAULT_DENSE)


def create_model(name: str, **kwargs: Any) -> nn.Module:
  """Builds a registered model (``MODELS``) with keyword arguments for its fields.

  Raises:
    ValueError: for an unknown name (the message lists the known ones).
  """
  if name not in MODELS:
    raise ValueError(f"Unknown model {name!r}; known models: {', '.join(sorted(MODELS))}.")
  return MODELS[name](**kwargs)


__all__ = [
    "DEFAULT_DENSE", "MLP", "MODELS", "ResNet", "ResNet9", "ResNet18", "ResNet34", "ResNet50", "VGG",
    "ViT", "create_model", "default_rules",
]
