# amaranth: UnusedElaboratable=no
"""The INSTA units (hw.insta, hw.moments, hw.insta_prelu): the integer semantics against exact rational
arithmetic, and the hardware against them."""

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from amaranth.hdl import Fragment, Module, Shape, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from instabnn_hw.hw.figures import Figures, lut_estimate
from instabnn_hw.hw.fixed import bounds
from instabnn_hw.hw.insta import (
    STATISTICS,
    binarise,
    feature_bounds,
    insta_prelu,
    moment_sums,
    se_mlp,
    statistic_features,
    th_thresholds,
    thplus_thresholds,
)
from instabnn_hw.hw.insta_prelu import InstaPReLU, InstaPReLUParameters
from instabnn_hw.hw.layouts import tensor_to_words
from instabnn_hw.hw.moments import MomentsThreshold
from instabnn_hw.hw.moments_parameters import MomentsThresholdParameters
from instabnn_hw.hw.se_mlp import PRODUCT_LATENCY, SeMlpParameters
from instabnn_hw.hw.simulate import simulate_streams
from instabnn_hw.hw.tiles import tile_luts

FLOW = [(1.0, 1.0), (0.5, 0.7), (0.9, 0.3)]


# ---------------------------------------------------------------------------------------------
# exact references written independently of the module (Fractions and Python ints)


def exact_moments(x):
    """Per channel: the raw moments M_k (k = 1..3), variance and central third moment, as Fractions."""
    result = []
    for channel in np.asarray(x).reshape(x.shape[0], -1).tolist():
        n = len(channel)
        m = [Fraction(sum(v**k for v in channel), n) for k in (1, 2, 3)]
        var = Fraction(sum((v - m[0]) ** 2 for v in channel), n)
        skew = Fraction(sum((v - m[0]) ** 3 for v in channel), n)
        result.append({"m1": m[0], "m2": m[1], "m3": m[2], "var": var, "skew": skew})
    return result


def round_half_up(value: Fraction) -> int:
    return math.floor(value + Fraction(1, 2))


def exact_se_mlp(f, w1, b1, hidden_shift, hidden_max, w2):
    h = []
    for row, bias in zip(w1.tolist(), b1.tolist(), strict=True):
        pre = sum(w * v for w, v in zip(row, f, strict=True)) + bias
        h.append(min(max(0, round_half_up(Fraction(max(0, pre), 2**hidden_shift))), hidden_max))
    return [sum(w * v for w, v in zip(row, h, strict=True)) for row in w2.tolist()]


# ---------------------------------------------------------------------------------------------
# numpy model


@pytest.mark.parametrize("in_shape, size", [(signed(8), (3, 4, 5)), (unsigned(6), (2, 3, 3)), (signed(24), (2, 5, 7))])
def test_moment_sums_and_features_are_the_exact_polynomials(in_shape, size):
    rng = np.random.default_rng(size[1])
    low, high = bounds(in_shape)
    x = rng.integers(low, high + 1, size=size)
    x[0, 0, 0] = low  # extremes present
    sums = moment_sums(x)
    for k, s in enumerate(sums, start=1):
        assert [int(v) for v in s] == [sum(int(v) ** k for v in row) for row in x.reshape(size[0], -1).tolist()]
    n = size[1] * size[2]
    powers = {"m1": 1, "m2": 1, "m3": 1, "var": 2, "skew": 3}
    shifts = (0, 3, 0, 5, 7)
    features = statistic_features(sums, pixels=n, stats=STATISTICS, shifts=(0,) * 5)
    shifted = statistic_features(sums, pixels=n, stats=STATISTICS, shifts=shifts)
    for c, moments in enumerate(exact_moments(x)):
        for j, name in enumerate(STATISTICS):
            p = int(features[j, c])
            assert Fraction(p, n ** powers[name]) == moments[name]  # M_k = P/N, var = P/N^2, skew = P/N^3
            assert int(shifted[j, c]) == math.floor(Fraction(p, 2 ** shifts[j]))
            low_j, high_j = feature_bounds(in_shape, n, STATISTICS, shifts)[j]
            assert low_j <= int(shifted[j, c]) <= high_j


def test_statistics_agree_with_the_training_model():
    from instabnn_hw.quant.layers import STATISTICS as TRAINING_STATISTICS
    from instabnn_hw.quant.layers import moments

    assert STATISTICS == tuple(TRAINING_STATISTICS)
    x = np.random.default_rng(3).integers(-128, 128, size=(2, 4, 6, 5))
    float_stats = moments(torch.tensor(x, dtype=torch.float64), STATISTICS).numpy()
    n = 30
    for image in range(2):
        p = statistic_features(moment_sums(x[image]), pixels=n, stats=STATISTICS, shifts=(0,) * 5)
        scale = np.array([n, n, n, n**2, n**3], dtype=np.float64)[:, None]
        np.testing.assert_allclose(p.astype(np.float64) / scale, float_stats[image], rtol=1e-9, atol=1e-6)


def test_moment_sums_switch_to_python_ints_when_wide():
    x = np.full((1, 8, 8), -(2**31), dtype=np.int64)
    s1, s2, s3 = moment_sums(x)
    assert s3.dtype == object and int(s3[0]) == 64 * (-(2**31)) ** 3
    assert int(s1[0]) == 64 * -(2**31) and int(s2[0]) == 64 * 2**62


