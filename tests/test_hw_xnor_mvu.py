# amaranth: UnusedElaboratable=no
"""hw.xnor_mvu in Amaranth's simulator: XnorMatrixVector bit-exact against the numpy model."""

import re

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import signed, unsigned
from amaranth.lib import wiring

from instabnn_hw.hw.figures import Figures
from instabnn_hw.hw.fixed import bounds, shape_for
from instabnn_hw.hw.layouts import channel_word, window_word
from instabnn_hw.hw.plumbing import FifoParameters
from instabnn_hw.hw.popcount import popcount_levels, popcount_module_name, popcount_verilog
from instabnn_hw.hw.simulate import simulate_streams
from instabnn_hw.hw.xnor_mvu import (
    XnorMatrixVector,
    XnorMatrixVectorParameters,
    vectors_from_words,
    words_from_vectors,
    xnor_matvec,
)

FLOW = [(1.0, 1.0), (0.5, 0.7), (0.9, 0.3)]

# name: (rows, cols, pe, simd, masked)
CASES = {
    "odd-pe3-simd9": (6, 27, 3, 9, True),
    "odd-full-width": (6, 27, 3, 27, True),
    "pe1": (5, 12, 1, 4, True),
    "pe1-unmasked-fc": (4, 40, 1, 8, False),
    "pe-full-nf1": (4, 16, 4, 8, True),
    "simd1": (3, 5, 1, 1, True),
    "sf1-buffered": (6, 10, 2, 10, False),
    "wider": (8, 96, 2, 32, True),
    # 1,100 words of 36 bits: a weight memory of three block RAMs in depth (a tiled ROM)
    "tiled-weights": (8, 4950, 4, 9, True),
    "tiled-weights-nf1": (4, 9900, 4, 9, False),
}


def reference_dot(weights, vectors, mask):
    """Plain loops: sum over valid positions of +1 (equal bits) or -1."""
    out = np.zeros((len(vectors), len(weights)), dtype=np.int64)
    for v, (vector, valid) in enumerate(zip(vectors, mask, strict=True)):
        for r, row in enumerate(weights):
            out[v, r] = sum((1 if a == w else -1) for a, w, k in zip(vector, row, valid, strict=True) if k)
    return out


def make(case, seed=0):
    rows, cols, pe, simd, masked = CASES[case]
    rng = np.random.default_rng(seed)
    return XnorMatrixVector(weights=rng.integers(0, 2, size=(rows, cols)), pe=pe, simd=simd, masked=masked), rng


def stimulus(dut, vectors, word_mask=None):
    """Input payloads for ``vectors`` and the expected output words; padding words carry zero data."""
    words = words_from_vectors(vectors, simd=dut.simd)
    if not dut.masked:
        return words.tolist(), xnor_matvec(dut.weights, vectors).reshape(-1, dut.pe).tolist()
    word_mask = np.ones(len(words), dtype=np.int64) if word_mask is None else np.asarray(word_mask)
    words = words * word_mask[:, None]
    vectors, position_mask = vectors_from_words(words, cols=dut.cols, mask=word_mask)
    expected = xnor_matvec(dut.weights, vectors, position_mask).reshape(-1, dut.pe).tolist()
    payloads = [{"data": w, "mask": int(k)} for w, k in zip(words.tolist(), word_mask, strict=True)]
    return payloads, expected


# --- the numpy model -------------------------------------------------------------------------


@pytest.mark.parametrize("cols", [1, 7, 8, 9, 64, 100])
def test_model_matches_plain_loops(cols):
    rng = np.random.default_rng(cols)
    weights = rng.integers(0, 2, size=(5, cols))
    vectors = rng.integers(0, 2, size=(6, cols))
    mask = rng.integers(0, 2, size=(6, cols))
    assert xnor_matvec(weights, vectors, mask).tolist() == reference_dot(weights, vectors, mask).tolist()
    full = np.ones_like(vectors)
    assert xnor_matvec(weights, vectors).tolist() == reference_dot(weights, vectors, full).tolist()
    assert xnor_matvec(weights, vectors[0]).tolist() == reference_dot(weights, vectors[:1], full[:1])[0].tolist()


def test_model_equals_bipolar_matrix_product():
    rng = np.random.default_rng(1)
    weights = rng.integers(0, 2, size=(64, 576))
    vectors = rng.integers(0, 2, size=(300, 576))
    mask = rng.integers(0, 2, size=(300, 576))
    bipolar = (2 * vectors - 1) * mask
    assert np.array_equal(xnor_matvec(weights, vectors, mask), bipolar @ (2 * weights - 1).T)


