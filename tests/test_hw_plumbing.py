# amaranth: UnusedElaboratable=no
"""hw.plumbing in Amaranth's simulator: every payload arrives once, in order, under random flow control."""

import random

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Module, signed, unsigned
from amaranth.lib import data
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.sim import Simulator

from instabnn_hw.hw.fixed import bounds
from instabnn_hw.hw.layouts import tensor_to_words
from instabnn_hw.hw.plumbing import Fifo, Fork, JoinAdd, Repeat, WidthConverter, join_add, regroup, repeat_channels
from instabnn_hw.hw.simulate import simulate_streams

FLOW = [(1.0, 1.0), (0.5, 0.7), (0.9, 0.3)]


@pytest.mark.parametrize("valid, ready", FLOW)
@pytest.mark.parametrize("depth", [1, 2, 5])
def test_fifo_passes_everything_in_order(depth, valid, ready):
    layout = data.ArrayLayout(signed(5), 3)
    rng = np.random.default_rng(depth)
    words = rng.integers(-16, 16, size=(40, 3)).tolist()
    run = simulate_streams(
        Fifo(shape=layout, depth=depth),
        {"i": words},
        {"o": len(words)},
        valid_probability=valid,
        ready_probability=ready,
    )
    assert run.outputs["o"] == words


@pytest.mark.parametrize("depth", [1, 2, 3, 6])
def test_fifo_behaves_as_amaranth_sync_fifo_buffered(depth):
    """Cycle by cycle, for random (even rule-breaking) valid, payload and ready: the same ready, valid and
    payload as amaranth.lib.fifo.SyncFIFOBuffered of the same depth (latency, level and depth semantics)."""
    fifo = Fifo(shape=8, depth=depth)
    reference = SyncFIFOBuffered(width=8, depth=depth)
    rng = random.Random(depth)

    async def testbench(ctx):
        for _ in range(400):
            valid, word, ready = rng.random() < 0.6, rng.randrange(256), rng.random() < 0.5
            ctx.set(fifo.i.valid, valid)
            ctx.set(fifo.i.payload, word)
            ctx.set(fifo.o.ready, ready)
            ctx.set(reference.w_en, valid)
            ctx.set(reference.w_data, word)
            ctx.set(reference.r_en, ready)
            assert ctx.get(fifo.i.ready) == ctx.get(reference.w_rdy)
            assert ctx.get(fifo.o.valid) == ctx.get(reference.r_rdy)
            if ctx.get(fifo.o.valid):
                assert ctx.get(fifo.o.payload) == ctx.get(reference.r_data)
            await ctx.tick()

    m = Module()
    m.submodules.fifo, m.submodules.reference = fifo, reference
    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()


def test_fifo_with_external_memories_instantiates_the_ram_module():
    fifo = Fifo(shape=signed(8), depth=5, external_memories=True)
    assert fifo.external_memories and ".DEPTH(32'd4)" in verilog.convert(fifo, name="top")
    assert "instabnn_ram" not in verilog.convert(Fifo(shape=signed(8), depth=5), name="top")
    assert "instabnn_ram" not in verilog.convert(Fifo(shape=signed(8), depth=1, external_memories=True), name="top")


def test_fifo_runs_at_one_word_per_cycle():
    run = simulate_streams(Fifo(shape=8, depth=4), {"i": list(range(50))}, {"o": 50})
    assert run.interval("o") == 1


@pytest.mark.parametrize("valid, ready", FLOW)
def test_fork_delivers_each_payload_to_both_outputs_once(valid, ready):
    words = list(range(60))
    run = simulate_streams(
        Fork(shape=unsigned(8)), {"i": words}, {"o.0": 60, "o.1": 60}, valid_probability=valid, ready_probability=ready
    )
    assert run.outputs["o.0"] == words and run.outputs["o.1"] == words


@pytest.mark.parametrize("valid, ready", FLOW)
@pytest.mark.parametrize("shifts", [(0, 0), (3, 0), (1, 4)])
def test_join_add_matches_numpy_model(shifts, valid, ready):
    rng = np.random.default_rng(sum(shifts))
    a, b = rng.integers(-128, 128, size=(2, 30, 4))
    dut = JoinAdd(shape=signed(8), count=4, shifts=shifts)
    run = simulate_streams(
        dut, {"i.0": a.tolist(), "i.1": b.tolist()}, {"o": 30}, valid_probability=valid, ready_probability=ready, seed=7
    )
    assert run.outputs["o"] == join_add(a, b, shifts=shifts).tolist()


def test_join_add_worst_case_cannot_overflow():
    dut = JoinAdd(shape=signed(8), count=2, shifts=(2, 5))
    low, high = bounds(dut.out_shape)
    extremes = [[-128, 127], [127, -128], [-128, -128], [127, 127]]
    run = simulate_streams(dut, {"i.0": extremes, "i.1": extremes}, {"o": 4})
    expected = join_add(np.array(extremes), np.array(extremes), shifts=(2, 5))
    assert run.outputs["o"] == expected.tolist()
    assert low <= expected.min() and expected.max() <= high


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
        (lambda: Fifo(shape=8, depth=0), r"depth must be >= 1, not 0"),
        (lambda: Fifo(shape="x", depth=2), r"shape must be an Amaranth shape"),
        (lambda: Fifo(shape=8, depth=2.0), r"depth must be an integer, not 2.0"),
        (lambda: Fifo(shape=8, depth=2, external_memories=None), r"external_memories must be a bool, not None"),
        (lambda: JoinAdd(shape=signed(8), count=0), r"count must be >= 1, not 0"),
        (lambda: JoinAdd(shape=signed(8), count=2, shifts=(0, 40)), r"shifts\[1\] must be in \[0, 32\], not 40"),
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


def test_plain_signed_payloads_round_trip():
    values = [-128, -1, 0, 1, 127]
    run = simulate_streams(Fifo(shape=signed(8), depth=2), {"i": values}, {"o": len(values)})
    assert run.outputs["o"] == values


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