@pytest.mark.parametrize("in_shape", [signed(8), unsigned(5), signed(3)])
def test_feature_bounds_hold_the_extreme_frames(in_shape):
    low, high = bounds(in_shape)
    n = 12
    frames = [np.full((1, 3, 4), low), np.full((1, 3, 4), high), np.resize([low, high], (1, 3, 4))]
    frames.append(np.resize([high, low, low, low], (1, 3, 4)))
    limits = feature_bounds(in_shape, n, STATISTICS, (0,) * 5)
    for frame in frames:
        features = statistic_features(moment_sums(frame), pixels=n, stats=STATISTICS, shifts=(0,) * 5)
        for j, (lo, hi) in enumerate(limits):
            assert lo <= int(features[j, 0]) <= hi
    # the raw moments' bounds are attained
    assert limits[0] == (n * low, n * high) and limits[2] == (n * low**3, n * high**3)


def test_th_thresholds_are_the_ceiling_of_the_exact_rational():
    rng = np.random.default_rng(4)
    features = rng.integers(-1000, 1000, size=(2, 7))
    alpha = rng.integers(-3000, 3000, size=7)
    beta = rng.integers(-9, 9, size=(7, 2))
    t = th_thresholds(features, alpha=alpha, beta=beta, out_shift=5, low=-128, high=128)
    for c in range(7):
        value = Fraction(int(alpha[c]) + sum(int(beta[c, j]) * int(features[j, c]) for j in range(2)), 32)
        assert t[c] == min(max(math.ceil(value), -128), 128)
        # the integer comparison x >= T is the rational one x >= value, for every x in range
        assert all((x >= t[c]) == (x >= value) for x in range(-128, 128))


def test_se_mlp_and_thplus_match_python_arithmetic():
    rng = np.random.default_rng(5)
    features = rng.integers(-500, 500, size=(2, 5))
    w1, b1 = rng.integers(-8, 8, size=(4, 10)), rng.integers(-300, 300, size=4)
    w2, alpha = rng.integers(-8, 8, size=(5, 4)), rng.integers(-200, 200, size=5)
    f = features.reshape(-1).tolist()  # stat-major: j*C + c
    out = exact_se_mlp(f, w1, b1, 6, 11, w2)
    assert se_mlp(features, w1=w1, b1=b1, hidden_shift=6, hidden_max=11, w2=w2).tolist() == out
    t = thplus_thresholds(
        features, w1=w1, b1=b1, hidden_shift=6, hidden_max=11, w2=w2, alpha=alpha, out_shift=3, low=-8, high=8
    )
    assert t.tolist() == [min(max(math.ceil(Fraction(int(a) + o, 8)), -8), 8) for a, o in zip(alpha, out, strict=True)]


def test_binarise_compares_each_channel_with_its_threshold():
    x = np.arange(-6, 6).reshape(2, 2, 3)
    assert binarise(x, np.array([-4, 5])).tolist() == [[[0, 0, 1], [1, 1, 1]], [[0, 0, 0], [0, 0, 1]]]


@pytest.mark.parametrize("instance_slope, slope_shift", [(False, 3), (True, 5), (True, 60)])
def test_insta_prelu_matches_python_arithmetic(instance_slope, slope_shift):
    rng = np.random.default_rng(6)
    channels, outputs = 3, 6 if instance_slope else 3
    x = rng.integers(-300, 300, size=(channels, 2, 4))
    features = rng.integers(-100, 100, size=(2, 4))
    w1, b1 = rng.integers(-6, 6, size=(4, 8)), rng.integers(-50, 50, size=4)
    w2 = rng.integers(-20, 20, size=(outputs, 4))
    gamma, slope, zeta = rng.integers(-40, 40, size=(3, channels))
    kw = {"hidden_shift": 3, "hidden_max": 15, "delta_shift": 2, "slope_shift": slope_shift, "out_shift": 4}
    got = insta_prelu(
        x, features, w1=w1, b1=b1, w2=w2, gamma=gamma, slope=slope, zeta=zeta, low=-50, high=60,
        instance_slope=instance_slope, **kw,
    )  # fmt: skip
    delta = exact_se_mlp(features.reshape(-1).tolist(), w1, b1, 3, 15, w2)
    for c, y, xx in itertools.product(range(channels), range(2), range(4)):
        g = int(gamma[c]) + round_half_up(Fraction(delta[c], 4))
        s = int(slope[c]) + (round_half_up(Fraction(delta[channels + c], 4)) if instance_slope else 0)
        u = int(x[c, y, xx]) - g
        v = u * 2**slope_shift if u >= 0 else u * s
        expected = min(max(round_half_up(Fraction(v + int(zeta[c]), 16)), -50), 60)
        assert got[c, y, xx] == expected


# ---------------------------------------------------------------------------------------------
# hardware helpers


def sample_frames(rng, in_shape, channels, height, width, count):
    """``count`` frames with different statistics: full range, skewed, narrow, offset."""
    low, high = bounds(in_shape)
    span = high - low
    size = (channels, height, width)
    kinds = [
        lambda: rng.integers(low, high + 1, size=size),
        lambda: low + (rng.exponential(span / 8, size=size)).astype(np.int64),
        lambda: (low + high) // 2 + rng.integers(-span // 16, span // 16 + 1, size=size),
        lambda: high - (rng.exponential(span / 5, size=size)).astype(np.int64),
    ]
    return [np.clip(kinds[k % len(kinds)](), low, high) for k in range(count)]


def auto_shifts(in_shape, pixels, stats, bits=8):
    """Shifts that bring each feature to about ``bits`` bits, as a compiler would."""
    limits = feature_bounds(in_shape, pixels, stats, (0,) * len(stats))
    return tuple(max(0, max(abs(lo), abs(hi)).bit_length() - bits) for lo, hi in limits)


