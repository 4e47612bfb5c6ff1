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
from stream_components import check_figures, check_latency, check_validation

from instabnn_hw.hw.figures import Figures
from instabnn_hw.hw.fixed import bounds
from instabnn_hw.hw.plumbing import (
    Fifo,
    FifoParameters,
    Fork,
    ForkParameters,
    JoinAdd,
    JoinAddParameters,
    RegisterSlice,
    RegisterSliceParameters,
    join_add,
)
from instabnn_hw.hw.simulate import simulate_streams

FLOW = [(1.0, 1.0), (0.5, 0.7), (0.9, 0.3)]


@pytest.mark.parametrize("valid, ready", FLOW)
def test_register_slice_passes_everything_in_order(valid, ready):
    layout = data.ArrayLayout(signed(5), 3)
    words = np.random.default_rng(3).integers(-16, 16, size=(60, 3)).tolist()
    run = simulate_streams(
        RegisterSlice(shape=layout), {"i": words}, {"o": 60}, valid_probability=valid, ready_probability=ready
    )
    assert run.outputs["o"] == words


def test_register_slice_runs_at_one_word_per_cycle():
    run = simulate_streams(RegisterSlice(shape=8), {"i": list(range(50))}, {"o": 50})
    assert run.outputs["o"] == list(range(50)) and run.interval("o", skip=1) == 1.0


def test_register_slice_outputs_do_not_follow_its_inputs_within_a_cycle():
    """``i.ready`` and ``o.valid`` are registers: no value of ``i.valid`` / ``o.ready`` in a cycle moves them."""
    dut = RegisterSlice(shape=8)
    rng = random.Random(5)

    async def testbench(ctx):
        for cycle in range(300):
            seen = set()
            for valid in (0, 1):
                for ready in (0, 1):
                    ctx.set(dut.i.valid, valid)
                    ctx.set(dut.o.ready, ready)
                    seen.add((ctx.get(dut.i.ready), ctx.get(dut.o.valid), ctx.get(dut.o.payload)))
            assert len(seen) == 1, (cycle, seen)
            ctx.set(dut.i.valid, rng.random() < 0.7)
            ctx.set(dut.i.payload, cycle % 256)
            ctx.set(dut.o.ready, rng.random() < 0.4)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()


@pytest.mark.parametrize("valid, ready", FLOW)
@pytest.mark.parametrize("depth", [1, 2, 5, 17, 18, 30, 3000])
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


def test_fifo_with_external_modules_instantiates_the_ram_module():
    fifo = Fifo(shape=signed(8), depth=5, external_modules=True)
    assert fifo.external_modules and ".DEPTH(32'd4)" in verilog.convert(fifo, name="top")
    assert "instabnn_ram" not in verilog.convert(Fifo(shape=signed(8), depth=5), name="top")
    assert "instabnn_ram" not in verilog.convert(Fifo(shape=signed(8), depth=1, external_modules=True), name="top")


@pytest.mark.parametrize("depth, shape", [(4, 8), (20, 8), (1500, 36)])
def test_fifo_runs_at_one_word_per_cycle(depth, shape):
    run = simulate_streams(Fifo(shape=shape, depth=depth), {"i": list(range(50))}, {"o": 50})
    assert run.interval("o") == 1


