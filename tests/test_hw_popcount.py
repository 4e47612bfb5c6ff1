# amaranth: UnusedElaboratable=no
"""hw.popcount in Amaranth's simulator: PopCount against the numpy model, with stalls."""

import random

import numpy as np
import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from instabnn_hw.hw.popcount import PopCount, count_ones, popcount, popcount_levels


def bits_to_int(bits) -> int:
    return sum(int(b) << k for k, b in enumerate(bits))


def run_popcount(dut: PopCount, vectors, *, enable_probability=1.0, seed=0) -> list[int]:
    """Feed one vector per enabled cycle; collect the count ``latency`` enabled cycles later."""
    rng = random.Random(seed)
    got = []

    async def testbench(ctx):
        fed = 0
        in_flight = []  # counts still inside the pipeline, oldest first
        while len(got) < len(vectors):
            enable = rng.random() < enable_probability
            ctx.set(dut.en, enable)
            if fed < len(vectors):
                ctx.set(dut.i, bits_to_int(vectors[fed]))
            await ctx.tick()
            if enable:
                in_flight.append(fed if fed < len(vectors) else None)
                fed += 1
                if len(in_flight) >= dut.latency:
                    if in_flight.pop(0) is not None:
                        got.append(ctx.get(dut.o))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return got


def test_numpy_model_counts_ones_along_the_last_axis():
    bits = np.array([[1, 0, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]])
    assert popcount(bits).tolist() == [3, 0, 4]
    assert popcount(bits).dtype == np.int64
    assert popcount(np.zeros((2, 3, 0))).tolist() == [[0, 0, 0], [0, 0, 0]]


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 27, 31, 32, 33, 64, 100, 128])
def test_popcount_matches_model_at_every_width(width):
    dut = PopCount(width=width)
    rng = np.random.default_rng(width)
    vectors = rng.integers(0, 2, size=(30, width))
    vectors[0], vectors[1] = 1, 0  # all ones (the largest count), all zeros
    assert run_popcount(dut, vectors) == popcount(vectors).tolist()


@pytest.mark.parametrize("width", [24, 64, 256])
def test_popcount_with_fewer_stages_and_stalls(width):
    rng = np.random.default_rng(width)
    vectors = rng.integers(0, 2, size=(25, width))
    vectors[3] = 1
    for stages in range(1, popcount_levels(width) + 2):
        dut = PopCount(width=width, stages=stages)
        assert dut.latency == stages
        assert run_popcount(dut, vectors, enable_probability=0.6, seed=stages) == popcount(vectors).tolist()


def test_popcount_structure_is_known_statically():
    dut = PopCount(width=32)
    assert sum(dut.leaves) == 32 - (len(dut.leaves) - 1)  # the others are the tree's carry-ins
    assert dut.tree_levels == popcount_levels(32) == 3
    assert dut.stages == dut.latency == 4
    assert dut.registered_levels() == [0, 1, 2, 3]
    assert PopCount(width=32, stages=2).registered_levels() == [1, 3]
    assert PopCount(width=1).latency == 1


def test_count_ones_builds_a_combinational_counter():
    from amaranth.sim import Simulator

    m = Module()
    bits = [Signal(name=f"b{k}") for k in range(11)]
    total = Signal(4)
    m.d.comb += total.eq(count_ones(m, bits))
    values = [random.Random(k).getrandbits(11) for k in range(40)] + [0, (1 << 11) - 1]

    async def testbench(ctx):
        for value in values:
            for k, bit in enumerate(bits):
                ctx.set(bit, (value >> k) & 1)
            assert ctx.get(total) == bin(value).count("1")

    sim = Simulator(m)
    sim.add_testbench(testbench)
    sim.run()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"width": 0}, ValueError, r"width must be in \[1, 16384\], not 0"),
        ({"width": 2.5}, TypeError, r"width must be an integer, not 2.5"),
        ({"width": True}, TypeError, r"width must be an integer, not True"),
        ({"width": 32, "stages": 0}, ValueError, r"stages must be in \[1, 4\], not 0"),
        ({"width": 32, "stages": 5}, ValueError, r"stages must be in \[1, 4\], not 5"),
        ({"width": 32, "stages": "2"}, TypeError, r"stages must be an integer, not '2'"),
    ],
)
def test_invalid_parameters_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        PopCount(**kwargs)
