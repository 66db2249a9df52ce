"""Builds the native sparse-tensor-core extension (``libnmsparse_native.so``) with nvcc.

``python -m nmsparse.native.build`` on a machine with CUDA (nvcc), cuSPARSELt (the
``nvidia-cusparselt-cu12/-cu13`` wheel) and jaxlib (the XLA FFI headers). No network, no CMake.
The library lands next to this file unless ``--out`` says otherwise; ``NMSPARSE_NATIVE_LIB`` points
the loader at another copy.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
LIB_NAME = "libnmsparse_native.so"
SOURCES = ("sptc.cu", "vs.cu")


def find_cusparselt() -> tuple[str, str]:
  """(include dir, lib dir) of cuSPARSELt: ``CUSPARSELT_ROOT`` or the pip wheel's folders."""
  roots = [os.environ["CUSPARSELT_ROOT"]] if os.environ.get("CUSPARSELT_ROOT") else []
  for path in sys.path:
    roots += glob.glob(os.path.join(path, "nvidia", "cusparselt"))
    roots += glob.glob(os.path.join(path, "nvidia", "cu1*"))
  for root in roots:
    if os.path.exists(os.path.join(root, "include", "cusparseLt.h")):
      libs = glob.glob(os.path.join(root, "lib", "libcusparseLt.so*"))
      if libs:
        return os.path.join(root, "include"), os.path.join(root, "lib")
  raise FileNotFoundError(
      "cuSPARSELt not found: install nvidia-cusparselt-cu12 or -cu13 (pip) or set CUSPARSELT_ROOT "
      "to a folder with include/cusparseLt.h and lib/libcusparseLt.so*.")


def _nvcc() -> str:
  return shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"


def compile_commands(out: str, arch: str = "90a") -> tuple[list[list[str]], list[str]]:
  """One nvcc command per source (an object next to ``out``) and the link command: the sources
  compile in parallel, the link waits for them."""
  import jax  # the FFI headers ship with jaxlib

  inc, lib = find_cusparselt()
  flags = ["-O3", "-std=c++17", "-Xcompiler", "-fPIC", f"-gencode=arch=compute_{arch},code=sm_{arch}"]
  objs = [f"{out}.{os.path.splitext(s)[0]}.o" for s in SOURCES]
  compiles = [[_nvcc(), *flags, "-c", "-I", jax.ffi.include_dir(), "-I", inc,
               os.path.join(HERE, "csrc", s), "-o", o] for s, o in zip(SOURCES, objs)]
  link = [_nvcc(), "--shared", *objs, "-L", lib, "-l:libcusparseLt.so.0",
          f"-Xlinker=-rpath,{lib}", "-o", out]
  return compiles, link


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=os.path.join(HERE, LIB_NAME))
  parser.add_argument("--arch", default="90a", help="GPU target: 90a (Hopper, the default)")
  args = parser.parse_args(argv)
  compiles, link = compile_commands(args.out, args.arch)
  for cmd in compiles:
    print(" ".join(cmd), flush=True)
  procs = [subprocess.Popen(cmd) for cmd in compiles]
  codes = [p.wait() for p in procs]
  if any(codes):
    raise subprocess.CalledProcessError(max(codes), "nvcc -c")
  print(" ".join(link), flush=True)
  subprocess.run(link, check=True)
  print(f"built {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
