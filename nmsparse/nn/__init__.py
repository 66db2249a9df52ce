"""Flax linen layers with N:M sparse training: ``NMDense`` and ``NMConv``."""

from nmsparse.nn.layers import NMConv, NMDense

__all__ = ["NMConv", "NMDense"]
