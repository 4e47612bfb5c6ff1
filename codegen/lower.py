"""Lowering: a Brevitas model of the zoo to the integer IR (the only place codegen touches torch).

Every tensor the hardware carries is an integer times a power of two (``quant.layers``), so
most of the network lowers exactly; what training keeps in float is turned into fixed point
here, once:

* **Static thresholds** (RSign, ``none``, and batch norm + sign in CNV) are found by evaluating
  the model's own modules in float32 on every integer the input can take, so they are exact:
  the reference binarises exactly as the Brevitas model does in eval mode.
* **Batch norm, the residual add and RPReLU** of a block are computed on one fixed-point
  grid ``2**-F`` with ``F`` = the output's fraction bits + :data:`EXTRA_BITS`, then rounded
  once to the block output (ties and float32 rounding can differ on ~1e-5 of elements).
* **INSTA** thresholds and INSTA-PReLU: features are the exact moment polynomials shifted to
  :data:`FEATURE_BITS`; every constant is a rounded integer with at least 16 significant bits.

The IR is described in :mod:`.ir`; :mod:`.reference` executes it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from instabnn_hw.hw.fixed import round_shift, shape_for
from instabnn_hw.hw.insta import STATISTICS, feature_bounds
from instabnn_hw.hw.layouts import conv_weight_matrix
from instabnn_hw.quant.layers import (
    BinaryConv2d,
    FixedPointActivation,
    InstaPReLU,
    RPReLU,
    SignThreshold,
)
from instabnn_hw.quant.models import CNV, BinaryBlock, MobileNetV1, ResNet

from . import ir

__all__ = ["LoweringError", "EXTRA_BITS", "FEATURE_BITS", "lower", "random_model"]

#: Fraction bits beyond the block output's kept through batch norm, the add and RPReLU.
EXTRA_BITS = 16
#: Signed width of an INSTA feature (the moment polynomial is shifted right to fit).
FEATURE_BITS = 24
#: Significant bits of a rounded fixed-point constant (multipliers, weights of the SE branches).
CONSTANT_BITS = 20
#: Unsigned width of the hidden activations of an SE branch.
HIDDEN_BITS = 20
#: Signed width of CNV's batch-norm output where an INSTA threshold measures it (its comparison
#: resolution: the threshold falls between two consecutive dot products on this grid).
CNV_INSTA_BITS = 20
#: Fraction bits of an RPReLU slope.
SLOPE_BITS = 16

# degree in x and power of N of each statistic's polynomial P (stat = P * 2**(-degree*f) / N**power)
_DEGREE = {"m1": 1, "m2": 2, "m3": 3, "var": 2, "skew": 3}
_N_POWER = {"m1": 1, "m2": 1, "m3": 1, "var": 2, "skew": 3}


class LoweringError(ValueError):
    """A model the compiler cannot lower; the message is one line saying what and why."""


# ---------------------------------------------------------------------------------------------
# fixed-point helpers


def _f64(t) -> np.ndarray:
    return t.detach().double().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t, dtype=np.float64)


def _exponent(scale: float, what: str) -> int:
    """``f`` with ``scale == 2**-f`` exactly."""
    f = -math.log2(scale)
    if not math.isfinite(f) or f != round(f):
        raise LoweringError(f"{what} has scale {scale}, not a power of two; only power-of-two scales lower exactly")
    return int(round(f))


def _rounded(values, frac: int) -> np.ndarray:
    """``round(values * 2**frac)`` as int64 (round half away from zero; the constants are approximations)."""
    scaled = np.ldexp(np.asarray(values, dtype=np.float64), frac)
    if np.abs(scaled).max(initial=0) >= 2.0**62:
        raise LoweringError("a fixed-point constant does not fit in 62 bits; the model's parameters are out of range")
    return np.trunc(scaled + np.copysign(0.5, scaled)).astype(np.int64)


def _frac_for(max_abs: float, bits: int = CONSTANT_BITS) -> int:
    """Fraction bits giving ``max_abs`` about ``bits`` significant bits (``bits`` for zero)."""
    if max_abs <= 0 or not math.isfinite(max_abs):
        return bits
    return bits - math.ceil(math.log2(max_abs))


def _bn(bn: nn.BatchNorm2d | nn.BatchNorm1d) -> tuple[np.ndarray, np.ndarray]:
    """Batch norm in eval mode as ``y = A * x + B`` (float64)."""
    a = _f64(bn.weight) / np.sqrt(_f64(bn.running_var) + bn.eps)
    return a, _f64(bn.bias) - _f64(bn.running_mean) * a


def _act_range(bits: int) -> tuple[int, int]:
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def _int_tensor(layer: nn.Module) -> np.ndarray:
    """The integer weights of a quantised layer (``quant_weight().int()``) as int64."""
    return layer.quant_weight().int().detach().cpu().numpy().astype(np.int64)


def _matrix(w: np.ndarray, source: ir.TensorType) -> np.ndarray:
    """A conv weight tensor, or a linear layer's over ``source`` (torch flattens c, h, w), as the
    ``C_out x (K*K*C_in)`` matrix with columns (ky, kx, c)."""
    if w.ndim == 2:
        w = w.reshape(w.shape[0], *source.shape)
    return conv_weight_matrix(w)


def _bits(name: str, w: np.ndarray) -> np.ndarray:
    """+-1 weights as 0/1 (bit 1 = +1)."""
    if not np.isin(w, (-1, 1)).all():
        raise LoweringError(f"{name}: weights are not +-1; lower a checkpoint trained with binary weights")
    return (w > 0).astype(np.int64)


def _int_weights(conv: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """Integer weight matrix (columns ky, kx, c) and the per-output-channel exponent ``f`` (scale ``2**-f``)."""
    w = _int_tensor(conv)
    if w.ndim == 2:
        w = w[:, :, None, None]
    scale = _f64(conv.quant_weight().scale).reshape(-1)
    scale = np.broadcast_to(scale, (w.shape[0],)) if scale.size == 1 else scale
    exps = np.array([_exponent(float(s), type(conv).__name__ + " weight") for s in scale], dtype=np.int64)
    return conv_weight_matrix(w), exps


def _binary_scale(conv: nn.Module) -> np.ndarray:
    """Per-output-channel scale of a binary layer's weights (1 without ``weight_scale``)."""
    scale = _f64(conv.quant_weight().scale).reshape(-1)
    return np.broadcast_to(scale, (conv.out_channels if hasattr(conv, "out_channels") else conv.out_features,))