def unit_params(rng, *, mode="th", stats=("m3",), channels=6, simd=3, height=5, width=3, in_shape=None, **extra):
    in_shape = signed(8) if in_shape is None else in_shape
    pixels = height * width
    kw = {
        "in_shape": in_shape,
        "channels": channels,
        "simd": simd,
        "height": height,
        "width": width,
        "stats": stats,
        "shifts": extra.pop("shifts") if "shifts" in extra else auto_shifts(in_shape, pixels, stats),
        "mode": mode,
        "out_shift": 4,
        "alpha": rng.integers(-400, 400, size=channels),
    }
    ns = len(stats)
    if mode == "th":
        kw["beta"] = rng.integers(-8, 9, size=(channels, ns))
    else:
        hidden = max(4, channels // 16)
        kw.update(
            w1=rng.integers(-4, 5, size=(hidden, ns * channels)),
            b1=rng.integers(-200, 200, size=hidden),
            hidden_shift=6,
            hidden_max=15,
            w2=rng.integers(-8, 9, size=(channels, hidden)),
            out_shift=2,
            alpha=rng.integers(-100, 100, size=channels),
        )
    kw.update(extra)
    return kw


def make_unit(rng, **kw):
    return MomentsThreshold(**unit_params(rng, **kw))


def expected_streams(dut, frames):
    words, bits, stats = [], [], []
    for frame in frames:
        b, _, features = dut.reference(frame)
        words += tensor_to_words(frame, dut.simd).tolist()
        bits += tensor_to_words(b, dut.simd).tolist()
        stats += [[int(v) for v in column] for column in features.T]
    return words, bits, stats


def run_unit(dut, frames, *, valid=1.0, ready=1.0, seed=0):
    words, bits, stats = expected_streams(dut, frames)
    outputs = {"o": len(bits)}
    if dut.emit_stats:
        outputs["stats"] = len(stats)
    run = simulate_streams(
        dut, {"i": words}, outputs, valid_probability=valid, ready_probability=ready, seed=seed, max_cycles=50_000
    )
    assert run.outputs["o"] == bits
    if dut.emit_stats:
        assert run.outputs["stats"] == stats
        low, high = bounds(dut.feature_shape)
        assert all(low <= v <= high for word in stats for v in word)
    return run, bits


def frame_periods(run, dut, count):
    starts = [run.cycles["o"][k * dut.frame_words] for k in range(count)]
    return np.diff(starts).tolist()


# ---------------------------------------------------------------------------------------------
# MomentsThreshold

UNITS = {
    "th_m3": {"mode": "th", "stats": ("m3",), "emit_stats": True},
    "th_m1_var_skew": {"mode": "th", "stats": ("m1", "var", "skew"), "emit_stats": True},
    "thplus_m3": {"mode": "th+", "stats": ("m3",), "parallel": 3, "emit_stats": True},
    "thplus_m1_m2": {"mode": "th+", "stats": ("m1", "m2")},
    "th_simd_full": {"mode": "th", "stats": ("m3",), "channels": 4, "simd": 4, "height": 3, "width": 3},
    "th_simd_1": {"mode": "th", "stats": ("m2", "var"), "channels": 3, "simd": 1, "height": 3, "width": 4},
    "thplus_skew": {"mode": "th+", "stats": ("skew",), "channels": 4, "simd": 2, "height": 4, "width": 4},
}


@pytest.mark.parametrize("valid, ready", FLOW)
@pytest.mark.parametrize("unit", UNITS)
def test_moments_threshold_matches_model(unit, valid, ready):
    rng = np.random.default_rng(sorted(UNITS).index(unit))
    dut = make_unit(rng, **UNITS[unit])
    frames = sample_frames(rng, dut.in_shape, dut.channels, dut.height, dut.width, 4)
    _, bits = run_unit(dut, frames, valid=valid, ready=ready, seed=int(valid * 10))
    assert 0 < np.mean(bits) < 1  # thresholds inside the data: both outcomes occur


def test_evaluator_programs_and_cycle_counts():
    rng = np.random.default_rng(0)
    cases = [
        # load, issue the multiply-accumulate, (operands), (block product), commit, write
        ({"stats": ("m3",)}, 6),
        # load, sq, mac m1, -, commit sq, commit mac m1 + mac var + r, sk, -, commit mac var,
        # commit sk, mac skew, -, -, commit, write
        ({"stats": ("m1", "var", "skew")}, 15),
        ({"mode": "th+", "stats": ("m3",)}, 2),  # load, write the features to the MLP's memory
        ({"mode": "th+", "stats": ("skew",)}, 11),  # load, sq, -, -, commit, r, sk, -, -, commit, write
    ]
    for kw, steps in cases:
        dut = make_unit(rng, **kw)
        assert dut.steps_per_channel == steps
        mlp = 0
        if dut.mode == "th+":
            chunks, features = -(-4 // dut.parallel), len(dut.statistics) * dut.channels
            # FC1, the wait for its last products and hidden units, FC2, its last products, the
            # start; then its last output beside its alpha, and their sum
            mlp = chunks * features + dut.channels * chunks + 5 + 2 * PRODUCT_LATENCY + 2
        assert dut.eval_cycles == 1 + dut.channels * steps + mlp + 1  # then the last threshold's register
        assert dut.cycles_per_frame == max(dut.frame_words, dut.eval_cycles + dut.eval_gap)


def test_a_frame_buffer_tiled_over_block_rams_keeps_the_period_latency_and_results():
    """2 x 2,050 words of 8 bits: three block RAMs deep, so its reads take three stages."""
    rng = np.random.default_rng(9)
    dut = make_unit(rng, stats=("m3",), channels=2, simd=1, height=25, width=41, in_shape=signed(8))
    assert dut.frame_read_latency == 3 and dut.reader_stages == 5
    assert dut.luts == lut_estimate("moments", dut.lut_features()) + tile_luts(2 * dut.frame_words, 8)
    frames = sample_frames(rng, dut.in_shape, dut.channels, dut.height, dut.width, 3)
    run, bits = run_unit(dut, frames)
    assert frame_periods(run, dut, 3) == [dut.cycles_per_frame] * 2
    assert run.cycles["o"][0] - run.cycles["i"][0] == dut.latency
    run_unit(dut, frames[:2], valid=0.6, ready=0.5, seed=2)  # under random flow control


@pytest.mark.parametrize(
    "kw, sizes",
    [
        # tiny frames (evaluator-bound), around the boundary eval_cycles + eval_gap (33, 69 and 48
        # words: 1, 2 and 2 words a pixel), frame-bound
        ({"stats": ("m3",), "channels": 4, "simd": 4}, [(1, 1), (4, 8), (3, 11), (2, 17), (6, 8)]),
        ({"stats": ("m1", "var", "skew"), "channels": 4, "simd": 2}, [(1, 1), (2, 17), (5, 7)]),
        ({"mode": "th+", "stats": ("m1", "m2"), "channels": 4, "simd": 2, "parallel": 2}, [(1, 1), (4, 6), (5, 5)]),
    ],
)
def test_steady_state_frame_period_is_cycles_per_frame(kw, sizes):
    rng = np.random.default_rng(7)
    for height, width in sizes:
        dut = make_unit(rng, height=height, width=width, **kw)
        frames = sample_frames(rng, dut.in_shape, dut.channels, height, width, 6)
        run, _ = run_unit(dut, frames)
        assert frame_periods(run, dut, 6) == [dut.cycles_per_frame] * 5
        assert run.cycles["o"][0] - run.cycles["i"][0] == dut.latency
        if dut.frame_words >= dut.eval_cycles + dut.eval_gap:
            assert dut.initiation_interval == 1
            assert run.interval("o", skip=dut.frame_words) == 1  # frames back to back, no bubble
        else:
            assert dut.initiation_interval == Fraction(dut.cycles_per_frame, dut.frame_words)


@pytest.mark.parametrize("valid, ready", FLOW[1:])
def test_tiny_frames_where_the_evaluator_dominates_are_bit_exact(valid, ready):
    rng = np.random.default_rng(8)
    dut = make_unit(rng, stats=("m1", "var", "skew"), channels=4, simd=2, height=1, width=2, emit_stats=True)
    assert dut.eval_cycles > dut.frame_words
    run_unit(dut, sample_frames(rng, dut.in_shape, 4, 1, 2, 5), valid=valid, ready=ready)


def extreme_frames(in_shape, channels, height, width):
    low, high = bounds(in_shape)
    size = (channels, height, width)
    alternating = np.resize([low, high], (channels, height * width + 1))[:, :-1].reshape(size)
    single = np.full(size, low)
    single[:, 0, 0] = high
    return [np.full(size, high), np.full(size, low), alternating, single, np.full(size, high)]


@pytest.mark.parametrize(
    "in_shape, size, mode",
    [
        (signed(8), (2, 4, 4), "th"),
        (signed(16), (2, 8, 8), "th"),
        (unsigned(4), (2, 3, 5), "th"),
        (signed(8), (2, 3, 3), "th+"),
    ],
)
def test_worst_case_frames_fill_every_accumulator_exactly(in_shape, size, mode):
    channels, height, width = size
    rng = np.random.default_rng(9)
    stats = STATISTICS if mode == "th" else ("m1", "var", "skew")
    ns = len(stats)
    extra = {"shifts": (0,) * ns, "emit_stats": True, "simd": 1}
    if mode == "th":
        extra.update(beta=np.array([[127] * ns, [-128] * ns]), alpha=np.array([2**40, -(2**40)]))
    else:
        extra.update(
            w1=np.resize([127, -128], (4, ns * channels)),
            b1=np.array([0, 5, -5, 2**20]),
            hidden_max=255,
            w2=np.resize([127, -128, 64, -1], (channels, 4)),
        )
    dut = make_unit(
        rng, mode=mode, stats=stats, channels=channels, height=height, width=width, in_shape=in_shape, **extra
    )
    frames = extreme_frames(in_shape, channels, height, width)
    _, bits = run_unit(dut, frames)
    # the polynomials reach past 62 bits for signed(16): the model then runs on Python ints
    widest = max(max(abs(lo), abs(hi)) for lo, hi in dut.feature_bounds).bit_length()
    assert dut.feature_shape.width >= widest + 1
    sums = [moment_sums(frame) for frame in frames]
    for k, shape in dut.sum_shapes.items():
        low, high = bounds(shape)
        assert all(low <= int(v) <= high for s in sums for v in s[k - 1])


def test_thresholds_saturate_at_both_ends():
    rng = np.random.default_rng(10)
    extra = {"beta": np.zeros((2, 1), dtype=np.int64), "alpha": np.array([2**30, -(2**30)]), "simd": 2}
    dut = make_unit(rng, stats=("m3",), channels=2, height=2, width=3, **extra)
    frames = extreme_frames(dut.in_shape, 2, 2, 3)
    for frame in frames:
        _, t, _ = dut.reference(frame)
        assert t.tolist() == [128, -128] == [dut.threshold_bounds[1], dut.threshold_bounds[0]]
    _, bits = run_unit(dut, frames)
    assert {tuple(word) for word in bits} == {(0, 1)}  # channel 0 never +1 (even at max), channel 1 always


def test_memory_bits_and_multipliers_describe_the_design():
    rng = np.random.default_rng(11)
    for kw in [{"stats": ("m3", "var")}, {"mode": "th+", "stats": ("m1",), "parallel": 2, "emit_stats": True}]:
        dut = make_unit(rng, **kw)
        assert dut.memory_bits == memory_bits_of(dut)
    assert make_unit(rng, stats=("m3",)).multipliers == 3 * 2 + 1  # square and cube per lane, one shared
    assert make_unit(rng, stats=("m1",)).multipliers == 1
    assert make_unit(rng, mode="th+", stats=("m2",), parallel=2).multipliers == 3 + 2


def memory_bits_of(dut):
    def walk(fragment):
        yield fragment
        for sub, _, _ in fragment.subfragments:
            yield from walk(sub)

    memories = {id(o): o for f in walk(Fragment.get(dut, None)) for o in f.origins or () if isinstance(o, Memory)}
    return sum(memory.depth * Shape.cast(memory.shape).width for memory in memories.values())


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"channels": 6, "simd": 4}, r"simd must divide channels \(6\), not 4"),
        ({"stats": ("m3", "m3")}, r"stats must be distinct names"),
        ({"stats": ("m4",)}, r"stats must be distinct names .*'m4'"),
        ({"stats": "m3"}, r"stats must be a sequence of statistic names, not 'm3'"),
        ({"stats": ("m1", "m2"), "shifts": (1,)}, r"shifts must have one entry per statistic \(2\)"),
        ({"shifts": (-1,)}, r"shifts\[0\] must be in \[0, 256\], not -1"),
        ({"mode": "rsign"}, r"mode must be one of \('th', 'th\+'\), not 'rsign'"),
        ({"alpha": np.zeros(5, dtype=int)}, r"alpha must have shape \(6,\), not \(5,\)"),
        ({"beta": np.zeros((6, 2), dtype=int)}, r"beta must have shape \(6, 1\), not \(6, 2\)"),
        ({"beta": np.zeros((6, 1))}, r"beta must be an integer array"),
        ({"out_shift": -2}, r"out_shift must be in \[0, 256\], not -2"),
        ({"height": 0, "shifts": (0,)}, r"height must be >= 1, not 0"),
        ({"in_shape": 40}, r"in_shape must be 1 to 32 bits wide"),
        ({"emit_stats": 1}, r"emit_stats must be a bool, not 1"),
        ({"external_modules": "yes"}, r"external_modules must be a bool, not 'yes'"),
        ({"w1": np.zeros((4, 6), dtype=int)}, r"w1, b1, hidden_shift, hidden_max and w2 are only used in mode 'th\+'"),
        ({"mode": "th+", "w1": np.zeros((4, 5), dtype=int)}, r"w1 must have shape \(hidden, 6\)"),
        ({"mode": "th+", "hidden_max": 0}, r"hidden_max must be in \[1, 4294967295\], not 0"),
        ({"mode": "th+", "parallel": 5}, r"parallel must be in \[1, 4\], not 5"),
        ({"mode": "th+", "w2": np.zeros((6, 3), dtype=int)}, r"w2 must have shape \(6, 4\), not \(6, 3\)"),
        ({"mode": "th+", "beta": np.zeros((6, 1), dtype=int)}, r"beta is only used in mode 'th'"),
    ],
)
def test_invalid_moments_threshold_parameters_are_named(kw, message):
    with pytest.raises((ValueError, TypeError), match=message):
        MomentsThreshold(**unit_params(np.random.default_rng(12), **kw))
    if "external_modules" not in kw:  # an emission option: the component's alone
        with pytest.raises((ValueError, TypeError), match=message):
            MomentsThreshold.parameters(**unit_params(np.random.default_rng(12), **kw))


