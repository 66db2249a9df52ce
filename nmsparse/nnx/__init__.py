"""Flax nnx layers with N:M sparse training: ``NMLinear``, ``NMConv`` and ``apply_rules``."""

from nmsparse.nnx.layers import NMConv, NMLinear, apply_rules

__all__ = ["NMConv", "NMLinear", "apply_rules"]
