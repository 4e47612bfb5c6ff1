"""What a zoo model is: :class:`ModelConfig`, the zoo's defaults and the checks a config must pass.

A config is checked before anything is built: field types and values, the input size against the
model's downsampling, and the memory its weights and one image's activations need on this machine
(estimated from the config alone, with Python integers).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from ..errors import UserError
from ..machine import format_bytes, physical_memory
from ..strict_json import json_kind, short_repr
from .options import GRADIENTS, PRELUS, STATISTICS, THRESHOLDS

__all__ = ["ConfigError", "MOBILENET_BLOCKS", "MOBILENET_STAGES", "MODELS", "ModelConfig"]

#: ReActNet-A blocks as (output-channel factor of the width, stride); the width is the stem's.
MOBILENET_BLOCKS = ((2, 1), (4, 2), (4, 1), (8, 2), (8, 1), (16, 2)) + ((16, 1),) * 5 + ((32, 2), (32, 1))
#: Stage of each ReActNet-A block, by output resolution (stages change where the stride is 2).
MOBILENET_STAGES = (1, 2, 2, 3, 3, 4, 4, 4, 4, 4, 4, 5, 5)


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
        for (factor, stride), stage in zip(MOBILENET_BLOCKS, MOBILENET_STAGES, strict=True):
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


def _check_memory(config: ModelConfig) -> None:
    """Refuses a config whose model could never be built or run here, before anything is allocated."""
    available = physical_memory()
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
        f"{config.name} with {sizes} needs about {format_bytes(weight_bytes + activation_bytes)} of memory for "
        f"{what}; this machine has {format_bytes(available)}: choose a smaller {' or '.join(culprits)}"
    )
