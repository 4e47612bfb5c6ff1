"""INSTA-BNN's instance-aware units: the moments-and-threshold unit and INSTA-PReLU.

The numpy functions below are THE integer semantics (the compiler's reference executor calls
them); the components implement them bit for bit. For one frame (image) ``x`` of shape
``C x H x W`` with ``N = H * W`` pixels:

* :func:`moment_sums`: ``S_k[c] = sum over H x W of x**k`` for ``k = 1, 2, 3``, exact.
* :func:`statistic_features`: one integer feature per statistic and channel,
  ``F[j] = P_j >> shifts[j]`` (floor), where ``P`` is ``S1`` (``"m1"``), ``S2`` (``"m2"``),
  ``S3`` (``"m3"``), ``N*S2 - S1**2`` (``"var"``) or ``N**2*S3 - 3*N*S1*S2 + 2*S1**3``
  (``"skew"``), so that ``M_k = P / N``, ``var = P / N**2`` and ``skew = P / N**3`` exactly.
* :func:`th_thresholds` (INSTA-Th), :func:`se_mlp` and :func:`thplus_thresholds` (INSTA-Th+),
  :func:`binarise`, and :func:`insta_prelu` (RPReLU with a per-image shift and slope).

Values that may exceed 62 bits are Python ints in object arrays (see :func:`~.fixed.int_array`).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import numpy as np
from amaranth.hdl import Cat, Const, Elaboratable, Module, Mux, Shape, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ._checks import check_choice, check_divides, check_int, check_int_array, check_shape
from .affine import RPRELU_LATENCY, rprelu, rprelu_datapath
from .fixed import (
    bounds,
    ceil_shift,
    clamp,
    hdl_ceil_shift,
    hdl_clamp,
    hdl_round_shift,
    int_array,
    round_shift,
    shape_for,
)
from .layouts import channel_word
from .ram import Ram

__all__ = [
    "MODES",
    "STATISTICS",
    "InstaPReLU",
    "MomentsThreshold",
    "binarise",
    "feature_bounds",
    "insta_prelu",
    "moment_sums",
    "se_mlp",
    "statistic_features",
    "th_thresholds",
    "thplus_thresholds",
]

#: Statistic names, as in ``quant.layers.STATISTICS``.
STATISTICS = ("m1", "m2", "m3", "var", "skew")
#: Threshold modes of :class:`MomentsThreshold`.
MODES = ("th", "th+")
#: Largest shift accepted anywhere (features of big frames are wide).
_MAX_SHIFT = 256


# ---------------------------------------------------------------------------------------------
# interval arithmetic (Python ints): bounds of every intermediate value


def _iadd(*intervals):
    return sum(i[0] for i in intervals), sum(i[1] for i in intervals)


def _imul(a, b):
    products = [a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]]
    return min(products), max(products)


def _iscale(k: int, a):
    return (k * a[0], k * a[1]) if k >= 0 else (k * a[1], k * a[0])


def _isquare(a):
    low = 0 if a[0] <= 0 <= a[1] else min(a[0] ** 2, a[1] ** 2)
    return low, max(a[0] ** 2, a[1] ** 2)


def _ishift(a, shift: int):
    return a[0] >> shift, a[1] >> shift


def _hull(*intervals):
    return min(i[0] for i in intervals), max(i[1] for i in intervals)


def _prefix_bounds(term_lows, term_highs, start=(0, 0)):
    """Bounds of every partial sum ``start + sum of any prefix of the terms``."""
    return start[0] + sum(min(0, t) for t in term_lows), start[1] + sum(max(0, t) for t in term_highs)


def _array_bounds(array) -> tuple[int, int]:
    array = np.asarray(array)
    return (int(array.min()), int(array.max())) if array.size else (0, 0)


def _shape_of(*intervals) -> Shape:
    """Narrowest shape of the hull of ``intervals`` (0 included, so constants of 0 get a bit)."""
    return shape_for(*_hull((0, 0), *intervals))


# ---------------------------------------------------------------------------------------------
# numpy model: THE integer semantics


def _check_stats(stats) -> tuple[str, ...]:
    if isinstance(stats, str) or not isinstance(stats, Sequence):
        raise TypeError(f"stats must be a sequence of statistic names, not {stats!r}")
    stats = tuple(stats)
    if not stats or any(s not in STATISTICS for s in stats) or len(set(stats)) != len(stats):
        raise ValueError(f"stats must be distinct names from {STATISTICS}, not {stats!r}")
    return stats


def _check_shifts(name: str, shifts, count: int) -> tuple[int, ...]:
    if isinstance(shifts, (str, bytes)) or not isinstance(shifts, (Sequence, np.ndarray)):
        raise TypeError(f"{name} must be a sequence of integers, not {shifts!r}")
    if len(shifts) != count:
        raise ValueError(f"{name} must have one entry per statistic ({count}), not {len(shifts)}: {shifts!r}")
    return tuple(check_int(f"{name}[{j}]", s, low=0, high=_MAX_SHIFT) for j, s in enumerate(shifts))


def _objects(values) -> np.ndarray:
    """``values`` as an object array of Python ints (exact arithmetic at any width)."""
    array = np.asarray(values)
    return np.vectorize(int, otypes=[object])(array) if array.size else array.astype(object)


def _as_ints(values) -> np.ndarray:
    """Exact result as int64 when it fits comfortably, else Python ints."""
    low, high = _array_bounds(values) if np.asarray(values).size else (0, 0)
    return int_array(values, low, high)


def _sums_needed(stats: Sequence[str]) -> tuple[int, ...]:
    need = set()
    for s in stats:
        need |= {"m1": {1}, "m2": {2}, "m3": {3}, "var": {1, 2}, "skew": {1, 2, 3}}[s]
    return tuple(sorted(need))


def moment_sums(x) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(S1, S2, S3)`` of one frame ``x`` (``C x H x W`` integers): ``S_k[c] = sum_HW x[c]**k``, exact."""
    x = np.asarray(x)
    if x.ndim != 3 or not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"x must be a C x H x W integer array, not {x.dtype} of shape {x.shape}")
    flat = x.reshape(x.shape[0], -1)
    peak = int(np.abs(flat).max()) if flat.size else 0
    if (peak**3 * max(1, flat.shape[1])).bit_length() <= 62:
        flat = flat.astype(np.int64)
        return tuple(_as_ints((flat**k).sum(axis=1)) for k in (1, 2, 3))
    flat = _objects(flat)
    return tuple(_as_ints((flat**k).sum(axis=1)) for k in (1, 2, 3))


def _polynomials(sums, pixels: int, stats: Sequence[str]) -> list[np.ndarray]:
    s1, s2, s3 = (None if s is None else _objects(s) for s in sums)
    n = pixels
    forms = {
        "m1": lambda: s1,
        "m2": lambda: s2,
        "m3": lambda: s3,
        "var": lambda: n * s2 - s1 * s1,
        "skew": lambda: n * n * s3 - 3 * n * s1 * s2 + 2 * s1 * s1 * s1,
    }
    return [forms[s]() for s in stats]


def statistic_features(sums, *, pixels: int, stats: Sequence[str], shifts: Sequence[int]) -> np.ndarray:
    """Features ``F`` of shape ``(len(stats), C)``: ``F[j] = P_j >> shifts[j]`` (floor).

    ``P`` for each statistic: ``"m1"``: ``S1``; ``"m2"``: ``S2``; ``"m3"``: ``S3``; ``"var"``:
    ``N*S2 - S1**2``; ``"skew"``: ``N**2*S3 - 3*N*S1*S2 + 2*S1**3``, with ``N = pixels`` and
    ``sums = (S1, S2, S3)`` from :func:`moment_sums` (a sum no statistic needs may be ``None``).
    """
    pixels = check_int("pixels", pixels)
    stats = _check_stats(stats)
    shifts = _check_shifts("shifts", shifts, len(stats))
    if len(sums) != 3:
        raise ValueError(f"sums must be (S1, S2, S3), not {len(sums)} arrays")
    features = np.stack([p >> s for p, s in zip(_polynomials(sums, pixels, stats), shifts, strict=True)])
    return _as_ints(features)


def _sum_bounds(in_shape, pixels: int) -> dict[int, tuple[int, int]]:
    x = bounds(check_shape("in_shape", in_shape, max_width=32))
    powers = {1: x, 2: _isquare(x), 3: (x[0] ** 3, x[1] ** 3)}
    return {k: _iscale(pixels, b) for k, b in powers.items()}


def _polynomial_bounds(in_shape, pixels: int, stats) -> list[tuple[int, int]]:
    s = _sum_bounds(in_shape, pixels)
    n = pixels
    forms = {
        "m1": lambda: s[1],
        "m2": lambda: s[2],
        "m3": lambda: s[3],
        "var": lambda: _iadd(_iscale(n, s[2]), _iscale(-1, _isquare(s[1]))),
        "skew": lambda: _iadd(
            _iscale(n * n, s[3]),
            _iscale(-3 * n, _imul(s[1], s[2])),
            _iscale(2, (s[1][0] ** 3, s[1][1] ** 3)),
        ),
    }
    return [forms[name]() for name in stats]


def feature_bounds(in_shape, pixels: int, stats: Sequence[str], shifts: Sequence[int]) -> list[tuple[int, int]]:
    """``(low, high)`` of each feature of :func:`statistic_features` for frames of ``in_shape``.

    Interval arithmetic over the bounds of ``in_shape``, term by term of each polynomial
    (``var`` and ``skew`` as written in :func:`statistic_features`), then the floor shift.
    """
    pixels = check_int("pixels", pixels)
    stats = _check_stats(stats)
    shifts = _check_shifts("shifts", shifts, len(stats))
    return [_ishift(b, s) for b, s in zip(_polynomial_bounds(in_shape, pixels, stats), shifts, strict=True)]


