# amaranth: UnusedElaboratable=no
"""hw.affine in Amaranth's simulator: Requantise and RPReLU bit-exact against the numpy models."""

import numpy as np
import pytest
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from instabnn_hw.hw.affine import (
    REQUANTISE_STAGES,
    RPRELU_STAGES,
    Requantise,
    RequantiseParameters,
    RPReLU,
    RPReLUParameters,
    requantise,
    rprelu,
    rprelu_bounds,
    rprelu_datapath,
)
from instabnn_hw.hw.figures import Figures, lut_estimate
from instabnn_hw.hw.fixed import bounds, round_shift
from instabnn_hw.hw.multiplier import MUL_LATENCY
from instabnn_hw.hw.simulate import simulate_streams

FLOW = [(1.0, 1.0), (0.5, 0.7), (0.9, 0.3)]
SIZES = [(6, 3), (5, 1), (8, 8)]  # (channels, simd)


def words_of(x, simd):
    return np.asarray(x).reshape(-1, simd).tolist()


def random_input(rng, shape, pixels, channels):
    low, high = bounds(shape)
    x = rng.integers(low, high + 1, size=(pixels, channels))
    x[0], x[1] = low, high  # extremes first
    return x


# ---------------------------------------------------------------------------------------------
# Requantise


REQUANTISE_CASES = {
    # name: (in_shape, mult range, bias range, shift, low, high)
    "s8-shift4-natural": (signed(8), (-60, 60), (-2000, 2000), 4, None, None),
    "u8-shift0-clamped": (unsigned(8), (-3, 4), (-100, 100), 0, -50, 200),
    "s12-shift7-low-only": (signed(12), (-9, 9), (-500, 500), 7, -20, None),
    "s6-shift2-high-only": (signed(6), (-5, 5), (-30, 30), 2, None, 17),
    "s24-wide-mult": (signed(24), (-200000, 200000), (-(1 << 30), 1 << 30), 20, None, None),
}


def make_requantise(case, channels, simd, seed):
    in_shape, (ml, mh), (bl, bh), shift, low, high = REQUANTISE_CASES[case]
    rng = np.random.default_rng(seed)
    mult = rng.integers(ml, mh + 1, size=channels)
    mult[0] = ml  # a negative multiplier on channel 0
    bias = rng.integers(bl, bh + 1, size=channels)
    dut = Requantise(
        in_shape=in_shape, channels=channels, simd=simd, mult=mult, bias=bias, shift=shift, low=low, high=high
    )
    return dut, rng


@pytest.mark.parametrize("valid, ready", FLOW)
@pytest.mark.parametrize("channels, simd", SIZES)
@pytest.mark.parametrize("case", sorted(REQUANTISE_CASES))
def test_requantise_matches_numpy_model(case, channels, simd, valid, ready):
    dut, rng = make_requantise(case, channels, simd, seed=channels * 10 + simd)
    x = random_input(rng, dut.in_shape, 12, channels)
    expected = requantise(x, dut.mult, dut.bias, shift=dut.shift, low=dut.low, high=dut.high)
    words = words_of(x, simd)
    run = simulate_streams(dut, {"i": words}, {"o": len(words)}, valid_probability=valid, ready_probability=ready)
    assert run.outputs["o"] == words_of(expected, simd)


def test_requantise_natural_range_is_exact_and_reached():
    mult = np.array([-7, 3, 0, 5, -1, 2])
    bias = np.array([100, -40, 9, 0, -3, 77])
    dut = Requantise(in_shape=signed(8), channels=6, simd=3, mult=mult, bias=bias, shift=3)
    x = np.array([[-128] * 6, [127] * 6])
    y = requantise(x, mult, bias, shift=3, low=-(1 << 40), high=1 << 40)
    assert (dut.low, dut.high) == (y.min(), y.max())
    run = simulate_streams(dut, {"i": words_of(x, 3)}, {"o": 4})
    assert run.outputs["o"] == words_of(y, 3)


