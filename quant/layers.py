"""INSTA-BNN layers on Brevitas, shaped for the hardware they compile to.

Every tensor the hardware carries is either binary (bit 1 = +1, bit 0 = -1) or signed fixed
point with a power-of-two scale, so lowering to integers is exact (``../shared/DESIGN.md``
sections 3 and 4). The modules here are the vocabulary the compiler reads: it recognises a
layer by its class and reads its parameters, so each class states its maths in its docstring.

Conventions
-----------
- Tensors are ``N x C x H x W``; per-channel parameters have shape ``(C,)``.
- ``sign(0) = +1``: a binary activation is ``+1`` where ``x >= th``.
- Statistics ``M_k`` are means over ``H x W`` of ``x ** k`` for each image and channel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from brevitas.core.function_wrapper import TensorClamp
from brevitas.inject.enum import ScalingImplType, StatsOp
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
from brevitas.quant.binary import SignedBinaryWeightPerTensorConst
from brevitas.quant.fixed_point import (
    Int8ActPerTensorFixedPoint,
    Int8WeightPerChannelFixedPoint,
    Int8WeightPerTensorFixedPoint,
)
from torch import nn

from .options import GRADIENTS, STATISTICS, THRESHOLDS

__all__ = [
    "BinaryWeight",
    "BinaryWeightPerChannel",
    "FixedPointActivation",
    "PixelInput",
    "BinaryActivation",
    "binary_sign",
    "moments",
    "se_hidden",
    "Threshold",
    "SignThreshold",
    "BinaryConv2d",
    "BinaryLinear",
    "IntConv2d",
    "IntLinear",
    "RPReLU",
    "InstaPReLU",
]


class BinaryWeight(SignedBinaryWeightPerTensorConst):
    """Binary weights of exactly +-1 (Brevitas' default constant is 0.1).

    The latent float weights are clamped in place to [-1, 1] on every forward
    (BinaryConnect), and the gradient passes straight through the sign.
    """

    scaling_const = 1.0


class BinaryWeightPerChannel(SignedBinaryWeightPerTensorConst):
    """Binary weights with a per-output-channel scale ``mean(|W_c|)`` (XNOR-Net, ReActNet).

    The scale is a statistic of the latent weights, not a parameter; lowering folds it into
    the following batch norm, so the hardware still sees +-1. ``TensorClamp`` replaces the
    in-place clamp, which would otherwise shrink the weights, and so the scale, on every
    forward.
    """

    scaling_impl_type = ScalingImplType.STATS
    scaling_stats_op = StatsOp.AVE
    scaling_per_output_channel = True
    tensor_clamp_impl = TensorClamp


class FixedPointActivation(QuantIdentity):
    """Signed fixed point with a learned power-of-two scale: ``q = clamp(round(x / s)) * s``.

    ``s = 2 ** -f`` is learned (initialised from activation statistics), and ``q / s`` is a
    ``bits``-bit two's-complement integer. Used on every multi-bit tensor the hardware
    carries: stem output, residual stream, block outputs.
    """

    def __init__(self, *, bits: int = 8) -> None:
        if not isinstance(bits, int) or not 2 <= bits <= 16:
            raise ValueError(f"bits must be an integer in 2..16, not {bits!r}")
        super().__init__(act_quant=Int8ActPerTensorFixedPoint, bit_width=bits, return_quant_tensor=False)
        self.bits = bits

    def scale(self) -> float:
        """The power-of-two scale ``s`` currently in force."""
        return float(self.act_quant.scale())


class _ConstPixelQuant(Int8ActPerTensorFixedPoint):
    # A constant range of [-1, 1) on 8 bits: the scale is exactly 2 ** -7.
    scaling_impl_type = ScalingImplType.CONST
    min_val = -1.0
    max_val = 1.0


class PixelInput(nn.Module):
    """Maps 8-bit pixels ``p`` in 0..255 to ``x = (p - 128) / 128``, signed 8-bit fixed point.

    The hardware receives the raw pixel and uses ``p - 128`` as an 8-bit integer with scale
    ``2 ** -7``; this preprocessing is exact, so it needs no mean / std normalisation (the
    stem's batch norm absorbs it).
    """

    bits = 8
    scale_exponent = -7

    def __init__(self) -> None:
        super().__init__()
        self.quant = QuantIdentity(act_quant=_ConstPixelQuant, return_quant_tensor=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.quant(pixels / 128.0 - 1.0)


class _Sign(torch.autograd.Function):
    """sign with sign(0) = +1 and a selectable surrogate gradient on [-1, 1]."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, approx: bool) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.approx = approx
        return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        inside = x.abs() <= 1
        if ctx.approx:
            surrogate = (2 - 2 * x.abs()) * inside
        else:
            surrogate = inside.to(grad.dtype)
        return grad * surrogate, None


def binary_sign(x: torch.Tensor, grad: str = "approx") -> torch.Tensor:
    """``+1`` where ``x >= 0``, else ``-1``; see :class:`BinaryActivation` for ``grad``."""
    if grad not in GRADIENTS:
        raise ValueError(f"grad must be one of {GRADIENTS}, not {grad!r}")
    return _Sign.apply(x, grad == "approx")


class BinaryActivation(nn.Module):
    """Binary activation ``b = +1 if x >= 0 else -1``.

    Parameters
    ----------
    grad : {"approx", "ste"}
        Backward surrogate. ``"ste"``: clipped straight-through, ``d b / d x = 1`` on
        ``|x| <= 1``. ``"approx"``: ReActNet's approx-sign, ``d b / d x = 2 - 2|x|`` on
        ``|x| <= 1``. Both are zero outside.
    """

    def __init__(self, *, grad: str = "approx") -> None:
        super().__init__()
        if grad not in GRADIENTS:
            raise ValueError(f"grad must be one of {GRADIENTS}, not {grad!r}")
        self.grad = grad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return binary_sign(x, self.grad)

    def extra_repr(self) -> str:
        return f"grad={self.grad!r}"


def _check_statistics(stats: Sequence[str]) -> tuple[str, ...]:
    stats = tuple(stats)
    if not stats or any(s not in STATISTICS for s in stats) or len(set(stats)) != len(stats):
        raise ValueError(f"stats must be distinct names from {STATISTICS}, not {stats!r}")
    return stats


def moments(x: torch.Tensor, stats: Sequence[str]) -> torch.Tensor:
    """Per-image, per-channel statistics of ``x``, shape ``N x len(stats) x C``.

    ``m1, m2, m3`` are the raw moments ``M_k = mean_HW(x ** k)``; ``var = M_2 - M_1 ** 2``;
    ``skew = M_3 - 3 M_1 M_2 + 2 M_1 ** 3``, the central third moment (skewness before its
    normalisation by ``var ** 1.5``, which would need a square root and a division in
    hardware). All are polynomials in the exact integer sums ``S_k`` the hardware
    accumulates.
    """
    needed = {"m1"} | ({"m2"} if {"m2", "var", "skew"} & set(stats) else set())
    needed |= {"m3"} if {"m3", "skew"} & set(stats) else set()
    m = {f"m{k}": x.pow(k).mean(dim=(2, 3)) for k in (1, 2, 3) if f"m{k}" in needed}
    derived = {
        "var": lambda: m["m2"] - m["m1"].pow(2),
        "skew": lambda: m["m3"] - 3 * m["m1"] * m["m2"] + 2 * m["m1"].pow(3),
    }
    return torch.stack([m[s] if s in m else derived[s]() for s in stats], dim=1)


class _SqueezeExcite(nn.Module):
    """``FC2(ReLU(FC1(stats)))``: ``len(stats) * C -> hidden -> out``, FC2 zero-initialised."""

    def __init__(self, in_features: int, hidden: int, out_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, out_features)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(s.flatten(1))))


