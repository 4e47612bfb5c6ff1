"""Shared fixtures."""

import os

import pytest
import torch

# Brevitas reads this on import; its JIT was erratic on these CPUs (../shared/TOOLCHAIN.md).
os.environ.setdefault("BREVITAS_JIT", "0")


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: the fastest on a busy machine, and the same arithmetic in every run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
