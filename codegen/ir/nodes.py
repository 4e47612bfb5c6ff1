"""The IR's tensor type and layer nodes: frozen dataclasses holding only integers.

Every node checks its fields when built (:class:`IRError` otherwise) and infers its output
:class:`TensorType` from its input types (:meth:`Node.infer`); the table of the node types is
in :mod:`instabnn_hw.codegen.ir`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Shape, unsigned

from instabnn_hw.hw.fixed import shape_for
from instabnn_hw.hw.insta import MODES, STATISTICS, feature_bounds
from instabnn_hw.hw.window import check_window_geometry, output_size

__all__ = [
    "IRError",
    "TensorType",
    "Node",
    "PixelInput",
    "IntConv",
    "XnorConv",
    "Threshold",
    "InstaThreshold",
    "Requantise",
    "Add",
    "RPReLU",
    "InstaPReLU",
    "MaxPool",
    "SumPool",
    "GlobalSumPool",
    "Repeat",
    "Argmax",
]


class IRError(ValueError):
    """An inconsistent IR: the message names the node and what does not fit."""


@dataclass(frozen=True)
class TensorType:
    """A ``C x H x W`` tensor per image whose elements are integers in ``[low, high]``.

    ``binary`` tensors hold 0/1 bits (bit 1 means +1) and travel as 1-bit elements.
    """

    channels: int
    height: int
    width: int
    low: int
    high: int
    binary: bool = False

    def __post_init__(self) -> None:
        for name in ("channels", "height", "width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise IRError(f"tensor {name} must be a positive integer, not {value!r}")
        if not (isinstance(self.low, int) and isinstance(self.high, int)) or self.low > self.high:
            raise IRError(f"tensor range must be integers low <= high, not [{self.low!r}, {self.high!r}]")
        if self.binary and (self.low, self.high) != (0, 1):
            raise IRError(f"a binary tensor has range [0, 1], not [{self.low}, {self.high}]")

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``."""
        return (self.channels, self.height, self.width)

    @property
    def element_shape(self) -> Shape:
        """Shape of one element on a stream: ``unsigned(1)`` for binary tensors, else ``shape_for(low, high)``."""
        return unsigned(1) if self.binary else shape_for(self.low, self.high)

    @property
    def elements(self) -> int:
        return self.channels * self.height * self.width

    def describe(self) -> str:
        kind = "bits" if self.binary else f"int[{self.low}, {self.high}]"
        return f"{self.channels}x{self.height}x{self.width} {kind}"


def _frozen_array(node: str, name: str, value, *, shape=None, low=None, high=None) -> np.ndarray:
    """``value`` as a read-only int64 array, checked."""
    array = np.asarray(value)
    if array.dtype == bool:
        array = array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        raise IRError(f"{node}: {name} must hold integers, not {array.dtype}")
    array = np.array(array, dtype=np.int64)
    if shape is not None and array.shape != tuple(shape):
        raise IRError(f"{node}: {name} must have shape {tuple(shape)}, not {array.shape}")
    if array.size and low is not None and array.min() < low:
        raise IRError(f"{node}: {name} must be >= {low}, found {array.min()}")
    if array.size and high is not None and array.max() > high:
        raise IRError(f"{node}: {name} must be <= {high}, found {array.max()}")
    array.flags.writeable = False
    return array


