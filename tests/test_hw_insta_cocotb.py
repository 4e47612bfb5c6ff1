# amaranth: UnusedElaboratable=no
"""The INSTA units bit-exact under cocotb + Verilator / Icarus: INSTA-Th, INSTA-Th+, INSTA-PReLU, random flow control.

Some units keep their read/write memories in the RAM module (``external_modules``, as the
compiler's Verilog does), the others inline.
"""

import numpy as np
import pytest
from amaranth.hdl import signed

from instabnn_hw.hw.fixed import bounds
from instabnn_hw.hw.insta_prelu import InstaPReLU
from instabnn_hw.hw.layouts import tensor_to_words
from instabnn_hw.hw.moments import MomentsThreshold
from instabnn_hw.sim.streams import StreamCase, run_stream_cases, stimulus_seed

pytestmark = pytest.mark.cocotb


def frames(rng, in_shape, channels, height, width, count):
    """Extremes first (all max, all min, alternating), then frames of different statistics."""
    low, high = bounds(in_shape)
    size = (channels, height, width)
    result = [np.full(size, high), np.full(size, low), np.resize([low, high], size)]
    for k in range(count):
        centre = low + (high - low) * (k + 1) // (count + 1)
        result.append(np.clip(centre + rng.integers(-(high - low) // 4, (high - low) // 4, size=size), low, high))
    return result


def threshold_case(dut, rng, count=3):
    words, bits, stats = [], [], []
    for frame in frames(rng, dut.in_shape, dut.channels, dut.height, dut.width, count):
        b, _, features = dut.reference(frame)
        words += tensor_to_words(frame, dut.simd).tolist()
        bits += tensor_to_words(b, dut.simd).tolist()
        stats += [[int(v) for v in column] for column in features.T]
    outputs = {"o": bits, "stats": stats} if dut.emit_stats else {"o": bits}
    return StreamCase(dut, {"i": words}, outputs)


def prelu_case(dut, rng, count=4):
    low, high = bounds(dut.in_shape)
    f_low, f_high = bounds(dut.stats.payload.shape().elem_shape)
    words, stats, out = [], [], []
    height = dut.frame_words * dut.simd // dut.channels
    for k in range(count):
        x = rng.integers(low, high + 1, size=(dut.channels, height, 1))
        f = rng.integers(f_low, f_high + 1, size=(len(dut.statistics), dut.stats_channels))
        if k == 0:
            x[:], f[:] = high, f_high  # extremes
        words += tensor_to_words(x, dut.simd).tolist()
        stats += [[int(v) for v in column] for column in f.T]
        out += tensor_to_words(dut.reference(x, f), dut.simd).tolist()
    return StreamCase(dut, {"i": words, "stats": stats}, {"o": out})


def insta_cases(seed: int) -> dict[str, StreamCase]:
    rng = np.random.default_rng(seed)
    geometry = {"in_shape": signed(8), "channels": 6, "simd": 3, "height": 5, "width": 3}
    th_m3 = MomentsThreshold(
        **geometry,
        stats=("m3",),
        shifts=(13,),
        alpha=rng.integers(-400, 400, size=6),
        beta=rng.integers(-8, 9, size=(6, 1)),
        out_shift=4,
        emit_stats=True,
        external_modules=True,  # the RAM module, as in the compiler's Verilog
    )
    th_skew = MomentsThreshold(
        **geometry,
        stats=("m1", "var", "skew"),
        shifts=(3, 11, 22),
        alpha=rng.integers(-400, 400, size=6),
        beta=rng.integers(-8, 9, size=(6, 3)),
        out_shift=4,
        emit_stats=True,
    )
    mlp = {"hidden_shift": 6, "hidden_max": 15, "out_shift": 2}
    thplus_m3 = MomentsThreshold(
        **geometry,
        stats=("m3",),
        shifts=(13,),
        mode="th+",
        w1=rng.integers(-4, 5, size=(4, 6)),
        b1=rng.integers(-200, 200, size=4),
        w2=rng.integers(-8, 9, size=(6, 4)),
        alpha=rng.integers(-100, 100, size=6),
        parallel=3,
        emit_stats=True,
        external_modules=True,
        **mlp,
    )
    thplus_m1_m2 = MomentsThreshold(
        in_shape=signed(8),
        channels=4,
        simd=4,
        height=3,
        width=3,
        stats=("m1", "m2"),
        shifts=(3, 10),
        mode="th+",
        w1=rng.integers(-4, 5, size=(4, 8)),
        b1=rng.integers(-200, 200, size=4),
        w2=rng.integers(-8, 9, size=(4, 4)),
        alpha=rng.integers(-100, 100, size=4),
        **mlp,
    )
    th_tiny = MomentsThreshold(  # eval_cycles > frame_words
        in_shape=signed(8),
        channels=3,
        simd=1,
        height=1,
        width=2,
        stats=("m2", "var"),
        shifts=(8, 9),
        alpha=rng.integers(-400, 400, size=3),
        beta=rng.integers(-8, 9, size=(3, 2)),
        out_shift=4,
        external_modules=True,
    )
    th_zero = MomentsThreshold(  # constant thresholds of 0: no signal ever changes in the evaluator
        in_shape=signed(4),
        channels=2,
        simd=2,
        height=2,
        width=2,
        stats=("m1", "var"),
        shifts=(0, 0),
        alpha=np.zeros(2, dtype=np.int64),
        beta=np.zeros((2, 2), dtype=np.int64),
    )
    prelu = {
        "in_shape": signed(10),
        "stats": ("m1", "m2"),
        "feature_shape": signed(12),
        "hidden_shift": 6,
        "hidden_max": 15,
        "delta_shift": 2,
        "slope_shift": 6,
        "out_shift": 4,
        "low": -128,
        "high": 127,
    }
    insta_prelu = InstaPReLU(
        channels=6,
        simd=3,
        height=5,
        width=3,
        stats_channels=4,
        w1=rng.integers(-8, 9, size=(4, 8)),
        b1=rng.integers(-200, 200, size=4),
        w2=rng.integers(-16, 17, size=(6, 4)),
        gamma=rng.integers(-100, 100, size=6),
        slope=rng.integers(0, 64, size=6),
        zeta=rng.integers(-300, 300, size=6),
        parallel=2,
        external_modules=True,
        **prelu,
    )
    insta_prelu_slope = InstaPReLU(
        channels=3,
        simd=1,
        height=4,
        width=3,
        stats_channels=2,
        w1=rng.integers(-8, 9, size=(4, 4)),
        b1=rng.integers(-200, 200, size=4),
        w2=rng.integers(-16, 17, size=(6, 4)),
        gamma=rng.integers(-100, 100, size=3),
        slope=rng.integers(0, 64, size=3),
        zeta=rng.integers(-300, 300, size=3),
        instance_slope=True,
        external_modules=True,
        **prelu,
    )
    return {
        "th_m3": threshold_case(th_m3, rng),
        "th_skew": threshold_case(th_skew, rng),
        "thplus_m3": threshold_case(thplus_m3, rng),
        "thplus_m1_m2": threshold_case(thplus_m1_m2, rng),
        "th_tiny": threshold_case(th_tiny, rng, count=5),
        "th_zero": threshold_case(th_zero, rng),
        "prelu": prelu_case(insta_prelu, rng),
        "prelu_slope": prelu_case(insta_prelu_slope, rng),
    }


@pytest.mark.parametrize("simulator", ["verilator", pytest.param("icarus", marks=pytest.mark.slow)])
def test_insta_bit_exact(simulator, tmp_path_factory):
    seed = stimulus_seed()
    cases = insta_cases(seed)
    build_dir = tmp_path_factory.mktemp(f"insta-{simulator}")
    record = run_stream_cases(cases, build_dir=build_dir, simulator=simulator, seed=seed)
    for name, case in cases.items():
        for path, expected in case.outputs.items():
            assert len(record["transfers"][f"{name}_{path}"]) == len(expected)
