"""hw.fixed: the one rounding rule and the width rules, numpy form against the hardware form."""

import itertools

import numpy as np
import pytest
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from instabnn_hw.hw.fixed import (
    bounds,
    ceil_shift,
    clamp,
    hdl_ceil_shift,
    hdl_clamp,
    hdl_fit,
    hdl_greater,
    hdl_round_shift,
    int_array,
    product_range,
    round_shift,
    shape_for,
)


def test_round_shift_rounds_half_up():
    x = np.array([-7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6])
    assert round_shift(x, 2).tolist() == [int(np.floor(v / 4 + 0.5)) for v in x]
    assert round_shift(x, 0).tolist() == x.tolist()


def test_ceil_shift_is_exact_ceiling():
    x = np.arange(-40, 41)
    for shift in range(5):
        assert ceil_shift(x, shift).tolist() == [-((-v) // 2**shift) for v in x.tolist()]


def test_ceil_shift_makes_integer_comparisons_exact():
    # x >= t / 2**s  <=>  x >= ceil_shift(t, s) for integers x
    for t, s in itertools.product(range(-50, 51), range(4)):
        threshold = ceil_shift(t, s)
        assert all((x >= t / 2**s) == (x >= threshold) for x in range(-20, 21))


def test_rules_work_on_python_ints_beyond_int64():
    big = int_array([3 * 2**70 + 1, -(2**80) - 5], -(2**81), 2**81)
    assert big.dtype == object
    assert round_shift(big, 3).tolist() == [(v + 4) >> 3 for v in [3 * 2**70 + 1, -(2**80) - 5]]
    assert int_array([1, 2], -10, 10).dtype == np.int64


@pytest.mark.parametrize(
    "low, high, shape",
    [
        (0, 0, unsigned(1)),
        (0, 255, unsigned(8)),
        (-128, 127, signed(8)),
        (-129, 0, signed(9)),
        (-1, 1, signed(2)),
        (-4, 200, signed(9)),
        (0, 256, unsigned(9)),
    ],
)
def test_shape_for_is_the_narrowest(low, high, shape):
    assert shape_for(low, high) == shape
    lo, hi = bounds(shape)
    assert lo <= low and high <= hi
    narrower = (signed if shape.signed else unsigned)(shape.width - 1) if shape.width > 1 else None
    if narrower is not None:
        lo, hi = bounds(narrower)
        assert low < lo or high > hi


def test_shape_for_rejects_an_empty_range():
    with pytest.raises(ValueError, match=r"empty range \[3, 2\]"):
        shape_for(3, 2)


@pytest.mark.parametrize("shift", [0, 1, 3])
def test_hardware_forms_equal_numpy_forms_exhaustively(shift):
    m = Module()
    x = Signal(signed(7))
    rounded, ceiled, clamped = Signal(signed(8)), Signal(signed(8)), Signal(shape_for(-20, 33))
    m.d.comb += [
        rounded.eq(hdl_round_shift(x, shift)),
        ceiled.eq(hdl_ceil_shift(x, shift)),
        clamped.eq(hdl_clamp(x, -20, 33)),
    ]
    values = list(range(-64, 64))
    seen = []

    async def bench(ctx):
        for value in values:
            ctx.set(x, value)
            seen.append((ctx.get(rounded), ctx.get(ceiled), ctx.get(clamped)))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    v = np.array(values)
    expected = zip(
        round_shift(v, shift).tolist(), ceil_shift(v, shift).tolist(), clamp(v, -20, 33).tolist(), strict=True
    )
    assert seen == list(expected)


@pytest.mark.parametrize("shape", [signed(4), unsigned(4), signed(1)])
def test_hdl_greater_is_the_order_of_the_values_exhaustively(shape):
    m = Module()
    a, b, greater = Signal(shape), Signal(shape), Signal()
    m.d.comb += greater.eq(hdl_greater(a, b))
    pairs = list(itertools.product(range(bounds(shape)[0], bounds(shape)[1] + 1), repeat=2))
    seen = []

    async def bench(ctx):
        for x, y in pairs:
            ctx.set(a, x)
            ctx.set(b, y)
            seen.append(ctx.get(greater))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [int(x > y) for x, y in pairs]


def test_hdl_greater_needs_one_shape():
    with pytest.raises(ValueError, match="one shape"):
        hdl_greater(Signal(signed(4)), Signal(signed(5)))


def test_product_range_covers_every_sign_combination():
    assert product_range((-3, 2), (-5, 4)) == (-12, 15)
    assert product_range((2**40, 2**40), (2**30, 2**30)) == (2**70, 2**70)


def test_hdl_fit_trims_and_extends_without_changing_in_range_values():
    m = Module()
    x = Signal(signed(6))
    trimmed, extended = Signal(signed(4)), Signal(signed(10))
    m.d.comb += [trimmed.eq(hdl_fit(x, -8, 7)), extended.eq(hdl_fit(x, -200, 200))]
    assert len(hdl_fit(x, -8, 7)) == 4 and len(hdl_fit(x, -200, 200)) == 9
    seen = []

    async def bench(ctx):
        for value in range(-8, 8):
            ctx.set(x, value)
            seen.append((ctx.get(trimmed), ctx.get(extended)))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [(v, v) for v in range(-8, 8)]
