# amaranth: UnusedElaboratable=no
"""hw.int_mvu in Amaranth's simulator: IntMatrixVector and Argmax bit-exact against the numpy models."""

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned
from amaranth.lib import wiring

from instabnn_hw.hw.figures import Figures, lut_estimate
from instabnn_hw.hw.fixed import bounds, shape_for
from instabnn_hw.hw.int_mvu import (
    Argmax,
    ArgmaxParameters,
    IntMatrixVector,
    IntMatrixVectorParameters,
    argmax,
    int_matvec,
    int_matvec_bounds,
)
from instabnn_hw.hw.simulate import simulate_streams

FLOW = [(1.0, 1.0), (0.5, 0.7), (0.9, 0.3)]

# name: (rows, cols, pe, simd, in_shape, weight range, masked)
MVU_CASES = {
    "odd-3x9": (6, 27, 3, 9, signed(9), (-128, 127), False),
    "pe1-full-simd-masked": (4, 12, 1, 12, signed(9), (-100, 100), True),
    "simd1-pe-full": (5, 7, 5, 1, signed(9), (-7, 7), False),
    "unsigned-in-positive-weights": (10, 16, 2, 4, unsigned(8), (0, 300), False),
    "single-word": (3, 5, 3, 5, signed(4), (-3, 3), True),
    "classifier-like": (10, 24, 2, 8, signed(12), (-2048, 2047), False),
    # 1,100 words of 36 bits: a weight memory of three block RAMs in depth (a tiled ROM)
    "tiled-weights": (2, 2200, 1, 4, signed(6), (-200, 200), False),
    "tiled-weights-nf1": (1, 4400, 1, 4, signed(6), (-200, 200), True),
}


def make_mvu(case, seed=0):
    rows, cols, pe, simd, in_shape, (wl, wh), masked = MVU_CASES[case]
    rng = np.random.default_rng(seed)
    weights = rng.integers(wl, wh + 1, size=(rows, cols))
    return IntMatrixVector(weights=weights, pe=pe, simd=simd, in_shape=in_shape, masked=masked), rng


def stream_of(dut, vectors, mask=None):
    """Input words of ``vectors`` (n, cols); masked words with mask 0 carry zero data."""
    words = np.asarray(vectors).reshape(-1, dut.simd)
    if not dut.masked:
        return words.tolist()
    mask = np.ones(len(words), dtype=int) if mask is None else mask
    return [{"data": (w * m).tolist(), "mask": int(m)} for w, m in zip(words, mask, strict=True)]


def expected_of(dut, vectors, mask=None):
    vectors = np.asarray(vectors).reshape(-1, dut.simd)
    if mask is not None:
        vectors = vectors * np.asarray(mask)[:, None]
    vectors = vectors.reshape(-1, dut.weights.shape[1])
    return int_matvec(dut.weights, vectors).reshape(-1, dut.pe).tolist()


