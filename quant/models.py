"""The model zoo: ReActNet-18, ReActNet-A (MobileNetV1), a tiny ResNet and FINN's CNV.

Every model takes 8-bit pixels (float tensors holding 0..255) and returns class logits.
A model is fully described by its :class:`ModelConfig`, which checkpoints store as JSON,
so ``build_model(**config)`` rebuilds it exactly.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError
from ..strict_json import json_kind, short_repr
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
from .options import GRADIENTS, PRELUS, STATISTICS, THRESHOLDS

__all__ = [
    "ConfigError",
    "ModelConfig",
    "MODELS",
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


class ConfigError(UserError, ValueError):
    """An invalid model name or option combination; the message is one line saying what to do."""


@dataclass(frozen=True)
class _ModelDefaults:
    input_size: int
    in_channels: int
    num_classes: int
    width: int
    prelu: str | None
    stages: int
    description: str


#: Names of the zoo and their defaults.
MODELS: dict[str, _ModelDefaults] = {
    "resnet18": _ModelDefaults(
        224, 3, 1000, 64, "rprelu", 4, "ReActNet-18 / Bi-Real ResNet-18, 16 binary 3x3 convolutions"
    ),
    "mobilenetv1": _ModelDefaults(
        224, 3, 1000, 32, "rprelu", 5, "ReActNet-A (MobileNetV1), 13 blocks of binary 3x3 + 1x1"
    ),
    "resnet-tiny": _ModelDefaults(28, 1, 10, 16, "rprelu", 3, "the ReActNet-18 block at 8x8 / 28x28 / 32x32, 3 stages"),
    "cnv": _ModelDefaults(32, 3, 10, 64, None, 3, "FINN's CNV: six unpadded binary 3x3 convolutions, FC 512-512"),
}


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a model; stored in checkpoints as JSON.

    Attributes
    ----------
    name : str
        A key of :data:`MODELS`.
    insta : {"none", "rsign", "th", "th+"}
        Threshold of every binary activation in an INSTA stage.
    prelu : {"rprelu", "insta"} or None
        Activation after each residual add (``None`` for ``cnv``, which has none).
    stats : tuple of str
        Statistics of INSTA-Th / INSTA-Th+.
    prelu_stats : tuple of str
        Statistics of INSTA-PReLU.
    insta_stages : tuple of int or None
        Stages (numbered from 1) whose blocks get INSTA modules; others use RSign and RPReLU.
        ``None`` means all stages.
    input_size, in_channels, num_classes, width : int
        Square input size, input channels, classes and the channels of the first stage.
    binary_weights : bool
        False during step 1 of two-step training (real weights, binary activations).
    weight_scale : bool
        Per-output-channel scale on binary weights.
    act_bits : int
        Bits of the residual stream and the stem output.
    reduction : int
        Squeeze-and-excitation reduction of INSTA-Th+ and INSTA-PReLU.
    grad : {"approx", "ste"}
        Surrogate gradient of the binary activation.
    """

    name: str
    insta: str = "th"
    prelu: str | None = "rprelu"
    stats: tuple[str, ...] = ("m3",)
    prelu_stats: tuple[str, ...] = ("m1", "m2")
    insta_stages: tuple[int, ...] | None = None
    input_size: int = 28
    in_channels: int = 1
    num_classes: int = 10
    width: int = 16
    binary_weights: bool = True
    weight_scale: bool = False
    act_bits: int = 8
    reduction: int = 16
    grad: str = "approx"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        """The config a dict of all its fields describes (as ``json.loads(config.to_json())`` gives), checked.

        Raises
        ------
        ConfigError
            If ``data`` is not a dict of exactly the config's fields, a field has the wrong
            type or value, or the model it describes cannot be built on this machine.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"a model config is a JSON object of its fields, not a JSON {json_kind(data)}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [key for key in data if key not in known]
        if unknown:
            unknown = short_repr(sorted(map(str, unknown)))
            raise ConfigError(f"unknown model config keys {unknown}; this checkpoint is from another version")
        missing = [key for key in known if key not in data]
        if missing:
            raise ConfigError(f"the model config lacks the keys {missing}; this checkpoint is from another version")
        data = dict(data)
        for key in _TUPLE_FIELDS:
            # JSON has no tuples; anything but a list is left for validate() to refuse.
            if isinstance(data[key], list):
                data[key] = tuple(data[key])
        config = cls(**data)
        config.validate()
        return config

    def validate(self) -> None:
        """Checks that this config describes a model that can be built, on this machine.

        Every field must have its type (an int is never a bool or a float) and a value the
        model accepts, the input size must suit the model's downsampling, and the model's
        weights and the activations of one image must fit in this machine's memory. All of
        it is computed from the config: nothing is allocated.

        Raises
        ------
        ConfigError
            Naming the first field that is wrong and what to do about it.
        """
        if not isinstance(self.name, str) or self.name not in MODELS:
            raise ConfigError(f"unknown model {short_repr(self.name)}; choose one of {', '.join(MODELS)}")
        _check_field_types(self)
        _validate(self)
        _check_input_size(self)
        _check_memory(self)

    def stage_is_insta(self, stage: int) -> bool:
        return self.insta_stages is None or stage in self.insta_stages

    def threshold_for(self, stage: int) -> str:
        """The threshold mode of a block in ``stage``: INSTA ones fall back to RSign outside."""
        if self.insta in ("th", "th+") and not self.stage_is_insta(stage):
            return "rsign"
        return self.insta

    def prelu_for(self, stage: int) -> str:
        return self.prelu if self.prelu != "insta" or self.stage_is_insta(stage) else "rprelu"


#: Fields by type: ints are never bools (JSON true/false) nor floats.
_INT_FIELDS = ("input_size", "in_channels", "num_classes", "width", "act_bits", "reduction")
_BOOL_FIELDS = ("binary_weights", "weight_scale")
_TEXT_FIELDS = ("name", "insta", "grad")
_TUPLE_FIELDS = ("stats", "prelu_stats", "insta_stages")


def _check_field_types(config: ModelConfig) -> None:
    for key in _TEXT_FIELDS:
        if not isinstance(getattr(config, key), str):
            raise ConfigError(f"{key} must be a string, not {short_repr(getattr(config, key))}")
    if config.prelu is not None and not isinstance(config.prelu, str):
        raise ConfigError(f"prelu must be a string or null, not {short_repr(config.prelu)}")
    for key in _INT_FIELDS:
        value = getattr(config, key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, not {short_repr(value)}")
    for key in _BOOL_FIELDS:
        if not isinstance(getattr(config, key), bool):
            raise ConfigError(f"{key} must be true or false, not {short_repr(getattr(config, key))}")
    for key in ("stats", "prelu_stats"):
        values = getattr(config, key)
        if not isinstance(values, tuple) or not all(isinstance(value, str) for value in values):
            raise ConfigError(f"{key} must be a list of statistic names, not {short_repr(values)}")
    stages = config.insta_stages
    if stages is not None and (
        not isinstance(stages, tuple) or any(isinstance(s, bool) or not isinstance(s, int) for s in stages)
    ):
        raise ConfigError(f"insta stages must be a list of stage numbers or null, not {short_repr(stages)}")


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, not {short_repr(value)}")
    return value


def _validate(config: ModelConfig) -> None:
    defaults = MODELS[config.name]
    if config.insta not in THRESHOLDS:
        raise ConfigError(f"unknown insta {config.insta!r}; choose one of {', '.join(THRESHOLDS)}")
    if defaults.prelu is None and config.prelu is not None:
        raise ConfigError(f"{config.name} has no PReLU, so --prelu {config.prelu} does not apply; leave it out")
    if defaults.prelu is not None and config.prelu not in PRELUS:
        raise ConfigError(f"unknown prelu {config.prelu!r}; choose one of {', '.join(PRELUS)}")
    for key in ("stats", "prelu_stats"):
        values = getattr(config, key)
        if not values or any(s not in STATISTICS for s in values) or len(set(values)) != len(values):
            raise ConfigError(f"{key} must be distinct names from {', '.join(STATISTICS)}, not {values!r}")
    if config.grad not in GRADIENTS:
        raise ConfigError(f"unknown grad {config.grad!r}; choose one of {', '.join(GRADIENTS)}")
    for key in ("input_size", "in_channels", "num_classes", "width", "reduction"):
        _positive_int(key, getattr(config, key))
    if not 2 <= config.act_bits <= 16:
        raise ConfigError(f"act_bits must be in 2..16, not {short_repr(config.act_bits)}")
    if config.insta_stages is not None:
        if not config.insta_stages or any(
            _positive_int("insta stage", s) > defaults.stages for s in config.insta_stages
        ):
            raise ConfigError(
                f"insta stages must be in 1..{defaults.stages} for {config.name}, not {list(config.insta_stages)}"
            )
        if config.insta not in ("th", "th+") and config.prelu != "insta":
            raise ConfigError(
                "insta stages select where INSTA modules go; use them with --insta th|th+ or --prelu insta"
            )


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


#: ReActNet-A blocks as (output-channel factor of the width, stride); the width is the stem's.
_MOBILENET_BLOCKS = ((2, 1), (4, 2), (4, 1), (8, 2), (8, 1), (16, 2)) + ((16, 1),) * 5 + ((32, 2), (32, 1))
#: Stage of each ReActNet-A block, by output resolution (stages change where the stride is 2).
_MOBILENET_STAGES = (1, 2, 2, 3, 3, 4, 4, 4, 4, 4, 4, 5, 5)


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
        for (factor, stride), stage in zip(_MOBILENET_BLOCKS, _MOBILENET_STAGES, strict=True):
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


def _cnv_min_size() -> int:
    size = 1
    for pool in (False, False, True, False, True, False):  # the six layers, walked backwards
        size = size * 2 + 2 if pool else size + 2
    return size


def _check_input_size(config: ModelConfig) -> None:
    size = config.input_size
    if config.name in ("resnet18", "mobilenetv1") and size % 32:
        raise ConfigError(f"{config.name} needs an input size divisible by 32, not {size}")
    if config.name == "resnet-tiny" and size % 4:
        raise ConfigError(f"resnet-tiny needs an input size divisible by 4 (two stride-2 stages), not {size}")
    if config.name == "cnv" and size < _cnv_min_size():
        raise ConfigError(
            f"cnv needs an input size of at least {_cnv_min_size()} (six unpadded convolutions), not {size}"
        )


#: Bytes of one float32 element: weights and activations are float tensors whatever their bits.
_BYTES_PER_ELEMENT = 4
#: Copies of every tensor a model holds while it is built or run: the initial values and the
#: parameter, or a tensor and Brevitas's quantised copy of it (training needs more still).
_WORKING_COPIES = 2
#: Parameters and buffers per channel of a binary unit besides its convolution: batch norm (4),
#: RPReLU (3), threshold (1 + one per statistic), Brevitas scales; an upper bound.
_PER_CHANNEL_ELEMENTS = 16


def _physical_memory() -> int | None:
    """Bytes of memory this machine has, or None where the system does not say."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None
    return memory if memory > 0 else None  # sysconf answers -1 for what it does not know