#: What the parameters class and the component both give.
UNIT_FIGURES = (
    "in_shape",
    "channels",
    "simd",
    "height",
    "width",
    "statistics",
    "shifts",
    "mode",
    "emit_stats",
    "parallel",
    "feature_shape",
    "feature_bounds",
    "threshold_bounds",
    "threshold_shape",
    "sum_shapes",
    "steps_per_channel",
    "frame_words",
    "eval_cycles",
    "cycles_per_frame",
    "initiation_interval",
    "latency",
    "memory_bits",
    "multipliers",
    "luts",
)


def test_moments_threshold_parameters_give_the_figures_without_ports():
    p = {
        "in_shape": signed(4),
        "channels": 2,
        "simd": 1,
        "height": 2,
        "width": 2,
        "stats": ("m1",),
        "shifts": (0,),
        "alpha": [3, -2],
        "beta": [[1], [-1]],
    }
    parameters = MomentsThreshold.parameters(**p)
    assert type(parameters) is MomentsThresholdParameters and not hasattr(parameters, "signature")
    # 8 words a frame; per channel 6 steps: load the sums, issue beta*F, its operands and its block
    # product registered, commit, write; then the last threshold's register
    assert (parameters.frame_words, parameters.steps_per_channel, parameters.eval_cycles) == (8, 6, 1 + 2 * 6 + 1)
    # S1 of 4 signed(4) pixels in [-32, 28]: signed(6) sums and features; thresholds in [-8, 8]: signed(5)
    assert parameters.lut_features() == (1.0, 4.0, 6.0, 6.0 + 5.0, 0.0, 0.0)
    # memory: frame 2*8*4, sums 2*2*6, thresholds 2*2*5, alpha 2*signed(3), beta 2*signed(2)
    expected = Figures(cycles=14 + 4, latency=8 + 14 + 6, post=14 + 6, luts=399, memory_bits=118, multipliers=1)
    assert parameters.figures(8) == expected
    unit = MomentsThreshold(**p, external_modules=True)
    assert unit.figures(8) == expected and unit.external_modules
    assert unit.memory_bits == memory_bits_of(MomentsThreshold(**p))
    for name in UNIT_FIGURES:
        assert getattr(unit, name) == getattr(parameters, name), name
    with pytest.raises(TypeError, match="external_modules"):
        MomentsThreshold.parameters(**p, external_modules=True)


