"""hw.int_mvu bit-exact under cocotb + Verilator (Icarus: slow), with random gaps and back-pressure."""

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned

from instabnn_hw.hw.fixed import bounds
from instabnn_hw.hw.int_mvu import Argmax, IntMatrixVector, argmax, int_matvec
from instabnn_hw.sim.streams import StreamCase, run_stream_cases, stimulus_seed

pytestmark = pytest.mark.cocotb


def mvu_case(
    rng, *, rows, cols, pe, simd, in_shape, weight_range, masked=False, vectors=20, weights=None, external_modules=False
):
    if weights is None:
        weights = rng.integers(weight_range[0], weight_range[1] + 1, size=(rows, cols))
    dut = IntMatrixVector(
        weights=weights, pe=pe, simd=simd, in_shape=in_shape, masked=masked, external_modules=external_modules
    )
    low, high = bounds(in_shape)
    x = rng.integers(low, high + 1, size=(vectors, cols))
    x[0], x[1] = low, high
    words = x.reshape(-1, simd)
    if masked:  # padding words: zero data, mask 0
        mask = rng.integers(0, 2, size=len(words))
        words = words * mask[:, None]
        x = words.reshape(-1, cols)
        inputs = [{"data": w.tolist(), "mask": int(m)} for w, m in zip(words, mask, strict=True)]
    else:
        inputs = words.tolist()
    expected = int_matvec(np.asarray(weights).astype(object), x.astype(object)).reshape(-1, pe).tolist()
    return StreamCase(dut, {"i": inputs}, {"o": expected})


def argmax_case(rng, *, shape, count, classes, frames=40):
    low, high = bounds(shape)
    logits = rng.integers(max(low, -2), min(high, 2) + 1, size=(frames, classes))  # many ties
    logits[0], logits[1] = low, high
    logits[2:5] = rng.integers(low, high + 1, size=(3, classes))
    index, value = argmax(logits)
    dut = Argmax(shape=shape, count=count, classes=classes)
    outputs = [{"index": int(i), "value": int(v)} for i, v in zip(index, value, strict=True)]
    return StreamCase(dut, {"i": logits.reshape(-1, count).tolist()}, {"o": outputs})


def int_mvu_cases(seed: int) -> dict[str, StreamCase]:
    rng = np.random.default_rng(seed)
    wl, wh = -(1 << 17), (1 << 17) - 1
    worst = np.array([[wl] * 8, [wh] * 8, [wl, wh] * 4, [wh] * 7 + [wl]])
    return {
        "mvu_odd": mvu_case(rng, rows=6, cols=27, pe=3, simd=9, in_shape=signed(9), weight_range=(-128, 127)),
        "mvu_masked": mvu_case(
            rng, rows=4, cols=12, pe=1, simd=12, in_shape=signed(9), weight_range=(-100, 100), masked=True
        ),
        "mvu_ram": mvu_case(  # the input buffer in the RAM module (the compiler's Verilog)
            rng, rows=6, cols=27, pe=2, simd=3, in_shape=signed(9), weight_range=(-128, 127), external_modules=True
        ),
        "mvu_simd1": mvu_case(rng, rows=5, cols=7, pe=5, simd=1, in_shape=unsigned(8), weight_range=(-7, 7)),
        "mvu_worst": mvu_case(
            rng, rows=4, cols=8, pe=2, simd=4, in_shape=signed(18), weight_range=None, weights=worst, vectors=12
        ),
        "mvu_single": mvu_case(  # NF = SF = 1: zero-width fold counters, depth-1 weight memory
            rng, rows=3, cols=5, pe=3, simd=5, in_shape=signed(4), weight_range=(-3, 3), masked=True, vectors=30
        ),
        "argmax_3_9": argmax_case(rng, shape=signed(8), count=3, classes=9),
        "argmax_10_10": argmax_case(rng, shape=signed(24), count=10, classes=10),
        "argmax_1_5": argmax_case(rng, shape=unsigned(4), count=1, classes=5),
    }


@pytest.mark.parametrize("simulator", ["verilator", pytest.param("icarus", marks=pytest.mark.slow)])
def test_int_mvu_bit_exact(simulator, tmp_path_factory):
    seed = stimulus_seed()
    build_dir = tmp_path_factory.mktemp(f"int-mvu-{simulator}")
    record = run_stream_cases(int_mvu_cases(seed), build_dir=build_dir, simulator=simulator, seed=seed)
    assert len(record["transfers"]["mvu_odd_o"]) == 20 * 2
    assert len(record["transfers"]["argmax_3_9_o"]) == 40
