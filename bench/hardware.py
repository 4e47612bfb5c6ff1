"""Hardware figures on the LFE5U-85F: CNV against FINN's CNV W1A1, and INSTA's overhead on resnet-tiny.

Run: ``python bench/hardware.py [--designs cnv,resnet-tiny-th,...] [--jobs 2] [--images 3]``.

Each design is generated with seeded weights (``instabnn-hw generate --model ... --seed 0``; the
weights' values do not change the hardware's size), simulated under Verilator on random images
(every output compared with the reference executor; the measured cycles per frame and first-frame
latency), and built for the LFE5U-85F by ``instabnn-hw build --clock 150`` (Yosys, nextpnr, ecppack). The
resnet-tiny variants share one folding target (``--fps 3500``), so they differ only in the
threshold unit: the INSTA overhead.

Writes ``bench/results/hardware.csv``, ``estimates.csv`` (the planner's LUT4 and DSP estimates
against synthesis and placement), ``insta_overhead.csv`` and ``hardware.png``. Designs and
bitstreams go under ``build/bench/hardware/``; a design whose build is already there is reused
(``--rebuild`` starts over; the table names each build's nextpnr seed). A resnet-tiny build takes
about 15 minutes on one core, CNV about 5. A build still running after ``--timeout`` seconds
(default :data:`~instabnn_hw.hw.build.BUILD_TIMEOUT`) is stopped, and the table reports the failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Three images are a short run: compiling the model's C++ without optimisation saves more than it costs.
os.environ.setdefault("MAKEFLAGS", "OPT_FAST=-O0 OPT_SLOW=-O0 OPT_GLOBAL=-O0")

from results import WORK, machine_line, save_figure, write_csv  # noqa: E402

from instabnn_hw.hw.build import BUILD_TIMEOUT  # noqa: E402
from instabnn_hw.table import format_table  # noqa: E402

DEVICE = "LFE5U-85F"
#: nextpnr's clock target.
CLOCK_MHZ = 150.0

#: Generate options of each design (``instabnn-hw generate`` keywords).
DESIGNS: dict[str, dict] = {
    "cnv": {"model": "cnv", "insta": "rsign", "fps": 1500.0},
    "resnet-tiny-rsign": {"model": "resnet-tiny", "insta": "rsign", "fps": 3500.0},
    "resnet-tiny-th": {"model": "resnet-tiny", "insta": "th", "fps": 3500.0},
    "resnet-tiny-th+": {"model": "resnet-tiny", "insta": "th+", "fps": 3500.0},
}
#: The INSTA overhead is measured against ReActNet's learned threshold (rsign) in the same model.
OVERHEAD = ("resnet-tiny-rsign", "resnet-tiny-th", "resnet-tiny-th+")


@dataclass(frozen=True)
class Finn:
    """FINN's published CNV W1A1 on a Zynq-7020 (../shared/ANCHORS.md)."""

    clock_mhz: float = 100.0
    cycles_per_frame: int = 32_768
    fps: float = 3_020.0
    luts: int = 26_000  # LUT6
    bram_tiles: int = 124


FINN = Finn()


@dataclass
class Measured:
    name: str
    manifest: dict
    utilization: dict | None
    images: int
    mismatches: int
    cycles_per_frame: float | None
    latency: int | None
    error: str | None = None

    @property
    def estimate(self) -> dict:
        return self.manifest["estimate"]

    @property
    def fmax(self) -> float | None:
        return self.utilization["fmax_mhz"] if self.utilization else None

    @property
    def synthesis(self) -> dict:
        """Yosys' cell counts (empty when the build failed)."""
        return self.utilization["synthesis"] if self.utilization else {}

    @property
    def luts(self) -> int | None:
        return self.synthesis.get("lut4_equivalent")

    def fps_at_fmax(self) -> float | None:
        cycles = self.cycles_per_frame or self.estimate["cycles_per_frame"]
        return self.fmax * 1e6 / cycles if self.fmax else None

    def latency_us_at_fmax(self) -> float | None:
        cycles = self.latency or self.estimate["latency_cycles"]
        return cycles / self.fmax if self.fmax else None


