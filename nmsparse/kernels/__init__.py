"""Raw Pallas kernels (no autodiff), each beside its ``reference_<name>`` in plain jnp."""

from nmsparse.kernels.backend import force_interpret, interpret
from nmsparse.kernels.nm_matmul import (MatmulBlocks, nm_matmul, nm_matmul_t, reference_nm_matmul,
                                        reference_nm_matmul_t)
from nmsparse.kernels.prune_pack import Pruned, prune_pack, reference_prune_pack

__all__ = [
    "MatmulBlocks", "Pruned", "force_interpret", "interpret", "nm_matmul", "nm_matmul_t",
    "prune_pack", "reference_nm_matmul", "reference_nm_matmul_t", "reference_prune_pack",
]
