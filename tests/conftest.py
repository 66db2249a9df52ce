"""Parametrises suite classes that define ``cases()`` (see ``nmsparse.testing.op_suite``), and gives
the test run a fresh persistent JAX compilation cache that keeps every compiled program and, when
JAX can only use the CPU, XLA flags that make compiling fast."""

import importlib.util
import os
import pkgutil
import shutil
import tempfile
from importlib import metadata

_CACHE_DIR = None  # set where this process made the cache (and removes it at the end)
# Cache every compiled program, not only those that took JAX's default 1 s to compile: the suite
# compiles thousands of small ones (eager ops, op-suite cases), ~40 ms each on this CPU, and the
# other xdist worker and the tests' subprocesses compile many of the same again.
CACHE_EVERY_PROGRAM = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                       "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
# On a CPU-only run, XLA compiles for speed of compilation: most of the suite's time is compiling
# small programs that then run once or twice. Without LLVM's optimisation passes (they took a third
# of the suite's CPU time) and with the LLVM-IR fusion emitters instead of the MLIR ones (half the
# remaining compile time of an op-suite case or a recipe train step). The programs compute the same
# functions (no fast math either way); a result can differ in its last bits (a multiply-add LLVM
# would have fused, another emitter's exp), which the tolerances allow, and the bit-exact checks
# compare two runs compiled alike (subprocesses inherit XLA_FLAGS). A GPU run keeps XLA's
# defaults, and a flag that the caller's XLA_FLAGS name is left as they set it.
CPU_TEST_FLAGS = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")


def _cpu_only() -> bool:
  """Whether JAX can only run on the CPU here: ``JAX_PLATFORMS`` says so, or no accelerator
  plugin (``jax_plugins``, as JAX discovers them) and no libtpu is installed."""
  platforms = os.environ.get("JAX_PLATFORMS", "")
  if platforms:
    return set(platforms.split(",")) == {"cpu"}
  try:
    import jax_plugins  # pylint: disable=g-import-not-at-top
    plugins = list(pkgutil.iter_modules(jax_plugins.__path__))
  except ImportError:
    plugins = []
  return not (plugins or metadata.entry_points(group="jax_plugins")
              or importlib.util.find_spec("libtpu"))


def pytest_configure(config):
  """Many tests compile a program that another test, a resumed run or a subprocess compiled before
  (every ResNet9 smoke run compiles the same 5 s parameter init): with a compilation cache they
  load that executable instead of compiling it again. The cache is new for every pytest run and
  removed at its end; the xdist workers and the subprocesses of tests inherit it through
  ``JAX_COMPILATION_CACHE_DIR``, which, when the caller set it, is used as it is (as are the
  ``CACHE_EVERY_PROGRAM`` variables). An entry that two processes wrote at once and that does not
  load is a cache miss: JAX warns and compiles."""
  global _CACHE_DIR
  if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    _CACHE_DIR = tempfile.mkdtemp(prefix="nmsparse-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE_DIR
  for name, value in CACHE_EVERY_PROGRAM.items():
    os.environ.setdefault(name, value)
  if _cpu_only():
    flags = os.environ.get("XLA_FLAGS", "")
    extra = [f for f in CPU_TEST_FLAGS if f.split("=")[0] not in flags]
    os.environ["XLA_FLAGS"] = " ".join([flags, *extra]).strip()  # subprocesses inherit them
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
  jax.config.update("jax_persistent_cache_min_compile_time_secs",
                    float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
  jax.config.update("jax_persistent_cache_min_entry_size_bytes",
                    int(os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"]))


def pytest_unconfigure(config):
  if _CACHE_DIR is not None:
    shutil.rmtree(_CACHE_DIR, ignore_errors=True)


def pytest_generate_tests(metafunc):
  cls = metafunc.cls
  if cls is not None and "case" in metafunc.fixturenames and hasattr(cls, "cases"):
    cases = cls.cases()
    metafunc.parametrize("case", cases, ids=[c.id for c in cases])


# Folders and files whose tests train, resume or run scripts in subprocesses (tens of seconds each):
# collected first, so that the xdist workers start them early and the many short tests fill in
# after them, instead of one long test running alone at the end of the run.
LONG_FIRST = ("tests/train/", "tests/experiments/", "tests/test_bench_scripts.py")


def pytest_collection_modifyitems(session, config, items):
  root = str(config.rootpath)
  long_first = lambda item: not os.path.relpath(str(item.path), root).startswith(LONG_FIRST)
  items.sort(key=long_first)  # stable: each part keeps its order
