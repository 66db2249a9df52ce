"""Serving what was trained: export packed forward operands, save/load them, run the model from them."""

from nmsparse.export.inference import (IMPLEMENTATIONS, NATIVE, SPARSE_TC, TILED, CompressedFF,
                                       PackedConv, PackedDense, apply, decode_path,
                                       inference_model, layer_paths, materialize, packed_matmul)
from nmsparse.export.store import load_exported, save_exported
from nmsparse.export.tree import PACKED, Exported, compression, export

__all__ = [
    "IMPLEMENTATIONS", "NATIVE", "PACKED", "SPARSE_TC", "TILED", "CompressedFF", "Exported",
    "PackedConv", "PackedDense", "apply",
    "compression", "decode_path", "export", "inference_model", "layer_paths", "load_exported",
    "materialize", "packed_matmul", "save_exported",
]
