"""hw.pool bit-exact under cocotb + Verilator / Icarus, with random gaps and back-pressure."""

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned

from instabnn_hw.hw.fixed import bounds
from instabnn_hw.hw.layouts import tensor_to_words
from instabnn_hw.hw.pool import GlobalSumPool, MaxPool, SumPool, global_sum_pool, max_pool, sum_pool
from instabnn_hw.hw.window import sliding_windows
from instabnn_hw.sim.streams import StreamCase, run_stream_cases, stimulus_seed

pytestmark = pytest.mark.cocotb


def window_case(component, model, rng, shape, channels, simd, kernel, stride, padding, height=5, width=7):
    low, high = bounds(shape)
    frames = [rng.integers(low, high + 1, size=(channels, height, width)) for _ in range(3)]
    frames[1][:] = low  # worst cases
    frames[2][:] = high
    payloads, outputs = [], []
    for frame in frames:
        words, mask = sliding_windows(frame, kernel=kernel, stride=stride, padding=padding, simd=simd)
        payloads += [{"data": d, "mask": m} for d, m in zip(words.tolist(), mask.tolist(), strict=True)]
        outputs += model(words, mask, kernel=kernel, channels=channels, simd=simd).tolist()
    dut = component(shape=shape, channels=channels, simd=simd, kernel=kernel)
    return StreamCase(dut, {"i": payloads}, {"o": outputs})


def global_case(rng, shape, channels, simd, height, width):
    low, high = bounds(shape)
    frames = [rng.integers(low, high + 1, size=(channels, height, width)) for _ in range(3)]
    frames += [np.full((channels, height, width), low), np.full((channels, height, width), high)]
    words = [w for f in frames for w in tensor_to_words(f, simd).tolist()]
    sums = [w for f in frames for w in global_sum_pool(f).reshape(-1, simd).tolist()]
    dut = GlobalSumPool(shape=shape, channels=channels, simd=simd, height=height, width=width)
    return StreamCase(dut, {"i": words}, {"o": sums})


def pool_cases(seed: int) -> dict[str, StreamCase]:
    rng = np.random.default_rng(seed)
    return {
        "max_int8": window_case(MaxPool, max_pool, rng, signed(8), 4, 2, 3, 2, 1),
        "max_binary": window_case(MaxPool, max_pool, rng, unsigned(1), 6, 6, 2, 2, 0),
        "sum_int8": window_case(SumPool, sum_pool, rng, signed(8), 4, 2, 3, 1, 1),
        "sum_uint32": window_case(SumPool, sum_pool, rng, unsigned(32), 2, 1, 2, 2, 0),
        "global_int8": global_case(rng, signed(8), 4, 1, 3, 5),
        "global_int32": global_case(rng, signed(32), 2, 2, 4, 4),
    }


@pytest.mark.parametrize("simulator", ["verilator", pytest.param("icarus", marks=pytest.mark.slow)])
def test_pool_bit_exact(simulator, tmp_path_factory):
    seed = stimulus_seed()
    build_dir = tmp_path_factory.mktemp(f"pool-{simulator}")
    record = run_stream_cases(pool_cases(seed), build_dir=build_dir, simulator=simulator, seed=seed)
    assert len(record["transfers"]["global_int8_o"]) == 5 * 4
