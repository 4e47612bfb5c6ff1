"""Measured cycles per frame of the simulation suite's designs against the planner's estimate.

Run: ``python bench/sim_rate.py [--designs resnet-tiny-th,cnv,...] [--simulator verilator]
[--images N]``. Each design of :data:`instabnn_hw.sim.suite.SUITE` is generated, built and
simulated (every output compared with the reference); the table gives the estimated and the
measured steady-state cycles per frame at full rate, their ratio (the target: within 5 %), the
measured frames per second at the manifest's clock against the ideal rate of the slowest stage
(>= 95 %), the first frame's latency against its estimate, and the simulator's speed: the
seconds to build the simulation and to run it. Also written to ``bench/results/sim_rate.csv``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from results import machine_line, write_csv

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from instabnn_hw.sim.design import simulate_design  # noqa: E402
from instabnn_hw.sim.folder import load_design  # noqa: E402
from instabnn_hw.sim.images import design_images  # noqa: E402
from instabnn_hw.sim.suite import SUITE, generate_suite_design  # noqa: E402
from instabnn_hw.table import format_table  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--designs", default=",".join(SUITE), help="comma-separated (default: all)")
    parser.add_argument("--simulator", default="verilator", choices=("verilator", "icarus"))
    parser.add_argument("--images", type=int, default=None, help="images per design (default: the suite's)")
    args = parser.parse_args()
    names = args.designs.split(",")
    unknown = [n for n in names if n not in SUITE]
    if unknown:
        parser.error(f"unknown designs {unknown}; choose from {', '.join(SUITE)}")
    header = (
        "design",
        "images",
        "mismatches",
        "est. cycles/frame",
        "measured",
        "ratio",
        "fps / ideal",
        "latency est.",
        "measured",
        "sim cycles/s",
        "build s",
        "run s",
    )
    print(f"{machine_line()}; {args.simulator}", flush=True)
    rows, all_good = [], True
    with tempfile.TemporaryDirectory() as root:
        for name in names:
            started = time.monotonic()
            folder = generate_suite_design(name, root)
            design = load_design(folder)
            pixels, labels, _ = design_images(design, args.images or SUITE[name].images, random_pixels=True)
            result = simulate_design(folder, pixels, labels, simulator=args.simulator, design=design)
            estimate = result.estimate
            measured = result.cycles_per_frame
            ratio = measured / estimate["cycles_per_frame"] if measured else float("nan")
            # the ideal rate is set by the slowest stage: the estimate's cycles per frame
            rate = estimate["cycles_per_frame"] / measured if measured else float("nan")
            all_good &= result.ok and abs(ratio - 1) <= 0.05 and rate >= 0.95
            rows.append(
                (
                    name,
                    str(len(result.images)),
                    str(result.failed),
                    f"{estimate['cycles_per_frame']:,}",
                    f"{measured:,.0f}" if measured else "-",
                    f"{ratio:.3f}",
                    f"{rate:.3f}",
                    f"{estimate['latency_cycles']:,}",
                    f"{result.latency:,}" if result.latency is not None else "-",
                    f"{result.cycles_per_second:,.0f}",
                    f"{result.build_seconds:.0f}",
                    f"{result.run_seconds:.0f}",
                )
            )
            seconds = time.monotonic() - started
            print(f"{name}: {result.passed} passed, {result.failed} failed ({seconds:.0f} s)", flush=True)
    print()
    print(format_table(header, rows))
    print(f"wrote {write_csv('sim_rate.csv', header, rows)}")
    verdict = "yes" if all_good else "no"
    print(f"\nall designs bit-exact, within 5 % of the estimate and >= 95 % of the ideal rate: {verdict}")
    return 0 if all_good else 1


if __name__ == "__main__":
    sys.exit(main())
