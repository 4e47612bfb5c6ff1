"""hw.threshold bit-exact under cocotb + Verilator (Icarus: slow), with random gaps and back-pressure."""

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned

from instabnn_hw.hw.fixed import bounds
from instabnn_hw.hw.threshold import StaticThreshold, threshold
from instabnn_hw.sim.streams import StreamCase, run_stream_cases, stimulus_seed

pytestmark = pytest.mark.cocotb


def threshold_case(rng, *, shape, channels, simd, flipped, pixels=50):
    low, high = bounds(shape)
    t = rng.integers(low - 2, high + 3, size=channels)
    t[0], t[-1] = low - 1000, high + 1000  # always on / always off (the reverse when flipped)
    flip = rng.integers(0, 2, size=channels) if flipped else None
    x = rng.integers(low, high + 1, size=(pixels, channels))
    x[0], x[1] = low, high
    dut = StaticThreshold(shape=shape, channels=channels, simd=simd, thresholds=t, flip=flip)
    return StreamCase(dut, {"i": x.reshape(-1, simd).tolist()}, {"o": threshold(x, t, flip).reshape(-1, simd).tolist()})


def threshold_cases(seed: int) -> dict[str, StreamCase]:
    rng = np.random.default_rng(seed)
    return {
        "th_6_3": threshold_case(rng, shape=signed(8), channels=6, simd=3, flipped=True),
        "th_5_1": threshold_case(rng, shape=unsigned(5), channels=5, simd=1, flipped=True),
        "th_8_8": threshold_case(rng, shape=signed(8), channels=8, simd=8, flipped=False),
        "th_wide": threshold_case(rng, shape=signed(40), channels=12, simd=4, flipped=True),
    }


@pytest.mark.parametrize("simulator", ["verilator", pytest.param("icarus", marks=pytest.mark.slow)])
def test_threshold_bit_exact(simulator, tmp_path_factory):
    seed = stimulus_seed()
    build_dir = tmp_path_factory.mktemp(f"threshold-{simulator}")
    record = run_stream_cases(threshold_cases(seed), build_dir=build_dir, simulator=simulator, seed=seed)
    assert len(record["transfers"]["th_5_1_o"]) == 50 * 5