def test_se_mlp_lut_features_count_its_datapath_bits():
    mlp = SeMlpParameters(
        owner="test",
        stats_channels=2,
        n_stats=1,
        outputs=2,
        feature_shape=signed(4),
        feature_bounds=[(-8, 7)],
        w1=[[1, -2], [3, 0], [0, 1]],
        b1=[0, 0, 0],
        hidden_shift=0,
        hidden_max=7,
        w2=[[1, 1, 1], [-1, 0, 2]],
        parallel=2,
    )
    # operands: weights in [-2, 3] signed(3), features or hidden units signed(4); FC1 partial sums
    # in [-24, 23] signed(6); hidden units unsigned(3), two chunks of them; FC2 in [-7, 21] signed(6)
    assert mlp.operand_shapes == (signed(3), signed(4)) and mlp.acc1_shape == signed(6)
    assert (mlp.h_shape, mlp.chunks, mlp.out_shape) == (unsigned(3), 2, signed(6))
    assert mlp.lut_features() == (1.0, 2 * ((3 + 4 + 6 + 3) + 2 * 3) + 6)


def test_moments_threshold_lut_features_add_the_mlp_for_th_plus_only():
    rng = np.random.default_rng(5)
    th = MomentsThreshold.parameters(**unit_params(rng, stats=("m1", "var")))
    assert len(th.lut_features()) == 6 and th.lut_features()[4:] == (0.0, 0.0)
    narrow, wide = (
        MomentsThreshold.parameters(**unit_params(np.random.default_rng(13), mode="th+", stats=("m2",), parallel=p))
        for p in (1, 2)
    )
    assert narrow.lut_features()[:4] == wide.lut_features()[:4] and narrow.lut_features()[4] == 1.0
    assert wide.lut_features()[5] > narrow.lut_features()[5] and wide.luts > narrow.luts


