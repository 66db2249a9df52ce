"""The differentiable sparse ops: primitives, their VJP rules and implementation dispatch."""

from nmsparse.ops.config import ConvDims, NMConfig
from nmsparse.ops.conv import nm_conv
from nmsparse.ops.dense import nm_dense
from nmsparse.ops.primitives import (nm_conv_bwd_p, nm_conv_fwd_p, nm_conv_src_bwd_p,
                                     nm_conv_src_fwd_p, nm_dense_bwd_p, nm_dense_fwd_p,
                                     nm_dense_src_bwd_p, nm_dense_src_fwd_p)
from nmsparse.ops.registry import get_impl, resolve_implementation

__all__ = [
    "ConvDims", "NMConfig", "get_impl", "nm_conv", "nm_conv_bwd_p", "nm_conv_fwd_p",
    "nm_conv_src_bwd_p", "nm_conv_src_fwd_p", "nm_dense", "nm_dense_bwd_p", "nm_dense_fwd_p",
    "nm_dense_src_bwd_p", "nm_dense_src_fwd_p", "resolve_implementation",
]
