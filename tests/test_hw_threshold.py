# amaranth: UnusedElaboratable=no
"""hw.threshold in Amaranth's simulator: StaticThreshold bit-exact against the numpy model."""

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned

from instabnn_hw.hw.fixed import bounds
from instabnn_hw.hw.simulate import simulate_streams
from instabnn_hw.hw.threshold import StaticThreshold, effective_thresholds, threshold

FLOW = [(1.0, 1.0), (0.5, 0.7), (0.9, 0.3)]
SIZES = [(6, 3), (5, 1), (8, 8)]  # (channels, simd)
INT64 = np.iinfo(np.int64)


def words_of(x, simd):
    return np.asarray(x).reshape(-1, simd).tolist()


def thresholds_for(shape, channels, rng):
    """Random thresholds in and around the range of ``shape``, with out-of-range channels."""
    low, high = bounds(shape)
    t = rng.integers(low - 2, high + 3, size=channels)
    t[0] = low - 1000  # always on (or, flipped, always off)
    t[-1] = high + 1000  # always off (or, flipped, always on)
    if channels > 2:
        t[1] = high + 1
    return t


@pytest.mark.parametrize("valid, ready", FLOW)
@pytest.mark.parametrize("channels, simd", SIZES)
@pytest.mark.parametrize("shape, flipped", [(signed(8), False), (signed(8), True), (unsigned(5), True)])
def test_static_threshold_matches_numpy_model(shape, flipped, channels, simd, valid, ready):
    rng = np.random.default_rng(channels * 10 + simd)
    t = thresholds_for(shape, channels, rng)
    flip = (np.arange(channels) % 2 == 1).astype(int) if flipped else None
    low, high = bounds(shape)
    x = rng.integers(low, high + 1, size=(16, channels))
    x[0], x[1] = low, high
    dut = StaticThreshold(shape=shape, channels=channels, simd=simd, thresholds=t, flip=flip)
    words = words_of(x, simd)
    run = simulate_streams(dut, {"i": words}, {"o": len(words)}, valid_probability=valid, ready_probability=ready)
    assert run.outputs["o"] == words_of(threshold(x, t, flip), simd)


@pytest.mark.parametrize("channels, simd", [(6, 3), (4, 4)])
def test_every_input_value_against_every_kind_of_threshold(channels, simd):
    """signed(4) exhaustively: thresholds at, inside and beyond both ends, including int64 extremes."""
    shape = signed(4)
    cases = [INT64.min, -100, -9, -8, -7, 0, 6, 7, 8, 9, 100, INT64.max]
    t = np.array([cases[k % len(cases)] for k in range(len(cases) * 2)])
    flip = np.array([k // len(cases) for k in range(len(cases) * 2)])  # each threshold plain and flipped
    t, flip = t[: len(t) // channels * channels], flip[: len(t) // channels * channels]
    for start in range(0, len(t), channels):
        tc, fc = t[start : start + channels], flip[start : start + channels]
        dut = StaticThreshold(shape=shape, channels=channels, simd=simd, thresholds=tc, flip=fc)
        x = np.repeat(np.arange(-8, 8)[:, None], channels, axis=1)
        run = simulate_streams(dut, {"i": words_of(x, simd)}, {"o": x.size // simd})
        assert run.outputs["o"] == words_of(threshold(x, tc, fc), simd)


def test_effective_thresholds_are_equivalent_and_fit_the_comparison():
    shape = signed(4)
    t = np.array([INT64.min, -9, -8, -3, 0, 7, 8, 9, INT64.max] * 2)
    flip = np.array([0] * 9 + [1] * 9)
    eff = effective_thresholds(t, flip, shape)
    assert min(eff) >= -8 and max(eff) <= 8  # shape_for(-8, 8) = signed(5)
    x = np.arange(-8, 8)[:, None]
    assert ((x >= eff.astype(np.int64)) ^ flip.astype(bool)).astype(int).tolist() == threshold(x, t, flip).tolist()
    dut = StaticThreshold(shape=shape, channels=18, simd=9, thresholds=t, flip=flip)
    assert dut.compare_shape == signed(5)
    assert dut.memory_bits == 18 * (5 + 1)


@pytest.mark.parametrize("channels, simd", SIZES)
def test_static_threshold_runs_one_word_per_cycle(channels, simd):
    rng = np.random.default_rng(1)
    t = thresholds_for(signed(8), channels, rng)
    dut = StaticThreshold(shape=signed(8), channels=channels, simd=simd, thresholds=t)
    x = rng.integers(-128, 128, size=(12, channels))
    run = simulate_streams(dut, {"i": words_of(x, simd)}, {"o": x.size // simd})
    assert run.interval("o") == dut.initiation_interval == 1
    assert run.cycles["o"][0] - run.cycles["i"][0] == dut.latency


def test_wide_accumulator_input():
    """A 40-bit accumulator word (e.g. an integer MVU's output) with its extremes."""
    shape = signed(40)
    low, high = bounds(shape)
    t = np.array([low, high, 0, high + 1, -5, 1 << 30])
    flip = np.array([0, 1, 1, 0, 0, 1])
    x = np.array([[low] * 6, [high] * 6, [0] * 6, [-5, 5, -1, 1, -4, 1 << 30]])
    dut = StaticThreshold(shape=shape, channels=6, simd=2, thresholds=t, flip=flip)
    run = simulate_streams(dut, {"i": words_of(x, 2)}, {"o": 12})
    assert run.outputs["o"] == words_of(threshold(x, t, flip), 2)


def test_numpy_model():
    x = np.array([[3, -2, 0], [-7, 5, 1]])
    assert threshold(x, [3, -2, 1]).tolist() == [[1, 1, 0], [0, 1, 1]]
    assert threshold(x, [3, -2, 1], flip=[0, 1, 1]).tolist() == [[1, 1, 1], [0, 0, 1]]
    assert threshold(x, [3, -2, 1]).dtype == np.int64


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"simd": 4}, r"simd must divide channels \(6\), not 4"),
        ({"channels": 0}, r"channels must be >= 1, not 0"),
        ({"thresholds": [1, 2, 3]}, r"thresholds must have shape \(6,\), not \(3,\)"),
        ({"thresholds": [0.5] * 6}, r"thresholds must be an integer array"),
        ({"flip": [0, 1, 2, 0, 0, 0]}, r"flip must be <= 1, but holds 2"),
        ({"flip": [0, 1]}, r"flip must have shape \(6,\), not \(2,\)"),
        ({"shape": "wide"}, r"shape must be an Amaranth shape"),
        ({"simd": 3.0}, r"simd must be an integer, not 3.0"),
    ],
)
def test_invalid_parameters_are_named(kwargs, message):
    params = dict(shape=signed(8), channels=6, simd=3, thresholds=[0] * 6)
    params.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=message):
        StaticThreshold(**params)