@pytest.mark.parametrize("channels, simd", SIZES)
def test_requantise_runs_one_word_per_cycle(channels, simd):
    dut, rng = make_requantise("s8-shift4-natural", channels, simd, seed=3)
    words = words_of(random_input(rng, dut.in_shape, 10, channels), simd)
    run = simulate_streams(dut, {"i": words}, {"o": len(words)})
    assert run.interval("o") == dut.initiation_interval == 1
    # the input register (the table's read), the read word's register where there is a table,
    # the product's three registers, the sum, the clamp
    assert run.cycles["o"][0] - run.cycles["i"][0] == dut.latency == 6 + (channels > simd)


def test_requantise_waits_for_a_wide_products_second_level_of_adders():
    """24-bit inputs by 19-bit multipliers: four partial products, added in two registered levels."""
    dut, rng = make_requantise("s24-wide-mult", 6, 3, seed=4)
    words = words_of(random_input(rng, dut.in_shape, 10, 6), 3)
    run = simulate_streams(dut, {"i": words}, {"o": len(words)})
    assert run.cycles["o"][0] - run.cycles["i"][0] == dut.latency == 2 + REQUANTISE_STAGES + MUL_LATENCY + 1


def test_requantise_worst_case_wide_values_cannot_overflow():
    """Products beyond 64 bits: compare with the model in Python ints; extremes everywhere."""
    channels, simd = 6, 3
    in_shape = signed(32)
    mult = np.array([(1 << 40) - 1, -(1 << 40), 1, -1, (1 << 35) + 3, 0])
    bias = np.array([(1 << 62) - 1, -(1 << 62), 0, 5, -(1 << 50), 123])
    dut = Requantise(in_shape=in_shape, channels=channels, simd=simd, mult=mult, bias=bias, shift=3)
    low, high = bounds(in_shape)
    x = np.array([[low] * channels, [high] * channels, [high, low] * 3, [0, -1, 1, high, low, 7]], dtype=object)
    expected = requantise(x, mult.astype(object), bias.astype(object), shift=3, low=dut.low, high=dut.high)
    out_low, out_high = bounds(dut.out_shape)
    assert out_low <= expected.min() and expected.max() <= out_high
    assert dut.out_shape.width > 64
    run = simulate_streams(dut, {"i": words_of(x, simd)}, {"o": 8})
    assert run.outputs["o"] == words_of(expected, simd)


# ---------------------------------------------------------------------------------------------
# RPReLU


RPRELU_CASES = {
    # name: (in_shape, gamma range, slope range, zeta range, slope_shift, out_shift, low, high)
    "s8-shifts-3-2": (signed(8), (-20, 20), (-8, 8), (-100, 100), 3, 2, -100, 100),
    "s10-shift0-0": (signed(10), (-300, 300), (-3, 3), (-50, 50), 0, 0, -2000, 2000),
    "u6-shifts-4-5-saturating": (unsigned(6), (-10, 70), (-16, 16), (-400, 400), 4, 5, -8, 7),
    "s8-negative-slopes": (signed(8), (-5, 5), (-20, -1), (-10, 10), 2, 1, -300, 300),
}


def make_rprelu(case, channels, simd, seed):
    in_shape, (gl, gh), (sl, sh), (zl, zh), slope_shift, out_shift, low, high = RPRELU_CASES[case]
    rng = np.random.default_rng(seed)
    gamma = rng.integers(gl, gh + 1, size=channels)
    slope = rng.integers(sl, sh + 1, size=channels)
    slope[0] = sl  # the most negative slope on channel 0
    zeta = rng.integers(zl, zh + 1, size=channels)
    dut = RPReLU(
        in_shape=in_shape,
        channels=channels,
        simd=simd,
        gamma=gamma,
        slope=slope,
        zeta=zeta,
        slope_shift=slope_shift,
        out_shift=out_shift,
        low=low,
        high=high,
    )
    return dut, rng


def rprelu_of(dut, x):
    return rprelu(
        x,
        dut.gamma,
        dut.slope,
        dut.zeta,
        slope_shift=dut.slope_shift,
        out_shift=dut.out_shift,
        low=dut.low,
        high=dut.high,
    )