def _output_exponent(quant: FixedPointActivation, what: str) -> int:
    return _exponent(quant.scale(), what)


# ---------------------------------------------------------------------------------------------
# exact static thresholds


@torch.no_grad()
def _enumerated_threshold(name: str, low: int, high: int, binarise: Callable[[torch.Tensor], torch.Tensor]):
    """``(thresholds, flip)`` reproducing ``binarise`` on every integer in ``[low, high]``.

    ``binarise`` maps integers as a float32 ``1 x C x L x 1`` tensor (every channel the same
    ``L`` values) to +-1 exactly as the model computes it; each channel's result must be a step
    up (``x >= T``) or a step down (``x <= T``).
    """
    values = torch.arange(low, high + 1, dtype=torch.float64)
    bits = binarise(values) > 0  # C x L
    bits = bits.cpu().numpy()
    thresholds, flip = [], []
    for c, row in enumerate(bits):
        ups, downs = np.diff(row.astype(np.int8)) > 0, np.diff(row.astype(np.int8)) < 0
        if not row.any():
            thresholds.append(high + 1)
            flip.append(0)
        elif row.all():
            thresholds.append(low)
            flip.append(0)
        elif not downs.any() and ups.sum() == 1:
            thresholds.append(low + int(np.argmax(row)))
            flip.append(0)
        elif not ups.any() and downs.sum() == 1:
            thresholds.append(low + int(np.nonzero(row)[0][-1]))
            flip.append(1)
        else:
            raise LoweringError(f"{name}: channel {c} is not a single threshold over [{low}, {high}]")
    return np.array(thresholds, dtype=np.int64), np.array(flip, dtype=np.int64)