@pytest.mark.parametrize("valid, ready", FLOW)
@pytest.mark.parametrize("case", sorted(MVU_CASES))
def test_int_mvu_matches_numpy_model(case, valid, ready):
    dut, rng = make_mvu(case)
    low, high = bounds(dut.in_shape)
    vectors = rng.integers(low, high + 1, size=(4, dut.weights.shape[1]))
    mask = None
    if dut.masked:  # padding words (zero data, mask 0), some whole vectors of padding
        mask = rng.integers(0, 2, size=vectors.size // dut.simd)
        mask[: dut.synapse_fold] = 0
    run = simulate_streams(
        dut,
        {"i": stream_of(dut, vectors, mask)},
        {"o": len(vectors) * dut.neuron_fold},
        valid_probability=valid,
        ready_probability=ready,
        seed=3,
    )
    assert run.outputs["o"] == expected_of(dut, vectors, mask)


@pytest.mark.parametrize("case", sorted(MVU_CASES))
def test_int_mvu_full_rate_interval_and_latency(case):
    dut, rng = make_mvu(case)
    low, high = bounds(dut.in_shape)
    vectors = rng.integers(low, high + 1, size=(4, dut.weights.shape[1]))
    outputs = len(vectors) * dut.neuron_fold
    run = simulate_streams(dut, {"i": stream_of(dut, vectors)}, {"o": outputs})
    assert run.outputs["o"] == expected_of(dut, vectors)
    if outputs > 1:
        assert run.interval("o") == dut.initiation_interval == dut.synapse_fold
    # vectors follow each other with no bubble: NF * SF cycles each
    first_words = run.cycles["i"][:: dut.synapse_fold]
    assert np.diff(first_words).tolist() == [dut.cycles_per_vector] * (len(vectors) - 1)
    assert run.cycles["o"][0] - run.cycles["i"][dut.synapse_fold - 1] == dut.latency


def test_int_mvu_worst_case_cannot_overflow():
    """18-bit weights times 18-bit inputs: every row and input extreme, accumulators at their bounds."""
    cols, pe, simd = 12, 2, 4
    in_shape = signed(18)
    wl, wh = -(1 << 17), (1 << 17) - 1
    xl, xh = bounds(in_shape)
    rows = [[wl] * cols, [wh] * cols, [wl, wh] * (cols // 2), [wh] * (cols - 1) + [wl], [wl] * (cols - 1) + [0]]
    weights = np.array([*rows, [1] * cols])
    dut = IntMatrixVector(weights=weights, pe=pe, simd=simd, in_shape=in_shape)
    assert dut.weight_shape == signed(18)
    vectors = np.array([[xl] * cols, [xh] * cols, [xl, xh] * (cols // 2), [xh, xl] * (cols // 2), [0] * cols])
    expected = int_matvec(weights.astype(object), vectors.astype(object))
    acc_low, acc_high = int_matvec_bounds(weights, in_shape)
    assert expected.min() == acc_low and expected.max() == acc_high  # the bounds are reached
    assert dut.acc_shape == shape_for(acc_low, acc_high) == signed(39)  # 12 * 2**34 needs 38 bits + sign
    run = simulate_streams(dut, {"i": stream_of(dut, vectors)}, {"o": len(vectors) * dut.neuron_fold})
    assert run.outputs["o"] == expected.reshape(-1, pe).tolist()


def test_int_matvec_bounds_are_exact():
    weights = np.array([[3, -2, 0], [-1, -1, -1], [5, 5, 5]])
    # x in signed(4) = [-8, 7]
    assert int_matvec_bounds(weights, signed(4)) == (-8 * 5 * 3, 7 * 5 * 3)
    assert int_matvec_bounds(weights[:2], signed(4)) == (3 * -8 - 2 * 7, 3 * 7 - 2 * -8)  # row 0 at both ends
    assert int_matvec_bounds(weights[:2], unsigned(3)) == (-21, 21)


def test_int_matvec_is_exact_beyond_int64():
    weights = np.array([[(1 << 40) + 1, -(1 << 40)], [3, 4]])
    vectors = np.array([[(1 << 30) + 7, -(1 << 30)], [1, 2]])
    result = int_matvec(weights, vectors)
    assert result.dtype == object
    expected = [[sum(int(w) * int(x) for w, x in zip(row, v, strict=True)) for row in weights] for v in vectors]
    assert result.tolist() == expected
    small = int_matvec(np.array([[1, -2]]), np.array([[3, 4], [5, 6]]))
    assert small.dtype == np.int64 and small.tolist() == [[-5], [-7]]


def test_int_mvu_resources():
    dut, _ = make_mvu("odd-3x9")
    assert dut.multipliers == 27
    assert dut.neuron_fold == 2 and dut.synapse_fold == 3 and dut.cycles_per_vector == 6
    assert dut.memory_bits == 6 * 27 * 8 + 27 * 9  # weights + input buffer
    dut, _ = make_mvu("single-word")
    assert dut.memory_bits == 3 * 5 * 3  # NF = 1: no input buffer


# ---------------------------------------------------------------------------------------------
# Argmax


@pytest.mark.parametrize("valid, ready", FLOW)
@pytest.mark.parametrize("count, classes", [(3, 9), (1, 5), (10, 10), (4, 12)])
def test_argmax_matches_numpy_model_with_ties(count, classes, valid, ready):
    rng = np.random.default_rng(count * 100 + classes)
    logits = rng.integers(-3, 3, size=(25, classes))  # many ties
    logits[0] = -128  # all equal at the minimum
    logits[1] = 127
    logits[2, -1] = 127  # the maximum in the last word
    dut = Argmax(shape=signed(8), count=count, classes=classes)
    run = simulate_streams(
        dut, {"i": logits.reshape(-1, count).tolist()}, {"o": 25}, valid_probability=valid, ready_probability=ready
    )
    index, value = argmax(logits)
    assert run.outputs["o"] == [{"index": int(i), "value": int(v)} for i, v in zip(index, value, strict=True)]


def test_argmax_runs_one_word_per_cycle():
    dut = Argmax(shape=signed(20), count=2, classes=10)
    assert dut.index_shape == unsigned(4)
    rng = np.random.default_rng(4)
    low, high = bounds(signed(20))
    logits = rng.integers(low, high + 1, size=(12, 10))
    run = simulate_streams(dut, {"i": logits.reshape(-1, 2).tolist()}, {"o": 12})
    assert run.interval("o") == dut.initiation_interval == 5
    assert run.cycles["o"][0] - run.cycles["i"][4] == dut.latency
    index, value = argmax(logits)
    assert [o["index"] for o in run.outputs["o"]] == index.tolist()
    assert [o["value"] for o in run.outputs["o"]] == value.tolist()


def test_argmax_numpy_model():
    index, value = argmax(np.array([[1, 5, 5, 2], [-3, -3, -4, -9]]))
    assert index.tolist() == [1, 0] and value.tolist() == [5, -3]
    index, value = argmax(np.array([4, 9, 9]))
    assert int(index) == 1 and int(value) == 9


# ---------------------------------------------------------------------------------------------
# parameters


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"pe": 4}, r"pe must divide rows \(6\), not 4"),
        ({"simd": 5}, r"simd must divide cols \(27\), not 5"),
        ({"pe": 0}, r"pe must be >= 1, not 0"),
        ({"in_shape": signed(19)}, r"in_shape must be 1 to 18 bits wide, not signed\(19\)"),
        ({"weights": np.full((6, 27), 1 << 18)}, r"weights must fit 18 bits .* \(unsigned\(19\)\)"),
        ({"weights": np.full((6, 27), -(1 << 17) - 1)}, r"weights must fit 18 bits"),
        ({"weights": np.zeros(27, dtype=int)}, r"weights must be a non-empty 2-D array, not one of shape \(27,\)"),
        ({"weights": np.zeros((6, 27)) + 0.5}, r"weights must be an integer array"),
        ({"masked": "yes"}, r"masked must be a bool, not 'yes'"),
        ({"external_modules": None}, r"external_modules must be a bool, not None"),
    ],
)
def test_int_mvu_invalid_parameters_are_named(kwargs, message):
    params = dict(weights=np.zeros((6, 27), dtype=int), pe=3, simd=9, in_shape=signed(8))
    params.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=message):
        IntMatrixVector(**params)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"count": 4}, r"count must divide classes \(10\), not 4"),
        ({"classes": 0}, r"classes must be >= 1, not 0"),
        ({"shape": 100}, r"shape must be 1 to 64 bits wide, not 100"),
    ],
)
def test_argmax_invalid_parameters_are_named(kwargs, message):
    params = dict(shape=signed(8), count=5, classes=10)
    params.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=message):
        Argmax(**params)