def test_moments_threshold_th_plus_parameters_match_the_component():
    p = unit_params(np.random.default_rng(13), mode="th+", stats=("m1", "var"), parallel=3, emit_stats=True)
    parameters, unit = MomentsThreshold.parameters(**p), MomentsThreshold(**p)
    for name in UNIT_FIGURES:
        assert getattr(unit, name) == getattr(parameters, name), name
    figures = parameters.figures(unit.frame_words)
    assert figures == unit.figures(0)  # the unit knows its frame
    assert (figures.cycles, figures.post) == (unit.cycles_per_frame, unit.latency - unit.frame_words)


# ---------------------------------------------------------------------------------------------
# InstaPReLU


def prelu_params(rng, *, instance_slope=False, channels=6, simd=3, height=5, width=3, stats_channels=4, **extra):
    stats = extra.pop("stats", ("m1", "m2"))
    outputs = channels * (2 if instance_slope else 1)
    kw = {
        "in_shape": signed(10),
        "channels": channels,
        "simd": simd,
        "height": height,
        "width": width,
        "stats_channels": stats_channels,
        "stats": stats,
        "feature_shape": signed(12),
        "w1": rng.integers(-8, 9, size=(4, len(stats) * stats_channels)),
        "b1": rng.integers(-200, 200, size=4),
        "hidden_shift": 6,
        "hidden_max": 15,
        "w2": rng.integers(-16, 17, size=(outputs, 4)),
        "delta_shift": 2,
        "gamma": rng.integers(-100, 100, size=channels),
        "slope": rng.integers(0, 64, size=channels),
        "zeta": rng.integers(-300, 300, size=channels),
        "slope_shift": 6,
        "out_shift": 4,
        "low": -128,
        "high": 127,
        "instance_slope": instance_slope,
        "parallel": 2,
    }
    kw.update(extra)
    return kw


def make_prelu(rng, **kw):
    return InstaPReLU(**prelu_params(rng, **kw))


def prelu_streams(dut, xs, features):
    words, stats, out = [], [], []
    for x, f in zip(xs, features, strict=True):
        words += tensor_to_words(x, dut.simd).tolist()
        stats += [[int(v) for v in column] for column in np.asarray(f).T]
        out += tensor_to_words(dut.reference(x, f), dut.simd).tolist()
    return words, stats, out


