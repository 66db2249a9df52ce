"""Loads the native extension (``libnmsparse_native.so``) and registers its XLA FFI targets on CUDA.

The extension is optional and GPU-only: ``python -m nmsparse.native.build`` makes it on a machine
with CUDA and cuSPARSELt. :func:`status` says whether it is usable here and, if not, why; nothing
is loaded or registered until something asks for it.
"""

from __future__ import annotations

import ctypes
import functools
import os

from nmsparse.native.build import HERE, LIB_NAME

TARGETS = ("nms_sptc_prune", "nms_sptc_lib_compress", "nms_sptc_compress", "nms_sptc_spmm",
           "nms_vs_matmul", "nms_vs_blocked_matmul", "nms_vs_tiled_matmul", "nms_vs_tiled_matmul_nocb",
           "nms_vs_pipe_matmul")


def library_path() -> str:
  """Where the loader looks: ``NMSPARSE_NATIVE_LIB`` or the build's default location."""
  return os.environ.get("NMSPARSE_NATIVE_LIB") or os.path.join(HERE, LIB_NAME)


@functools.lru_cache(maxsize=None)
def _load() -> tuple[ctypes.CDLL | None, str | None]:
  import jax

  if jax.default_backend() != "gpu":
    return None, ("the sparse_tc backend needs a CUDA GPU; the JAX backend is "
                  f"{jax.default_backend()!r}")
  path = library_path()
  if not os.path.exists(path):
    return None, (f"the native extension is not built ({path} does not exist): run "
                  "`python -m nmsparse.native.build` on the GPU machine")
  try:
    lib = ctypes.CDLL(path)
  except OSError as e:
    return None, f"the native extension at {path} does not load: {e}"
  for name in TARGETS:
    if hasattr(lib, name):
      jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, name)), platform="CUDA")
  i64, p64 = ctypes.c_int64, ctypes.POINTER(ctypes.c_int64)
  lib.nms_sptc_compressed_size.argtypes = [ctypes.c_int, i64, i64, p64, p64]
  lib.nms_sptc_prepare.argtypes = [ctypes.c_int, i64, i64, i64, p64, ctypes.POINTER(ctypes.c_int)]
  return lib, None


def status() -> str | None:
  """``None`` when the extension is loaded and its targets registered, else the reason it is not."""
  return _load()[1]


def library(what: str = "implementation='sparse_tc'") -> ctypes.CDLL:
  """The loaded extension; ``what`` names the caller in the error.

  Raises:
    ValueError: off-GPU, or the extension is not built or does not load (the message says which).
  """
  lib, why = _load()
  if lib is None:
    raise ValueError(f"{what} is not available: {why}.")
  return lib


@functools.lru_cache(maxsize=None)
def compressed_size(m: int, k: int) -> tuple[int, int]:
  """Bytes of cuSPARSELt's compressed form of a 2:4 bf16 ``[m, k]`` operand, and of the buffer
  its compressor needs."""
  size, buf = ctypes.c_int64(0), ctypes.c_int64(0)
  rc = library().nms_sptc_compressed_size(0, m, k, ctypes.byref(size), ctypes.byref(buf))
  if rc:
    raise ValueError(f"cuSPARSELt rejects a structured bf16 [{m}, {k}] operand (code {rc}).")
  return int(size.value), int(buf.value)


@functools.lru_cache(maxsize=None)
def prepare_spmm(m: int, n: int, k: int) -> tuple[int, int]:
  """Plans ``x [n, k] @ A^T`` for a structured ``A [m, k]`` once per shape (the algorithm is picked
  by ``cusparseLtMatmulSearch``); returns (workspace bytes, algorithm id)."""
  ws, alg = ctypes.c_int64(0), ctypes.c_int(0)
  rc = library().nms_sptc_prepare(0, m, n, k, ctypes.byref(ws), ctypes.byref(alg))
  if rc:
    raise ValueError(f"cuSPARSELt cannot plan a [{n}, {k}] x [{m}, {k}]^T product (code {rc}).")
  return int(ws.value), int(alg.value)