def test_int_mvu_parameters_give_figures_without_ports():
    weights = np.ones((6, 27), dtype=int)
    weights[0, 0] = -2  # weights signed(2); row 0 spans [-14 - 26 * 8, 16 + 26 * 7] = [-222, 198]
    params = dict(weights=weights, pe=3, simd=9, in_shape=signed(4))
    with pytest.raises(ValueError, match=r"in_shape must be 1 to 18 bits wide"):
        IntMatrixVectorParameters(**{**params, "in_shape": signed(19)})
    plain = IntMatrixVector.parameters(**params)
    assert type(plain) is IntMatrixVectorParameters and not isinstance(plain, wiring.Component)
    assert plain.acc_shape == signed(9)
    # 27 lanes of 4 x 2 bits; the 6 x 54 weight ROM in logic: 54 bits x 6/16 LUT4s
    assert plain.lut_kind == "int_mvu" and plain.lut_features() == (1.0, 27 * 6, 3 * 9, 54 * 6 / 16, 0.0)
    luts = lut_estimate("int_mvu", (1, 162, 27, 54 * 6 / 16, 0))
    # NF 2, SF 3; pipeline: memory (two), operands, the product's three registers, 4 tree levels, accumulator
    assert plain.latency == 7 + 4
    figures = Figures(24, 2 + 11, 2 + 11, luts, memory_bits=162 * 2 + 27 * 4, multipliers=27, lag=3)
    assert plain.figures(12) == figures
    dut = IntMatrixVector(**params, external_modules=True)
    assert dut.external_modules and dut.figures(12) == figures
    assert (dut.weight_shape, dut.acc_shape, dut.tree_stages) == (signed(2), plain.acc_shape, plain.tree_stages)


def test_int_matvec_bounds_are_exact_near_the_int64_limit():
    weights = np.array([[(1 << 20) - 1] * 4, [-(1 << 20)] * 4])
    in_shape = signed(42)  # 2**41 * 2**20 * 4 = 2**63: beyond int64
    assert int_matvec_bounds(weights, in_shape) == (-(1 << 20) * ((1 << 41) - 1) * 4, (1 << 20) * (1 << 41) * 4)
    assert int_matvec_bounds(weights, signed(41)) == (-(1 << 20) * ((1 << 40) - 1) * 4, (1 << 20) * (1 << 40) * 4)


def test_argmax_parameters_give_figures_without_ports():
    with pytest.raises(ValueError, match=r"count must divide classes \(10\), not 4"):
        ArgmaxParameters(shape=signed(8), count=4, classes=10)
    plain = Argmax.parameters(shape=signed(8), count=5, classes=10)
    assert type(plain) is ArgmaxParameters and not isinstance(plain, wiring.Component)
    assert plain.lut_kind == "argmax" and plain.lut_features() == (1.0, 40.0)
    # two words a frame, the result the cycle after the last
    # five logits a word: three tree levels, then the input, the comparisons with the running
    # best, the running best and the index sum
    figures = Figures(cycles=2, latency=1 + 7, post=7, luts=lut_estimate("argmax", (1, 40)))
    assert plain.figures(2) == figures
    dut = Argmax(shape=signed(8), count=5, classes=10)
    assert dut.figures(2) == figures and dut.words_per_frame == plain.words_per_frame == 2