def _features_array(name: str, features) -> np.ndarray:
    array = np.asarray(features)
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape (len(stats), C), not {array.shape}")
    return _objects(array)


def th_thresholds(features, *, alpha, beta, out_shift: int, low: int, high: int) -> np.ndarray:
    """INSTA-Th: ``T_c = clamp(ceil_shift(alpha_c + sum_j beta[c, j] * F[j, c], out_shift), low, high)``.

    ``features`` is ``F`` of shape ``(len(stats), C)``, ``alpha`` has length C and ``beta``
    shape ``(C, len(stats))``. ``x >= T_c`` then holds exactly when ``x * 2**out_shift >=
    alpha_c + beta_c . F_c``; ``T = high`` (the input maximum + 1) means "never +1".
    """
    f = _features_array("features", features)
    stats_count, channels = f.shape
    alpha = _objects(check_int_array("alpha", alpha, shape=(channels,)))
    beta = _objects(check_int_array("beta", beta, shape=(channels, stats_count)))
    out_shift = check_int("out_shift", out_shift, low=0, high=_MAX_SHIFT)
    acc = alpha + (beta.T * f).sum(axis=0)
    return np.asarray(clamp(ceil_shift(acc, out_shift), low, high)).astype(np.int64)


def se_mlp(features, *, w1, b1, hidden_shift: int, hidden_max: int, w2) -> np.ndarray:
    """The squeeze-and-excitation branch: ``w2 @ clamp(round_shift(max(0, w1 @ f + b1), hidden_shift), 0, hidden_max)``.

    ``f = features.reshape(-1)`` is stat-major (index ``j*C + c``, as torch flattens
    ``N x stats x C``); ``w1`` has shape ``(hidden, len(f))``, ``b1`` length ``hidden`` and
    ``w2`` shape ``(outputs, hidden)``. The hidden activations are integers in ``[0, hidden_max]``.
    """
    f = _features_array("features", features).reshape(-1)
    w1 = check_int_array("w1", w1)
    if w1.ndim != 2 or w1.shape[1] != f.size:
        raise ValueError(f"w1 must have shape (hidden, {f.size}), not {w1.shape}")
    hidden = w1.shape[0]
    b1 = check_int_array("b1", b1, shape=(hidden,))
    w2 = check_int_array("w2", w2)
    if w2.ndim != 2 or w2.shape[1] != hidden:
        raise ValueError(f"w2 must have shape (outputs, {hidden}), not {w2.shape}")
    hidden_shift = check_int("hidden_shift", hidden_shift, low=0, high=_MAX_SHIFT)
    hidden_max = check_int("hidden_max", hidden_max, low=1)
    pre = _objects(w1).dot(f) + _objects(b1)
    h = clamp(round_shift(np.maximum(pre, 0), hidden_shift), 0, hidden_max)
    return _as_ints(_objects(w2).dot(_objects(h)))


def thplus_thresholds(
    features, *, w1, b1, hidden_shift: int, hidden_max: int, w2, alpha, out_shift: int, low: int, high: int
) -> np.ndarray:
    """INSTA-Th+: ``T_c = clamp(ceil_shift(alpha_c + se_mlp(F)_c, out_shift), low, high)`` (FC2's bias in alpha)."""
    out = _objects(se_mlp(features, w1=w1, b1=b1, hidden_shift=hidden_shift, hidden_max=hidden_max, w2=w2))
    alpha = _objects(check_int_array("alpha", alpha, shape=out.shape))
    out_shift = check_int("out_shift", out_shift, low=0, high=_MAX_SHIFT)
    return np.asarray(clamp(ceil_shift(alpha + out, out_shift), low, high)).astype(np.int64)


def binarise(x, thresholds) -> np.ndarray:
    """``b[c, y, x] = 1 if x[c, y, x] >= T_c else 0`` (bit 1 means +1)."""
    x = np.asarray(x)
    t = np.asarray(thresholds)
    if x.ndim != 3 or t.shape != (x.shape[0],):
        raise ValueError(f"x must be C x H x W and thresholds of length C, not {x.shape} and {t.shape}")
    if x.dtype != object and t.dtype != object:
        return (x.astype(np.int64) >= t.astype(np.int64)[:, None, None]).astype(np.int64)
    return (_objects(x) >= _objects(t)[:, None, None]).astype(np.int64)


def insta_prelu(
    x,
    features,
    *,
    w1,
    b1,
    hidden_shift: int,
    hidden_max: int,
    w2,
    delta_shift: int,
    gamma,
    slope,
    zeta,
    slope_shift: int,
    out_shift: int,
    low: int,
    high: int,
    instance_slope: bool = False,
) -> np.ndarray:
    """INSTA-PReLU of one frame ``x`` (``C x H x W``, the block output) given ``features`` of the block input.

    ``delta = se_mlp(features, ...)`` (length C, or 2C with ``instance_slope``);
    ``gamma_eff_c = gamma_c + round_shift(delta_c, delta_shift)``; ``slope_eff_c = slope_c +
    round_shift(delta_{C+c}, delta_shift)`` with ``instance_slope``, else ``slope_c``; the result
    is :func:`~.affine.rprelu` of ``x`` with those per-channel vectors (``C x H x W``).
    """
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"x must be a C x H x W array, not of shape {x.shape}")
    channels = x.shape[0]
    delta = _objects(se_mlp(features, w1=w1, b1=b1, hidden_shift=hidden_shift, hidden_max=hidden_max, w2=w2))
    outputs = channels * (2 if instance_slope else 1)
    if delta.shape != (outputs,):
        raise ValueError(f"w2 must have {outputs} rows for {channels} channels, not {delta.shape[0]}")
    delta_shift = check_int("delta_shift", delta_shift, low=0, high=_MAX_SHIFT)
    gamma = _objects(check_int_array("gamma", gamma, shape=(channels,)))
    slope = _objects(check_int_array("slope", slope, shape=(channels,)))
    zeta = _objects(check_int_array("zeta", zeta, shape=(channels,)))
    gamma_eff = gamma + round_shift(delta[:channels], delta_shift)
    slope_eff = slope + round_shift(delta[channels:], delta_shift) if instance_slope else slope
    x = np.moveaxis(x, 0, -1)
    peaks = [max((abs(int(v)) for v in a.reshape(-1)), default=0) for a in (x, gamma_eff, slope_eff, zeta)]
    u_bits = (peaks[0] + peaks[1]).bit_length()
    if max(u_bits + max(slope_shift, peaks[2].bit_length()), peaks[3].bit_length()) + 1 <= 62:
        x, gamma_eff, slope_eff, zeta = (np.asarray(a).astype(np.int64) for a in (x, gamma_eff, slope_eff, zeta))
    else:
        x = _objects(x)
    result = rprelu(
        x,
        gamma_eff,
        slope_eff,
        zeta,
        slope_shift=slope_shift,
        out_shift=out_shift,
        low=low,
        high=high,
    )
    return np.moveaxis(np.asarray(result), -1, 0).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# hardware helpers


def _counter(n: int, name: str | None = None) -> Signal:
    return Signal(range(max(n, 2)), name=name)


def _bank_bits(bank: Value, condition: Value) -> Value:
    """Two-bit mask selecting ``bank`` (0 or 1) where ``condition`` holds, else 0.

    Control signals are built as such expressions rather than as conditional ``comb``
    assignments (and multi-lane words as one ``Cat`` rather than lane by lane): those become
    ``always @*`` blocks, which Icarus (SystemVerilog mode) leaves at X until one of their
    inputs changes.
    """
    return Cat(condition & ~bank, condition & bank)


def _rom(depth: int, shape, init) -> Memory:
    return Memory(shape=shape, depth=max(depth, 1), init=init)


def _memory_bits(depth: int, shape) -> int:
    return depth * Shape.cast(shape).width


def _ram(m: Module, name: str, shape, depth: int, *, external: bool, read_ports=("sync",), granular: bool = False):
    """A :class:`~.ram.Ram` of ``depth`` words of ``shape`` (a layout), as submodule ``name``: its ports.

    ``granular``: one write-enable lane per element of the ``ArrayLayout`` ``shape`` (the
    ``Memory`` granularity 1). ``external``: the component's ``external_memories``.
    """
    width = Shape.cast(shape).width
    granularity = Shape.cast(shape.elem_shape).width if granular else None
    ram = Ram(
        width=width,
        depth=depth,
        read_ports=read_ports,
        granularity=granularity,
        external=external,
    )
    m.submodules[name] = ram
    return ram.ports(shape)