def _squeeze_excite_elements(inputs: int, hidden: int, outputs: int) -> int:
    return inputs * hidden + hidden + hidden * outputs + outputs


def _unit_elements(
    config: ModelConfig, stage: int, in_channels: int, out_channels: int, kernel_size: int, *, threshold_channels: int
) -> int:
    """Parameters and buffers of one binary unit (convolution or FC, its threshold and activation)."""
    elements = kernel_size * kernel_size * in_channels * out_channels
    elements += _PER_CHANNEL_ELEMENTS * (in_channels + out_channels)
    if config.threshold_for(stage) == "th+":
        hidden = max(4, threshold_channels // config.reduction)
        elements += _squeeze_excite_elements(len(config.stats) * threshold_channels, hidden, threshold_channels)
    if config.prelu_for(stage) == "insta":
        hidden = max(4, in_channels // config.reduction)
        elements += _squeeze_excite_elements(len(config.prelu_stats) * in_channels, hidden, out_channels)
    return elements


def _size_estimate(config: ModelConfig) -> tuple[int, int]:
    """``(parameters and buffers, elements of the largest activation of one image)`` of the model.

    Walks the same layers as the model classes, with Python integers: nothing is allocated,
    so any size can be estimated. Never below the model's true count, and close to it.
    """
    w, size = config.width, config.input_size
    activations = [config.in_channels * size * size]
    if config.name == "cnv":
        elements, channels = 0, config.in_channels
        for index, out in enumerate((w, w, 2 * w, 2 * w, 4 * w, 4 * w)):
            elements += _unit_elements(config, index // 2 + 1, channels, out, 3, threshold_channels=out)
            size -= 2  # unpadded
            activations.append(out * size * size)
            if index in (1, 3):
                size //= 2  # max-pool
            channels = out
        features = channels * size * size
        for out in (8 * w, 8 * w, config.num_classes):
            elements += _unit_elements(config, 4, features, out, 1, threshold_channels=out)
            features = out
        return elements, max(activations)

    if config.name == "mobilenetv1":
        stem_kernel, stem_stride, pool = 3, 2, False
        units = []
        channels = w
        for (factor, stride), stage in zip(_MOBILENET_BLOCKS, _MOBILENET_STAGES, strict=True):
            units += [(stage, channels, channels, 3, stride, False), (stage, channels, w * factor, 1, 1, False)]
            channels = w * factor
    else:
        stem_kernel, stem_stride, pool = (7, 2, True) if config.name == "resnet18" else (3, 1, False)
        factors, units_per_stage = ((1, 2, 4, 8), 4) if config.name == "resnet18" else ((1, 2, 4), 2)
        units = []
        channels = w
        for stage, factor in enumerate(factors, start=1):
            for unit in range(units_per_stage):
                downsample = unit == 0 and w * factor != channels
                units.append((stage, channels, w * factor, 3, 2 if downsample else 1, downsample))
                channels = w * factor
    elements = config.in_channels * w * stem_kernel * stem_kernel + _PER_CHANNEL_ELEMENTS * w
    size = -(-size // stem_stride)
    activations.append(w * size * size)
    size = -(-size // 2) if pool else size
    for stage, in_channels, out_channels, kernel_size, stride, conv_shortcut in units:
        elements += _unit_elements(
            config, stage, in_channels, out_channels, kernel_size, threshold_channels=in_channels
        )
        if conv_shortcut:
            elements += in_channels * out_channels + _PER_CHANNEL_ELEMENTS * out_channels
        size = -(-size // stride)
        activations.append(out_channels * size * size)
    elements += channels * config.num_classes + config.num_classes  # the classifier
    return elements, max(activations)


def _format_bytes(count: int) -> str:
    """``count`` bytes in binary units with one decimal: ``"23.4 GiB"``."""
    if count < 1024:
        return f"{count} bytes"
    units = ("KiB", "MiB", "GiB", "TiB", "PiB")
    value, unit = count / 1024, 0
    while value >= 1024 and unit < len(units) - 1:
        value, unit = value / 1024, unit + 1
    return f"{value:.1f} {units[unit]}" if value < 10_000 else f"{value:.3g} {units[unit]}"


def _check_memory(config: ModelConfig) -> None:
    """Refuses a config whose model could never be built or run here, before anything is allocated."""
    available = _physical_memory()
    if available is None:
        return
    elements, activation = _size_estimate(config)
    weight_bytes = _BYTES_PER_ELEMENT * _WORKING_COPIES * elements
    activation_bytes = _BYTES_PER_ELEMENT * _WORKING_COPIES * activation
    if weight_bytes + activation_bytes <= available:
        return
    defaults = MODELS[config.name]
    if weight_bytes >= activation_bytes:
        what, candidates = "its weights", ["width", "in_channels", "num_classes"]
        if config.name == "cnv":  # its first FC layer grows with the image
            candidates.insert(0, "input_size")
    else:
        what, candidates = "the activations of one image", ["input_size", "width", "in_channels"]
    # Name the sizes set above the model's defaults: those are what made it too big.
    culprits = [key for key in candidates if getattr(config, key) > getattr(defaults, key)] or candidates[:1]
    sizes = " and ".join(f"{key} {getattr(config, key)}" for key in culprits)
    raise ConfigError(
        f"{config.name} with {sizes} needs about {_format_bytes(weight_bytes + activation_bytes)} of memory for "
        f"{what}; this machine has {_format_bytes(available)}: choose a smaller {' or '.join(culprits)}"
    )


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