def _sign_values(sign: SignThreshold, channels: int, values: torch.Tensor) -> torch.Tensor:
    """``sign`` applied to the real values ``values`` (float64 1-D) in every channel: ``C x L``."""
    x = values.float().view(1, 1, -1, 1).expand(1, channels, -1, 1).contiguous()
    return sign(x)[0, :, :, 0]


# ---------------------------------------------------------------------------------------------
# INSTA thresholds and the SE branches


class _Features:
    """Feature shifts and the real value of one feature unit, for input ``X * 2**-f`` of a type."""

    def __init__(self, stats: tuple[str, ...], x: ir.TensorType, frac: int):
        self.stats = stats
        pixels = x.height * x.width
        polys = feature_bounds(shape_for(x.low, x.high), pixels, stats, [0] * len(stats))
        self.shifts = tuple(max(0, max(abs(lo), abs(hi)).bit_length() - (FEATURE_BITS - 1)) for lo, hi in polys)
        self.units = np.array(
            [
                2.0 ** (s - _DEGREE[name] * frac) / float(pixels) ** _N_POWER[name]
                for name, s in zip(stats, self.shifts, strict=True)
            ]
        )
        bounds = feature_bounds(shape_for(x.low, x.high), pixels, stats, self.shifts)
        self.peaks = np.array([max(abs(lo), abs(hi)) for lo, hi in bounds], dtype=np.float64)

    def columns(self, used: tuple[str, ...], channels: int) -> np.ndarray:
        """For each of ``len(used) * C`` inputs of a torch SE branch, its index among ``len(stats) * C`` features."""
        return np.concatenate([self.stats.index(s) * channels + np.arange(channels) for s in used])


def _mlp(mlp: nn.Module, features: _Features, used: tuple[str, ...], channels: int):
    """Integer FC1 of an SE branch over the features: ``(w1, b1, hidden_shift, hidden_max, q)``.

    The hidden activations are ``h_int * 2**-q`` with ``q`` chosen so the worst-case activation
    fits :data:`HIDDEN_BITS` unsigned bits (no saturation).
    """
    w1_real = _f64(mlp.fc1.weight)  # hidden x (len(used) * C)
    b1_real = _f64(mlp.fc1.bias)
    columns = features.columns(used, channels)
    unit = np.repeat(features.units[[features.stats.index(s) for s in used]], channels)
    peak = np.repeat(features.peaks[[features.stats.index(s) for s in used]], channels)
    w1_eff = w1_real * unit[None, :]  # real weight per feature unit
    hidden_peak = float((np.abs(w1_eff) * peak[None, :]).sum(axis=1).max() + np.abs(b1_real).max())
    hidden_max = (1 << HIDDEN_BITS) - 1
    q = math.floor(math.log2(hidden_max / hidden_peak)) if hidden_peak > 0 else HIDDEN_BITS
    g1 = max(q, _frac_for(float(np.abs(w1_eff).max(initial=0))))
    w1 = np.zeros((w1_real.shape[0], len(features.stats) * channels), dtype=np.int64)
    w1[:, columns] = _rounded(w1_eff, g1)
    return w1, _rounded(b1_real, g1), g1 - q, hidden_max, q


