"""Flax nnx layers with N:M sparse training: ``NMLinear``, ``NMConv``, their ``NMMasks`` variables
(``mask_every > 1``) and ``apply_rules``."""

from nmsparse.nnx.layers import NMConv, NMLinear, NMMasks, apply_rules

__all__ = ["NMConv", "NMLinear", "NMMasks", "apply_rules"]
