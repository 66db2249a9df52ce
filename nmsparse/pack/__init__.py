"""Mask -> packed N:M operand (kept values + bit-packed in-group positions) and back, in jnp."""

from nmsparse.pack.format import (PackedNM, fields_per_byte, keep_bits_dtype, pack,
                                  pack_keep_bits, pack_nm, pack_positions, packed_bytes,
                                  position_bits, unpack, unpack_keep_bits, unpack_positions)

__all__ = [
    "PackedNM", "fields_per_byte", "keep_bits_dtype", "pack", "pack_keep_bits", "pack_nm",
    "pack_positions", "packed_bytes", "position_bits", "unpack", "unpack_keep_bits",
    "unpack_positions",
]
