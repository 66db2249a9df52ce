"""Parametrises suite classes that define ``cases()`` (see ``nmsparse.testing.op_suite``), and gives
each test process a fresh persistent JAX compilation cache."""

import os
import shutil
import tempfile

_CACHE_DIR = None
_OURS = "NMSPARSE_TESTS_OWN_JAX_CACHE"  # set beside the cache dir: the dir is this suite's


def pytest_configure(config):
  """Many tests build the same train step again (a resumed run, a second segment, a subprocess on
  the same smoke config): with a compilation cache they load the executable XLA compiled the first
  time instead of compiling it again. The cache is new for every pytest process (each xdist worker
  has its own, so no two processes write one entry at once) and is removed at the end; a
  ``JAX_COMPILATION_CACHE_DIR`` set by the caller is used as it is. Subprocesses inherit it."""
  global _CACHE_DIR
  if os.environ.get("JAX_COMPILATION_CACHE_DIR") and not os.environ.get(_OURS):
    return
  _CACHE_DIR = tempfile.mkdtemp(prefix="nmsparse-jax-cache-")
  os.environ["JAX_COMPILATION_CACHE_DIR"], os.environ[_OURS] = _CACHE_DIR, "1"
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_compilation_cache_dir", _CACHE_DIR)


def pytest_unconfigure(config):
  if _CACHE_DIR is not None:
    shutil.rmtree(_CACHE_DIR, ignore_errors=True)


def pytest_generate_tests(metafunc):
  cls = metafunc.cls
  if cls is not None and "case" in metafunc.fixturenames and hasattr(cls, "cases"):
    cases = cls.cases()
    metafunc.parametrize("case", cases, ids=[c.id for c in cases])