def prelu_inputs(rng, dut, count):
    low, high = bounds(dut.in_shape)
    f_low, f_high = bounds(dut.stats.payload.shape().elem_shape)
    xs = [
        rng.integers(low, high + 1, size=(dut.channels, dut.frame_words * dut.simd // dut.channels, 1))
        for _ in range(count)
    ]
    fs = [rng.integers(f_low, f_high + 1, size=(len(dut.statistics), dut.stats_channels)) for _ in range(count)]
    return xs, fs


PRELUS = {
    "prelu": {},
    "prelu_slope": {"instance_slope": True},
    "prelu_simd_full": {"channels": 4, "simd": 4, "stats_channels": 3, "parallel": 4, "stats": ("m3", "var", "m1")},
    "prelu_simd_1": {"channels": 3, "simd": 1, "stats_channels": 1, "instance_slope": True, "parallel": 1},
}


@pytest.mark.parametrize("valid, ready", FLOW)
@pytest.mark.parametrize("unit", PRELUS)
def test_insta_prelu_matches_model(unit, valid, ready):
    rng = np.random.default_rng(20 + sorted(PRELUS).index(unit))
    dut = make_prelu(rng, **PRELUS[unit])
    xs, fs = prelu_inputs(rng, dut, 3)
    words, stats, out = prelu_streams(dut, xs, fs)
    run = simulate_streams(
        dut, {"i": words, "stats": stats}, {"o": len(out)}, valid_probability=valid, ready_probability=ready, seed=3
    )
    assert run.outputs["o"] == out
    flat = np.array(out).ravel()
    assert flat.min() < 0 < flat.max()


@pytest.mark.parametrize("instance_slope, height", [(False, 1), (True, 2), (False, 30)])
def test_insta_prelu_frame_period_and_latency(instance_slope, height):
    rng = np.random.default_rng(30)
    dut = make_prelu(rng, instance_slope=instance_slope, height=height, width=1)
    xs, fs = prelu_inputs(rng, dut, 5)
    words, stats, out = prelu_streams(dut, xs, fs)
    run = simulate_streams(dut, {"i": words, "stats": stats}, {"o": len(out)})
    assert run.outputs["o"] == out
    assert frame_periods(run, dut, 5) == [dut.cycles_per_frame] * 4
    assert run.cycles["o"][0] - run.cycles["stats"][0] == dut.latency
    chunks, features, outputs = 2, 2 * 4, dut.channels * (2 if instance_slope else 1)  # hidden 4, parallel 2
    assert dut.mlp_cycles == chunks * features + outputs * chunks + 7 + 2 * PRODUCT_LATENCY
    if dut.frame_words >= dut.stats_channels + dut.mlp_cycles:
        assert dut.initiation_interval == 1 and run.interval("o", skip=dut.frame_words) == 1


def test_insta_prelu_worst_cases_saturate_without_overflow():
    rng = np.random.default_rng(31)
    extra = {
        "w1": np.resize([127, -128], (4, 8)),
        "b1": np.array([2**12, -(2**12), 0, 1]),
        "w2": np.resize([127, -128, -128, 127], (12, 4)),
        "hidden_max": 255,
        "hidden_shift": 0,
        "delta_shift": 0,
        "slope": np.resize([127, -128], 6),
        "zeta": np.resize([2**15, -(2**15)], 6),
        "low": -(2**20),
        "high": 2**20,
    }
    dut = make_prelu(rng, instance_slope=True, **extra)
    size = (6, 5, 3)
    xs = [np.full(size, 511), np.full(size, -512), np.resize([511, -512], size), np.full(size, -512)]
    fs = [np.full((2, 4), 2047), np.full((2, 4), -2048), np.resize([2047, -2048], (2, 4)), np.full((2, 4), 2047)]
    words, stats, out = prelu_streams(dut, xs, fs)
    run = simulate_streams(
        dut, {"i": words, "stats": stats}, {"o": len(out)}, valid_probability=0.7, ready_probability=0.6
    )
    assert run.outputs["o"] == out
    # a narrow clamp saturates at both ends
    narrow = make_prelu(np.random.default_rng(31), instance_slope=True, **{**extra, "low": -3, "high": 4})
    words, stats, out = prelu_streams(narrow, xs, fs)
    run = simulate_streams(narrow, {"i": words, "stats": stats}, {"o": len(out)})
    assert run.outputs["o"] == out and {-3, 4} <= set(np.ravel(out).tolist())


class Block(wiring.Component):
    """A MomentsThreshold's statistics feeding an InstaPReLU (as in one INSTA block)."""

    def __init__(self, threshold: MomentsThreshold, prelu: InstaPReLU):
        self.threshold, self.prelu = threshold, prelu
        super().__init__(
            {
                "x": In(threshold.i.signature.flip()),
                "bits": Out(threshold.o.signature),
                "y": In(prelu.i.signature.flip()),
                "out": Out(prelu.o.signature),
            }
        )

    def elaborate(self, platform):
        m = Module()
        m.submodules.threshold, m.submodules.prelu = self.threshold, self.prelu
        wiring.connect(m, wiring.flipped(self.x), self.threshold.i)
        wiring.connect(m, self.threshold.o, wiring.flipped(self.bits))
        wiring.connect(m, wiring.flipped(self.y), self.prelu.i)
        wiring.connect(m, self.prelu.o, wiring.flipped(self.out))
        wiring.connect(m, self.threshold.stats, self.prelu.stats)
        return m


@pytest.mark.parametrize("instance_slope", [False, True])
def test_insta_prelu_fed_by_a_moments_threshold(instance_slope):
    rng = np.random.default_rng(40)
    threshold = make_unit(rng, stats=("m1", "var"), channels=4, simd=2, height=3, width=3, emit_stats=True)
    prelu = make_prelu(
        rng,
        instance_slope=instance_slope,
        channels=6,
        simd=3,
        height=3,
        width=3,
        stats_channels=4,
        stats=threshold.statistics,
        feature_shape=threshold.feature_shape,
        w1=rng.integers(-3, 4, size=(4, 8)),
        hidden_shift=4,
    )
    frames = sample_frames(rng, threshold.in_shape, 4, 3, 3, 3)
    xs = [rng.integers(-512, 512, size=(6, 3, 3)) for _ in frames]
    words, bits, _ = expected_streams(threshold, frames)
    features = [threshold.reference(frame)[2] for frame in frames]
    y_words, _, out = prelu_streams(prelu, xs, features)
    run = simulate_streams(
        Block(threshold, prelu),
        {"x": words, "y": y_words},
        {"bits": len(bits), "out": len(out)},
        valid_probability=0.6,
        ready_probability=0.7,
    )
    assert run.outputs["bits"] == bits and run.outputs["out"] == out


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"channels": 5}, r"simd must divide channels \(5\), not 3"),
        ({"stats_channels": 0}, r"stats_channels must be >= 1, not 0"),
        ({"w1": np.zeros((4, 7), dtype=int)}, r"w1 must have shape \(hidden, 8\)"),
        ({"w2": np.zeros((12, 4), dtype=int)}, r"w2 must have shape \(6, 4\), not \(12, 4\)"),
        ({"instance_slope": True, "w2": np.zeros((6, 4), dtype=int)}, r"w2 must have shape \(12, 4\)"),
        ({"gamma": np.zeros(5, dtype=int)}, r"gamma must have shape \(6,\), not \(5,\)"),
        ({"delta_shift": -1}, r"delta_shift must be in \[0, 256\], not -1"),
        ({"slope_shift": 33}, r"slope_shift must be in \[0, 32\], not 33"),
        ({"low": 5, "high": 4}, r"low \(5\) must be <= high \(4\)"),
        ({"feature_shape": 300}, r"feature_shape must be 1 to 256 bits wide"),
        ({"instance_slope": "yes"}, r"instance_slope must be a bool, not 'yes'"),
        ({"external_modules": 0}, r"external_modules must be a bool, not 0"),
        ({"parallel": 0}, r"parallel must be in \[1, 4\], not 0"),
        ({"stats": ("m1", "skew", "m1")}, r"stats must be distinct names"),
    ],
)
def test_invalid_insta_prelu_parameters_are_named(kw, message):
    params = prelu_params(np.random.default_rng(0), **kw)
    with pytest.raises((ValueError, TypeError), match=message):
        InstaPReLU(**params)
    if "external_modules" not in kw:  # an emission option: the component's alone
        with pytest.raises((ValueError, TypeError), match=message):
            InstaPReLU.parameters(**params)


