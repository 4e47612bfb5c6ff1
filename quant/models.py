"""The model zoo: ReActNet-18, ReActNet-A (MobileNetV1), a tiny ResNet and FINN's CNV.

Every model takes 8-bit pixels (float tensors holding 0..255) and returns class logits.
A model is fully described by its :class:`~instabnn_hw.quant.config.ModelConfig`, which
checkpoints store as JSON, so ``build_model(**config)`` rebuilds it exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..strict_json import short_repr
from .config import MOBILENET_BLOCKS, MOBILENET_STAGES, MODELS, ConfigError, ModelConfig
from .layers import (
    BinaryConv2d,
    BinaryLinear,
    FixedPointActivation,
    InstaPReLU,
    IntConv2d,
    IntLinear,
    PixelInput,
    RPReLU,
    SignThreshold,
    moments,
)

__all__ = [
    "SHORTCUTS",
    "BinaryBlock",
    "ResNet",
    "MobileNetV1",
    "CNV",
    "build_model",
    "model_from_config",
]

#: Shortcut kinds of a :class:`BinaryBlock`.
SHORTCUTS = ("identity", "avgpool", "avgpool-conv", "duplicate")


class BinaryBlock(nn.Module):
    """The binary unit of ReActNet / Bi-Real: one binary convolution with its own shortcut.

    ``y = Q(act(BN(conv_b(sign(x >= th(x)))) + shortcut(x)))`` where ``Q`` is the
    fixed-point quantiser of the residual stream and ``act`` is RPReLU or INSTA-PReLU.

    Shortcuts: ``identity``; ``avgpool`` (2x2, stride 2); ``avgpool-conv`` (ResNet
    downsampling: 2x2 average pool when strided, 1x1 8-bit convolution, batch norm);
    ``duplicate`` (ReActNet-A channel doubling: ``concat(x, x)``, the two 1x1 convolutions
    being the two halves of one ``C -> 2C`` convolution).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        config: ModelConfig,
        stage: int,
        kernel_size: int = 3,
        stride: int = 1,
        shortcut: str = "identity",
    ) -> None:
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, not {shortcut!r}")
        expected_out = {"duplicate": 2 * in_channels, "avgpool-conv": out_channels}.get(shortcut, in_channels)
        if out_channels != expected_out or (shortcut in ("identity", "duplicate") and stride != 1):
            raise ValueError(
                f"shortcut {shortcut!r} cannot map {in_channels} -> {out_channels} channels at stride {stride}"
            )
        self.stage = stage
        self.shortcut_kind = shortcut
        self.sign = SignThreshold(
            in_channels,
            mode=config.threshold_for(stage),
            stats=config.stats,
            reduction=config.reduction,
            grad=config.grad,
        )
        self.conv = BinaryConv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            binary_weights=config.binary_weights,
            weight_scale=config.weight_scale,
        )
        self.bn = nn.BatchNorm2d(out_channels)
        if shortcut == "avgpool-conv":
            self.shortcut = nn.Sequential(
                nn.AvgPool2d(2) if stride > 1 else nn.Identity(),
                IntConv2d(in_channels, out_channels, 1),
                nn.BatchNorm2d(out_channels),
            )
        elif shortcut == "avgpool":
            self.shortcut = nn.AvgPool2d(2)
        else:
            self.shortcut = None
        if config.prelu_for(stage) == "insta":
            self.act = InstaPReLU(
                out_channels, stats_channels=in_channels, stats=config.prelu_stats, reduction=config.reduction
            )
        else:
            self.act = RPReLU(out_channels)
        self.out_quant = FixedPointActivation(bits=config.act_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = torch.cat([x, x], dim=1) if self.shortcut_kind == "duplicate" else x
        if self.shortcut is not None:
            residual = self.shortcut(x)
        y = self.bn(self.conv(self.sign(x))) + residual
        prelu_stats = moments(x, self.act.stats) if isinstance(self.act, InstaPReLU) else None
        return self.out_quant(self.act(y, prelu_stats))


class _Stem(nn.Module):
    """Pixels -> 8-bit conv -> BN -> fixed point (-> 3x3 max-pool, stride 2)."""

    def __init__(self, config: ModelConfig, *, kernel_size: int, stride: int, maxpool: bool) -> None:
        super().__init__()
        self.pixels = PixelInput()
        self.conv = IntConv2d(config.in_channels, config.width, kernel_size, stride=stride, padding=kernel_size // 2)
        self.bn = nn.BatchNorm2d(config.width)
        self.out_quant = FixedPointActivation(bits=config.act_bits)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1) if maxpool else None

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.out_quant(self.bn(self.conv(self.pixels(pixels))))
        return self.pool(x) if self.pool is not None else x


class _Head(nn.Module):
    """Global average pool -> 8-bit classifier without bias (argmax exact on integers)."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = IntLinear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


class ResNet(nn.Module):
    """ReActNet-18 / Bi-Real ResNet (``resnet18``) and its small sibling (``resnet-tiny``).

    Each stage has basic blocks of two :class:`BinaryBlock` 3x3 units; the first unit of a
    later stage has stride 2 and doubles the channels, with an ``avgpool-conv`` shortcut.
    ``resnet18``: 7x7 stride-2 stem and 3x3 max-pool, stages of 64-128-256-512 channels with
    two basic blocks each (16 binary convolutions). ``resnet-tiny``: 3x3 stem, three stages of
    ``w, 2w, 4w`` channels with one basic block each.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        if config.name == "resnet18":
            self.stem = _Stem(config, kernel_size=7, stride=2, maxpool=True)
            widths, blocks_per_stage = (1, 2, 4, 8), 2
        else:
            self.stem = _Stem(config, kernel_size=3, stride=1, maxpool=False)
            widths, blocks_per_stage = (1, 2, 4), 1
        units = []
        channels = config.width
        for stage, factor in enumerate(widths, start=1):
            out = config.width * factor
            for unit in range(2 * blocks_per_stage):
                downsample = unit == 0 and out != channels
                units.append(
                    BinaryBlock(
                        channels,
                        out,
                        config=config,
                        stage=stage,
                        stride=2 if downsample else 1,
                        shortcut="avgpool-conv" if downsample else "identity",
                    )
                )
                channels = out
        self.blocks = nn.Sequential(*units)
        self.head = _Head(channels, config.num_classes)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(pixels)))


