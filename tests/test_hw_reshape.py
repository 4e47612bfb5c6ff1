# amaranth: UnusedElaboratable=no
"""hw.reshape in Amaranth's simulator against its numpy models, under random flow control; figures,
validation and latency."""

import random

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned
from stream_components import check_figures, check_latency, check_validation

from instabnn_hw.hw.figures import Figures
from instabnn_hw.hw.fixed import bounds
from instabnn_hw.hw.layouts import tensor_to_words
from instabnn_hw.hw.reshape import (
    Repeat,
    RepeatParameters,
    WidthConverter,
    WidthConverterParameters,
    regroup,
    repeat_channels,
)
from instabnn_hw.hw.simulate import simulate_streams

FLOW = [(1.0, 1.0), (0.5, 0.7), (0.9, 0.3)]


@pytest.mark.parametrize("valid, ready", FLOW)
@pytest.mark.parametrize("in_count, out_count", [(8, 2), (3, 3), (2, 6), (1, 4), (4, 1)])
def test_width_converter_keeps_element_order(in_count, out_count, valid, ready):
    elements = [random.Random(in_count).randrange(-8, 8) for _ in range(24)]
    words = regroup(np.array(elements), in_count).tolist()
    dut = WidthConverter(shape=signed(4), in_count=in_count, out_count=out_count)
    run = simulate_streams(dut, {"i": words}, {"o": 24 // out_count}, valid_probability=valid, ready_probability=ready)
    assert run.outputs["o"] == regroup(np.array(elements), out_count).tolist()


def test_width_converter_narrowing_emits_one_word_per_cycle():
    dut = WidthConverter(shape=1, in_count=8, out_count=2)
    run = simulate_streams(dut, {"i": [[1, 0] * 4] * 10}, {"o": 40})
    assert run.interval("o") == 1 == dut.initiation_interval


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: WidthConverter(shape=1, in_count=3, out_count=2), r"in_count \(3\) and out_count \(2\) must divide"),
        (lambda: WidthConverter(shape=0, in_count=3, out_count=3), r"shape must be 1 to 64 bits wide"),
        (lambda: Repeat(shape=signed(4), count=2, words=0, times=2), r"words must be >= 1, not 0"),
        (lambda: Repeat(shape=signed(4), count=2, words=2, times=0), r"times must be >= 1, not 0"),
        (lambda: Repeat(shape=signed(4), count=2.5, words=2, times=2), r"count must be an integer, not 2.5"),
        (lambda: Repeat(shape=65, count=2, words=2, times=2), r"shape must be 1 to 64 bits wide"),
        (lambda: repeat_channels(np.zeros((2, 1, 1)), 0), r"times must be >= 1, not 0"),
    ],
)
def test_invalid_parameters_are_named(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_repeat_channels_concatenates_along_channels():
    tensor = np.arange(12).reshape(3, 2, 2)
    out = repeat_channels(tensor, 2)
    assert out.shape == (6, 2, 2) and (out[:3] == tensor).all() and (out[3:] == tensor).all()
    assert (repeat_channels(tensor, 1) == tensor).all()


def repeat_run(*, channels, count, times, pixels, valid, ready, seed=0):
    element = signed(6)
    low, high = bounds(element)
    tensor = np.random.default_rng(seed).integers(low, high + 1, size=(channels, 1, pixels))
    tensor[:, 0, 0] = low  # extremes pass unchanged
    dut = Repeat(shape=element, count=count, words=channels // count, times=times)
    expected = tensor_to_words(repeat_channels(tensor, times), count).tolist()
    run = simulate_streams(
        dut,
        {"i": tensor_to_words(tensor, count).tolist()},
        {"o": len(expected)},
        valid_probability=valid,
        ready_probability=ready,
        seed=seed,
    )
    return dut, run, expected


@pytest.mark.parametrize("valid, ready", FLOW)
@pytest.mark.parametrize("channels, count, times", [(6, 2, 2), (4, 4, 2), (3, 1, 3), (5, 5, 1), (8, 2, 4)])
def test_repeat_matches_numpy_model(channels, count, times, valid, ready):
    _, run, expected = repeat_run(
        channels=channels, count=count, times=times, pixels=7, valid=valid, ready=ready, seed=channels * times
    )
    assert run.outputs["o"] == expected


@pytest.mark.parametrize("channels, count, times", [(6, 2, 2), (4, 4, 2), (3, 1, 3)])
def test_repeat_emits_one_word_per_cycle(channels, count, times):
    dut, run, expected = repeat_run(channels=channels, count=count, times=times, pixels=10, valid=1.0, ready=1.0)
    assert run.outputs["o"] == expected
    assert run.interval("o") == dut.initiation_interval == 1
    assert dut.cycles_per_pixel == channels // count * times
    assert run.cycles["o"][0] - run.cycles["i"][0] == dut.latency  # first copy straight through the register
    assert run.total_cycles <= len(expected) + dut.latency + 1


# name: (component, parameters class, parameters, input words of a frame, figures), figures worked out by hand
FIGURES = {
    # narrowing 8 -> 2: a 4-way multiplexer on each of the 2 * 4 output bits
    "narrowing": (
        WidthConverter,
        WidthConverterParameters,
        {"shape": signed(4), "in_count": 8, "out_count": 2},
        10,
        Figures(40, 1, 1, round(0.737 + 1.143 * 2 * 4 * 3)),
    ),
    # widening 2 -> 6: three input words per output word
    "widening": (
        WidthConverter,
        WidthConverterParameters,
        {"shape": signed(4), "in_count": 2, "out_count": 6},
        12,
        Figures(12, 3, 1, round(0.737 + 2.309 * 3)),
    ),
    # 6 input words leave twice; the replay buffer holds a pixel's 3 words of 2 * 6 bits
    "repeat": (
        Repeat,
        RepeatParameters,
        {"shape": signed(6), "count": 2, "words": 3, "times": 2},
        6,
        Figures(12, 1, 1, round(21.835 + 0.855 * 12), 3 * 12),
    ),
}


@pytest.mark.parametrize("name", FIGURES)
def test_parameters_give_the_figures_without_ports(name):
    check_figures(*FIGURES[name])


@pytest.mark.parametrize(
    "component, params, error, message",
    [
        (WidthConverter, {"shape": 1, "in_count": 3, "out_count": 2}, ValueError, r"in_count \(3\) and out_count"),
        (Repeat, {"shape": signed(4), "count": 2, "words": 2, "times": 0}, ValueError, r"times must be >= 1, not 0"),
    ],
)
def test_parameters_validate_as_the_components(component, params, error, message):
    check_validation(component, params, error, message)


def test_converter_exposes_its_parameters():
    converter = WidthConverter(shape=unsigned(3), in_count=2, out_count=8)
    assert (converter.shape, converter.in_count, converter.out_count) == (unsigned(3), 2, 8)
    assert converter.latency == converter.initiation_interval == 4


@pytest.mark.parametrize(
    "make, inputs, outputs",
    [
        (lambda: WidthConverter(shape=4, in_count=6, out_count=2), {"i": [[1] * 6] * 6}, {"o": 18}),
        (lambda: WidthConverter(shape=4, in_count=2, out_count=6), {"i": [[1] * 2] * 6}, {"o": 2}),
        (lambda: Repeat(shape=4, count=2, words=3, times=2), {"i": [[1] * 2] * 6}, {"o": 12}),
    ],
)
def test_latency_is_the_first_output_after_the_first_input(make, inputs, outputs):
    check_latency(make, inputs, outputs)
