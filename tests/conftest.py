"""Shared fixtures."""

import os

import pytest
import torch
from verilator_builds import quick_verilator_builds

# Brevitas reads this on import; its JIT was erratic on these CPUs (../shared/TOOLCHAIN.md).
os.environ.setdefault("BREVITAS_JIT", "0")
# A warning in a command the tests start (the CLI, torchrun, a cocotb simulation) fails it too.
os.environ.setdefault("PYTHONWARNINGS", "error")


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: the fastest on a busy machine, and the same arithmetic in every run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def quick_build():
    """Verilator's C++ at -O0 for one test (:func:`verilator_builds.quick_verilator_builds`)."""
    with quick_verilator_builds():
        yield
