"""What every benchmark writes: CSV and PNG under ``bench/results/``, and the machine it ran on.

The README's figures are copied from these files, so each CSV starts with a comment line
naming the date, the machine and the command that wrote it.
"""

from __future__ import annotations

import csv
import datetime
import os
import platform
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["RESULTS", "WORK", "cpu_model", "machine_line", "write_csv", "save_figure"]

REPO = Path(__file__).resolve().parents[1]
#: Committed figures (CSV and PNG).
RESULTS = REPO / "bench" / "results"
#: Bulky intermediate files (designs, checkpoints, bitstreams): git-ignored, kept for reruns.
WORK = REPO / "build" / "bench"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or the platform's guess)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_line() -> str:
    """Date, CPU and core count: the provenance every results file carries."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{datetime.date.today().isoformat()}, {cpu_model()}, {cores} cores, Python {platform.python_version()}"


def _replace_atomically(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def write_csv(name: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    """Writes ``bench/results/name`` with a provenance comment line; returns its path."""
    path = RESULTS / name

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as stream:
            stream.write(f"# {machine_line()}; {shlex.join(['python', *sys.argv])}\n")
            writer = csv.writer(stream)
            writer.writerow(header)
            writer.writerows(rows)

    _replace_atomically(path, write)
    return path


def save_figure(figure, name: str) -> Path:
    """Saves a matplotlib figure as ``bench/results/name`` (PNG, no timestamp: same data, same file)."""
    path = RESULTS / name
    _replace_atomically(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120, metadata={"Software": None}))
    return path
