"""Test helper: faster Verilator builds for short simulations."""

import contextlib
import os

import pytest


@contextlib.contextmanager
def quick_verilator_builds():
    """Verilator's C++ at -O0: a whole design compiles about twice as fast; right for short runs."""
    flags = "OPT_FAST=-O0 OPT_SLOW=-O0 OPT_GLOBAL=-O0"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MAKEFLAGS", " ".join(filter(None, [os.environ.get("MAKEFLAGS", ""), flags])))
        yield
