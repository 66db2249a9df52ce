"""Parametrises suite classes that define ``cases()`` (see ``nmsparse.testing.op_suite``), and gives
the test run a fresh persistent JAX compilation cache that keeps every compiled program."""

import os
import shutil
import tempfile

_CACHE_DIR = None  # set where this process made the cache (and removes it at the end)
# Cache every compiled program, not only those that took JAX's default 1 s to compile: the suite
# compiles thousands of small ones (eager ops, op-suite cases), ~40 ms each on this CPU, and the
# other xdist worker and the tests' subprocesses compile many of the same again.
CACHE_EVERY_PROGRAM = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                       "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


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