def _insta_threshold(
    name: str, inputs: tuple[str, ...], sign: SignThreshold, x: ir.TensorType, frac: int, features, *, emit_stats: bool
) -> ir.InstaThreshold:
    """An InstaThreshold reproducing ``sign`` (mode th, th+, or a static one with features for INSTA-PReLU)."""
    threshold = sign.threshold
    channels = x.channels
    stats = features.stats
    common = dict(name=name, inputs=inputs, stats=stats, shifts=features.shifts, emit_stats=emit_stats)
    if threshold.mode == "th":
        # th * 2**f * 2**os = alpha_int + sum_j beta_int[c, j] * F_j
        beta_real = np.zeros((channels, len(stats)))
        for j, s in enumerate(threshold.stats):
            beta_real[:, stats.index(s)] = _f64(threshold.beta)[:, j]
        beta_eff = beta_real * features.units[None, :] * 2.0**frac
        out_shift = min(200, max(16, _frac_for(float(np.abs(beta_eff).max(initial=0)))))
        return ir.InstaThreshold(
            mode="th",
            alpha=_rounded(_f64(threshold.alpha) * 2.0**frac, out_shift),
            beta=_rounded(beta_eff, out_shift),
            out_shift=out_shift,
            **common,
        )
    if threshold.mode == "th+":
        w1, b1, hidden_shift, hidden_max, q = _mlp(threshold.mlp, features, threshold.stats, channels)
        w2_eff = _f64(threshold.mlp.fc2.weight) * 2.0 ** (frac - q)
        out_shift = min(200, max(16, _frac_for(float(np.abs(w2_eff).max(initial=0)))))
        alpha = (_f64(threshold.alpha) + _f64(threshold.mlp.fc2.bias)) * 2.0**frac
        return ir.InstaThreshold(
            mode="th+",
            alpha=_rounded(alpha, out_shift),
            w1=w1,
            b1=b1,
            hidden_shift=hidden_shift,
            hidden_max=hidden_max,
            w2=_rounded(w2_eff, out_shift),
            out_shift=out_shift,
            **common,
        )
    # a static threshold whose unit also measures the statistics (for INSTA-PReLU)
    thresholds, flip = _enumerated_threshold(
        name, x.low, x.high, lambda v: _sign_values(sign, channels, v * 2.0**-frac)
    )
    if flip.any():
        raise LoweringError(f"{name}: a static threshold with statistics cannot flip")
    return ir.InstaThreshold(
        mode="th", alpha=thresholds, beta=np.zeros((channels, len(stats)), np.int64), out_shift=0, **common
    )


def _threshold(name: str, inputs, sign: SignThreshold, x: ir.TensorType, frac: int) -> ir.Threshold:
    thresholds, flip = _enumerated_threshold(
        name, x.low, x.high, lambda v: _sign_values(sign, x.channels, v * 2.0**-frac)
    )
    return ir.Threshold(name=name, inputs=inputs, thresholds=thresholds, flip=flip)


# ---------------------------------------------------------------------------------------------
# the graph under construction


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[ir.Node] = []
        self.types: dict[str, ir.TensorType] = {}

    def add(self, node: ir.Node) -> str:
        self.types[node.name] = node.infer([self.types[i] for i in node.inputs])
        self.nodes.append(node)
        return node.name

    def graph(self, model: nn.Module) -> ir.Graph:
        config = dict(vars(model.config)) if hasattr(model, "config") else {}
        return ir.Graph(model=config.get("name", type(model).__name__), config=config, nodes=tuple(self.nodes))


def _requantise(name: str, source: str, x: ir.TensorType, a, b, *, out_frac: int, low=None, high=None):
    """Requantise node for ``y = a * x + b`` (real, per channel) to integers ``Y = y * 2**out_frac``."""
    a, b = np.broadcast_to(a, (x.channels,)), np.broadcast_to(b, (x.channels,))
    shift = min(64, max(0, _frac_for(float(np.abs(a).max()) * 2.0**out_frac)))
    mult, bias = _rounded(a, out_frac + shift), _rounded(b, out_frac + shift)
    if low is None:  # the natural range: no clamp
        corners = [int(m) * v + int(c) for m, c in zip(mult, bias, strict=True) for v in (x.low, x.high)]
        low, high = round_shift(min(corners), shift), round_shift(max(corners), shift)
    return ir.Requantise(name=name, inputs=(source,), mult=mult, bias=bias, shift=shift, low=low, high=high)