def se_hidden(channels: int, reduction: int) -> int:
    """Hidden width of an INSTA squeeze-and-excitation branch: ``max(4, C // r)``."""
    return max(4, channels // reduction)


class Threshold(nn.Module):
    """Per-channel sign threshold ``th``, static or computed per image.

    ``none``: ``th = 0``. ``rsign``: ``th_c = alpha_c`` (learned). ``th`` (INSTA-Th):
    ``th_{n,c} = alpha_c + sum_k beta_{c,k} * stat_k(x)_{n,c}``. ``th+`` (INSTA-Th+):
    ``th_{n,c} = alpha_c + FC2(ReLU(FC1(stats_n)))_c``, FC1: ``len(stats) * C -> max(4, C/r)``.
    ``alpha`` starts at 0; ``beta`` and FC2 start at 0, so an untrained INSTA threshold
    equals RSign exactly.

    Parameters
    ----------
    channels : int
        Number of channels ``C``.
    mode : {"none", "rsign", "th", "th+"}
        The threshold variant.
    stats : sequence of str
        Statistics for ``th`` / ``th+``, from :data:`STATISTICS`.
    reduction : int
        ``r`` of INSTA-Th+.
    """

    def __init__(self, channels: int, *, mode: str, stats: Sequence[str] = ("m3",), reduction: int = 16) -> None:
        super().__init__()
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive integer, not {channels!r}")
        if mode not in THRESHOLDS:
            raise ValueError(f"mode must be one of {THRESHOLDS}, not {mode!r}")
        if not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f"reduction must be a positive integer, not {reduction!r}")
        self.channels = channels
        self.mode = mode
        self.stats = _check_statistics(stats) if mode in ("th", "th+") else ()
        if mode != "none":
            self.alpha = nn.Parameter(torch.zeros(channels))
        if mode == "th":
            self.beta = nn.Parameter(torch.zeros(channels, len(self.stats)))
        if mode == "th+":
            self.mlp = _SqueezeExcite(len(self.stats) * channels, se_hidden(channels, reduction), channels)

    @property
    def instance_aware(self) -> bool:
        """Whether the threshold depends on the image."""
        return self.mode in ("th", "th+")

    def forward(self, x: torch.Tensor, stats: torch.Tensor | None = None) -> torch.Tensor:
        """The threshold for ``x``, broadcastable to it (``N x C x 1 x 1`` or ``1 x C x 1 x 1``).

        ``stats`` may pass precomputed :func:`moments` of ``x`` for ``self.stats``.
        """
        if self.mode == "none":
            return x.new_zeros(1, self.channels, 1, 1)
        if not self.instance_aware:
            return self.alpha.view(1, -1, 1, 1)
        if stats is None:
            stats = moments(x, self.stats)
        if self.mode == "th":
            # the sum of (stats * beta.t()).sum(1), with a contiguous gradient of beta (as DDP expects)
            th = self.alpha + (stats.transpose(1, 2) * self.beta).sum(dim=2)
        else:
            th = self.alpha + self.mlp(stats)
        return th.view(x.shape[0], self.channels, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.channels}, mode={self.mode!r}, stats={self.stats!r}"