@pytest.mark.parametrize("valid, ready", FLOW)
@pytest.mark.parametrize("channels, simd", SIZES)
@pytest.mark.parametrize("case", sorted(RPRELU_CASES))
def test_rprelu_matches_numpy_model(case, channels, simd, valid, ready):
    dut, rng = make_rprelu(case, channels, simd, seed=channels * 10 + simd)
    x = random_input(rng, dut.in_shape, 12, channels)
    words = words_of(x, simd)
    run = simulate_streams(dut, {"i": words}, {"o": len(words)}, valid_probability=valid, ready_probability=ready)
    assert run.outputs["o"] == words_of(rprelu_of(dut, x), simd)


@pytest.mark.parametrize("channels, simd", SIZES)
def test_rprelu_runs_one_word_per_cycle(channels, simd):
    dut, rng = make_rprelu("s8-shifts-3-2", channels, simd, seed=5)
    words = words_of(random_input(rng, dut.in_shape, 10, channels), simd)
    run = simulate_streams(dut, {"i": words}, {"o": len(words)})
    assert run.interval("o") == dut.initiation_interval == 1
    assert run.cycles["o"][0] - run.cycles["i"][0] == dut.latency == 1 + (channels > simd) + RPRELU_STAGES + MUL_LATENCY


def test_rprelu_exhaustive_small_input():
    """Every value of a 6-bit input on every channel, with both branches and the clamp active."""
    dut, _ = make_rprelu("u6-shifts-4-5-saturating", 5, 1, seed=11)
    x = np.repeat(np.arange(64)[:, None], 5, axis=1)
    expected = rprelu_of(dut, x)
    assert expected.min() == dut.low and expected.max() == dut.high  # both clamps hit
    run = simulate_streams(dut, {"i": words_of(x, 1)}, {"o": x.size})
    assert run.outputs["o"] == words_of(expected, 1)


def test_rprelu_worst_case_wide_values_cannot_overflow():
    channels, simd = 6, 3
    in_shape = signed(32)
    gamma = np.array([(1 << 50) - 1, -(1 << 50), 0, 3, -7, 1 << 20])
    slope = np.array([-(1 << 22), (1 << 22) - 1, -1, 0, 5, -3])
    zeta = np.array([(1 << 62) - 1, -(1 << 62), 0, 11, -(1 << 45), 17])
    slope_shift, out_shift = 20, 10
    xb, gb, sb, zb = bounds(in_shape), (gamma.min(), gamma.max()), (slope.min(), slope.max()), (zeta.min(), zeta.max())
    ranges = rprelu_bounds(xb, gb, sb, zb, slope_shift=slope_shift, out_shift=out_shift)
    assert max(-ranges["v"][0], ranges["v"][1]) > 1 << 70  # far beyond int64
    low, high = ranges["y"][0] - 5, ranges["y"][1] + 5  # no clamp: every intermediate width is exercised
    dut = RPReLU(
        in_shape=in_shape,
        channels=channels,
        simd=simd,
        gamma=gamma,
        slope=slope,
        zeta=zeta,
        slope_shift=slope_shift,
        out_shift=out_shift,
        low=int(low),
        high=int(high),
    )
    xl, xh = xb
    x = np.array([[xl] * channels, [xh] * channels, [xh, xl] * 3, [xl, xh] * 3, [0, -1, 1, 2, -2, 5]], dtype=object)
    expected = rprelu(
        x,
        gamma.astype(object),
        slope.astype(object),
        zeta.astype(object),
        slope_shift=slope_shift,
        out_shift=out_shift,
        low=dut.low,
        high=dut.high,
    )
    assert expected.max() > 1 << 61
    run = simulate_streams(dut, {"i": words_of(x, simd)}, {"o": 10})
    assert run.outputs["o"] == words_of(expected, simd)


def test_rprelu_bounds_hold_exhaustively():
    """rprelu_bounds contains every intermediate over all x, gamma, slope, zeta of small ranges."""
    xb, gb, sb, zb = (-4, 3), (-2, 5), (-3, 2), (-6, 6)
    for slope_shift, out_shift in [(0, 0), (2, 1), (3, 4)]:
        r = rprelu_bounds(xb, gb, sb, zb, slope_shift=slope_shift, out_shift=out_shift)
        grid = np.stack(
            np.meshgrid(*[np.arange(lo, hi + 1) for lo, hi in (xb, gb, sb, zb)], indexing="ij"), -1
        ).reshape(-1, 4)
        x, gamma, slope, zeta = grid.T
        u = x - gamma
        v = np.where(u >= 0, u << slope_shift, u * slope)
        y = round_shift(v + zeta, out_shift)
        for key, values in (("u", u), ("v", v), ("y", y)):
            assert r[key] == (values.min(), values.max()), key  # exact: every corner is reachable