class MobileNetV1(nn.Module):
    """ReActNet-A: MobileNetV1 with each depthwise/pointwise pair replaced by binary convolutions.

    3x3 stride-2 stem to ``w`` channels, then 13 blocks, each a binary 3x3 unit (``C -> C``,
    average-pool shortcut when strided) and a binary 1x1 unit (``C -> C`` identity shortcut,
    or ``C -> 2C`` with the duplicated shortcut), global pool and classifier.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.stem = _Stem(config, kernel_size=3, stride=2, maxpool=False)
        units = []
        channels = config.width
        for (factor, stride), stage in zip(MOBILENET_BLOCKS, MOBILENET_STAGES, strict=True):
            out = config.width * factor
            units.append(
                BinaryBlock(
                    channels,
                    channels,
                    config=config,
                    stage=stage,
                    stride=stride,
                    shortcut="avgpool" if stride == 2 else "identity",
                )
            )
            units.append(
                BinaryBlock(
                    channels,
                    out,
                    config=config,
                    stage=stage,
                    kernel_size=1,
                    shortcut="identity" if out == channels else "duplicate",
                )
            )
            channels = out
        self.blocks = nn.Sequential(*units)
        self.head = _Head(channels, config.num_classes)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(pixels)))


class _CNVLayer(nn.Module):
    """Binary conv or FC -> BN -> sign threshold (the threshold sees the BN output)."""

    def __init__(self, layer: nn.Module, channels: int, mode: str, config: ModelConfig, *, stage: int, pool: bool):
        super().__init__()
        self.stage = stage
        self.layer = layer
        self.bn = nn.BatchNorm2d(channels) if isinstance(layer, BinaryConv2d) else nn.BatchNorm1d(channels)
        self.sign = SignThreshold(channels, mode=mode, stats=config.stats, reduction=config.reduction, grad=config.grad)
        self.pool = nn.MaxPool2d(2) if pool else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.layer(x))
        if y.dim() == 2:
            b = self.sign(y[:, :, None, None]).flatten(1)
        else:
            b = self.sign(y)
        return self.pool(b) if self.pool is not None else b


class CNV(nn.Module):
    """FINN's CNV: 3x3 unpadded binary convolutions 64-64-pool-128-128-pool-256-256, FC 512-512-classes.

    The first convolution multiplies 8-bit pixels by binary weights; every other layer is
    XNOR-popcount on binary activations. Max-pooling follows the sign (an OR of bits). The
    last layer's integer outputs are scaled by one learned positive scalar (FINN's
    TensorNorm), which leaves the argmax unchanged. INSTA thresholds apply to the six
    convolutions (stages 1-3, two each); the FC layers, with no spatial extent, use RSign.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.pixels = PixelInput()
        w = config.width
        conv_channels = (w, w, 2 * w, 2 * w, 4 * w, 4 * w)
        layers = []
        channels, size = config.in_channels, config.input_size
        for index, out in enumerate(conv_channels):
            stage = index // 2 + 1
            pool = index in (1, 3)
            conv = BinaryConv2d(
                channels, out, 3, binary_weights=config.binary_weights, weight_scale=config.weight_scale
            )
            layers.append(_CNVLayer(conv, out, config.threshold_for(stage), config, stage=stage, pool=pool))
            channels, size = out, (size - 2) // (2 if pool else 1)
        fc_mode = "rsign" if config.insta in ("th", "th+") else config.insta
        features = channels * size * size
        for out in (8 * w, 8 * w):
            fc = BinaryLinear(features, out, binary_weights=config.binary_weights, weight_scale=config.weight_scale)
            layers.append(_CNVLayer(fc, out, fc_mode, config, stage=4, pool=False))
            features = out
        self.features = nn.Sequential(*layers[:6])
        self.classifier = nn.Sequential(*layers[6:])
        self.fc = BinaryLinear(
            features, config.num_classes, binary_weights=config.binary_weights, weight_scale=config.weight_scale
        )
        self.log_scale = nn.Parameter(torch.tensor(-3.0))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.features(self.pixels(pixels)).flatten(1)
        return self.fc(self.classifier(x)) * self.log_scale.exp()