def test_model_is_fast_on_a_resnet18_layer():
    import time

    rng = np.random.default_rng(2)
    weights = rng.integers(0, 2, size=(128, 1152))  # 3x3 x 128 channels
    vectors = rng.integers(0, 2, size=(28 * 28, 1152))
    started = time.perf_counter()
    dots = xnor_matvec(weights, vectors)
    assert time.perf_counter() - started < 5
    assert dots.shape == (784, 128) and dots.dtype == np.int64
    assert np.array_equal(dots[:5], (2 * vectors[:5] - 1) @ (2 * weights - 1).T)


def test_model_extremes_fit_the_accumulator_shape():
    cols = 45
    ones, zeros = np.ones((1, cols), dtype=int), np.zeros((1, cols), dtype=int)
    assert xnor_matvec(ones, ones).tolist() == [[cols]]
    assert xnor_matvec(ones, zeros).tolist() == [[-cols]]
    assert xnor_matvec(ones, ones, zeros).tolist() == [[0]]
    assert bounds(shape_for(-cols, cols)) == (-64, 63)


def test_words_and_vectors_convert_both_ways():
    rng = np.random.default_rng(3)
    vectors = rng.integers(0, 2, size=(4, 12))
    words = words_from_vectors(vectors, simd=3)
    assert words.shape == (16, 3)
    back, none = vectors_from_words(words, cols=12)
    assert none is None and np.array_equal(back, vectors)
    word_mask = np.array([1, 0, 1, 1] * 4)
    _, position_mask = vectors_from_words(words, cols=12, mask=word_mask)
    assert position_mask.shape == (4, 12)
    assert position_mask[0].tolist() == [1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1]


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: xnor_matvec([[0, 2]], [[0, 1]]), ValueError, r"weights must be <= 1, but holds 2"),
        (lambda: xnor_matvec([[0, 1]], [[0, 1, 1]]), ValueError, r"vectors must have 2 columns"),
        (lambda: xnor_matvec([[0, 1]], [[0, 1]], [[1]]), ValueError, r"mask must have the shape of vectors"),
        (lambda: xnor_matvec([0, 1], [[0, 1]]), ValueError, r"weights must be a 2-D array of 0/1"),
        (lambda: xnor_matvec([[0.5, 1]], [[0, 1]]), TypeError, r"weights must be an integer array"),
        (lambda: vectors_from_words(np.zeros((3, 4), int), cols=6), ValueError, r"cols \(6\) must be a multiple"),
        (lambda: words_from_vectors(np.zeros((2, 6), int), simd=4), ValueError, r"simd must divide cols \(6\), not 4"),
    ],
)
def test_model_refuses_invalid_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --- the hardware ----------------------------------------------------------------------------


@pytest.mark.parametrize("valid, ready", FLOW)
@pytest.mark.parametrize("case", sorted(CASES))
def test_mvu_matches_numpy_model(case, valid, ready):
    dut, rng = make(case)
    vectors = rng.integers(0, 2, size=(3, dut.cols))
    word_mask = None
    if dut.masked:  # random padding words, and the whole first vector padding
        word_mask = rng.integers(0, 2, size=3 * dut.synapse_fold)
        word_mask[: dut.synapse_fold] = 0
    payloads, expected = stimulus(dut, vectors, word_mask)
    run = simulate_streams(
        dut, {"i": payloads}, {"o": len(expected)}, valid_probability=valid, ready_probability=ready, seed=7
    )
    assert run.outputs["o"] == expected


@pytest.mark.parametrize("case", sorted(CASES))
def test_mvu_runs_at_its_initiation_interval_with_no_bubble_between_vectors(case):
    dut, rng = make(case, seed=4)
    vectors = rng.integers(0, 2, size=(6, dut.cols))
    payloads, expected = stimulus(dut, vectors)
    run = simulate_streams(dut, {"i": payloads}, {"o": len(expected)})
    assert run.outputs["o"] == expected
    assert run.interval("o", skip=dut.neuron_fold) == dut.initiation_interval
    # the input is taken on every fold-0 cycle: SF words per NF * SF cycles, back to back
    inputs = run.cycles["i"]
    for vector in range(1, 6):
        first = inputs[vector * dut.synapse_fold]
        assert first - inputs[(vector - 1) * dut.synapse_fold] == dut.cycles_per_vector
    assert run.cycles["o"][0] - inputs[dut.synapse_fold - 1] == dut.latency


