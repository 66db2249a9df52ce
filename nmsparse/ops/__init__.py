"""The differentiable sparse ops: primitives, their VJP rules and implementation dispatch."""

from nmsparse.ops.config import ConvDims, LayerSpec, NMConfig
from nmsparse.ops.conv import nm_conv
from nmsparse.ops.dense import nm_dense
from nmsparse.ops.impl import Implementation
from nmsparse.ops.primitives import nm_conv_bwd_p, nm_conv_fwd_p, nm_dense_bwd_p, nm_dense_fwd_p
from nmsparse.ops.registry import IMPLEMENTATIONS, get_implementation, resolve_implementation

__all__ = [
    "ConvDims", "IMPLEMENTATIONS", "Implementation", "LayerSpec", "NMConfig",
    "get_implementation", "nm_conv", "nm_conv_bwd_p", "nm_conv_fwd_p", "nm_dense",
    "nm_dense_bwd_p", "nm_dense_fwd_p", "resolve_implementation",
]
