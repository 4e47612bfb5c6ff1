"""Time and peak memory of `instabnn-hw generate` for the big zoo models (the target: < 60 s, < 4 GB).

Run: ``python bench/generate_speed.py [--models resnet18,mobilenetv1] [--insta th]``. Each
generate runs in its own process; its wall time and peak resident memory (from ``wait4``) are
printed with the time of each step and the size of the Verilog it wrote (``rtl/*.v``), and
written to ``bench/results/generate_speed.csv``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results import machine_line, write_csv

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from instabnn_hw.table import format_table  # noqa: E402


def verilog_sizes(out: Path) -> dict[str, int]:
    """Bytes of each ``rtl/*.v`` that generate wrote (empty when it failed)."""
    return {path.name: path.stat().st_size for path in sorted((out / "rtl").glob("*.v"))}


def run(model: str, insta: str, out: Path) -> tuple[float, float, list[str], int]:
    command = [sys.executable, "-m", "instabnn_hw", "generate", "--model", model, "--insta", insta, "--out", str(out)]
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - started
    steps = [line for line in output.splitlines() if re.match(r"\[\d/\d\]", line)]
    return seconds, usage.ru_maxrss / 1024**2, steps, os.waitstatus_to_exitcode(status)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,mobilenetv1")
    parser.add_argument("--insta", default="th")
    args = parser.parse_args()
    print(machine_line(), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for model in args.models.split(","):
            seconds, gib, steps, code = run(model, args.insta, Path(folder) / model)
            sizes = verilog_sizes(Path(folder) / model)
            files = [f"{name}: {size / 1e6:.2f} MB" for name, size in sizes.items()]
            print(f"{model}: exit {code}", *steps, *files, sep="\n  ", flush=True)
            rows.append(
                (
                    model,
                    args.insta,
                    f"{seconds:.1f}",
                    f"{gib:.2f}",
                    f"{sum(sizes.values()) / 1e6:.1f}",
                    "yes" if code == 0 and seconds < 60 and gib < 4 else "no",
                )
            )
    print()
    header = ("model", "insta", "seconds", "peak GiB", "Verilog MB", "< 60 s and < 4 GB")
    print(format_table(header, rows, text_columns=2))
    print(f"wrote {write_csv('generate_speed.csv', header, rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