@pytest.mark.parametrize("masked", [True, False])
def test_worst_cases_reach_plus_and_minus_cols_without_overflow(masked):
    rows, cols, pe, simd = 4, 36, 2, 12
    weights = np.ones((rows, cols), dtype=int)
    weights[1] = 0
    weights[3, ::2] = 0
    dut = XnorMatrixVector(weights=weights, pe=pe, simd=simd, masked=masked)
    low, high = bounds(dut.acc_shape)
    assert dut.acc_shape == shape_for(-cols, cols)
    vectors = np.array([np.ones(cols, int), np.zeros(cols, int), np.ones(cols, int)])
    word_mask = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0]) if masked else None
    payloads, expected = stimulus(dut, vectors, word_mask)
    run = simulate_streams(dut, {"i": payloads}, {"o": len(expected)}, valid_probability=0.8, ready_probability=0.5)
    assert run.outputs["o"] == expected
    flat = np.array(expected).reshape(len(vectors), rows)
    assert flat[0].tolist() == [cols, -cols, cols, 0]  # all +1 against all +1 / all -1 / half
    assert flat[1].tolist() == [-cols, cols, -cols, 0]
    if masked:
        assert flat[2].tolist() == [0, 0, 0, 0]  # an all-padding window
    assert low <= flat.min() and flat.max() <= high


def test_payload_layouts_and_design_figures():
    dut = XnorMatrixVector(weights=np.zeros((6, 27), int), pe=3, simd=9)
    assert dut.i.payload.shape() == window_word(unsigned(1), 9)
    assert dut.o.payload.shape() == channel_word(shape_for(-27, 27), 3)
    assert (dut.neuron_fold, dut.synapse_fold) == (2, 3)
    assert dut.initiation_interval == 3 and dut.cycles_per_vector == 6 and dut.lanes == 27
    # SF 3 is shorter than the pipeline's 7 cycles and the slot's return: an output FIFO of
    # ceil((7 + 2 + 1) / 3) = 4 words of 3 x signed(6) (its latency 2)
    assert (dut.pipeline_latency, dut.output_slots, dut.output_fifo.latency) == (7, 4, 2)
    assert dut.memory_bits == 6 * 27 + 3 * (9 + 1) + 4 * 3 * 6
    unmasked = XnorMatrixVector(weights=np.zeros((4, 8), int), pe=4, simd=8, masked=False)
    assert unmasked.i.payload.shape() == channel_word(unsigned(1), 8)
    # NF = 1: no input buffer; SF = 1: ceil((6 + 2 + 1) / 1) = 9 output words of 4 x signed(5)
    assert (unmasked.pipeline_latency, unmasked.output_slots) == (6, 9)
    assert unmasked.memory_bits == 32 + 9 * 4 * 5
    assert unmasked.latency == XnorMatrixVector(weights=np.zeros((8, 8), int), pe=4, simd=8).latency - 1


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"weights": np.zeros((4, 9), int), "pe": 3, "simd": 3}, ValueError, r"pe must divide rows \(4\), not 3"),
        ({"weights": np.zeros((4, 9), int), "pe": 2, "simd": 2}, ValueError, r"simd must divide cols \(9\), not 2"),
        ({"weights": np.zeros((4, 9), int), "pe": 0, "simd": 3}, ValueError, r"pe must be >= 1, not 0"),
        ({"weights": np.zeros((4, 9), int), "pe": 2, "simd": 1.5}, TypeError, r"simd must be an integer, not 1.5"),
        ({"weights": np.full((2, 3), 2), "pe": 1, "simd": 3}, ValueError, r"weights must be <= 1, but holds 2"),
        ({"weights": np.zeros(6, int), "pe": 1, "simd": 3}, ValueError, r"weights must be a 2-D array"),
        ({"weights": np.zeros((0, 3), int), "pe": 1, "simd": 3}, ValueError, r"weights must not be empty"),
        ({"weights": [[0.0, 1.0]], "pe": 1, "simd": 2}, TypeError, r"weights must be an integer array"),
        ({"weights": np.zeros((2, 4), int), "pe": 1, "simd": 4, "masked": 1}, TypeError, r"masked must be a bool"),
        (
            {"weights": np.zeros((2, 4), int), "pe": 1, "simd": 4, "buffer_style": "bram"},
            ValueError,
            r"buffer_style must be one of \('block', 'distributed', 'logic'\), not 'bram'",
        ),
        (
            {"weights": np.zeros((2, 32), int), "pe": 1, "simd": 32, "popcount_stages": 9},
            ValueError,
            r"popcount_stages must be in \[1, 4\], not 9",
        ),
        (
            {"weights": np.zeros((2, 4), int), "pe": 1, "simd": 4, "external_modules": "no"},
            TypeError,
            r"external_modules must be a bool, not 'no'",
        ),
    ],
)
def test_invalid_parameters_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        XnorMatrixVector(**kwargs)


