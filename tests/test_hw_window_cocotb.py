"""hw.window bit-exact under cocotb + Verilator / Icarus, three frames per case, random gaps and back-pressure.

Every other configuration keeps its line buffer in the RAM module (``external_modules``, as the
compiler's Verilog does), the others inline.
"""

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned

from instabnn_hw.hw.fixed import bounds
from instabnn_hw.hw.layouts import tensor_to_words
from instabnn_hw.hw.window import SlidingWindow, sliding_windows
from instabnn_hw.sim.streams import StreamCase, run_stream_cases, stimulus_seed

pytestmark = pytest.mark.cocotb

# name: (shape, channels, simd, height, width, kernel, stride, padding)
CONFIGS = {
    "k3s1p1": (unsigned(1), 4, 2, 5, 7, 3, 1, 1),
    "k3s1p0": (signed(8), 2, 1, 5, 7, 3, 1, 0),
    "k1s1": (unsigned(1), 3, 3, 4, 5, 1, 1, 0),
    "k2s2": (signed(8), 4, 4, 5, 7, 2, 2, 0),
    "k3s2p1": (unsigned(1), 2, 1, 6, 7, 3, 2, 1),
    "k7s2p3": (signed(8), 3, 3, 11, 13, 7, 2, 3),
    "k3s1p2": (signed(32), 2, 2, 4, 5, 3, 1, 2),
}


def window_cases(seed: int) -> dict[str, StreamCase]:
    rng = np.random.default_rng(seed)
    cases = {}
    for index, (name, (shape, channels, simd, height, width, kernel, stride, padding)) in enumerate(CONFIGS.items()):
        low, high = bounds(shape)
        frames = [rng.integers(low, high + 1, size=(channels, height, width)) for _ in range(3)]
        frames[0][0, 0, :2] = low, high  # extremes
        words, expected = [], []
        for frame in frames:
            words += tensor_to_words(frame, simd).tolist()
            data, mask = sliding_windows(frame, kernel=kernel, stride=stride, padding=padding, simd=simd)
            expected += [{"data": d, "mask": m} for d, m in zip(data.tolist(), mask.tolist(), strict=True)]
        dut = SlidingWindow(
            shape=shape,
            channels=channels,
            simd=simd,
            height=height,
            width=width,
            kernel=kernel,
            stride=stride,
            padding=padding,
            external_modules=index % 2 == 0,
        )
        cases[name] = StreamCase(dut, {"i": words}, {"o": expected})
    return cases


@pytest.mark.parametrize("simulator", ["verilator", pytest.param("icarus", marks=pytest.mark.slow)])
def test_window_bit_exact(simulator, tmp_path_factory):
    seed = stimulus_seed()
    build_dir = tmp_path_factory.mktemp(f"window-{simulator}")
    record = run_stream_cases(window_cases(seed), build_dir=build_dir, simulator=simulator, seed=seed)
    assert len(record["transfers"]["k7s2p3_o"]) == 3 * 6 * 7 * 49
