# amaranth: UnusedElaboratable=no
"""hw.pool in Amaranth's simulator: max / sum over windows and the global sum match the numpy models."""

import numpy as np
import pytest
import torch
from amaranth.hdl import Module, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from stream_components import check_figures, check_validation

from instabnn_hw.hw.figures import Figures, lut_estimate
from instabnn_hw.hw.fixed import bounds, shape_for
from instabnn_hw.hw.layouts import tensor_to_words
from instabnn_hw.hw.pool import (
    GlobalSumPool,
    GlobalSumPoolParameters,
    MaxPool,
    MaxPoolParameters,
    SumPool,
    SumPoolParameters,
    global_sum_pool,
    max_pool,
    sum_pool,
)
from instabnn_hw.hw.simulate import simulate_streams
from instabnn_hw.hw.window import SlidingWindow, sliding_windows

FLOW = [(1.0, 1.0), (0.5, 0.7), (0.9, 0.3)]
POOLS = {"max": (MaxPool, max_pool), "sum": (SumPool, sum_pool)}

# name: (shape, channels, simd, height, width, kernel, stride, padding) of the windows pooled
WINDOWS = {
    "k3s2p1-int8": (signed(8), 4, 2, 5, 7, 3, 2, 1),
    "k2s2-binary": (unsigned(1), 6, 3, 5, 7, 2, 2, 0),
    "k3s1p1-int4-simd1": (signed(4), 3, 1, 4, 5, 3, 1, 1),
    "k1-uint3-full-simd": (unsigned(3), 2, 2, 3, 4, 1, 1, 0),
    "k3s1p0-int8-full-simd": (signed(8), 8, 8, 4, 5, 3, 1, 0),
}


def window_stream(config, seed: int, fill=None):
    """A random tensor's window words (as payloads) and the numpy (words, mask)."""
    shape, channels, simd, height, width, kernel, stride, padding = config
    low, high = bounds(shape)
    rng = np.random.default_rng(seed)
    tensor = rng.integers(low, high + 1, size=(channels, height, width)) if fill is None else fill(low, high)
    words, mask = sliding_windows(tensor, kernel=kernel, stride=stride, padding=padding, simd=simd)
    payloads = [{"data": d, "mask": m} for d, m in zip(words.tolist(), mask.tolist(), strict=True)]
    return payloads, words, mask


@pytest.mark.parametrize("valid, ready", FLOW)
@pytest.mark.parametrize("name", WINDOWS)
@pytest.mark.parametrize("pool", POOLS)
def test_window_pools_match_model(pool, name, valid, ready):
    shape, channels, simd, _, _, kernel, _, _ = WINDOWS[name]
    component, model = POOLS[pool]
    dut = component(shape=shape, channels=channels, simd=simd, kernel=kernel)
    payloads, words, mask = window_stream(WINDOWS[name], seed=len(name))
    expected = model(words, mask, kernel=kernel, channels=channels, simd=simd)
    run = simulate_streams(
        dut, {"i": payloads}, {"o": len(expected)}, valid_probability=valid, ready_probability=ready, seed=11
    )
    assert run.outputs["o"] == expected.tolist()


