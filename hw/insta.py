"""INSTA-BNN's instance-aware integer semantics: the numpy models of the INSTA units.

The functions below are THE integer semantics (the compiler's reference executor calls them);
:class:`~.moments.MomentsThreshold` and :class:`~.insta_prelu.InstaPReLU` implement them bit for
bit. For one frame (image) ``x`` of shape ``C x H x W`` with ``N = H * W`` pixels:

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

import numpy as np

from ._checks import check_int, check_int_array, check_shape
from .affine import rprelu
from .fixed import bounds, ceil_shift, clamp, int_array, round_shift
from .intervals import array_bounds, iadd, imul, iscale, ishift, isquare

__all__ = [
    "MAX_SHIFT",
    "MODES",
    "STATISTICS",
    "binarise",
    "check_shifts",
    "check_stats",
    "feature_bounds",
    "insta_prelu",
    "moment_sums",
    "polynomial_bounds",
    "se_mlp",
    "statistic_features",
    "sum_bounds",
    "sums_needed",
    "th_thresholds",
    "thplus_thresholds",
]

#: Statistic names, as in ``quant.layers.STATISTICS``.
STATISTICS = ("m1", "m2", "m3", "var", "skew")
#: Threshold modes of :class:`~.moments.MomentsThreshold`.
MODES = ("th", "th+")
#: Largest shift accepted anywhere (features of big frames are wide).
MAX_SHIFT = 256


def check_stats(stats) -> tuple[str, ...]:
    """``stats`` as a tuple of distinct names from :data:`STATISTICS` (the units' ``stats`` parameter)."""
    if isinstance(stats, str) or not isinstance(stats, Sequence):
        raise TypeError(f"stats must be a sequence of statistic names, not {stats!r}")
    stats = tuple(stats)
    if not stats or any(s not in STATISTICS for s in stats) or len(set(stats)) != len(stats):
        raise ValueError(f"stats must be distinct names from {STATISTICS}, not {stats!r}")
    return stats


def check_shifts(name: str, shifts, count: int) -> tuple[int, ...]:
    """``shifts`` as a tuple of ``count`` ints in ``[0, MAX_SHIFT]`` (one per statistic)."""
    if isinstance(shifts, (str, bytes)) or not isinstance(shifts, (Sequence, np.ndarray)):
        raise TypeError(f"{name} must be a sequence of integers, not {shifts!r}")
    if len(shifts) != count:
        raise ValueError(f"{name} must have one entry per statistic ({count}), not {len(shifts)}: {shifts!r}")
    return tuple(check_int(f"{name}[{j}]", s, low=0, high=MAX_SHIFT) for j, s in enumerate(shifts))


def _objects(values) -> np.ndarray:
    """``values`` as an object array of Python ints (exact arithmetic at any width)."""
    array = np.asarray(values)
    return np.vectorize(int, otypes=[object])(array) if array.size else array.astype(object)


def _as_ints(values) -> np.ndarray:
    """Exact result as int64 when it fits comfortably, else Python ints."""
    low, high = array_bounds(values) if np.asarray(values).size else (0, 0)
    return int_array(values, low, high)


def sums_needed(stats: Sequence[str]) -> tuple[int, ...]:
    """The powers ``k`` (of 1, 2, 3) whose sums ``S_k`` the statistics ``stats`` need, ascending."""
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
    stats = check_stats(stats)
    shifts = check_shifts("shifts", shifts, len(stats))
    if len(sums) != 3:
        raise ValueError(f"sums must be (S1, S2, S3), not {len(sums)} arrays")
    features = np.stack([p >> s for p, s in zip(_polynomials(sums, pixels, stats), shifts, strict=True)])
    return _as_ints(features)


def sum_bounds(in_shape, pixels: int) -> dict[int, tuple[int, int]]:
    """``{k: (low, high)}`` of each sum ``S_k`` (``k`` in 1, 2, 3) of ``pixels`` elements of ``in_shape``."""
    x = bounds(check_shape("in_shape", in_shape, max_width=32))
    powers = {1: x, 2: isquare(x), 3: (x[0] ** 3, x[1] ** 3)}
    return {k: iscale(pixels, b) for k, b in powers.items()}


def polynomial_bounds(in_shape, pixels: int, stats) -> list[tuple[int, int]]:
    """``(low, high)`` of each statistic's polynomial ``P`` (before the shift of :func:`feature_bounds`)."""
    s = sum_bounds(in_shape, pixels)
    n = pixels
    forms = {
        "m1": lambda: s[1],
        "m2": lambda: s[2],
        "m3": lambda: s[3],
        "var": lambda: iadd(iscale(n, s[2]), iscale(-1, isquare(s[1]))),
        "skew": lambda: iadd(
            iscale(n * n, s[3]),
            iscale(-3 * n, imul(s[1], s[2])),
            iscale(2, (s[1][0] ** 3, s[1][1] ** 3)),
        ),
    }
    return [forms[name]() for name in stats]


def feature_bounds(in_shape, pixels: int, stats: Sequence[str], shifts: Sequence[int]) -> list[tuple[int, int]]:
    """``(low, high)`` of each feature of :func:`statistic_features` for frames of ``in_shape``.

    Interval arithmetic over the bounds of ``in_shape``, term by term of each polynomial
    (``var`` and ``skew`` as written in :func:`statistic_features`), then the floor shift.
    """
    pixels = check_int("pixels", pixels)
    stats = check_stats(stats)
    shifts = check_shifts("shifts", shifts, len(stats))
    return [ishift(b, s) for b, s in zip(polynomial_bounds(in_shape, pixels, stats), shifts, strict=True)]


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
    out_shift = check_int("out_shift", out_shift, low=0, high=MAX_SHIFT)
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
    hidden_shift = check_int("hidden_shift", hidden_shift, low=0, high=MAX_SHIFT)
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
    out_shift = check_int("out_shift", out_shift, low=0, high=MAX_SHIFT)
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
    delta_shift = check_int("delta_shift", delta_shift, low=0, high=MAX_SHIFT)
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