def _rprelu(name: str, inputs, act: RPReLU, frac: int, out_frac: int, bits: int, prelu_extra: dict | None):
    low, high = _act_range(bits)
    fields = dict(
        name=name,
        inputs=inputs,
        slope=_rounded(_f64(act.beta), SLOPE_BITS),
        zeta=_rounded(_f64(act.zeta), frac + SLOPE_BITS),
        slope_shift=SLOPE_BITS,
        out_shift=frac + SLOPE_BITS - out_frac,
        low=low,
        high=high,
    )
    if prelu_extra is None:
        return ir.RPReLU(gamma=_rounded(_f64(act.gamma), frac), **fields)
    features, channels_in = prelu_extra["features"], prelu_extra["channels"]
    w1, b1, hidden_shift, hidden_max, q = _mlp(act.mlp, features, act.stats, channels_in)
    channels = act.channels
    w2_real, b2_real = _f64(act.mlp.fc2.weight), _f64(act.mlp.fc2.bias)
    # delta rows: gamma (units 2**-frac), then slope (units 2**-SLOPE_BITS)
    row_frac = np.concatenate([np.full(channels, frac), np.full(w2_real.shape[0] - channels, SLOPE_BITS)])
    w2_eff = w2_real * 2.0 ** (row_frac[:, None] - q)
    delta_shift = max(0, _frac_for(float(np.abs(w2_eff).max(initial=0))))
    gamma = _rounded(_f64(act.gamma) + b2_real[:channels], frac)
    if act.instance_slope:
        fields["slope"] = _rounded(_f64(act.beta) + b2_real[channels:], SLOPE_BITS)
    return ir.InstaPReLU(
        gamma=gamma,
        stats=features.stats,
        w1=w1,
        b1=b1,
        hidden_shift=hidden_shift,
        hidden_max=hidden_max,
        w2=_rounded(w2_eff, delta_shift),
        delta_shift=delta_shift,
        instance_slope=act.instance_slope,
        **fields,
    )


def _ordered_stats(*groups) -> tuple[str, ...]:
    wanted = set().union(*groups)
    return tuple(s for s in STATISTICS if s in wanted)


# ---------------------------------------------------------------------------------------------
# models


def _stem(g: _Builder, stem: nn.Module, source: str) -> tuple[str, int]:
    weights, wexp = _int_weights(stem.conv)
    conv = g.add(
        ir.IntConv(
            name="stem.conv",
            inputs=(source,),
            weights=weights,
            kernel=stem.conv.kernel_size[0],
            stride=stem.conv.stride[0],
            padding=stem.conv.padding[0],
        )
    )
    out_frac = _output_exponent(stem.out_quant, "stem output")
    a, b = _bn(stem.bn)
    low, high = _act_range(stem.out_quant.bits)
    # conv output is acc * 2**-(7 + wexp) (pixels have scale 2**-7)
    node = _requantise("stem.bn", conv, g.types[conv], a * 2.0 ** -(7 + wexp), b, out_frac=out_frac, low=low, high=high)
    out = g.add(node)
    if stem.pool is not None:
        pool = stem.pool
        out = g.add(
            ir.MaxPool(
                name="stem.pool", inputs=(out,), kernel=pool.kernel_size, stride=pool.stride, padding=pool.padding
            )
        )
    return out, out_frac


def _block(g: _Builder, block: BinaryBlock, name: str, source: str, frac: int) -> tuple[str, int]:
    """One BinaryBlock: threshold, binary conv, BN, shortcut, add, (INSTA-)RPReLU."""
    x = g.types[source]
    sign, act = block.sign, block.act
    insta_prelu = isinstance(act, InstaPReLU)
    thr_stats = sign.threshold.stats if sign.threshold.instance_aware else ()
    if sign.threshold.instance_aware or insta_prelu:
        features = _Features(_ordered_stats(thr_stats, act.stats if insta_prelu else ()), x, frac)
        bits = g.add(_insta_threshold(f"{name}.sign", (source,), sign, x, frac, features, emit_stats=insta_prelu))
    else:
        bits = g.add(_threshold(f"{name}.sign", (source,), sign, x, frac))
    conv = block.conv
    dot = g.add(
        ir.XnorConv(
            name=f"{name}.conv",
            inputs=(bits,),
            weights=_matrix(_bits(f"{name}.conv", _int_tensor(conv)), x),
            kernel=conv.kernel_size[0],
            stride=conv.stride[0],
            padding=conv.padding[0],
        )
    )
    out_frac = _output_exponent(block.out_quant, f"{name} output")
    grid = max(frac + 2, out_frac) + EXTRA_BITS  # the block's fixed-point grid 2**-grid
    a, b = _bn(block.bn)
    main = g.add(_requantise(f"{name}.bn", dot, g.types[dot], a * _binary_scale(conv), b, out_frac=grid))
    kind = block.shortcut_kind
    if kind == "avgpool-conv":
        short, short_frac = source, frac
        if isinstance(block.shortcut[0], nn.AvgPool2d):
            short = g.add(ir.SumPool(name=f"{name}.shortcut.pool", inputs=(short,), kernel=2, stride=2))
            short_frac += 2
        weights, wexp = _int_weights(block.shortcut[1])
        down = g.add(ir.IntConv(name=f"{name}.shortcut.conv", inputs=(short,), weights=weights, kernel=1))
        a2, b2 = _bn(block.shortcut[2])
        short = g.add(
            _requantise(f"{name}.shortcut.bn", down, g.types[down], a2 * 2.0 ** -(short_frac + wexp), b2, out_frac=grid)
        )
        shift = 0
    elif kind == "avgpool":
        short = g.add(ir.SumPool(name=f"{name}.shortcut", inputs=(source,), kernel=2, stride=2))
        shift = grid - frac - 2
    elif kind == "duplicate":
        short = g.add(ir.Repeat(name=f"{name}.shortcut", inputs=(source,), times=2))
        shift = grid - frac
    else:
        short, shift = source, grid - frac
    total = g.add(ir.Add(name=f"{name}.add", inputs=(main, short), shifts=(0, shift)))
    if insta_prelu:
        extra = {"features": features, "channels": x.channels}
        out = g.add(_rprelu(f"{name}.act", (total, bits), act, grid, out_frac, block.out_quant.bits, extra))
    else:
        out = g.add(_rprelu(f"{name}.act", (total,), act, grid, out_frac, block.out_quant.bits, None))
    return out, out_frac