def model_from_config(config: ModelConfig) -> nn.Module:
    """Builds the model a :class:`ModelConfig` describes, once :meth:`ModelConfig.validate` accepts it.

    Raises
    ------
    ConfigError
        If the config is invalid or the model would not fit in this machine's memory.
    """
    config.validate()
    cls = {"resnet18": ResNet, "resnet-tiny": ResNet, "mobilenetv1": MobileNetV1, "cnv": CNV}[config.name]
    return cls(config)


def build_model(
    name: str,
    *,
    insta: str = "th",
    prelu: str | None = None,
    stats: Sequence[str] = ("m3",),
    prelu_stats: Sequence[str] = ("m1", "m2"),
    insta_stages: Sequence[int] | None = None,
    input_size: int | None = None,
    in_channels: int | None = None,
    num_classes: int | None = None,
    width: int | None = None,
    binary_weights: bool = True,
    weight_scale: bool = False,
    act_bits: int = 8,
    reduction: int = 16,
    grad: str = "approx",
) -> nn.Module:
    """Builds a zoo model; options left ``None`` take the model's defaults (:data:`MODELS`).

    Raises
    ------
    ConfigError
        For an unknown name, an invalid option or combination, or a size this machine's
        memory cannot hold (checked before anything is allocated).
    """
    if not isinstance(name, str) or name not in MODELS:
        raise ConfigError(f"unknown model {short_repr(name)}; choose one of {', '.join(MODELS)}")
    defaults = MODELS[name]
    config = ModelConfig(
        name=name,
        insta=insta,
        prelu=defaults.prelu if prelu is None else prelu,
        stats=tuple(stats),
        prelu_stats=tuple(prelu_stats),
        insta_stages=None if insta_stages is None else tuple(insta_stages),
        input_size=defaults.input_size if input_size is None else input_size,
        in_channels=defaults.in_channels if in_channels is None else in_channels,
        num_classes=defaults.num_classes if num_classes is None else num_classes,
        width=defaults.width if width is None else width,
        binary_weights=binary_weights,
        weight_scale=weight_scale,
        act_bits=act_bits,
        reduction=reduction,
        grad=grad,
    )
    return model_from_config(config)
