"""nmsparse: N:M structured-sparse DNN training in JAX (bidirectional weight pruning, BDWP)."""

from nmsparse import nn, nnx, ops, prune
from nmsparse.ops import nm_conv, nm_dense
from nmsparse.prune import LayerRules, nm_mask, sparsity_report
from nmsparse.types import METHODS, NMPattern

__version__ = "0.1.0"

__all__ = [
    "LayerRules", "METHODS", "NMPattern", "nm_conv", "nm_dense", "nm_mask", "nn", "nnx", "ops",
    "prune", "sparsity_report",
]