@pytest.mark.parametrize("depth, shape", [(1, 8), (2, 8), (17, 8), (18, 8), (25, 8), (1500, 36)])
def test_fifo_holds_depth_payloads_while_the_output_waits(depth, shape):
    """A stalled output takes at least ``depth`` payloads; a block RAM FIFO (read stages) a few more."""
    fifo = Fifo(shape=shape, depth=depth)
    assert fifo.registered_read == (depth - 1 > Fifo.LUT_RAM_WORDS)
    assert fifo.read_latency == (3 if depth == 1500 else 1)  # 1,499 x 36 bits: three blocks deep

    async def testbench(ctx):
        ctx.set(fifo.o.ready, 0)
        taken = []
        for word in range(depth + 8):
            ctx.set(fifo.i.payload, word)
            ctx.set(fifo.i.valid, 1)
            if ctx.get(fifo.i.ready):
                taken.append(word)
            await ctx.tick()
        # up to one more per extra stage of the memory's read pipeline
        assert depth <= len(taken) <= depth + max(0, fifo.latency - 2)
        ctx.set(fifo.i.valid, 0)
        ctx.set(fifo.o.ready, 1)
        for word in taken:
            while not ctx.get(fifo.o.valid):
                await ctx.tick()
            assert ctx.get(fifo.o.payload) == word
            await ctx.tick()

    sim = Simulator(fifo)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()


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


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Fifo(shape=8, depth=0), r"depth must be >= 1, not 0"),
        (lambda: Fifo(shape="x", depth=2), r"shape must be an Amaranth shape"),
        (lambda: Fifo(shape=8, depth=2.0), r"depth must be an integer, not 2.0"),
        (lambda: Fifo(shape=8, depth=2, external_modules=None), r"external_modules must be a bool, not None"),
        (lambda: JoinAdd(shape=signed(8), count=0), r"count must be >= 1, not 0"),
        (lambda: JoinAdd(shape=signed(8), count=2, shifts=(0, 40)), r"shifts\[1\] must be in \[0, 32\], not 40"),
    ],
)
def test_invalid_parameters_are_named(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_plain_signed_payloads_round_trip():
    values = [-128, -1, 0, 1, 127]
    run = simulate_streams(Fifo(shape=signed(8), depth=2), {"i": values}, {"o": len(values)})
    assert run.outputs["o"] == values


# name: (component, parameters class, parameters, input words of a frame, figures), figures worked out by hand
FIGURES = {
    # 20 > 16 words: block RAM, (1, 8 bits, 20 .bit_length() = 5, no output multiplexer)
    "fifo": (
        Fifo,
        FifoParameters,
        {"shape": unsigned(8), "depth": 20},
        10,
        Figures(10, 3, 3, round(1.298 * 8 + 4.97 * 5), 20 * 8),
    ),
    "fifo-register": (Fifo, FifoParameters, {"shape": unsigned(8), "depth": 1}, 10, Figures(10, 1, 1, 5, 8)),
    "fork": (Fork, ForkParameters, {"shape": unsigned(8)}, 12, Figures(12, 0, 0, 8)),
    # the output multiplexer: one LUT4 a payload bit
    "slice": (RegisterSlice, RegisterSliceParameters, {"shape": unsigned(8)}, 12, Figures(12, 1, 1, 6 + 8)),
    # (-128 << 1) + -128 .. (127 << 1) + 127 needs signed(10): 4 lanes of 10 bits
    "join_add": (
        JoinAdd,
        JoinAddParameters,
        {"shape": signed(8), "count": 4, "shifts": (1, 0)},
        30,
        Figures(30, 1, 1, round(1.368 + 0.892 * 40)),
    ),
}


@pytest.mark.parametrize("name", FIGURES)
def test_parameters_give_the_figures_without_ports(name):
    check_figures(*FIGURES[name])


@pytest.mark.parametrize(
    "component, params, error, message",
    [
        (Fifo, {"shape": 8, "depth": 0}, ValueError, r"depth must be >= 1, not 0"),
        (Fifo, {"shape": "x", "depth": 2}, TypeError, r"shape must be an Amaranth shape"),
        (Fork, {"shape": "x"}, TypeError, r"shape must be an Amaranth shape"),
        (RegisterSlice, {"shape": "x"}, TypeError, r"shape must be an Amaranth shape"),
        (JoinAdd, {"shape": signed(8), "count": 2, "shifts": (0, 40)}, ValueError, r"shifts\[1\] must be in"),
        (JoinAdd, {"shape": signed(8), "count": 2, "shifts": 3}, TypeError, r"shifts must be a pair of integers"),
    ],
)
def test_parameters_validate_as_the_components(component, params, error, message):
    check_validation(component, params, error, message)


def test_join_add_exposes_its_parameters():
    join = JoinAdd(shape=signed(8), count=4, shifts=[2, 0])
    assert (join.shape, join.count, join.shifts, join.out_shape) == (signed(8), 4, (2, 0), signed(11))


@pytest.mark.parametrize(
    "make, inputs, outputs",
    [
        (lambda: RegisterSlice(shape=8), {"i": list(range(6))}, {"o": 6}),
        (lambda: Fifo(shape=8, depth=1), {"i": list(range(6))}, {"o": 6}),
        (lambda: Fifo(shape=8, depth=2), {"i": list(range(6))}, {"o": 6}),
        (lambda: Fifo(shape=8, depth=7), {"i": list(range(6))}, {"o": 6}),
        (lambda: Fifo(shape=8, depth=40), {"i": list(range(6))}, {"o": 6}),
        (lambda: Fifo(shape=unsigned(36), depth=1500), {"i": list(range(6))}, {"o": 6}),
        (lambda: Fork(shape=8), {"i": list(range(6))}, {"o.0": 6, "o.1": 6}),
        (lambda: JoinAdd(shape=signed(8), count=2), {"i.0": [[1, 2]] * 6, "i.1": [[3, 4]] * 6}, {"o": 6}),
    ],
)
def test_latency_is_the_first_output_after_the_first_input(make, inputs, outputs):
    check_latency(make, inputs, outputs)