def _check_int(node: str, name: str, value, *, low: int | None = None, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise IRError(f"{node}: {name} must be an integer, not {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise IRError(f"{node}: {name} must be in [{low}, {high}], not {value}")


@dataclass(frozen=True, eq=False, kw_only=True)
class Node:
    """A layer: ``name`` (unique, e.g. the PyTorch module path), ``inputs`` (names of producers).

    :meth:`infer` gives the output type from the input types and checks that they fit.
    """

    name: str
    inputs: tuple[str, ...] = ()
    #: Number of inputs the op takes.
    arity = 1
    #: Short op name used in manifests and reports.
    op = "node"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise IRError(f"node name must be a non-empty string, not {self.name!r}")
        object.__setattr__(self, "inputs", tuple(self.inputs))
        if len(self.inputs) != self.arity:
            raise IRError(f"{self.name}: {self.op} takes {self.arity} input(s), not {list(self.inputs)}")

    def infer(self, inputs: Sequence[TensorType]) -> TensorType:
        raise NotImplementedError

    def _need(self, condition: bool, message: str) -> None:
        if not condition:
            raise IRError(f"{self.name}: {message}")

    def params(self) -> dict:
        """The node's fields other than name and inputs (for reports and digests)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("name", "inputs")}


@dataclass(frozen=True, eq=False, kw_only=True)
class PixelInput(Node):
    """The input image: raw 8-bit pixels ``p``, seen by the network as ``p - 128`` (signed 8-bit)."""

    channels: int
    height: int
    width: int
    arity = 0
    op = "input"

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("channels", "height", "width"):
            _check_int(self.name, name, getattr(self, name), low=1)

    def infer(self, inputs):
        return TensorType(self.channels, self.height, self.width, -128, 127)


def _window_out(node: Node, x: TensorType, kernel: int, stride: int, padding: int) -> tuple[int, int]:
    try:
        check_window_geometry(height=x.height, width=x.width, kernel=kernel, stride=stride, padding=padding)
    except (TypeError, ValueError) as exc:
        raise IRError(f"{node.name}: {exc}") from None
    geometry = {"kernel": kernel, "stride": stride, "padding": padding}
    return output_size(x.height, **geometry), output_size(x.width, **geometry)


@dataclass(frozen=True, eq=False, kw_only=True)
class _Conv(Node):
    """A convolution as a matrix ``C_out x (K*K*C_in)`` (columns ky, kx, c) over masked windows.

    A fully connected layer over an ``H x W`` input is the convolution with ``kernel = H = W``.
    """

    weights: np.ndarray
    kernel: int
    stride: int = 1
    padding: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, low in (("kernel", 1), ("stride", 1), ("padding", 0)):
            _check_int(self.name, name, getattr(self, name), low=low)
        object.__setattr__(self, "weights", self._weights(self.weights))
        self._need(self.weights.ndim == 2, f"weights must be a matrix, not of shape {self.weights.shape}")

    def _weights(self, value) -> np.ndarray:
        raise NotImplementedError

    @property
    def out_channels(self) -> int:
        return self.weights.shape[0]

    @property
    def cols(self) -> int:
        return self.weights.shape[1]

    def _geometry(self, x: TensorType) -> tuple[int, int]:
        self._need(
            self.cols == self.kernel * self.kernel * x.channels,
            f"weights have {self.cols} columns, but a {self.kernel}x{self.kernel} window of {x.channels} channels "
            f"has {self.kernel * self.kernel * x.channels}",
        )
        return _window_out(self, x, self.kernel, self.stride, self.padding)


@dataclass(frozen=True, eq=False, kw_only=True)
class XnorConv(_Conv):
    """Binary convolution: ``dot = 2 * popcount(XNOR(a, w) AND valid) - K_valid`` (weights 0/1)."""

    op = "xnor_conv"

    def _weights(self, value):
        return _frozen_array(self.name, "weights", value, low=0, high=1)

    def infer(self, inputs):
        (x,) = inputs
        self._need(x.binary, f"takes a binary tensor, not {x.describe()}")
        h, w = self._geometry(x)
        return TensorType(self.out_channels, h, w, -self.cols, self.cols)


@dataclass(frozen=True, eq=False, kw_only=True)
class IntConv(_Conv):
    """Multi-bit convolution with integer weights: exact dot products (padding contributes 0)."""

    op = "int_conv"

    def _weights(self, value):
        return _frozen_array(self.name, "weights", value)

    def infer(self, inputs):
        (x,) = inputs
        self._need(not x.binary, f"takes a multi-bit tensor, not {x.describe()}")
        h, w = self._geometry(x)
        w_ = self.weights.astype(object)
        a, b = w_ * x.low, w_ * x.high
        # per row, each column at the input extreme that minimises (maximises) its term; padding
        # contributes 0, inside every term's range when x.low <= 0 <= x.high
        low = int(np.minimum(np.minimum(a, b), 0).sum(axis=1).min())
        high = int(np.maximum(np.maximum(a, b), 0).sum(axis=1).max())
        return TensorType(self.out_channels, h, w, low, high)


@dataclass(frozen=True, eq=False, kw_only=True)
class Threshold(Node):
    """Static binarisation: ``x >= T_c``, or ``x <= T_c`` where ``flip_c`` (batch norm with a negative scale)."""

    thresholds: np.ndarray
    flip: np.ndarray
    op = "threshold"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "thresholds", _frozen_array(self.name, "thresholds", self.thresholds))
        channels = self.thresholds.shape
        object.__setattr__(self, "flip", _frozen_array(self.name, "flip", self.flip, shape=channels, low=0, high=1))
        self._need(self.thresholds.ndim == 1, "thresholds must be a vector")

    def infer(self, inputs):
        (x,) = inputs
        self._need(not x.binary, f"takes a multi-bit tensor, not {x.describe()}")
        self._need(self.thresholds.shape == (x.channels,), f"needs {x.channels} thresholds")
        return TensorType(x.channels, x.height, x.width, 0, 1, binary=True)


@dataclass(frozen=True, eq=False, kw_only=True)
class InstaThreshold(Node):
    """INSTA-Th / INSTA-Th+ (:class:`instabnn_hw.hw.moments.MomentsThreshold`).

    Features ``F = statistic_features(moment_sums(x), stats, shifts)``; ``"th"``:
    ``T = th_thresholds(F, alpha, beta, out_shift)``; ``"th+"``: ``T = thplus_thresholds(F, w1,
    b1, hidden_shift, hidden_max, w2, alpha, out_shift)``; then ``b = x >= T``. ``T`` is clamped
    to ``[low, high + 1]`` of the input. With ``emit_stats`` the features also feed an
    :class:`InstaPReLU`.
    """

    mode: str
    stats: tuple[str, ...]
    shifts: tuple[int, ...]
    alpha: np.ndarray
    out_shift: int
    beta: np.ndarray | None = None
    w1: np.ndarray | None = None
    b1: np.ndarray | None = None
    hidden_shift: int | None = None
    hidden_max: int | None = None
    w2: np.ndarray | None = None
    emit_stats: bool = False
    op = "insta_threshold"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._need(self.mode in MODES, f"mode must be one of {MODES}, not {self.mode!r}")
        object.__setattr__(self, "stats", tuple(self.stats))
        object.__setattr__(self, "shifts", tuple(self.shifts))
        self._need(
            bool(self.stats) and all(s in STATISTICS for s in self.stats) and len(set(self.stats)) == len(self.stats),
            f"stats must be distinct names from {STATISTICS}, not {self.stats!r}",
        )
        self._need(len(self.shifts) == len(self.stats), "needs one shift per statistic")
        for j, s in enumerate(self.shifts):
            _check_int(self.name, f"shifts[{j}]", s, low=0, high=256)
        _check_int(self.name, "out_shift", self.out_shift, low=0, high=256)
        object.__setattr__(self, "alpha", _frozen_array(self.name, "alpha", self.alpha))
        channels = self.alpha.shape[0]
        if self.mode == "th":
            self._need(self.beta is not None and self.w1 is None, "mode 'th' takes beta and no MLP")
            shape = (channels, len(self.stats))
            object.__setattr__(self, "beta", _frozen_array(self.name, "beta", self.beta, shape=shape))
        else:
            self._need(self.beta is None and self.w1 is not None, "mode 'th+' takes the MLP (w1, b1, w2) and no beta")
            _freeze_mlp(self, inputs=len(self.stats) * channels, outputs=channels)

    @property
    def channels(self) -> int:
        return self.alpha.shape[0]

    def infer(self, inputs):
        (x,) = inputs
        self._need(not x.binary, f"takes a multi-bit tensor, not {x.describe()}")
        self._need(x.channels == self.channels, f"has constants for {self.channels} channels, not {x.channels}")
        return TensorType(x.channels, x.height, x.width, 0, 1, binary=True)

    def feature_range(self, x: TensorType) -> tuple[int, int]:
        """The range of every feature for inputs of type ``x`` (the ``stats`` elements)."""
        ranges = feature_bounds(shape_for(x.low, x.high), x.height * x.width, self.stats, self.shifts)
        return min(0, *(r[0] for r in ranges)), max(0, *(r[1] for r in ranges))


def _freeze_mlp(node: Node, *, inputs: int, outputs: int) -> None:
    w1 = _frozen_array(node.name, "w1", node.w1)
    node._need(w1.ndim == 2 and w1.shape[1] == inputs, f"w1 must have shape (hidden, {inputs}), not {w1.shape}")
    hidden = w1.shape[0]
    object.__setattr__(node, "w1", w1)
    object.__setattr__(node, "b1", _frozen_array(node.name, "b1", node.b1, shape=(hidden,)))
    object.__setattr__(node, "w2", _frozen_array(node.name, "w2", node.w2, shape=(outputs, hidden)))
    _check_int(node.name, "hidden_shift", node.hidden_shift, low=0, high=256)
    _check_int(node.name, "hidden_max", node.hidden_max, low=1)


@dataclass(frozen=True, eq=False, kw_only=True)
class Requantise(Node):
    """``clamp(round_shift(x * mult_c + bias_c, shift), low, high)`` (batch norm in fixed point)."""

    mult: np.ndarray
    bias: np.ndarray
    shift: int
    low: int
    high: int
    op = "requantise"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "mult", _frozen_array(self.name, "mult", self.mult))
        object.__setattr__(self, "bias", _frozen_array(self.name, "bias", self.bias, shape=self.mult.shape))
        _check_int(self.name, "shift", self.shift, low=0, high=64)
        _check_int(self.name, "low", self.low)
        _check_int(self.name, "high", self.high, low=self.low)

    def infer(self, inputs):
        (x,) = inputs
        self._need(not x.binary, f"takes a multi-bit tensor, not {x.describe()}")
        self._need(self.mult.shape == (x.channels,), f"needs {x.channels} multipliers, not {self.mult.shape}")
        return TensorType(x.channels, x.height, x.width, self.low, self.high)


@dataclass(frozen=True, eq=False, kw_only=True)
class Add(Node):
    """The residual join: ``(a << shifts[0]) + (b << shifts[1])``."""

    shifts: tuple[int, int] = (0, 0)
    arity = 2
    op = "add"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "shifts", tuple(self.shifts))
        self._need(len(self.shifts) == 2, "shifts must be a pair")
        for j, s in enumerate(self.shifts):
            _check_int(self.name, f"shifts[{j}]", s, low=0, high=32)

    def infer(self, inputs):
        a, b = inputs
        self._need(not (a.binary or b.binary), "adds multi-bit tensors")
        self._need(a.shape == b.shape, f"adds tensors of one shape, not {a.describe()} and {b.describe()}")
        sa, sb = self.shifts
        return TensorType(*a.shape, (a.low << sa) + (b.low << sb), (a.high << sa) + (b.high << sb))


@dataclass(frozen=True, eq=False, kw_only=True)
class RPReLU(Node):
    """Fixed-point RPReLU (:func:`instabnn_hw.hw.affine.rprelu`)."""

    gamma: np.ndarray
    slope: np.ndarray
    zeta: np.ndarray
    slope_shift: int
    out_shift: int
    low: int
    high: int
    op = "rprelu"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "gamma", _frozen_array(self.name, "gamma", self.gamma))
        for name in ("slope", "zeta"):
            object.__setattr__(self, name, _frozen_array(self.name, name, getattr(self, name), shape=self.gamma.shape))
        _check_int(self.name, "slope_shift", self.slope_shift, low=0, high=32)
        _check_int(self.name, "out_shift", self.out_shift, low=0, high=128)
        _check_int(self.name, "low", self.low)
        _check_int(self.name, "high", self.high, low=self.low)

    def infer(self, inputs):
        (x,) = inputs
        self._need(not x.binary, f"takes a multi-bit tensor, not {x.describe()}")
        self._need(self.gamma.shape == (x.channels,), f"needs constants for {x.channels} channels")
        return TensorType(x.channels, x.height, x.width, self.low, self.high)


@dataclass(frozen=True, eq=False, kw_only=True)
class InstaPReLU(RPReLU):
    """INSTA-PReLU (:func:`instabnn_hw.hw.insta.insta_prelu`).

    ``inputs = (x, stats)``: ``x`` is the block output, ``stats`` names the block's
    :class:`InstaThreshold` (with ``emit_stats``), whose features of the block input drive the
    SE branch; its ``stats`` must equal this node's.
    """

    stats: tuple[str, ...]
    w1: np.ndarray
    b1: np.ndarray
    hidden_shift: int
    hidden_max: int
    w2: np.ndarray
    delta_shift: int
    instance_slope: bool = False
    arity = 2
    op = "insta_prelu"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "stats", tuple(self.stats))
        channels = self.gamma.shape[0]
        stats_channels = np.asarray(self.w1).shape[1] // max(1, len(self.stats))
        _freeze_mlp(self, inputs=len(self.stats) * stats_channels, outputs=channels * (2 if self.instance_slope else 1))
        _check_int(self.name, "delta_shift", self.delta_shift, low=0, high=256)

    @property
    def stats_channels(self) -> int:
        return self.w1.shape[1] // len(self.stats)

    def constants(self) -> dict:
        """The keyword arguments of :func:`~instabnn_hw.hw.insta.insta_prelu` and
        :class:`~instabnn_hw.hw.insta_prelu.InstaPReLU` that this node fixes (its SE branch and activation)."""
        names = ("w1", "b1", "hidden_shift", "hidden_max", "w2", "delta_shift", "gamma", "slope", "zeta")
        names += ("slope_shift", "out_shift", "low", "high", "instance_slope")
        return {name: getattr(self, name) for name in names}

    def infer(self, inputs):
        x, source = inputs
        out = super().infer([x])
        self._need(
            source.channels == self.stats_channels,
            f"its MLP reads {self.stats_channels} channels of statistics, the source has {source.channels}",
        )
        return out


@dataclass(frozen=True, eq=False, kw_only=True)
class _Pool(Node):
    kernel: int
    stride: int
    padding: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, low in (("kernel", 1), ("stride", 1), ("padding", 0)):
            _check_int(self.name, name, getattr(self, name), low=low)


@dataclass(frozen=True, eq=False, kw_only=True)
class MaxPool(_Pool):
    """Per-channel maximum over ``K x K`` windows, padding excluded (the OR of bits for binary tensors)."""

    op = "maxpool"

    def infer(self, inputs):
        (x,) = inputs
        h, w = _window_out(self, x, self.kernel, self.stride, self.padding)
        return dataclasses.replace(x, height=h, width=w)


@dataclass(frozen=True, eq=False, kw_only=True)
class SumPool(_Pool):
    """Per-channel sum over ``K x K`` windows without padding (average pooling times ``K*K``)."""

    op = "sumpool"

    def infer(self, inputs):
        (x,) = inputs
        self._need(not x.binary and self.padding == 0, "sums a multi-bit tensor without padding")
        h, w = _window_out(self, x, self.kernel, self.stride, self.padding)
        n = self.kernel * self.kernel
        return TensorType(x.channels, h, w, n * x.low, n * x.high)


@dataclass(frozen=True, eq=False, kw_only=True)
class GlobalSumPool(Node):
    """Per-channel sum over ``H x W`` (global average pooling times ``H*W``)."""

    op = "global_sumpool"

    def infer(self, inputs):
        (x,) = inputs
        self._need(not x.binary, f"sums a multi-bit tensor, not {x.describe()}")
        n = x.height * x.width
        return TensorType(x.channels, 1, 1, n * x.low, n * x.high)


@dataclass(frozen=True, eq=False, kw_only=True)
class Repeat(Node):
    """Channel concatenation ``concat(x, x, ...)`` (``times`` copies): ReActNet-A's doubling shortcut."""

    times: int = 2
    op = "repeat"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_int(self.name, "times", self.times, low=2)

    def infer(self, inputs):
        (x,) = inputs
        return dataclasses.replace(x, channels=x.channels * self.times)


@dataclass(frozen=True, eq=False, kw_only=True)
class Argmax(Node):
    """The class: index of the first maximum of ``C x 1 x 1`` logits (``numpy.argmax``'s tie rule)."""

    op = "argmax"

    def infer(self, inputs):
        (x,) = inputs
        self._need(not x.binary and (x.height, x.width) == (1, 1), f"takes C x 1 x 1 logits, not {x.describe()}")
        return TensorType(1, 1, 1, 0, x.channels - 1)
