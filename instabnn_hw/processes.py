"""Child processes (Yosys, nextpnr, Verilator, the simulation) that end with the command that runs them.

A child started by :func:`popen` leads a process group of its own, so an interrupt of the
command ends the child and everything it started (:func:`stop`), and it is killed by the
kernel when the command itself dies, even by ``SIGKILL`` (Linux's parent-death signal).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
from collections.abc import Sequence

__all__ = ["popen", "run", "stop", "grouped_runner"]

_PR_SET_PDEATHSIG = 1
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: the process group alone
    _prctl = None
#: Seconds a stopped child gets to exit after SIGTERM before SIGKILL.
STOP_GRACE = 3.0


def _die_with_parent(parent: int) -> None:
    # runs in the child between fork and exec: nothing here may allocate or take a lock
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def popen(command: Sequence[str], **kwargs) -> subprocess.Popen:
    """``subprocess.Popen(command, **kwargs)`` in a new process group that dies with this process."""
    parent = os.getpid()
    preexec = (lambda: _die_with_parent(parent)) if _prctl is not None else None
    return subprocess.Popen(list(command), start_new_session=True, preexec_fn=preexec, **kwargs)


def stop(process: subprocess.Popen) -> None:
    """Ends ``process`` and its process group: SIGTERM, then SIGKILL after :data:`STOP_GRACE` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            continue
        # the leader is gone; a straggler of its group gets the last signal
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        return


def run(command: Sequence[str], **kwargs) -> int:
    """Runs ``command`` (:func:`popen`) to its end and returns its exit status; an exception
    while waiting (an interrupt) stops it first."""
    process = popen(command, **kwargs)
    try:
        return process.wait()
    except BaseException:
        stop(process)
        raise


def grouped_runner(runner):
    """``runner`` (a cocotb runner) with its tool and simulation commands run by :func:`run`."""

    def execute(cmds, cwd, stdout=None) -> None:
        for cmd in cmds:
            stderr = None if stdout is None else subprocess.STDOUT
            status = run([str(part) for part in cmd], cwd=cwd, env=runner.env, stdout=stdout, stderr=stderr)
            if status != 0:
                raise RuntimeError(f"Command failed with return code: {status}")

    runner._execute_cmds = execute  # the one place cocotb starts processes
    return runner