def test_padding_words_contribute_zero_whatever_their_data():
    rng = np.random.default_rng(5)
    dut = XnorMatrixVector(weights=rng.integers(0, 2, size=(4, 24)), pe=2, simd=8)
    words = rng.integers(0, 2, size=(9, 8))  # padding words below keep their random data
    word_mask = np.array([1, 0, 1, 0, 0, 1, 1, 1, 0])
    vectors, position_mask = vectors_from_words(words, cols=24, mask=word_mask)
    expected = xnor_matvec(dut.weights, vectors, position_mask)
    assert np.array_equal(expected, xnor_matvec(dut.weights, vectors * position_mask, position_mask))
    payloads = [{"data": w, "mask": int(k)} for w, k in zip(words.tolist(), word_mask, strict=True)]
    run = simulate_streams(dut, {"i": payloads}, {"o": expected.size // 2}, valid_probability=0.7)
    assert run.outputs["o"] == expected.reshape(-1, 2).tolist()


def test_external_modules_make_one_popcount_module_per_size():
    """With ``external_modules`` each PE's popcount is an instance of ``popcount_verilog``'s module of its size."""
    dut = XnorMatrixVector(weights=np.zeros((6, 27), int), pe=3, simd=9, popcount_stages=2, external_modules=True)
    assert dut.external_modules and dut.popcount_sizes == {(9, 2)}
    name = popcount_module_name(9, 2)
    text = verilog.convert(dut, name="top")
    assert text.count(f"{name} ") == 3 and "module top(" in text
    headers = re.findall(r"^module (\S+)\((.*)\);", popcount_verilog([(9, 2), (4, 1), (9, 2)]), re.M)
    assert [module for module, _ in headers] == [popcount_module_name(4, 1), name]  # sorted, each once
    assert all(set(ports.split(", ")) == {"clk", "rst", "en", "i", "o"} for _, ports in headers)
    assert name not in verilog.convert(XnorMatrixVector(weights=np.zeros((6, 27), int), pe=3, simd=9), name="top")


def test_parameters_give_figures_without_ports():
    params = dict(weights=np.zeros((6, 27), int), pe=3, simd=9)
    with pytest.raises(ValueError, match=r"pe must divide rows \(6\), not 4"):
        XnorMatrixVectorParameters(**{**params, "pe": 4})
    plain = XnorMatrixVector.parameters(**params)
    assert type(plain) is XnorMatrixVectorParameters and not isinstance(plain, wiring.Component)
    # NF 2, SF 3; acc signed(6); the 6 x 27 weight ROM in logic: 27 bits x 6/16 LUT4s
    assert plain.lut_kind == "xnor_mvu" and plain.lut_features() == (1.0, 27.0, 3 * 6, 27 * 6 / 16, 0.0)
    # with the output FIFO of 4 words (test_payload_layouts_and_design_figures)
    fifo = FifoParameters(shape=channel_word(signed(6), 3), depth=4)
    assert plain.output_fifo.depth == fifo.depth and plain.output_fifo.shape == fifo.shape
    luts = round(44.458 + 2.411 * 27 + 0.987 * 18 + 0.869 * 27 * 6 / 16) + fifo.luts
    # 4 vectors of 3 words; with NF > 1 a pipeline of 5 registers and 2 popcount stages, then the FIFO's 2
    assert plain.pipeline_latency == 5 + 1 + popcount_levels(9) == 7 and plain.latency == 7 + 2
    memory_bits = 6 * 27 + 3 * (9 + 1) + fifo.memory_bits
    figures = Figures(cycles=24, latency=2 + 9, post=2 + 9, luts=luts, memory_bits=memory_bits, lag=3)
    assert plain.figures(12) == figures
    dut = XnorMatrixVector(**params, external_modules=True)
    assert dut.figures(12) == figures
    assert (dut.acc_shape, dut.memory_bits, dut.popcount_sizes) == (plain.acc_shape, plain.memory_bits, {(9, 2)})
    single = XnorMatrixVector.parameters(weights=np.zeros((4, 8), int), pe=4, simd=8, masked=False)
    assert single.pipeline_latency == 4 + 1 + popcount_levels(8)  # NF = 1: no buffer read-back
    assert single.figures(5) == Figures(5, single.latency, single.latency, single.luts, single.memory_bits, 0, 0)
    # an SF longer than the pipeline and the slot's return: the output register alone
    long = XnorMatrixVector.parameters(weights=np.zeros((2, 64), int), pe=1, simd=8)
    assert long.synapse_fold == 8 >= long.pipeline_latency + 1 and long.output_fifo is None
    assert (long.output_slots, long.latency, long.memory_bits) == (1, long.pipeline_latency, 2 * 64 + 8 * 9)