class _DynamicRPReLU(wiring.Component):
    """Test wrapper: rprelu_datapath with gamma, slope and zeta arriving with every element (as
    INSTA-PReLU's per-image registers would), to prove the datapath carries them along."""

    def __init__(self, **kwargs):
        self._kwargs = kwargs
        layout = data.StructLayout({"x": signed(8), "gamma": signed(10), "slope": signed(6), "zeta": signed(9)})
        # a one-element array, not a plain signed(12): simulate_streams misreads negative plain signed payloads
        out = data.ArrayLayout(signed(12), 1)
        super().__init__({"i": In(stream.Signature(layout)), "o": Out(stream.Signature(out))})

    def elaborate(self, platform):
        m = Module()
        advance = Signal()
        m.d.comb += [advance.eq(~self.o.valid | self.o.ready), self.i.ready.eq(advance)]
        p = self.i.payload
        y = rprelu_datapath(m, p.x, p.gamma, p.slope, p.zeta, enable=advance, low=-2048, high=2047, **self._kwargs)
        valid = self.i.valid
        for _ in range(RPRELU_STAGES + MUL_LATENCY):
            reg = Signal()
            with m.If(advance):
                m.d.sync += reg.eq(valid)
            valid = reg
        m.d.comb += [self.o.payload[0].eq(y), self.o.valid.eq(valid)]
        return m


@pytest.mark.parametrize("valid, ready", FLOW)
def test_rprelu_datapath_accepts_values_changing_every_element(valid, ready):
    rng = np.random.default_rng(21)
    n = 60
    x, gamma = rng.integers(-128, 128, n), rng.integers(-512, 512, n)
    slope, zeta = rng.integers(-32, 32, n), rng.integers(-256, 256, n)
    dut = _DynamicRPReLU(slope_shift=2, out_shift=3)
    inputs = [
        {"x": int(a), "gamma": int(b), "slope": int(c), "zeta": int(d)}
        for a, b, c, d in zip(x, gamma, slope, zeta, strict=True)
    ]
    run = simulate_streams(dut, {"i": inputs}, {"o": n}, valid_probability=valid, ready_probability=ready)
    expected = rprelu(x, gamma, slope, zeta, slope_shift=2, out_shift=3, low=-2048, high=2047)
    assert run.outputs["o"] == expected[:, None].tolist()


# ---------------------------------------------------------------------------------------------
# parameters


def _rprelu(**changes):
    kwargs = dict(
        in_shape=signed(8),
        channels=6,
        simd=3,
        gamma=[0] * 6,
        slope=[1] * 6,
        zeta=[0] * 6,
        slope_shift=2,
        out_shift=1,
        low=-10,
        high=10,
    )
    kwargs.update(changes)
    return RPReLU(**kwargs)