def _log(name: str, text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {text}", flush=True)


def measure(name: str, *, images: int, seed: int, rebuild: bool, timeout: float) -> Measured:
    """Generates, simulates and builds design ``name`` with nextpnr seed ``seed`` (reusing a finished
    build unless ``rebuild``)."""
    from instabnn_hw.codegen.generate import GenerateOptions, generate
    from instabnn_hw.hw.build import BuildError, build_design
    from instabnn_hw.sim.design import simulate_design
    from instabnn_hw.sim.folder import load_design
    from instabnn_hw.sim.images import design_images

    folder = WORK / "hardware" / name
    record = folder / "measured.json"
    if rebuild:
        shutil.rmtree(folder, ignore_errors=True)
    if not record.exists():
        _log(name, "generate")
        generate(GenerateOptions(out=str(folder), seed=0, **DESIGNS[name]), progress=False)
        design = load_design(folder)
        pixels, labels, _ = design_images(design, images, random_pixels=True, seed=1)
        _log(name, f"simulate {images} random images under Verilator")
        result = simulate_design(folder, pixels, labels, simulator="verilator", design=design, seed=1)
        record.write_text(
            json.dumps(
                {
                    "images": len(result.images),
                    "mismatches": result.failed,
                    "cycles_per_frame": result.cycles_per_frame,
                    "latency": result.latency,
                }
            )
        )
    simulated = json.loads(record.read_text())
    manifest = json.loads((folder / "manifest.json").read_text())
    utilization_path = folder / "build" / "utilization.json"
    error = None
    if not utilization_path.exists():
        _log(name, f"build for {DEVICE}")
        try:
            build_design(
                folder,
                device=DEVICE,
                clock_mhz=CLOCK_MHZ,
                seed=seed,
                timeout=timeout,
                progress=lambda text: _log(name, text),
            )
        except BuildError as exc:
            error = str(exc).splitlines()[0]
            _log(name, f"build failed: {error}")
    utilization = json.loads(utilization_path.read_text()) if utilization_path.exists() else None
    return Measured(name, manifest, utilization, error=error, **simulated)


def _number(value, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def hardware_rows(results: list[Measured]) -> tuple[list[str], list[list]]:
    header = [
        "design",
        "LUT4",
        "flip-flops",
        "memory bits",
        "BRAM tiles",
        "multipliers",
        "fmax MHz",
        "cycles/frame",
        "frames/s at fmax",
        "latency cycles",
        "latency us at fmax",
        "frames/s per kLUT",
        "bit-exact images",
        "nextpnr seed",
    ]
    rows = []
    for r in results:
        synthesis = r.synthesis
        fps = r.fps_at_fmax()
        rows.append(
            [
                r.name,
                r.luts,
                synthesis.get("ff"),
                synthesis.get("memory_bits"),
                synthesis.get("bram"),
                synthesis.get("dsp"),
                r.fmax,
                r.cycles_per_frame,
                None if fps is None else round(fps, 1),
                r.latency,
                None if fps is None else round(r.latency_us_at_fmax(), 1),
                None if fps is None else round(fps / (r.luts / 1000), 1),
                f"{r.images - r.mismatches}/{r.images}",
                r.utilization["seed"] if r.utilization else None,
            ]
        )
    finn_per_klut = FINN.fps / (FINN.luts / 1000)
    rows.append(
        [
            "FINN CNV W1A1 (Zynq-7020, LUT6)",
            FINN.luts,
            None,
            None,
            FINN.bram_tiles,
            None,
            FINN.clock_mhz,
            FINN.cycles_per_frame,
            FINN.fps,
            None,
            None,
            round(finn_per_klut, 1),
            None,
            None,
        ]
    )
    return header, rows


def estimate_rows(results: list[Measured]) -> tuple[list[str], list[list]]:
    """The planner's estimate beside what the tools made of each design: LUT4 against synthesis
    (LUT4 + 2 x CCU2C) and, once placed, against nextpnr's count, which decides the fit; DSP
    blocks against the synthesised MULT18X18D."""
    from instabnn_hw.hw.build import PLACED_LUT4
    from instabnn_hw.hw.devices import DEVICES

    header = [
        "design",
        "LUT4 estimate",
        "LUT4 synthesis",
        "estimate / synthesis",
        "LUT4 estimate once placed",
        "LUT4 placed",
        "estimate / placed",
        "multipliers estimate",
        "DSP synthesis",
    ]
    rows = []
    for r in (r for r in results if r.utilization):
        luts = int(r.estimate["luts"])
        placed_estimate = DEVICES[DEVICE].placed_luts(luts)
        placed = r.utilization["resources"][PLACED_LUT4["ecp5"]]["used"]
        rows.append(
            [
                r.name,
                luts,
                r.luts,
                f"{luts / r.luts:.3f}",
                placed_estimate,
                placed,
                f"{placed_estimate / placed:.3f}",
                r.estimate["multipliers"],
                r.synthesis.get("dsp"),
            ]
        )
    return header, rows


def overhead_rows(results: dict[str, Measured]) -> tuple[list[str], list[list]]:
    header = [
        "threshold",
        "LUT4",
        "LUT4 vs rsign %",
        "memory bits",
        "memory vs rsign",
        "multipliers",
        "latency cycles",
        "latency vs rsign",
        "cycles/frame",
        "frames/s at fmax",
    ]
    base = results["resnet-tiny-rsign"]
    rows = []
    for name in (n for n in OVERHEAD if n in results):
        r = results[name]
        memory, base_memory = r.synthesis.get("memory_bits"), base.synthesis.get("memory_bits")
        fps = r.fps_at_fmax()
        rows.append(
            [
                name.removeprefix("resnet-tiny-"),
                r.luts,
                None if not (r.luts and base.luts) else round(100 * (r.luts / base.luts - 1), 1),
                memory,
                None if not (memory and base_memory) else round(memory / base_memory, 2),
                r.synthesis.get("dsp"),
                r.latency,
                round(r.latency / base.latency, 2) if r.latency and base.latency else None,
                r.cycles_per_frame,
                None if fps is None else round(fps, 1),
            ]
        )
    return header, rows


def overhead_verdict(results: dict[str, Measured]) -> str:
    """Plainly, per INSTA variant: equal throughput? at most 10 % more LUTs than rsign?"""
    base = results["resnet-tiny-rsign"]
    lines = []
    for name in (n for n in OVERHEAD[1:] if n in results):
        r = results[name]
        # measured between frames: equal within 1 % (the first frames' pipeline fill varies slightly)
        same_rate = abs(r.cycles_per_frame / base.cycles_per_frame - 1) <= 0.01
        if r.luts and base.luts:
            extra = 100 * (r.luts / base.luts - 1)
            luts = f"{extra:+.1f} % LUT4 ({'within' if extra <= 10 else 'over'} the 10 % target)"
        else:
            luts = "LUT4 not measured (build failed)"
        rate = "equal throughput" if same_rate else "different throughput"
        lines.append(f"{name.removeprefix('resnet-tiny-')} against rsign: {rate}, {luts}")
    return "\n".join(lines)


def _text(row: list) -> list[str]:
    return [c if isinstance(c, str) else _number(c, 1 if isinstance(c, float) and c < 10_000 else 0) for c in row]


def plot(results: list[Measured]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    built = [r for r in results if r.utilization]
    names = [r.name for r in built] + ["FINN CNV\n(LUT6)"]
    luts = [r.luts / 1000 for r in built] + [FINN.luts / 1000]
    fps = [r.fps_at_fmax() for r in built] + [FINN.fps]
    colours = ["tab:blue"] * len(built) + ["tab:gray"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.bar(names, luts, color=colours)
    left.set_ylabel("kLUT (LUT4; FINN: LUT6)")
    right.bar(names, fps, color=colours)
    right.set_ylabel("frames/s at fmax (FINN: 100 MHz)")
    for axis in (left, right):
        axis.tick_params(axis="x", labelrotation=30)
    figure.suptitle(f"{DEVICE}, nextpnr fmax; {machine_line().split(',')[0]}")
    figure.tight_layout()
    return figure


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--designs", default=",".join(DESIGNS), help="comma-separated (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="designs built at once (default: 1)")
    parser.add_argument("--images", type=int, default=3, help="random images simulated per design (default: 3)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default: 1)")
    parser.add_argument("--rebuild", action="store_true", help="start over instead of reusing finished builds")
    parser.add_argument(
        "--timeout", type=float, default=BUILD_TIMEOUT, help=f"seconds per build (default: {BUILD_TIMEOUT:g})"
    )
    args = parser.parse_args()
    names = args.designs.split(",")
    unknown = [n for n in names if n not in DESIGNS]
    if unknown:
        parser.error(f"unknown designs {unknown}; choose from {', '.join(DESIGNS)}")
    if args.jobs < 1 or args.images < 2:
        parser.error("--jobs must be >= 1 and --images >= 2 (the rate is measured between frames)")

    print(machine_line(), flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        options = {"images": args.images, "seed": args.seed, "rebuild": args.rebuild, "timeout": args.timeout}
        results = list(pool.map(lambda n: measure(n, **options), names))

    header, rows = hardware_rows(results)
    print()
    print(format_table(header, [_text(row) for row in rows]))
    print(f"wrote {write_csv('hardware.csv', header, rows)}")
    header, rows = estimate_rows(results)
    print()
    print(format_table(header, [_text(row) for row in rows]))
    print(f"wrote {write_csv('estimates.csv', header, rows)}")
    by_name = {r.name: r for r in results}
    # the variants built in this run, against rsign
    if OVERHEAD[0] in by_name and any(n in by_name for n in OVERHEAD[1:]):
        header, rows = overhead_rows(by_name)
        print()
        print(format_table(header, [_text(row) for row in rows]))
        print(overhead_verdict(by_name))
        print(f"wrote {write_csv('insta_overhead.csv', header, rows)}")
    print(f"wrote {save_figure(plot(results), 'hardware.png')}")
    failed = [r for r in results if r.error or r.mismatches]
    for r in failed:
        print(f"{r.name}: {r.error or f'{r.mismatches} of {r.images} images differ from the reference'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