def _check_flag(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, not {value!r}")
    return bool(value)


class _MlpPlan:
    """Sizes, widths and cycle count of an :class:`_SeMlp` (plain numbers: nothing to elaborate)."""

    def __init__(
        self, *, stats_channels, n_stats, feature_shape, feature_bounds, w1, b1, hidden_shift, hidden_max, w2, parallel
    ):
        self.stats_channels, self.n_stats = stats_channels, n_stats
        self.nf = n_stats * stats_channels
        hidden = w1.shape[0]
        self.parallel = parallel
        self.chunks = -(-hidden // parallel)
        padded = self.chunks * parallel
        self.outputs = w2.shape[0]
        self.hidden_shift, self.hidden_max = hidden_shift, hidden_max
        self.w1 = np.zeros((padded, self.nf), dtype=np.int64)
        self.w1[:hidden] = w1
        self.b1 = np.zeros(padded, dtype=np.int64)
        self.b1[:hidden] = b1
        self.w2 = np.zeros((self.outputs, padded), dtype=np.int64)
        self.w2[:, :hidden] = w2
        self.feature_shape = feature_shape
        f_bounds = [feature_bounds[i // stats_channels] for i in range(self.nf)]
        # FC1 partial sums of each row (b1 is added after the last feature)
        acc1 = [
            _prefix_bounds(
                [min(int(w) * b[0], int(w) * b[1]) for w, b in zip(row, f_bounds, strict=True)],
                [max(int(w) * b[0], int(w) * b[1]) for w, b in zip(row, f_bounds, strict=True)],
            )
            for row in self.w1
        ]
        self.acc1_shape = _shape_of(*acc1)
        self.w1_shape = _shape_of(_array_bounds(self.w1))
        self.b1_shape = _shape_of(_array_bounds(self.b1))
        self.h_shape = unsigned(hidden_max.bit_length())
        self.w2_shape = _shape_of(_array_bounds(self.w2))
        self.out_bounds = [
            _prefix_bounds([min(0, int(w) * hidden_max) for w in row], [max(0, int(w) * hidden_max) for w in row])
            for row in self.w2
        ]
        self.out_shape = _shape_of(*self.out_bounds)
        self.cycles = self.chunks * self.nf + self.outputs * self.chunks + 3
        self.memory_bits = (
            _memory_bits(stats_channels, data.ArrayLayout(feature_shape, n_stats))
            + _memory_bits(self.chunks * self.nf, data.ArrayLayout(self.w1_shape, parallel))
            + _memory_bits(self.chunks, data.ArrayLayout(self.b1_shape, parallel))
            + _memory_bits(self.outputs * self.chunks, data.ArrayLayout(self.w2_shape, parallel))
        )


class _SeMlp(Elaboratable):
    """The squeeze-and-excitation MLP (:func:`se_mlp`) on ``parallel`` shared multipliers.

    Holds the feature memory (``stats_channels`` words of ``len(stats)`` features, written
    through ``feat_w_*``), the weight ROMs and the hidden registers. A ``start`` pulse (when
    idle, features complete) runs FC1 (``parallel`` hidden units per pass over the ``nf``
    features, one feature per cycle), then FC2 (one output row at a time, ``parallel`` hidden
    units per cycle) and emits each output ``o = 0 .. outputs-1`` as a one-cycle pulse of
    ``out_valid`` with ``out_index``, ``out_value`` and ``out_last``. The last output is seen
    ``cycles`` cycles after the ``start`` cycle.
    """

    def __init__(self, plan: _MlpPlan, *, external_memories: bool = False):
        self.plan = plan
        self.external_memories = external_memories
        self.start = Signal()
        self.feat_w_addr = _counter(plan.stats_channels)
        self.feat_w_data = Signal(data.ArrayLayout(plan.feature_shape, plan.n_stats))
        self.feat_w_en = Signal()
        self.out_valid = Signal()
        self.out_last = Signal()
        self.out_index = _counter(plan.outputs)
        self.out_value = Signal(plan.out_shape)

    def elaborate(self, platform):
        m = Module()
        plan = self.plan
        cs, ns, nf, nc, par, nout = (
            plan.stats_channels,
            plan.n_stats,
            plan.nf,
            plan.chunks,
            plan.parallel,
            plan.outputs,
        )
        fw, (fr,) = _ram(m, "features", data.ArrayLayout(plan.feature_shape, ns), cs, external=self.external_memories)
        m.d.comb += [fw.addr.eq(self.feat_w_addr), fw.data.eq(self.feat_w_data), fw.en.eq(self.feat_w_en)]
        # w1 in FC1 order: chunk q, then feature i = j*C + c; lane p is hidden unit q*P + p
        w1_words = [[int(plan.w1[q * par + p, i]) for p in range(par)] for q in range(nc) for i in range(nf)]
        m.submodules.w1 = w1_rom = _rom(nc * nf, data.ArrayLayout(plan.w1_shape, par), w1_words)
        b1_words = [[int(plan.b1[q * par + p]) for p in range(par)] for q in range(nc)]
        m.submodules.b1 = b1_rom = _rom(nc, data.ArrayLayout(plan.b1_shape, par), b1_words)
        w2_words = [[int(plan.w2[o, q * par + p]) for p in range(par)] for o in range(nout) for q in range(nc)]
        m.submodules.w2 = w2_rom = _rom(nout * nc, data.ArrayLayout(plan.w2_shape, par), w2_words)
        w1r, b1r, w2r = w1_rom.read_port(), b1_rom.read_port(), w2_rom.read_port()
        h = [Signal(plan.h_shape, name=f"h{k}") for k in range(nc * par)]

        # stage 0: address counters
        q, j, c, o = _counter(nc, name="q"), _counter(ns, name="j"), _counter(cs, name="c"), _counter(nout, name="o")
        k1, k2 = _counter(nc * nf, name="k1"), _counter(nout * nc, name="k2")
        m.d.comb += [fr.addr.eq(c), w1r.addr.eq(k1), w2r.addr.eq(k2)]
        # stage 1 (multiply-accumulate) and stage 2 (FC1 post-processing) registers
        v1_fc1, v1_fc2 = Signal(name="v1_fc1"), Signal(name="v1_fc2")
        first1, last1 = Signal(name="first1"), Signal(name="last1")
        j1, q1, o1 = _counter(ns, name="j1"), _counter(nc, name="q1"), _counter(nout, name="o1")
        v2, q2 = Signal(name="v2"), _counter(nc, name="q2")
        m.d.sync += [v1_fc1.eq(0), v1_fc2.eq(0), v2.eq(0), self.out_valid.eq(0), self.out_last.eq(0)]

        with m.FSM(name="mlp"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [q.eq(0), j.eq(0), c.eq(0), k1.eq(0), k2.eq(0), o.eq(0)]
                    m.next = "FC1"
            with m.State("FC1"):
                end_c = c == cs - 1
                end_j = end_c & (j == ns - 1)
                m.d.sync += [v1_fc1.eq(1), first1.eq((c == 0) & (j == 0)), last1.eq(end_j), j1.eq(j), q1.eq(q)]
                m.d.sync += [c.eq(Mux(end_c, 0, c + 1)), k1.eq(Mux(k1 == nc * nf - 1, 0, k1 + 1))]
                with m.If(end_c):
                    m.d.sync += j.eq(Mux(end_j, 0, j + 1))
                with m.If(end_j):
                    m.d.sync += q.eq(Mux(q == nc - 1, 0, q + 1))
                    with m.If(q == nc - 1):
                        m.next = "DRAIN"
            with m.State("DRAIN"):  # the last chunk's hidden units are written in the next cycle
                m.next = "FC2"
            with m.State("FC2"):
                end_q = q == nc - 1
                m.d.sync += [v1_fc2.eq(1), first1.eq(q == 0), last1.eq(end_q), q1.eq(q), o1.eq(o)]
                m.d.sync += k2.eq(Mux(k2 == nout * nc - 1, 0, k2 + 1))
                m.d.sync += q.eq(Mux(end_q, 0, q + 1))
                with m.If(end_q):
                    m.d.sync += o.eq(Mux(o == nout - 1, 0, o + 1))
                    with m.If(o == nout - 1):
                        m.next = "IDLE"

        # the shared multipliers: FC1 (w1 x feature) or FC2 (w2 x hidden)
        f_sel = fr.data[j1]
        width = plan.h_shape.width
        chunk = Cat(*h).word_select(q1, par * width)
        h_sel = [chunk[p * width : (p + 1) * width] for p in range(par)]
        a_shape = _shape_of(bounds(plan.w1_shape), bounds(plan.w2_shape))
        b_shape = _shape_of(bounds(plan.feature_shape), (0, plan.hidden_max))
        prods = []
        for p in range(par):
            a, b = Signal(a_shape, name=f"mul_a{p}"), Signal(b_shape, name=f"mul_b{p}")
            m.d.comb += [a.eq(Mux(v1_fc2, w2r.data[p], w1r.data[p])), b.eq(Mux(v1_fc2, h_sel[p], f_sel))]
            prods.append(a * b)

        acc1 = [Signal(plan.acc1_shape, name=f"acc1_{p}") for p in range(par)]
        acc2 = Signal(plan.out_shape)
        with m.If(v1_fc1):
            m.d.sync += [acc1[p].eq(Mux(first1, 0, acc1[p]) + prods[p]) for p in range(par)]
            m.d.sync += [v2.eq(last1), q2.eq(q1)]
        m.d.comb += b1r.addr.eq(q1)
        with m.If(v2):
            with m.Switch(q2):
                for qq in range(nc):
                    with m.Case(qq):
                        for p in range(par):
                            pre = acc1[p] + b1r.data[p]
                            hid = hdl_round_shift(Mux(pre < 0, 0, pre), plan.hidden_shift)
                            m.d.sync += h[qq * par + p].eq(Mux(hid > plan.hidden_max, plan.hidden_max, hid))
        total = Mux(first1, 0, acc2) + sum(prods[1:], prods[0])
        with m.If(v1_fc2):
            m.d.sync += acc2.eq(total)
            with m.If(last1):
                m.d.sync += [
                    self.out_valid.eq(1),
                    self.out_index.eq(o1),
                    self.out_value.eq(total),
                    self.out_last.eq(o1 == nout - 1),
                ]
        return m


def _check_mlp(name_prefix, *, w1, b1, hidden_shift, hidden_max, w2, inputs: int, outputs: int):
    """Validated (w1, b1, hidden_shift, hidden_max, w2) of an SE branch with ``inputs`` features."""
    if w1 is None or b1 is None or w2 is None or hidden_shift is None or hidden_max is None:
        raise TypeError(f"{name_prefix} needs w1, b1, hidden_shift, hidden_max and w2")
    w1 = check_int_array("w1", w1)
    if w1.ndim != 2 or w1.shape[0] < 1 or w1.shape[1] != inputs:
        raise ValueError(f"w1 must have shape (hidden, {inputs}) with hidden >= 1, not {w1.shape}")
    hidden = w1.shape[0]
    b1 = check_int_array("b1", b1, shape=(hidden,))
    w2 = check_int_array("w2", w2, shape=(outputs, hidden))
    hidden_shift = check_int("hidden_shift", hidden_shift, low=0, high=_MAX_SHIFT)
    hidden_max = check_int("hidden_max", hidden_max, low=1, high=(1 << 32) - 1)
    return w1, b1, hidden_shift, hidden_max, w2


class MomentsThreshold(wiring.Component):
    """INSTA-Th / INSTA-Th+: per-image thresholds from the frame's own moments, then binarisation.

    A frame (``C x H x W`` channel words, raster order) is written into one half of a
    double-buffered frame buffer while the per-channel sums ``S1, S2, S3`` (those the
    statistics need) accumulate. Once it is complete, a sequential evaluator computes the
    features (:func:`statistic_features`) and the thresholds (:func:`th_thresholds` or
    :func:`thplus_thresholds`); the frame is then read out, each element compared with its
    channel's threshold (:func:`binarise`), while the next frame is written into the other half
    (a word may be overwritten as soon as the previous frame's reader has fetched it).

    Timing (full rate, no back-pressure): the evaluator is busy ``eval_cycles`` per frame and
    then rests ``EVAL_GAP`` cycles, so a frame takes ``cycles_per_frame = max(frame_words,
    eval_cycles + EVAL_GAP)`` cycles in steady state; ``initiation_interval`` is 1 when
    ``eval_cycles + EVAL_GAP <= frame_words`` (the rate of a static threshold unit). An idle
    unit emits a frame's first word ``latency = frame_words + eval_cycles + 5`` cycles after
    taking its first word.

    Evaluator (``eval_cycles``): one start cycle, then ``channels * steps_per_channel`` cycles
    (per channel: latch its sums; the multiplications of ``var`` / ``skew`` and, for ``"th"``,
    one multiply-accumulate of ``beta . F`` per statistic, scheduled on one shared multiplier
    with registered operands and product (:attr:`MUL_LATENCY`); one write step); for ``"th+"``
    then FC1 (``ceil(hidden / parallel) * len(stats) * C`` cycles) and FC2 (``ceil(hidden /
    parallel) * C`` cycles) on ``parallel`` multipliers, plus 4. For example
    ``steps_per_channel`` is 5 for ``"th"`` with ``("m3",)``, 12 with ``("m1", "var", "skew")``,
    2 for ``"th+"`` with raw moments only.

    Storage (:attr:`memory_bits`): the frame buffer (``2 * frame_words`` words of ``simd``
    inputs), the sums and the thresholds (``2 * C / simd`` words each, banked like the frame),
    ROMs of ``alpha`` and ``beta`` (or of the MLP's weights, and its feature memory). Every
    width comes from the bounds of ``in_shape`` and of the constants, so nothing can overflow.

    With ``emit_stats`` a channel's features leave on ``stats`` while the evaluator processes
    it, before the frame's bits; the evaluator waits while ``stats`` is not taken, so that
    stream must be consumed (a FIFO of C words decouples a consumer that takes them later).

    Parameters
    ----------
    in_shape : shape
        Integer element shape of the input (signed or unsigned, up to 32 bits).
    channels, simd, height, width : int
        Frame geometry ``C x H x W``; ``simd`` (dividing C) channels per word.
    stats : sequence of str
        Distinct names from :data:`STATISTICS`.
    shifts : sequence of int
        Right shift (floor) of each statistic's polynomial, 0 to 256.
    mode : {"th", "th+"}
        INSTA-Th (``alpha``, ``beta``, ``out_shift``) or INSTA-Th+ (``w1``, ``b1``,
        ``hidden_shift``, ``hidden_max``, ``w2``, ``alpha``, ``out_shift``).
    alpha : array of C ints
        Threshold offsets (for ``"th+"`` including FC2's bias), in units of ``2**-out_shift``.
    beta : array (C, len(stats)) of ints
        ``"th"`` only: the per-channel feature weights.
    out_shift : int
        Final ceiling shift, 0 to 256.
    w1, b1, hidden_shift, hidden_max, w2 : arrays and ints
        ``"th+"`` only: see :func:`se_mlp`; ``w1`` is ``(hidden, len(stats) * C)``, ``w2``
        ``(C, hidden)``.
    parallel : int
        ``"th+"``: multiply-accumulates per cycle of the MLP, 1 to ``hidden`` (unused by ``"th"``).
    emit_stats : bool
        Add the ``stats`` output: per frame, C words (channel ascending) holding that
        channel's features ``F[:, c]`` (for an :class:`InstaPReLU` downstream).
    external_memories : bool
        Make every read/write memory (frame buffer, sums, thresholds, the MLP's features) a
        :class:`~.ram.Ram` instance of the Verilog module, for Verilog output; ``False``
        (default): inline, for Amaranth's simulator. The constant ROMs stay inline.

    Members
    -------
    i : In(stream.Signature(channel_word(in_shape, simd)))
    o : Out(stream.Signature(channel_word(unsigned(1), simd)))
    stats : Out(stream.Signature(data.ArrayLayout(feature_shape, len(stats)))), with ``emit_stats``
    """

    #: Cycles the evaluator rests after each frame: the round trip from its end through the
    #: reader, the writer and the sums pipeline to its next start, which makes
    #: ``max(frame_words, eval_cycles + EVAL_GAP)`` the exact steady-state frame period.
    EVAL_GAP = 4

    def __init__(
        self,
        *,
        in_shape,
        channels: int,
        simd: int,
        height: int,
        width: int,
        stats: Sequence[str] = ("m3",),
        shifts: Sequence[int] = (0,),
        mode: str = "th",
        alpha=None,
        beta=None,
        out_shift: int = 0,
        w1=None,
        b1=None,
        hidden_shift: int | None = None,
        hidden_max: int | None = None,
        w2=None,
        parallel: int = 1,
        emit_stats: bool = False,
        external_memories: bool = False,
    ) -> None:
        self._in_shape = check_shape("in_shape", in_shape, max_width=32)
        self._channels = check_int("channels", channels)
        self._simd = check_divides("simd", check_int("simd", simd), "channels", self._channels)
        self._height = check_int("height", height)
        self._width = check_int("width", width)
        self._stats = _check_stats(stats)
        self._shifts = _check_shifts("shifts", shifts, len(self._stats))
        self._mode = check_choice("mode", mode, MODES)
        self._emit_stats = _check_flag("emit_stats", emit_stats)
        self._external = _check_flag("external_memories", external_memories)
        self._parallel = check_int("parallel", parallel)
        self._out_shift = check_int("out_shift", out_shift, low=0, high=_MAX_SHIFT)
        C, ns = self._channels, len(self._stats)
        if alpha is None:
            raise TypeError("alpha is required (an array of one integer per channel)")
        self._alpha = check_int_array("alpha", alpha, shape=(C,))
        pixels = self._height * self._width
        self._groups = C // self._simd
        self._frame_words = pixels * self._groups
        x_low, x_high = bounds(self._in_shape)
        self._low, self._high = x_low, x_high + 1
        self._threshold_shape = shape_for(self._low, self._high)

        # widths, from the bounds of in_shape
        self._sums = _sums_needed(self._stats)
        sum_bounds = _sum_bounds(self._in_shape, pixels)
        self._sum_shapes = {k: shape_for(*sum_bounds[k]) for k in self._sums}
        x = bounds(self._in_shape)
        self._square_shape = shape_for(*_isquare(x))
        self._cube_shape = shape_for(x[0] ** 3, x[1] ** 3)
        self._feature_bounds = feature_bounds(self._in_shape, pixels, self._stats, self._shifts)
        self._polys = _polynomial_bounds(self._in_shape, pixels, self._stats)
        self._feature_shape = _shape_of(*self._feature_bounds)
        self._q_bounds = _isquare(sum_bounds[1])
        self._r_bounds = _iadd(_iscale(2, self._q_bounds), _iscale(-3 * pixels, sum_bounds[2]))

        self._program = self._feature_program()
        if self._mode == "th":
            if any(v is not None for v in (w1, b1, hidden_shift, hidden_max, w2)):
                raise ValueError("w1, b1, hidden_shift, hidden_max and w2 are only used in mode 'th+'")
            if beta is None:
                raise TypeError("mode 'th' needs beta, an array of shape (channels, len(stats))")
            self._beta = check_int_array("beta", beta, shape=(C, ns))
            terms = [
                [_imul((int(self._beta[c, j]),) * 2, self._feature_bounds[j]) for j in range(ns)] for c in range(C)
            ]
            self._acc_bounds = _hull(
                *(
                    _prefix_bounds([t[0] for t in row], [t[1] for t in row], (int(self._alpha[c]),) * 2)
                    for c, row in enumerate(terms)
                )
            )
            self._mlp = None
            mlp_cycles = 0
        else:
            if beta is not None:
                raise ValueError("beta is only used in mode 'th'")
            w1, b1, hidden_shift, hidden_max, w2 = _check_mlp(
                "mode 'th+'",
                w1=w1,
                b1=b1,
                hidden_shift=hidden_shift,
                hidden_max=hidden_max,
                w2=w2,
                inputs=ns * C,
                outputs=C,
            )
            check_int("parallel", parallel, high=w1.shape[0])
            self._w1, self._b1, self._hidden_shift, self._hidden_max, self._w2 = w1, b1, hidden_shift, hidden_max, w2
            self._mlp = _MlpPlan(
                stats_channels=C,
                n_stats=ns,
                feature_shape=self._feature_shape,
                feature_bounds=self._feature_bounds,
                w1=w1,
                b1=b1,
                hidden_shift=hidden_shift,
                hidden_max=hidden_max,
                w2=w2,
                parallel=self._parallel,
            )
            pairs = zip(self._alpha, self._mlp.out_bounds, strict=True)
            self._acc_bounds = _hull(*(_iadd((int(a),) * 2, o) for a, o in pairs))
            mlp_cycles = self._mlp.cycles + 1
        # start cycle, the channels, then (th+) the MLP and the threshold write after its last output
        self._eval_cycles = 1 + C * len(self._program) + mlp_cycles

        members = {
            "i": In(stream.Signature(channel_word(self._in_shape, self._simd))),
            "o": Out(stream.Signature(channel_word(unsigned(1), self._simd))),
        }
        if self._emit_stats:
            members["stats"] = Out(stream.Signature(data.ArrayLayout(self._feature_shape, ns)))
        super().__init__(members)

    #: Cycles from a multiplication's issue (operands registered) to its commit (product used).
    MUL_LATENCY = 2

    def _feature_program(self) -> list[list[str]]:
        """Per-channel steps of the evaluator: a list scheduler over the one shared multiplier.

        Step 0 latches the channel's sums. A multiplication is issued (operands into registers)
        in one step, its product registered in the next, and committed ``MUL_LATENCY`` steps
        after the issue; at most one issue per step, in this order: ``sq`` (``q = S1 * S1``),
        the ``beta . F`` multiply-accumulates (``macJ``, ``"th"`` only) of the statistics other
        than ``skew``, ``sk`` (``p = N**2*S3 + S1 * r``, the skew polynomial in Horner form,
        after ``r = 2q - 3N*S2``), then ``skew``'s. The last step (``w``) writes the threshold
        (``"th"``) or the features (``"th+"``) once every value it needs is committed.
        """
        names, th = self._stats, self._mode == "th"
        steps: dict[int, list[str]] = {0: ["load"]}
        ready = {"s": 1}  # the step from which each value can be read
        ops = [("sq", ["s"], "q")] if {"var", "skew"} & set(names) else []
        if th:
            ops += [(f"mac{j}", ["s", "q"] if n == "var" else ["s"], "acc") for j, n in enumerate(names) if n != "skew"]
        if "skew" in names:
            ops.append(("sk", ["s", "r"], "p"))
            if th:
                ops.append((f"mac{names.index('skew')}", ["p"], "acc"))
        t = 1
        for name, needs, dest in ops:
            if name == "sk":  # r, without the multiplier, as soon as q is there
                steps.setdefault(ready["q"], []).append("r")
                ready["r"] = ready["q"] + 1
            t = max([t] + [ready[n] for n in needs])
            steps.setdefault(t, []).append(f"issue:{name}")
            steps.setdefault(t + self.MUL_LATENCY, []).append(f"commit:{name}")
            ready[dest] = t + self.MUL_LATENCY + 1
            t += 1
        last = max(ready.values())
        steps.setdefault(last, []).append("w")
        return [steps.get(k, []) for k in range(last + 1)]

    # -- parameters and derived quantities

    @property
    def in_shape(self) -> Shape:
        return self._in_shape

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def simd(self) -> int:
        return self._simd

    @property
    def height(self) -> int:
        return self._height

    @property
    def width(self) -> int:
        return self._width

    @property
    def statistics(self) -> tuple[str, ...]:
        """The ``stats`` names (the member ``stats`` is the stream)."""
        return self._stats

    @property
    def shifts(self) -> tuple[int, ...]:
        return self._shifts

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def emit_stats(self) -> bool:
        return self._emit_stats

    @property
    def parallel(self) -> int:
        return self._parallel

    @property
    def external_memories(self) -> bool:
        return self._external

    @property
    def feature_shape(self) -> Shape:
        """Element shape of the features (covers every statistic's :func:`feature_bounds`)."""
        return self._feature_shape

    @property
    def feature_bounds(self) -> list[tuple[int, int]]:
        return list(self._feature_bounds)

    @property
    def threshold_bounds(self) -> tuple[int, int]:
        """``(low, high)`` the thresholds are clamped to: the input minimum and maximum + 1."""
        return self._low, self._high

    @property
    def threshold_shape(self) -> Shape:
        return self._threshold_shape

    @property
    def sum_shapes(self) -> dict[int, Shape]:
        """Accumulator shape of each sum ``S_k`` kept (``k`` in 1, 2, 3)."""
        return dict(self._sum_shapes)

    @property
    def steps_per_channel(self) -> int:
        """Evaluator cycles per channel of the feature (and, for ``"th"``, threshold) phase."""
        return len(self._program)

    @property
    def frame_words(self) -> int:
        """Words per frame: ``H * W * C / simd``."""
        return self._frame_words

    @property
    def eval_cycles(self) -> int:
        """Exact cycles the evaluator is busy per frame (no back-pressure on ``stats``)."""
        return self._eval_cycles

    @property
    def cycles_per_frame(self) -> int:
        """Steady-state cycles per frame at full rate: ``max(frame_words, eval_cycles + EVAL_GAP)``."""
        return max(self._frame_words, self._eval_cycles + self.EVAL_GAP)

    @property
    def initiation_interval(self) -> int | Fraction:
        """Cycles per output word at full rate, over a frame: 1 unless the evaluator is the bottleneck."""
        ii = Fraction(self.cycles_per_frame, self._frame_words)
        return int(ii) if ii.denominator == 1 else ii

    @property
    def latency(self) -> int:
        """Cycles from an idle unit taking a frame's first word to emitting its first word, at full rate."""
        return self._frame_words + self._eval_cycles + 5

    @property
    def memory_bits(self) -> int:
        """Bits of RAM and ROM: frame buffer, sums, thresholds, constants (and the MLP's)."""
        S, G, F, C = self._simd, self._groups, self._frame_words, self._channels
        lane = sum(s.width for s in self._sum_shapes.values())
        bits = 2 * F * S * self._in_shape.width + 2 * G * S * lane + 2 * G * S * self._threshold_shape.width
        bits += C * _shape_of(_array_bounds(self._alpha)).width
        if self._mode == "th":
            bits += C * len(self._stats) * _shape_of(_array_bounds(self._beta)).width
        else:
            bits += self._mlp.memory_bits
        return bits

    @property
    def multipliers(self) -> int:
        """Variable-by-variable multipliers (constant products by N, 3N, N**2 are adders).

        ``simd`` squares and/or cubes for the sums, the evaluator's shared one, and ``parallel``
        for the INSTA-Th+ MLP.
        """
        per_lane = (2 in self._sums or 3 in self._sums) + (3 in self._sums)
        shared = any(action.startswith("issue:") for step in self._program for action in step)
        return self._simd * per_lane + shared + (self._parallel if self._mode == "th+" else 0)

    # -- the numpy model of this unit

    def reference(self, frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(bits, thresholds, features)`` of one ``C x H x W`` frame, from the module's numpy functions."""
        pixels = self._height * self._width
        features = statistic_features(moment_sums(frame), pixels=pixels, stats=self._stats, shifts=self._shifts)
        if self._mode == "th":
            t = th_thresholds(
                features, alpha=self._alpha, beta=self._beta, out_shift=self._out_shift, low=self._low, high=self._high
            )
        else:
            t = thplus_thresholds(
                features,
                w1=self._w1,
                b1=self._b1,
                hidden_shift=self._hidden_shift,
                hidden_max=self._hidden_max,
                w2=self._w2,
                alpha=self._alpha,
                out_shift=self._out_shift,
                low=self._low,
                high=self._high,
            )
        return binarise(frame, t), t, features

    def elaborate(self, platform):
        m = Module()
        C, S, G, F = self._channels, self._simd, self._groups, self._frame_words
        pixels = self._height * self._width
        ns = len(self._stats)
        external = self._external
        mlp = _SeMlp(self._mlp, external_memories=external) if self._mode == "th+" else None

        # ---- memories
        fw, (fr,) = _ram(m, "frame", channel_word(self._in_shape, S), 2 * F, external=external)
        lane_layout = data.StructLayout({f"s{k}": self._sum_shapes[k] for k in self._sums})
        # read ports: the accumulation's read-modify-write (transparent), the evaluator's
        sw, (sa, se) = _ram(
            m, "sums", data.ArrayLayout(lane_layout, S), 2 * G, external=external, read_ports=("transparent", "sync")
        )
        tw, (tr,) = _ram(
            m, "thresholds", channel_word(self._threshold_shape, S), 2 * G, external=external, granular=True
        )
        alpha_shape = _shape_of(_array_bounds(self._alpha))
        m.submodules.alpha = alpha_rom = _rom(C, alpha_shape, [int(a) for a in self._alpha])
        ar = alpha_rom.read_port()

        # bank state: written = the writer has taken the whole frame; full = its sums are complete too
        # (both until it is evaluated); ready = evaluated, not yet fully read
        written, full, ready = Signal(2, name="written"), Signal(2, name="full"), Signal(2, name="ready")
        written_set, full_set, full_clr, ready_set, ready_clr = (
            Signal(2, name=name) for name in ("written_set", "full_set", "full_clr", "ready_set", "ready_clr")
        )
        m.d.sync += [
            written.eq((written & ~full_clr) | written_set),
            full.eq((full & ~full_clr) | full_set),
            ready.eq((ready & ~ready_clr) | ready_set),
        ]
        # banks of the writer, reader and evaluator
        wb, rb, eb = Signal(name="wb"), Signal(name="rb"), Signal(name="eb")
        wpos, rpos = _counter(F, name="wpos"), _counter(F, name="rpos")
        wgrp, rgrp = _counter(G, name="wgrp"), _counter(G, name="rgrp")

        # ---- writer: frame buffer and the sums pipeline
        w_written, w_ready = written.bit_select(wb, 1), ready.bit_select(wb, 1)
        m.d.comb += self.i.ready.eq((~w_written & ~w_ready) | (w_ready & (rb == wb) & (rpos > wpos)))
        accept = self.i.valid & self.i.ready
        m.d.comb += [fw.addr.eq(Mux(wb, F, 0) + wpos), fw.data.eq(self.i.payload), fw.en.eq(accept)]
        with m.If(accept):
            w_last = wpos == F - 1
            m.d.sync += [wpos.eq(Mux(w_last, 0, wpos + 1)), wb.eq(wb ^ w_last)]
            m.d.sync += wgrp.eq(Mux(wgrp == G - 1, 0, wgrp + 1))
        m.d.comb += written_set.eq(_bank_bits(wb, accept & (wpos == F - 1)))

        def stage(name):
            return {
                "v": Signal(name=f"{name}_valid"),
                "g": _counter(G, name=f"{name}_group"),
                "b": Signal(name=f"{name}_bank"),
                "first": Signal(name=f"{name}_first"),
                "last": Signal(name=f"{name}_last"),
                "x": Signal(channel_word(self._in_shape, S), name=f"{name}_x"),
            }

        p1, p2, p3 = stage("p1"), stage("p2"), stage("p3")
        m.d.sync += [
            p1["v"].eq(accept),
            p1["g"].eq(wgrp),
            p1["b"].eq(wb),
            p1["first"].eq(wpos < G),
            p1["last"].eq(wpos == F - 1),
            p1["x"].eq(self.i.payload),
        ]
        for prev, cur in ((p1, p2), (p2, p3)):
            m.d.sync += [cur[key].eq(prev[key]) for key in cur]
        sq2 = Signal(data.ArrayLayout(self._square_shape, S))
        sq3 = Signal(data.ArrayLayout(self._square_shape, S))
        cu3 = Signal(data.ArrayLayout(self._cube_shape, S))
        for lane in range(S):
            if 2 in self._sums or 3 in self._sums:
                m.d.sync += [sq2[lane].eq(p1["x"][lane] * p1["x"][lane]), sq3[lane].eq(sq2[lane])]
            if 3 in self._sums:
                m.d.sync += cu3[lane].eq(sq2[lane] * p2["x"][lane])
        m.d.comb += sa.addr.eq(Mux(p2["b"], G, 0) + p2["g"])
        powers = {1: p3["x"], 2: sq3, 3: cu3}
        m.d.comb += [sw.addr.eq(Mux(p3["b"], G, 0) + p3["g"]), sw.en.eq(p3["v"])]
        new_sums = []  # whole signals, then one Cat: see _bank_bits on Icarus and partial assignments
        for lane in range(S):
            for k in self._sums:
                total = Signal(self._sum_shapes[k], name=f"new_s{k}_{lane}")
                m.d.comb += total.eq(Mux(p3["first"], 0, sa.data[lane][f"s{k}"]) + powers[k][lane])
                new_sums.append(total)
        m.d.comb += Value.cast(sw.data).eq(Cat(*new_sums))
        m.d.comb += full_set.eq(_bank_bits(p3["b"], p3["v"] & p3["last"]))

        # ---- reader: frame buffer and thresholds fetched together, compared into the output register
        advance = ~self.o.valid | self.o.ready
        issue = advance & ready.bit_select(rb, 1)
        m.d.comb += [fr.addr.eq(Mux(rb, F, 0) + rpos), fr.en.eq(advance)]
        m.d.comb += [tr.addr.eq(Mux(rb, G, 0) + rgrp), tr.en.eq(advance)]
        fetched = Signal()
        with m.If(advance):
            m.d.sync += [fetched.eq(issue), self.o.valid.eq(fetched)]
            m.d.sync += [self.o.payload[lane].eq(fr.data[lane] >= tr.data[lane]) for lane in range(S)]
        with m.If(issue):
            r_last = rpos == F - 1
            m.d.sync += [rpos.eq(Mux(r_last, 0, rpos + 1)), rb.eq(rb ^ r_last)]
            m.d.sync += rgrp.eq(Mux(rgrp == G - 1, 0, rgrp + 1))
        m.d.comb += ready_clr.eq(_bank_bits(rb, issue & (rpos == F - 1)))

        # ---- evaluator, feature phase: one channel every len(program) cycles
        program = self._program
        K = len(program)
        step, ec = _counter(K, name="step"), _counter(C, name="ec")
        eg, el = _counter(G, name="eg"), _counter(S, name="el")
        feat_phase = Signal()
        at_w = feat_phase & (step == K - 1)
        if self._emit_stats:
            stall = at_w & self.stats.valid & ~self.stats.ready
            with m.If(self.stats.ready):
                m.d.sync += self.stats.valid.eq(0)
        else:
            stall = Const(0)
        go = feat_phase & ~stall
        # ports read the current channel, or the next one in the write step (data one cycle later)
        rd_c = Mux(at_w, Mux(ec == C - 1, 0, ec + 1), ec)
        rd_g = Mux(at_w & (el == S - 1), Mux(eg == G - 1, 0, eg + 1), eg)
        m.d.comb += [se.addr.eq(Mux(eb, G, 0) + rd_g), se.en.eq(~stall)]
        lane_sums = se.data[el]
        with m.If(go):
            m.d.sync += step.eq(Mux(at_w, 0, step + 1))
        at = [go & (step == k) for k in range(K)]
        actions = {action: k for k, step_actions in enumerate(program) for action in step_actions}

        # the channel's sums, latched in step 0 (the ports hold its word from the previous write step)
        sums_c = {k: Signal(self._sum_shapes[k], name=f"s{k}") for k in self._sums}
        with m.If(at[0]):
            m.d.sync += [sums_c[k].eq(lane_sums[f"s{k}"]) for k in self._sums]
        q = Signal(shape_for(*self._q_bounds), name="q") if "commit:sq" in actions else None
        r = Signal(shape_for(*self._r_bounds), name="r") if "r" in actions else None
        sk_index = self._stats.index("skew") if "skew" in self._stats else None
        p_sk = Signal(shape_for(*self._polys[sk_index]), name="p_skew") if sk_index is not None else None
        fe = [Signal(self._feature_shape, name=f"feature_{name}") for name in self._stats]
        for j, name in enumerate(self._stats):
            poly = {
                "m1": lambda: sums_c[1],
                "m2": lambda: sums_c[2],
                "m3": lambda: sums_c[3],
                "var": lambda: pixels * sums_c[2] - q,
                "skew": lambda: p_sk,
            }[name]()
            m.d.comb += fe[j].eq(poly >> self._shifts[j])
        if r is not None:
            with m.If(at[actions["r"]]):
                m.d.sync += r.eq(2 * q - 3 * pixels * sums_c[2])

        # the shared multiplier: operands registered at the issue, product one step later
        if self._mode == "th":
            beta_shape = _shape_of(_array_bounds(self._beta))
            beta_words = [[int(b) for b in row] for row in self._beta]
            m.submodules.beta = beta_rom = _rom(C, data.ArrayLayout(beta_shape, ns), beta_words)
            br = beta_rom.read_port()
            m.d.comb += [br.addr.eq(rd_c), br.en.eq(~stall), ar.addr.eq(rd_c), ar.en.eq(~stall)]
            acc = Signal(shape_for(*self._acc_bounds), name="acc")
        operands = {}  # operation -> (a, a bounds, b, b bounds)
        s1_bounds = bounds(self._sum_shapes[1]) if 1 in self._sum_shapes else None
        if q is not None:
            operands["sq"] = (sums_c.get(1), s1_bounds, sums_c.get(1), s1_bounds)
        if p_sk is not None:
            operands["sk"] = (sums_c[1], s1_bounds, r, self._r_bounds)
        if self._mode == "th":
            for j in range(ns):
                operands[f"mac{j}"] = (br.data[j], _array_bounds(self._beta), fe[j], self._feature_bounds[j])
        if operands:
            mul_a = Signal(_shape_of(*(o[1] for o in operands.values())), name="mul_a")
            mul_b = Signal(_shape_of(*(o[3] for o in operands.values())), name="mul_b")
            product = Signal(_shape_of(*(_imul(o[1], o[3]) for o in operands.values())), name="product")
            order = list(operands)
            a_sel, b_sel = operands[order[0]][0], operands[order[0]][2]
            for name in order[1:]:
                issuing = step == actions[f"issue:{name}"]
                a_sel, b_sel = Mux(issuing, operands[name][0], a_sel), Mux(issuing, operands[name][2], b_sel)
            m.d.sync += [mul_a.eq(a_sel), mul_b.eq(b_sel), product.eq(mul_a * mul_b)]
        first_mac = min((actions[f"commit:mac{j}"] for j in range(ns)), default=None) if self._mode == "th" else None
        for name in operands:
            with m.If(at[actions[f"commit:{name}"]]):
                if name == "sq":
                    m.d.sync += q.eq(product)
                elif name == "sk":
                    m.d.sync += p_sk.eq(pixels * pixels * sums_c[3] + product)
                else:
                    first = actions[f"commit:{name}"] == first_mac
                    m.d.sync += acc.eq((ar.data if first else acc) + product)
        # write step
        write = at_w & ~stall
        last_channel = write & (ec == C - 1)
        with m.If(write):
            m.d.sync += [el.eq(Mux(el == S - 1, 0, el + 1)), ec.eq(ec + 1)]
            with m.If(el == S - 1):
                m.d.sync += eg.eq(eg + 1)
            if self._emit_stats:
                m.d.sync += self.stats.valid.eq(1)
                m.d.sync += [self.stats.payload[j].eq(fe[j]) for j in range(ns)]
        if self._mode == "th":
            threshold = hdl_clamp(hdl_ceil_shift(acc, self._out_shift), self._low, self._high)
            m.d.comb += [tw.addr.eq(Mux(eb, G, 0) + eg), tw.en.eq(Mux(write, Const(1, S) << el, 0))]
            m.d.comb += Value.cast(tw.data).eq(Cat(*[threshold] * S))
            done = last_channel  # the thresholds of bank eb are complete
        else:
            m.submodules.mlp = mlp
            m.d.comb += [mlp.feat_w_addr.eq(ec), mlp.feat_w_en.eq(write), mlp.start.eq(last_channel)]
            m.d.comb += [mlp.feat_w_data[j].eq(fe[j]) for j in range(ns)]
            # FC2 output o -> T_o = clamp(ceil_shift(alpha_o + out_o)), one cycle later (alpha ROM)
            m.d.comb += [ar.addr.eq(mlp.out_index), ar.en.eq(1)]
            d_valid, d_last = Signal(name="d_valid"), Signal(name="d_last")
            d_value = Signal(self._mlp.out_shape)
            m.d.sync += [d_valid.eq(mlp.out_valid), d_last.eq(mlp.out_last), d_value.eq(mlp.out_value)]
            tg, tl = _counter(G, name="tg"), _counter(S, name="tl")
            threshold = hdl_clamp(hdl_ceil_shift(ar.data + d_value, self._out_shift), self._low, self._high)
            m.d.comb += [tw.addr.eq(Mux(eb, G, 0) + tg), tw.en.eq(Mux(d_valid, Const(1, S) << tl, 0))]
            m.d.comb += Value.cast(tw.data).eq(Cat(*[threshold] * S))
            with m.If(d_valid):
                m.d.sync += tl.eq(Mux(tl == S - 1, 0, tl + 1))
                with m.If(tl == S - 1):
                    m.d.sync += tg.eq(Mux(tg == G - 1, 0, tg + 1))
            done = d_valid & d_last

        gap = _counter(self.EVAL_GAP + 1)
        with m.FSM(name="evaluator") as fsm:
            with m.State("IDLE"):
                with m.If(full.bit_select(eb, 1)):  # channel 0's ports are read in this cycle
                    m.next = "FEATURES"
            with m.State("FEATURES"):
                with m.If(last_channel):
                    m.d.sync += [step.eq(0), ec.eq(0), eg.eq(0), el.eq(0)]
                    m.next = "REST" if self._mode == "th" else "MLP"
            if self._mode == "th+":
                with m.State("MLP"):
                    with m.If(done):
                        m.next = "REST"
            with m.State("REST"):
                m.d.sync += gap.eq(gap + 1)
                with m.If(gap == self.EVAL_GAP - 1):
                    m.d.sync += gap.eq(0)
                    m.next = "IDLE"
        m.d.comb += feat_phase.eq(fsm.ongoing("FEATURES"))
        m.d.comb += [ready_set.eq(_bank_bits(eb, done)), full_clr.eq(_bank_bits(eb, done))]
        with m.If(done):
            m.d.sync += eb.eq(~eb)
        return m


class InstaPReLU(wiring.Component):
    """INSTA-PReLU: RPReLU whose shift (and optionally slope) comes per image from the block input's statistics.

    Per frame: the ``stats_channels`` feature words of the block input arrive on ``stats``
    (the ``stats`` output of a :class:`MomentsThreshold`, or the words of
    :func:`statistic_features` transposed); the SE MLP (:func:`se_mlp`, ``parallel``
    multiply-accumulates per cycle) turns them into ``gamma_eff`` (and ``slope_eff``), written
    into one half of a double-buffered parameter memory; then the frame's channel words pass
    through the per-element RPReLU datapath (:func:`~.affine.rprelu`) with those parameters.
    The MLP of frame n+1 runs while frame n streams through.

    Timing (full rate, no back-pressure): the MLP takes ``mlp_cycles = ceil(hidden / parallel)
    * (len(stats) * stats_channels + outputs) + 5`` cycles (``outputs`` = C, or 2C with
    ``instance_slope``) from its start to its last parameter write; the statistics memory is
    single-buffered, so the next frame's statistics are taken after that, and a frame takes
    ``cycles_per_frame = max(frame_words, stats_channels + mlp_cycles)`` cycles in steady state
    and ``initiation_interval`` is 1 when ``stats_channels + mlp_cycles <= frame_words``. The
    datapath is a parameter fetch and :func:`~.affine.rprelu_datapath` (``1 + RPRELU_LATENCY``
    registers); an idle unit whose data is waiting emits the first word ``latency =
    stats_channels + mlp_cycles + 1 + RPRELU_LATENCY`` cycles after taking the first statistics word.

    Parameters
    ----------
    in_shape : shape
        Integer element shape of ``x`` (the block output), up to 32 bits.
    channels, simd, height, width : int
        Geometry ``C x H x W`` of ``x``; ``simd`` (dividing C) channels per word.
    stats_channels : int
        Channels of the block input (one ``stats`` word each per frame).
    stats : sequence of str
        The statistics in each ``stats`` word, distinct names from :data:`STATISTICS`.
    feature_shape : shape
        Element shape of the ``stats`` words (a :class:`MomentsThreshold`'s ``feature_shape``).
    w1, b1, hidden_shift, hidden_max, w2 : arrays and ints
        The SE branch (:func:`se_mlp`): ``w1`` is ``(hidden, len(stats) * stats_channels)``,
        ``w2`` is ``(C, hidden)``, or ``(2C, hidden)`` with ``instance_slope``.
    delta_shift : int
        Rounding shift of the MLP outputs before they are added to ``gamma`` / ``slope``.
    gamma, slope, zeta : arrays of C ints
        RPReLU constants (see :func:`~.affine.rprelu`).
    slope_shift, out_shift, low, high : int
        RPReLU scale, output rounding shift and output clamp; the output elements have shape
        ``shape_for(low, high)``.
    instance_slope : bool
        The MLP also corrects the slope.
    parallel : int
        Multiply-accumulates per cycle of the MLP, 1 to ``hidden``.
    external_memories : bool
        Make every read/write memory (the gamma / slope banks, the MLP's features) a
        :class:`~.ram.Ram` instance of the Verilog module, for Verilog output; ``False``
        (default): inline, for Amaranth's simulator. The constant ROMs stay inline.

    Members
    -------
    i : In(stream.Signature(channel_word(in_shape, simd)))
    stats : In(stream.Signature(data.ArrayLayout(feature_shape, len(stats))))
    o : Out(stream.Signature(channel_word(shape_for(low, high), simd)))
    """

    def __init__(
        self,
        *,
        in_shape,
        channels: int,
        simd: int,
        height: int,
        width: int,
        stats_channels: int,
        stats: Sequence[str],
        feature_shape,
        w1,
        b1,
        hidden_shift: int,
        hidden_max: int,
        w2,
        delta_shift: int,
        gamma,
        slope,
        zeta,
        slope_shift: int,
        out_shift: int,
        low: int,
        high: int,
        instance_slope: bool = False,
        parallel: int = 1,
        external_memories: bool = False,
    ) -> None:
        self._in_shape = check_shape("in_shape", in_shape, max_width=32)
        self._channels = check_int("channels", channels)
        self._simd = check_divides("simd", check_int("simd", simd), "channels", self._channels)
        self._height = check_int("height", height)
        self._width = check_int("width", width)
        self._stats_channels = check_int("stats_channels", stats_channels)
        self._stats = _check_stats(stats)
        self._feature_shape = check_shape("feature_shape", feature_shape, max_width=256)
        self._instance_slope = _check_flag("instance_slope", instance_slope)
        self._external = _check_flag("external_memories", external_memories)
        C, ns = self._channels, len(self._stats)
        outputs = C * (2 if self._instance_slope else 1)
        self._w1, self._b1, self._hidden_shift, self._hidden_max, self._w2 = _check_mlp(
            "InstaPReLU",
            w1=w1,
            b1=b1,
            hidden_shift=hidden_shift,
            hidden_max=hidden_max,
            w2=w2,
            inputs=ns * self._stats_channels,
            outputs=outputs,
        )
        self._parallel = check_int("parallel", parallel, high=self._w1.shape[0])
        self._delta_shift = check_int("delta_shift", delta_shift, low=0, high=_MAX_SHIFT)
        self._gamma = check_int_array("gamma", gamma, shape=(C,))
        self._slope = check_int_array("slope", slope, shape=(C,))
        self._zeta = check_int_array("zeta", zeta, shape=(C,))
        self._slope_shift = check_int("slope_shift", slope_shift, low=0, high=32)
        self._out_shift = check_int("out_shift", out_shift, low=0, high=_MAX_SHIFT)
        self._low = check_int("low", low, low=None)
        self._high = check_int("high", high, low=None)
        if self._low > self._high:
            raise ValueError(f"low ({self._low}) must be <= high ({self._high})")
        self._out_shape = shape_for(self._low, self._high)
        if self._out_shape.width > 64:
            raise ValueError(f"[low, high] must fit in 64 bits, not [{self._low}, {self._high}]")
        self._groups = C // self._simd
        self._frame_words = self._height * self._width * self._groups

        self._mlp = _MlpPlan(
            stats_channels=self._stats_channels,
            n_stats=ns,
            feature_shape=self._feature_shape,
            feature_bounds=[bounds(self._feature_shape)] * ns,
            w1=self._w1,
            b1=self._b1,
            hidden_shift=self._hidden_shift,
            hidden_max=self._hidden_max,
            w2=self._w2,
            parallel=self._parallel,
        )
        # widths of the per-element datapath
        ds = self._delta_shift
        deltas = [(round_shift(lo, ds), round_shift(hi, ds)) for lo, hi in self._mlp.out_bounds]
        self._base = np.concatenate([self._gamma, self._slope]) if self._instance_slope else self._gamma
        eff = [_iadd((int(b),) * 2, d) for b, d in zip(self._base, deltas, strict=True)]
        self._gamma_bounds = _hull(*eff[:C])
        self._slope_bounds = _hull(*eff[C:]) if self._instance_slope else _array_bounds(self._slope)
        self._mlp_cycles = self._mlp.cycles + 2
        super().__init__(
            {
                "i": In(stream.Signature(channel_word(self._in_shape, self._simd))),
                "stats": In(stream.Signature(data.ArrayLayout(self._feature_shape, ns))),
                "o": Out(stream.Signature(channel_word(self._out_shape, self._simd))),
            }
        )

    @property
    def in_shape(self) -> Shape:
        return self._in_shape

    @property
    def out_shape(self) -> Shape:
        """Element shape of the output: ``shape_for(low, high)``."""
        return self._out_shape

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def simd(self) -> int:
        return self._simd

    @property
    def stats_channels(self) -> int:
        return self._stats_channels

    @property
    def statistics(self) -> tuple[str, ...]:
        """The ``stats`` names (the member ``stats`` is the stream)."""
        return self._stats

    @property
    def instance_slope(self) -> bool:
        return self._instance_slope

    @property
    def parallel(self) -> int:
        return self._parallel

    @property
    def external_memories(self) -> bool:
        return self._external

    @property
    def frame_words(self) -> int:
        """Words per frame: ``H * W * C / simd``."""
        return self._frame_words

    @property
    def mlp_cycles(self) -> int:
        """Exact cycles from the MLP's start to its last parameter write, per frame."""
        return self._mlp_cycles

    @property
    def cycles_per_frame(self) -> int:
        """Steady-state cycles per frame at full rate: ``max(frame_words, stats_channels + mlp_cycles)``."""
        return max(self._frame_words, self._stats_channels + self._mlp_cycles)

    @property
    def initiation_interval(self) -> int | Fraction:
        """Cycles per output word at full rate, over a frame: 1 unless the MLP is the bottleneck."""
        ii = Fraction(self.cycles_per_frame, self._frame_words)
        return int(ii) if ii.denominator == 1 else ii

    @property
    def latency(self) -> int:
        """Cycles from an idle unit taking a frame's first stats word to its first output word (data waiting)."""
        return self._stats_channels + self._mlp_cycles + 1 + RPRELU_LATENCY

    @property
    def memory_bits(self) -> int:
        """Bits of RAM and ROM: parameter banks, constants and the MLP's features and weights."""
        S, G, C = self._simd, self._groups, self._channels
        gamma_w = _shape_of(self._gamma_bounds).width
        slope_w = _shape_of(self._slope_bounds).width
        bits = 2 * G * S * gamma_w + C * _shape_of(_array_bounds(self._zeta)).width
        bits += 2 * G * S * slope_w if self._instance_slope else C * slope_w
        bits += len(self._base) * _shape_of(_array_bounds(self._base)).width
        return bits + self._mlp.memory_bits

    @property
    def multipliers(self) -> int:
        """``simd`` (negative-slope products) + ``parallel`` (the MLP)."""
        return self._simd + self._parallel

    def reference(self, frame, features) -> np.ndarray:
        """:func:`insta_prelu` of one ``C x H x W`` frame with these constants."""
        return insta_prelu(
            frame,
            features,
            w1=self._w1,
            b1=self._b1,
            hidden_shift=self._hidden_shift,
            hidden_max=self._hidden_max,
            w2=self._w2,
            delta_shift=self._delta_shift,
            gamma=self._gamma,
            slope=self._slope,
            zeta=self._zeta,
            slope_shift=self._slope_shift,
            out_shift=self._out_shift,
            low=self._low,
            high=self._high,
            instance_slope=self._instance_slope,
        )

    def elaborate(self, platform):
        m = Module()
        S, G, F, cs = self._simd, self._groups, self._frame_words, self._stats_channels
        external = self._external
        m.submodules.mlp = mlp = _SeMlp(self._mlp, external_memories=external)
        gamma_shape = _shape_of(self._gamma_bounds)
        slope_shape = _shape_of(self._slope_bounds)
        gw, (gr,) = _ram(m, "gamma", channel_word(gamma_shape, S), 2 * G, external=external, granular=True)
        zeta_words = [[int(z) for z in self._zeta[g * S : (g + 1) * S]] for g in range(G)]
        m.submodules.zeta = zrom = _rom(G, channel_word(_shape_of(_array_bounds(self._zeta)), S), zeta_words)
        zr = zrom.read_port()
        if self._instance_slope:
            sw, (sr,) = _ram(m, "slope", channel_word(slope_shape, S), 2 * G, external=external, granular=True)
        else:
            slope_words = [[int(s) for s in self._slope[g * S : (g + 1) * S]] for g in range(G)]
            m.submodules.slope = srom = _rom(G, channel_word(slope_shape, S), slope_words)
            sr = srom.read_port()
        base_shape = _shape_of(_array_bounds(self._base))
        m.submodules.base = base_rom = _rom(len(self._base), base_shape, [int(b) for b in self._base])
        base_r = base_rom.read_port()

        ready, ready_set, ready_clr = Signal(2, name="ready"), Signal(2, name="ready_set"), Signal(2, name="ready_clr")
        m.d.sync += ready.eq((ready & ~ready_clr) | ready_set)
        mb, db = Signal(name="mb"), Signal(name="db")  # banks of the MLP and of the datapath

        # ---- statistics in: the MLP's feature memory
        recv, feat_full = _counter(cs, name="recv"), Signal(name="feat_full")
        m.d.comb += self.stats.ready.eq(~feat_full)
        take = self.stats.valid & self.stats.ready
        m.d.comb += [mlp.feat_w_addr.eq(recv), mlp.feat_w_data.eq(self.stats.payload), mlp.feat_w_en.eq(take)]
        with m.If(take):
            m.d.sync += recv.eq(Mux(recv == cs - 1, 0, recv + 1))
            with m.If(recv == cs - 1):
                m.d.sync += feat_full.eq(1)

        # ---- MLP and parameter writes: output o -> base_o + round_shift(delta_o), one cycle later (base ROM)
        m.d.comb += [base_r.addr.eq(mlp.out_index), base_r.en.eq(1)]
        d_valid, d_last = Signal(name="d_valid"), Signal(name="d_last")
        d_value = Signal(self._mlp.out_shape)
        m.d.sync += [d_valid.eq(mlp.out_valid), d_last.eq(mlp.out_last), d_value.eq(mlp.out_value)]
        done = d_valid & d_last
        tg, tl, part = _counter(G, name="tg"), _counter(S, name="tl"), Signal(name="part")
        value = base_r.data + hdl_round_shift(d_value, self._delta_shift)
        lanes = Mux(d_valid, Const(1, S) << tl, 0)
        m.d.comb += [gw.addr.eq(Mux(mb, G, 0) + tg), gw.en.eq(Mux(part, 0, lanes))]
        m.d.comb += Value.cast(gw.data).eq(Cat(*[value[: gamma_shape.width]] * S))
        if self._instance_slope:
            m.d.comb += [sw.addr.eq(Mux(mb, G, 0) + tg), sw.en.eq(Mux(part, lanes, 0))]
            m.d.comb += Value.cast(sw.data).eq(Cat(*[value[: slope_shape.width]] * S))
        with m.If(d_valid):
            m.d.sync += tl.eq(Mux(tl == S - 1, 0, tl + 1))
            with m.If(tl == S - 1):
                m.d.sync += tg.eq(Mux(tg == G - 1, 0, tg + 1))
                with m.If(tg == G - 1):
                    m.d.sync += part.eq(~part)
        with m.FSM(name="control") as fsm:
            with m.State("IDLE"):
                with m.If(feat_full & ~ready.bit_select(mb, 1)):
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(done):
                    m.next = "IDLE"
        m.d.comb += mlp.start.eq(fsm.ongoing("IDLE") & feat_full & ~ready.bit_select(mb, 1))
        m.d.comb += ready_set.eq(_bank_bits(mb, done))
        with m.If(done):
            m.d.sync += [mb.eq(~mb), feat_full.eq(0), part.eq(0)]

        # ---- datapath: accept (parameters fetched) -> u, v + zeta -> round and clamp
        advance = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(advance & ready.bit_select(db, 1))
        accept = self.i.valid & self.i.ready
        dpos, dgrp = _counter(F, name="dpos"), _counter(G, name="dgrp")
        m.d.comb += [gr.addr.eq(Mux(db, G, 0) + dgrp), gr.en.eq(advance), zr.addr.eq(dgrp), zr.en.eq(advance)]
        if self._instance_slope:
            m.d.comb += [sr.addr.eq(Mux(db, G, 0) + dgrp), sr.en.eq(advance)]
        else:
            m.d.comb += [sr.addr.eq(dgrp), sr.en.eq(advance)]
        with m.If(accept):
            d_end = dpos == F - 1
            m.d.sync += [dpos.eq(Mux(d_end, 0, dpos + 1)), dgrp.eq(Mux(dgrp == G - 1, 0, dgrp + 1)), db.eq(db ^ d_end)]
        m.d.comb += ready_clr.eq(_bank_bits(db, accept & (dpos == F - 1)))
        # stage A: the word and its channels' parameters; then hw.affine's three-stage RPReLU datapath
        valid = [Signal(name=f"valid{k}") for k in range(RPRELU_LATENCY + 1)]
        xa = Signal(channel_word(self._in_shape, S))
        with m.If(advance):
            m.d.sync += [valid[0].eq(accept), xa.eq(self.i.payload)]
            m.d.sync += [valid[k + 1].eq(valid[k]) for k in range(RPRELU_LATENCY)]
        m.d.comb += self.o.valid.eq(valid[-1])
        outs = []
        for lane in range(S):
            out = rprelu_datapath(
                m,
                xa[lane],
                gr.data[lane],
                sr.data[lane],
                zr.data[lane],
                slope_shift=self._slope_shift,
                out_shift=self._out_shift,
                low=self._low,
                high=self._high,
                enable=advance,
                x_bounds=bounds(self._in_shape),
                gamma_bounds=self._gamma_bounds,
                slope_bounds=self._slope_bounds,
                zeta_bounds=_array_bounds(self._zeta),
                name=f"rprelu{lane}",
            )
            outs.append(out)
        m.d.comb += Value.cast(self.o.payload).eq(Cat(*outs))
        return m