def _requantise(**changes):
    kwargs = dict(in_shape=signed(8), channels=6, simd=3, mult=[1] * 6, bias=[0] * 6, shift=2)
    kwargs.update(changes)
    return Requantise(**kwargs)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: _requantise(simd=4), r"simd must divide channels \(6\), not 4"),
        (lambda: _requantise(channels=0), r"channels must be >= 1, not 0"),
        (lambda: _requantise(mult=[1] * 5), r"mult must have shape \(6,\), not \(5,\)"),
        (lambda: _requantise(bias=[0.5] * 6), r"bias must be an integer array"),
        (lambda: _requantise(shift=-1), r"shift must be in \[0, 64\], not -1"),
        (lambda: _requantise(low=5, high=4), r"low \(5\) must be <= high \(4\)"),
        (lambda: _requantise(low=2.0), r"low must be an integer, not 2.0"),
        (lambda: _requantise(in_shape="x"), r"in_shape must be an Amaranth shape"),
        (lambda: _rprelu(gamma=[[0] * 6]), r"gamma must have shape \(6,\), not \(1, 6\)"),
        (lambda: _rprelu(slope_shift=-2), r"slope_shift must be in \[0, 64\], not -2"),
        (lambda: _rprelu(out_shift=True), r"out_shift must be an integer, not True"),
        (lambda: _rprelu(low=3, high=-3), r"low \(3\) must be <= high \(-3\)"),
        (lambda: _rprelu(simd=0), r"simd must be >= 1, not 0"),
        (lambda: rprelu_datapath(Module(), 1, 1.5, 1, 1, slope_shift=0, out_shift=0, low=0, high=1), r"gamma must"),
        (
            lambda: rprelu_datapath(
                Module(), Signal(4), 0, 1, 0, slope_shift=0, out_shift=0, low=0, high=1, x_bounds=(3, 1)
            ),
            r"x_bounds must be \(low, high\) with low <= high, not \(3, 1\)",
        ),
    ],
)
def test_invalid_parameters_are_named(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_memory_bits_count_the_constant_tables():
    assert _requantise(channels=8, simd=8, mult=[1] * 8, bias=[0] * 8).memory_bits == 0  # constants
    dut = _rprelu(gamma=[0, 1, 2, 3, 4, 5], slope=[-1] * 6, zeta=[0] * 6)
    assert dut.memory_bits == 6 * (3 + 1 + 1)  # gamma 0..5: unsigned(3); slope -1: signed(1); zeta 0: unsigned(1)


def test_requantise_parameters_give_figures_without_ports():
    params = dict(in_shape=signed(8), channels=6, simd=3, mult=[1, 2, 3, 4, 5, 6], bias=[-2, -1, 0, 1, 2, 3], shift=2)
    with pytest.raises(ValueError, match=r"simd must divide channels \(6\), not 4"):
        RequantiseParameters(**{**params, "simd": 4})
    plain = Requantise.parameters(**params, low=-100, high=100)
    assert type(plain) is RequantiseParameters and not isinstance(plain, wiring.Component)
    # two channel groups: a table of mult unsigned(3) and bias signed(3) per lane; whole LUT4s for 2 x 18 bits
    assert plain.lut_kind == "requantise" and plain.lut_features() == (1.0, 3 * 8, 3 * 8, 18.0)
    luts = lut_estimate("requantise", (1, 24, 24, 18))
    assert plain.figures(12) == Figures(cycles=12, latency=7, post=7, luts=luts, memory_bits=36, multipliers=3)
    dut = Requantise(**params, low=-100, high=100)
    assert dut.figures(12) == plain.figures(12)
    assert (dut.out_shape, dut.latency, dut.memory_bits) == (plain.out_shape, plain.latency, plain.memory_bits)


def test_rprelu_parameters_give_figures_without_ports():
    params = dict(
        in_shape=signed(8),
        channels=6,
        simd=3,
        gamma=[0, 1, 2, 3, 4, 5],
        slope=[-1] * 6,
        zeta=[0] * 6,
        slope_shift=2,
        out_shift=1,
        low=-10,
        high=10,
    )
    with pytest.raises(ValueError, match=r"low \(3\) must be <= high \(-3\)"):
        RPReLUParameters(**{**params, "low": 3, "high": -3})
    plain = RPReLU.parameters(**params)
    assert type(plain) is RPReLUParameters and not isinstance(plain, wiring.Component)
    # out_shape signed(5); the table is 2 words of 3 x (3 + 1 + 1) bits
    assert plain.lut_kind == "rprelu" and plain.lut_features() == (1.0, 3 * 8, 3 * 5, 15.0)
    luts = lut_estimate("rprelu", (1, 24, 15, 15))
    # the table read and its word's register, then RPReLU's six stages
    assert plain.figures(6) == Figures(cycles=6, latency=8, post=8, luts=luts, memory_bits=30, multipliers=3)
    dut = RPReLU(**params)
    assert dut.figures(6) == plain.figures(6)
    assert (dut.out_shape, dut.multipliers, dut.luts) == (plain.out_shape, plain.multipliers, plain.luts)