def _head(g: _Builder, fc: nn.Module, source: str) -> None:
    pooled = g.add(ir.GlobalSumPool(name="head.pool", inputs=(source,)))
    weights, _ = _int_weights(fc)  # one positive power-of-two scale and no bias: argmax is exact on integers
    logits = g.add(ir.IntConv(name="head.fc", inputs=(pooled,), weights=weights, kernel=1))
    g.add(ir.Argmax(name="class", inputs=(logits,)))


def _lower_residual(model: nn.Module) -> ir.Graph:
    config = model.config
    g = _Builder()
    pixels = g.add(
        ir.PixelInput(name="input", channels=config.in_channels, height=config.input_size, width=config.input_size)
    )
    x, frac = _stem(g, model.stem, pixels)
    for index, block in enumerate(model.blocks):
        x, frac = _block(g, block, f"blocks.{index}", x, frac)
    _head(g, model.head.fc, x)
    return g.graph(model)


def _lower_cnv(model: CNV) -> ir.Graph:
    config = model.config
    g = _Builder()
    x = g.add(
        ir.PixelInput(name="input", channels=config.in_channels, height=config.input_size, width=config.input_size)
    )
    layers = [(f"features.{k}", layer) for k, layer in enumerate(model.features)]
    layers += [(f"classifier.{k}", layer) for k, layer in enumerate(model.classifier)]
    for name, layer in layers:
        source = g.types[x]
        conv = layer.layer
        if isinstance(conv, BinaryConv2d):
            kernel, stride, padding = conv.kernel_size[0], conv.stride[0], conv.padding[0]
        else:  # a linear layer over a C x H x W tensor (torch flattens c, h, w) is a full-frame convolution
            kernel, stride, padding = source.height, 1, 0
            if source.height != source.width:
                raise LoweringError(f"{name}: a fully connected layer needs a square input, not {source.describe()}")
        geometry = dict(name=f"{name}.conv", inputs=(x,), kernel=kernel, stride=stride, padding=padding)
        weights = _matrix(_bits(f"{name}.conv", _int_tensor(conv)), source)
        if source.binary:
            node, pixel_frac = ir.XnorConv(weights=weights, **geometry), 0
        else:  # the first layer: +-1 weights on pixels p - 128 (scale 2**-7)
            node, pixel_frac = ir.IntConv(weights=2 * weights - 1, **geometry), 7
        dot = g.add(node)
        dot_type = g.types[dot]
        scale = _binary_scale(conv) * 2.0**-pixel_frac
        two_d = isinstance(layer.bn, nn.BatchNorm2d)

        def bn_then(values, layer=layer, scale=scale, two_d=two_d, channels=dot_type.channels):
            # the model's own float32 arithmetic: conv output -> batch norm, as C x L
            t = values.float().view(1, 1, -1, 1).expand(1, channels, -1, 1) * torch.from_numpy(scale).float().view(
                1, -1, 1, 1
            )
            if two_d:
                return layer.bn(t)
            return layer.bn(t[0, :, :, 0].t()).t()[None, :, :, None]

        sign = layer.sign
        if sign.threshold.instance_aware:
            # the threshold measures the BN output: requantise it to CNV_INSTA_BITS, then the INSTA unit
            a, b = _bn(layer.bn)
            a = a * scale
            peak = float(np.max(np.abs([a * dot_type.low + b, a * dot_type.high + b])))
            y_frac = 15 - math.ceil(math.log2(peak)) if peak > 0 else 15
            y = g.add(
                _requantise(f"{name}.bn", dot, dot_type, a, b, out_frac=y_frac, low=-(1 << 15), high=(1 << 15) - 1)
            )
            bits = g.add(
                _insta_threshold(
                    f"{name}.sign",
                    (y,),
                    sign,
                    g.types[y],
                    y_frac,
                    _Features(sign.threshold.stats, g.types[y], y_frac),
                    emit_stats=False,
                )
            )
        else:
            with torch.no_grad():
                thresholds, flip = _enumerated_threshold(
                    f"{name}.sign", dot_type.low, dot_type.high, lambda v, sign=sign: sign(bn_then(v))[0, :, :, 0]
                )
            bits = g.add(ir.Threshold(name=f"{name}.sign", inputs=(dot,), thresholds=thresholds, flip=flip))
        x = bits
        if layer.pool is not None:
            x = g.add(ir.MaxPool(name=f"{name}.pool", inputs=(x,), kernel=2, stride=2))
    source = g.types[x]
    fc = model.fc
    weights = _matrix(_bits("fc", _int_tensor(fc)), source)
    logits = g.add(ir.XnorConv(name="fc", inputs=(x,), weights=weights, kernel=source.height))
    g.add(ir.Argmax(name="class", inputs=(logits,)))
    return g.graph(model)