@pytest.mark.parametrize("pool", POOLS)
def test_window_pools_take_one_word_per_cycle(pool):
    shape, channels, simd, _, _, kernel, _, _ = WINDOWS["k3s2p1-int8"]
    dut = POOLS[pool][0](shape=shape, channels=channels, simd=simd, kernel=kernel)
    payloads, words, mask = window_stream(WINDOWS["k3s2p1-int8"], seed=2)
    run = simulate_streams(dut, {"i": payloads}, {"o": len(payloads) // kernel**2})
    assert run.interval("i") == 1 == dut.initiation_interval
    assert dut.input_words == 9 * 2
    # the C/simd words of a pixel leave on consecutive cycles, two after their last window word
    assert run.cycles["o"][:2] == [c + 2 for c in run.cycles["i"][16:18]]


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("shape", [signed(8), unsigned(8), signed(32), unsigned(32), unsigned(1)])
def test_window_pools_worst_case_cannot_overflow(pool, shape):
    component, model = POOLS[pool]
    config = (shape, 4, 2, 4, 5, 3, 1, 1)
    dut = component(shape=shape, channels=4, simd=2, kernel=3)
    low, high = bounds(dut.out_shape)
    in_low, in_high = bounds(shape)
    assert dut.out_shape == (shape_for(9 * in_low, 9 * in_high) if pool == "sum" else shape)
    for extreme in (in_low, in_high):
        payloads, words, mask = window_stream(config, seed=0, fill=lambda lo, hi, e=extreme: np.full((4, 4, 5), e))
        # a window of extremes without padding too: the worst case of a sum
        payloads += [{"data": [extreme] * 2, "mask": 1}] * 9 * 2
        words = np.concatenate([words, np.full((9 * 2, 2), extreme)])
        mask = np.concatenate([mask, np.ones(9 * 2, dtype=int)])
        expected = model(words, mask, kernel=3, channels=4, simd=2)
        run = simulate_streams(dut, {"i": payloads}, {"o": len(expected)})
        assert run.outputs["o"] == expected.tolist()
        assert low <= expected.min() and expected.max() <= high
        assert expected[-2:].tolist() == [[extreme * (9 if pool == "sum" else 1)] * 2] * 2


# name: (shape, channels, simd, height, width)
GLOBALS = {
    "int8-simd1": (signed(8), 4, 1, 3, 5),
    "binary-full-simd": (unsigned(1), 8, 8, 7, 7),
    "int16-one-pixel": (signed(16), 2, 2, 1, 1),
    "uint4": (unsigned(4), 6, 2, 2, 3),
}


@pytest.mark.parametrize("valid, ready", FLOW)
@pytest.mark.parametrize("name", GLOBALS)
def test_global_sum_pool_matches_model_over_frames(name, valid, ready):
    shape, channels, simd, height, width = GLOBALS[name]
    dut = GlobalSumPool(shape=shape, channels=channels, simd=simd, height=height, width=width)
    low, high = bounds(shape)
    rng = np.random.default_rng(len(name))
    frames = [rng.integers(low, high + 1, size=(channels, height, width)) for _ in range(3)]
    words = [w for f in frames for w in tensor_to_words(f, simd).tolist()]
    expected = [w for f in frames for w in global_sum_pool(f).reshape(-1, simd).tolist()]
    run = simulate_streams(
        dut, {"i": words}, {"o": len(expected)}, valid_probability=valid, ready_probability=ready, seed=5
    )
    assert run.outputs["o"] == expected


def test_global_sum_pool_rate_and_worst_case():
    for shape in (signed(8), unsigned(1), signed(32), unsigned(32)):
        dut = GlobalSumPool(shape=shape, channels=4, simd=2, height=3, width=5)
        low, high = bounds(shape)
        frames = [np.full((4, 3, 5), low), np.full((4, 3, 5), high)]
        words = [w for f in frames for w in tensor_to_words(f, 2).tolist()]
        expected = np.array([global_sum_pool(f) for f in frames])
        run = simulate_streams(dut, {"i": words}, {"o": 4})
        assert run.outputs["o"] == expected.reshape(-1, 2).tolist()
        assert run.interval("i") == 1 == dut.initiation_interval
        assert dut.out_shape == shape_for(15 * low, 15 * high)
        out_low, out_high = bounds(dut.out_shape)
        assert out_low <= expected.min() == 15 * low and expected.max() == 15 * high <= out_high
    assert dut.cycles_per_frame == 3 * 5 * 2


class _Chain(wiring.Component):
    """Two components, the output of the first feeding the second."""

    def __init__(self, first, second):
        self._first, self._second = first, second
        super().__init__(
            {
                "i": In(stream.Signature(first.i.payload.shape())),
                "o": Out(stream.Signature(second.o.payload.shape())),
            }
        )

    def elaborate(self, platform):
        m = Module()
        m.submodules.first, m.submodules.second = self._first, self._second
        wiring.connect(m, wiring.flipped(self.i), self._first.i)
        wiring.connect(m, self._first.o, self._second.i)
        wiring.connect(m, self._second.o, wiring.flipped(self.o))
        return m


@pytest.mark.parametrize("kernel, stride, padding", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_window_then_pool_is_torch_pooling(kernel, stride, padding):
    """SlidingWindow -> MaxPool is max_pool2d (-inf padding); -> SumPool is K*K * avg_pool2d."""
    channels, simd, height, width = 4, 2, 6, 7
    rng = np.random.default_rng(kernel + stride)
    frames = [rng.integers(-128, 128, size=(channels, height, width)) for _ in range(3)]
    words = [w for f in frames for w in tensor_to_words(f, simd).tolist()]
    batch = torch.tensor(np.array(frames), dtype=torch.float64)
    references = {
        MaxPool: torch.nn.functional.max_pool2d(batch, kernel, stride, padding),
        SumPool: torch.nn.functional.avg_pool2d(batch, kernel, stride, padding, count_include_pad=True) * kernel**2,
    }
    for component, reference in references.items():
        window = SlidingWindow(
            shape=signed(8),
            channels=channels,
            simd=simd,
            height=height,
            width=width,
            kernel=kernel,
            stride=stride,
            padding=padding,
        )
        dut = _Chain(window, component(shape=signed(8), channels=channels, simd=simd, kernel=kernel))
        expected = [w for f in reference.round().numpy().astype(np.int64) for w in tensor_to_words(f, simd).tolist()]
        run = simulate_streams(dut, {"i": words}, {"o": len(expected)}, valid_probability=0.8, ready_probability=0.6)
        assert run.outputs["o"] == expected


def test_models_check_their_arguments():
    words, mask = np.zeros((18, 2), dtype=int), np.ones(18, dtype=int)
    assert max_pool(words, mask, kernel=3, channels=4, simd=2).shape == (2, 2)
    with pytest.raises(ValueError, match=r"words must hold whole windows of 18 words, not 9"):
        sum_pool(words[:9], mask[:9], kernel=3, channels=4, simd=2)
    with pytest.raises(ValueError, match=r"words must have shape \(n, 4\), not \(18, 2\)"):
        sum_pool(words, mask, kernel=3, channels=4, simd=4)
    with pytest.raises(ValueError, match=r"mask must have shape \(18,\), not \(17,\)"):
        max_pool(words, mask[:17], kernel=3, channels=4, simd=2)
    with pytest.raises(ValueError, match=r"mask must be <= 1, but holds 2"):
        max_pool(words, mask * 2, kernel=3, channels=4, simd=2)
    with pytest.raises(ValueError, match=r"every window needs at least one valid position"):
        max_pool(words, mask * 0, kernel=3, channels=4, simd=2)
    assert sum_pool(words + 1, mask * 0, kernel=3, channels=4, simd=2).tolist() == [[0, 0], [0, 0]]
    with pytest.raises(ValueError, match=r"tensor must be C x H x W, not of shape \(4,\)"):
        global_sum_pool(np.zeros(4, dtype=int))


@pytest.mark.parametrize(
    "make, error, message",
    [
        (
            lambda: MaxPool(shape=signed(8), channels=4, simd=3, kernel=2),
            ValueError,
            r"simd must divide channels \(4\)",
        ),
        (lambda: MaxPool(shape=signed(8), channels=4, simd=2, kernel=0), ValueError, r"kernel must be >= 1, not 0"),
        (lambda: SumPool(shape=signed(40), channels=4, simd=2, kernel=2), ValueError, r"shape must be 1 to 32 bits"),
        (lambda: SumPool(shape=signed(8), channels=0, simd=2, kernel=2), ValueError, r"channels must be >= 1, not 0"),
        (lambda: SumPool(shape=signed(8), channels=4, simd=2, kernel=2.0), TypeError, r"kernel must be an integer"),
        (
            lambda: GlobalSumPool(shape=signed(8), channels=4, simd=2, height=0, width=3),
            ValueError,
            r"height must be >= 1, not 0",
        ),
        (
            lambda: GlobalSumPool(shape=signed(8), channels=4, simd=4, height=2, width=True),
            TypeError,
            r"width must be an integer, not True",
        ),
    ],
)
def test_invalid_parameters_are_named(make, error, message):
    with pytest.raises(error, match=message):
        make()


# name: (component, parameters class, parameters, input words of a frame, figures), figures worked out by hand
FIGURES = {
    # 2 channel groups, 9 positions: the last position's first group 16 words in, then two registers;
    # 2 lanes of 8 bits, multi-bit
    "max": (
        MaxPool,
        MaxPoolParameters,
        {"shape": signed(8), "channels": 4, "simd": 2, "kernel": 3},
        630,
        Figures(630, 18, 18, lut_estimate("pool", (1, 0, 16))),
    ),
    # 4 positions of binary data sum into unsigned(3): 3 lanes of 3 bits, binary
    "sum": (
        SumPool,
        SumPoolParameters,
        {"shape": unsigned(1), "channels": 6, "simd": 3, "kernel": 2},
        40,
        Figures(40, 8, 8, lut_estimate("pool", (1, 9, 0))),
    ),
    # 20 pixels of signed(4) sum into signed(9); a frame is its own 4 * 5 * 3 words
    "global": (
        GlobalSumPool,
        GlobalSumPoolParameters,
        {"shape": signed(4), "channels": 3, "simd": 1, "height": 4, "width": 5},
        1,
        Figures(60, 59, 59, lut_estimate("pool", (1, 0, 9))),
    ),
}


@pytest.mark.parametrize("name", FIGURES)
def test_parameters_give_the_figures_without_ports(name):
    check_figures(*FIGURES[name], attributes=("shape", "out_shape", "groups", "input_words", "latency", "luts"))


@pytest.mark.parametrize(
    "component, params, error, message",
    [
        (MaxPool, {"shape": signed(8), "channels": 4, "simd": 3, "kernel": 2}, ValueError, r"simd must divide"),
        (SumPool, {"shape": signed(8), "channels": 4, "simd": 2, "kernel": 2.0}, TypeError, r"kernel must be an"),
        (
            GlobalSumPool,
            {"shape": signed(40), "channels": 4, "simd": 2, "height": 2, "width": 2},
            ValueError,
            r"shape must be 1 to 32 bits",
        ),
    ],
)
def test_parameters_validate_as_the_components(component, params, error, message):
    check_validation(component, params, error, message)


@pytest.mark.parametrize("name", FIGURES)
def test_latency_is_the_first_output_after_the_first_input(name):
    component, _, params, _, _ = FIGURES[name]
    dut = component(**params)
    if name == "global":
        inputs = [[0] * dut.simd] * dut.cycles_per_frame
    else:
        inputs = [{"data": [1] * dut.simd, "mask": 1}] * dut.input_words
    run = simulate_streams(dut, {"i": inputs}, {"o": dut.groups})
    assert run.cycles["o"][0] - run.cycles["i"][0] == dut.latency
