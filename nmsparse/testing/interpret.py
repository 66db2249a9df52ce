"""The interpret-mode switch for tests: run the Pallas kernels in the interpreter (CPU CI)."""

from nmsparse.kernels.backend import force_interpret, interpret

__all__ = ["force_interpret", "interpret"]