class SignThreshold(nn.Module):
    """Binarises a multi-bit tensor: ``b = +1 if x >= th(x) else -1`` (see :class:`Threshold`)."""

    def __init__(
        self,
        channels: int,
        *,
        mode: str,
        stats: Sequence[str] = ("m3",),
        reduction: int = 16,
        grad: str = "approx",
    ) -> None:
        super().__init__()
        self.threshold = Threshold(channels, mode=mode, stats=stats, reduction=reduction)
        self.act = BinaryActivation(grad=grad)

    def forward(self, x: torch.Tensor, stats: torch.Tensor | None = None) -> torch.Tensor:
        # x - th >= 0 exactly when x >= th for finite floats, so sign(x - th) is the comparison.
        return self.act(x - self.threshold(x, stats))


def _binary_weight_quant(binary_weights: bool, weight_scale: bool):
    if not binary_weights:
        return None
    return BinaryWeightPerChannel if weight_scale else BinaryWeight


class BinaryConv2d(QuantConv2d):
    """Convolution with binary weights: ``y = conv(a, sign(W)) * s``, no bias.

    With binary inputs ``a`` (+-1, zero in padding) this is the hardware's XNOR-popcount:
    ``y = (2 * popcount(XNOR(a, w) AND valid) - K_valid) * s``. ``s`` is 1, or
    ``mean(|W_c|)`` per output channel with ``weight_scale``. With ``binary_weights=False``
    (step 1 of two-step training) the latent weights are used as they are.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int = 0,
        binary_weights: bool = True,
        weight_scale: bool = False,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            bias=False,
            weight_quant=_binary_weight_quant(binary_weights, weight_scale),
        )
        self.binary_weights = binary_weights
        self.weight_scale = weight_scale


class BinaryLinear(QuantLinear):
    """Fully connected layer with binary weights, ``y = (a @ sign(W).T) * s``; see BinaryConv2d."""

    def __init__(
        self, in_features: int, out_features: int, *, binary_weights: bool = True, weight_scale: bool = False
    ) -> None:
        super().__init__(
            in_features, out_features, bias=False, weight_quant=_binary_weight_quant(binary_weights, weight_scale)
        )
        self.binary_weights = binary_weights
        self.weight_scale = weight_scale


class IntConv2d(QuantConv2d):
    """Convolution with 8-bit fixed-point weights (power-of-two scale per output channel), no bias.

    For the stem and the downsampling shortcut: multi-bit inputs times integer weights, on
    the FPGA's multipliers.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, padding: int = 0):
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            bias=False,
            weight_quant=Int8WeightPerChannelFixedPoint,
        )