#: What the parameters class and the component both give.
PRELU_FIGURES = (
    "in_shape",
    "out_shape",
    "channels",
    "simd",
    "height",
    "width",
    "feature_shape",
    "stats_channels",
    "statistics",
    "instance_slope",
    "parallel",
    "frame_words",
    "mlp_cycles",
    "cycles_per_frame",
    "initiation_interval",
    "latency",
    "memory_bits",
    "multipliers",
    "luts",
)


def test_insta_prelu_parameters_give_the_figures_without_ports():
    p = {
        "in_shape": signed(4),
        "channels": 2,
        "simd": 1,
        "height": 2,
        "width": 1,
        "stats_channels": 1,
        "stats": ("m1",),
        "feature_shape": signed(3),
        "w1": [[1]],
        "b1": [0],
        "hidden_shift": 0,
        "hidden_max": 3,
        "w2": [[1], [1]],
        "delta_shift": 0,
        "gamma": [0, 0],
        "slope": [1, 1],
        "zeta": [0, 0],
        "slope_shift": 0,
        "out_shift": 0,
        "low": -8,
        "high": 7,
    }
    parameters = InstaPReLU.parameters(**p)
    assert type(parameters) is InstaPReLUParameters and not hasattr(parameters, "signature")
    # MLP: 1 chunk x 1 feature (FC1) + 2 outputs x 1 chunk (FC2) + 5 + the products' latency twice
    # (4 each: the operands' register and the multiplier's 3), then 2 to the last write
    assert (parameters.frame_words, parameters.mlp_cycles) == (4, 1 + 2 + 5 + 8 + 2)
    assert parameters.lut_features() == (1.0, 4.0, 4.0, 1.0)
    # 1 statistics word + the MLP, then the parameter fetch and RPReLU's 6 stages (u, the product's
    # 3, the sum, the clamp)
    latency = 1 + 18 + 1 + 6
    # memory: gamma banks 2*2*unsigned(2) (gamma + delta in [0, 3]), zeta 2*1, slope 2*1, base 2*1,
    # MLP features 1*3, w1 1*1, b1 1*1, w2 2*1
    expected = Figures(cycles=1 + 18, latency=latency, post=latency - 1 - 18, luts=841, memory_bits=21, multipliers=2)
    assert parameters.figures(4) == expected
    unit = InstaPReLU(**p, external_modules=True)
    assert unit.figures(4) == expected and unit.external_modules
    assert unit.memory_bits == memory_bits_of(InstaPReLU(**p))
    for name in PRELU_FIGURES:
        assert getattr(unit, name) == getattr(parameters, name), name
    with pytest.raises(TypeError, match="external_modules"):
        InstaPReLU.parameters(**p, external_modules=True)
