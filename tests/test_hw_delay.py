# amaranth: UnusedElaboratable=no
"""hw.delay in Amaranth's simulator: a value arrives after exactly as many enabled edges as stages."""

import random

import pytest
from amaranth.hdl import Module, Signal, signed
from amaranth.sim import Simulator

from instabnn_hw.hw.delay import delayed


@pytest.mark.parametrize("stages", [1, 3])
def test_delayed_value_arrives_after_as_many_enabled_edges_as_stages(stages):
    m = Module()
    value, enable = Signal(signed(7)), Signal()
    out = delayed(m, value, stages, enable=enable, name="line")
    rng = random.Random(stages)

    async def testbench(ctx):
        presented = []  # the value at each enabled edge, oldest first
        for _ in range(200):
            word, on = rng.randrange(-64, 64), rng.random() < 0.6
            ctx.set(value, word)
            ctx.set(enable, on)
            if len(presented) >= stages:
                assert ctx.get(out) == presented[-stages]
            if on:
                presented.append(word)
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()


def test_delayed_names_shapes_and_constants():
    m = Module()
    value = Signal(4)
    assert delayed(m, 5, 3, name="k") == 5  # a constant needs no register
    assert delayed(m, value, 0, name="none") is value
    single = delayed(m, value, name="tag", shape=signed(6), reset_less=True)
    assert single.name == "tag" and single.shape() == signed(6) and single.reset_less
    line = delayed(m, value, 2, name="tag_d")
    assert line.name == "tag_d2" and line.shape() == value.shape() and not line.reset_less
    with pytest.raises(ValueError, match="stages must be >= 0, not -1"):
        delayed(m, value, -1, name="x")