@torch.no_grad()
def lower(model: nn.Module) -> ir.Graph:
    """The integer IR of a zoo model (``ResNet``, ``MobileNetV1`` or ``CNV``) in eval mode.

    Raises
    ------
    LoweringError
        One line naming the layer and the reason when the model cannot be lowered.
    """
    if not hasattr(model, "config"):
        raise LoweringError(f"{type(model).__name__} is not a model of the zoo (no config); build it with build_model")
    if model.training:
        raise LoweringError("lower a model in eval mode (model.eval()); its batch norm must use running statistics")
    if not model.config.binary_weights:
        raise LoweringError("this checkpoint has real-valued weights (training step 1); lower a step-2 checkpoint")
    if isinstance(model, CNV):
        return _lower_cnv(model)
    if isinstance(model, (ResNet, MobileNetV1)):
        return _lower_residual(model)
    raise LoweringError(f"no lowering for {type(model).__name__}")


@torch.no_grad()
def random_model(name: str, *, seed: int = 0, calibration_images: int = 4, **options) -> nn.Module:
    """A zoo model with seeded random weights, calibrated and in eval mode, ready to lower.

    Every parameter the zoo initialises to zero for training (RSign and INSTA offsets and
    weights, RPReLU shifts) gets small random values, so every unit of the design is exercised;
    batch norm statistics and activation scales come from ``calibration_images`` random images.
    The calibration runs in float64 on one thread: float32 sums split over threads round
    differently with the thread count, and a statistic one ulp away can move an integer
    threshold, so the same seed would give other designs on other machines.
    """
    from instabnn_hw.quant.models import build_model

    torch.manual_seed(seed)
    model = build_model(name, **options)
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        for pname, param in module.named_parameters(recurse=False):
            if (param == 0).all() and pname != "log_scale":
                param.copy_(0.05 * torch.randn(param.shape, generator=generator))
    config = model.config
    images = torch.randint(
        0, 256, (calibration_images, config.in_channels, config.input_size, config.input_size), generator=generator
    ).double()
    model.double().train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # a cumulative average over the calibration batches
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for image in images.split(2):
            model(image)
    finally:
        torch.set_num_threads(threads)
    return model.float().eval()