class IntLinear(QuantLinear):
    """Classifier with 8-bit fixed-point weights, one power-of-two scale, no bias.

    One positive scale and no bias make ``argmax`` of the logits the ``argmax`` of the
    integer dot products, so the hardware's class index is exact.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features, bias=False, weight_quant=Int8WeightPerTensorFixedPoint)


class RPReLU(nn.Module):
    """ReActNet's RPReLU: ``f(x) = PReLU_beta(x - gamma_c) + zeta_c``.

    ``PReLU_beta(u) = u if u >= 0 else beta_c * u``; ``beta`` starts at 0.25, ``gamma`` and
    ``zeta`` at 0.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive integer, not {channels!r}")
        self.channels = channels
        self.gamma = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.full((channels,), 0.25))
        self.zeta = nn.Parameter(torch.zeros(channels))

    @staticmethod
    def _prelu(u: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
        return torch.where(u >= 0, u, slope * u)

    def forward(self, x: torch.Tensor, stats: torch.Tensor | None = None) -> torch.Tensor:
        view = (1, -1, 1, 1)
        return self._prelu(x - self.gamma.view(view), self.beta.view(view)) + self.zeta.view(view)

    def extra_repr(self) -> str:
        return str(self.channels)


class InstaPReLU(RPReLU):
    """INSTA-PReLU: RPReLU whose shift (and optionally slope) is computed per image.

    ``f(x) = PReLU_{beta_c + d_beta}(x - gamma_c - d_gamma) + zeta_c`` with
    ``[d_gamma, d_beta] = FC2(ReLU(FC1(stats)))``, a zero-initialised squeeze-and-excitation
    branch over the statistics of the *block input* (the tensor the block's threshold
    already measures, so the hardware shares one moments unit and one frame buffer).

    Parameters
    ----------
    channels : int
        Channels of ``x`` (the block output).
    stats_channels : int
        Channels of the block input whose statistics are passed to :meth:`forward`.
    stats : sequence of str
        Statistics used, from :data:`STATISTICS`.
    reduction : int
        SE reduction ``r``.
    instance_slope : bool
        Also make the slope instance-aware.
    """

    def __init__(
        self,
        channels: int,
        *,
        stats_channels: int,
        stats: Sequence[str] = ("m1", "m2"),
        reduction: int = 16,
        instance_slope: bool = False,
    ) -> None:
        super().__init__(channels)
        self.stats = _check_statistics(stats)
        self.instance_slope = instance_slope
        outputs = channels * (2 if instance_slope else 1)
        self.mlp = _SqueezeExcite(len(self.stats) * stats_channels, se_hidden(stats_channels, reduction), outputs)

    def forward(self, x: torch.Tensor, stats: torch.Tensor | None = None) -> torch.Tensor:
        if stats is None:
            raise ValueError("InstaPReLU needs the statistics of the block input")
        delta = self.mlp(stats).view(x.shape[0], -1, self.channels, 1, 1)
        gamma = self.gamma.view(1, -1, 1, 1) + delta[:, 0]
        beta = self.beta.view(1, -1, 1, 1) + (delta[:, 1] if self.instance_slope else 0)
        return self._prelu(x - gamma, beta) + self.zeta.view(1, -1, 1, 1)
