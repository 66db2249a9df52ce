"""Serving what was trained: export packed forward operands, save/load them, run the model from them."""

from nmsparse.export.inference import (PackedConv, PackedDense, apply, inference_model,
                                       packed_matmul)
from nmsparse.export.store import load_exported, save_exported
from nmsparse.export.tree import PACKED, Exported, compression, export

__all__ = [
    "PACKED", "Exported", "PackedConv", "PackedDense", "apply", "compression", "export",
    "inference_model", "load_exported", "packed_matmul", "save_exported",
]
