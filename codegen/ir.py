"""The integer IR: the contract between training (``quant/``) and hardware (``hw/``).

A :class:`Graph` is a list of typed layer nodes in topological order. Every node holds only
integers: weights and constants are int64 numpy arrays (read-only), shifts and clamps are
ints, and every tensor between nodes has a :class:`TensorType` with its exact element range,
from which the hardware derives each width. Nothing is float.

Node semantics are the numpy models of :mod:`instabnn_hw.hw` (one implementation each);
:mod:`.reference` executes a graph with them. Tensors are ``C x H x W`` per image; binary
tensors hold 0/1 (bit 1 means +1).

================  ======================================================================
node              meaning (inputs -> output)
================  ======================================================================
PixelInput        raw pixels ``p`` in 0..255 -> ``p - 128`` (signed 8-bit; an MSB flip)
IntConv           multi-bit x, integer weights -> exact dot products (window, masked padding)
XnorConv          bits, 0/1 weights -> ``2 * popcount(XNOR AND valid) - K_valid``
Threshold         multi-bit -> bits, ``x >= T_c`` (``x <= T_c`` where ``flip_c``)
InstaThreshold    multi-bit -> bits, per-image thresholds from the frame's moments
Requantise        ``clamp(round_shift(x * mult_c + bias_c, shift), low, high)``
Add               ``(a << shifts[0]) + (b << shifts[1])`` (the residual join)
RPReLU            fixed-point RPReLU (:func:`instabnn_hw.hw.affine.rprelu`)
InstaPReLU        RPReLU with a per-image shift from an InstaThreshold's features
MaxPool           per-channel maximum over K x K windows (padding excluded)
SumPool           per-channel sum over K x K windows, no padding
GlobalSumPool     per-channel sum over H x W -> C x 1 x 1
Repeat            channel concatenation of x with itself ``times`` times
Argmax            logits (C x 1 x 1) -> class index (first maximum)
================  ======================================================================
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from amaranth.hdl import Shape, unsigned

from instabnn_hw.hw.fixed import shape_for
from instabnn_hw.hw.insta import MODES, STATISTICS, feature_bounds
from instabnn_hw.hw.window import check_window_geometry, output_size
from instabnn_hw.strict_json import JSON_SIZE_LIMIT, json_kind, parse_json, short_repr

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
    "Graph",
    "GRAPH_FORMAT",
    "save_graph",
    "load_graph",
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


@dataclass(frozen=True, eq=False)
class Graph:
    """A lowered model: nodes in topological order, from one :class:`PixelInput` to one :class:`Argmax`.

    Attributes
    ----------
    model : str
        Zoo name of the model.
    config : dict
        The model's configuration (``ModelConfig`` fields), for the record.
    nodes : tuple of Node
        Topological order; names unique.
    types : dict
        Output :class:`TensorType` of every node (computed).
    """

    model: str
    config: dict
    nodes: tuple[Node, ...]
    types: dict[str, TensorType] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))
        types: dict[str, TensorType] = {}
        for node in self.nodes:
            if not isinstance(node, Node):
                raise IRError(f"graph nodes must be IR nodes, not {type(node).__name__}")
            if node.name in types:
                raise IRError(f"node name {node.name!r} is used twice")
            missing = [i for i in node.inputs if i not in types]
            if missing:
                raise IRError(f"{node.name}: inputs {missing} are not produced by an earlier node")
            types[node.name] = node.infer([types[i] for i in node.inputs])
        object.__setattr__(self, "types", types)
        inputs = [n for n in self.nodes if isinstance(n, PixelInput)]
        outputs = [n for n in self.nodes if isinstance(n, Argmax)]
        if len(inputs) != 1 or self.nodes[0] is not inputs[0]:
            raise IRError("a graph starts with its one PixelInput")
        if len(outputs) != 1 or self.nodes[-1] is not outputs[0]:
            raise IRError("a graph ends with its one Argmax")
        for node in self.nodes:
            if isinstance(node, InstaPReLU):
                source = self.node(node.inputs[1])
                if not isinstance(source, InstaThreshold) or not source.emit_stats or source.stats != node.stats:
                    raise IRError(
                        f"{node.name}: its statistics must come from an InstaThreshold with emit_stats and the "
                        f"same stats {node.stats}"
                    )
        unused = [n.name for n in self.nodes[:-1] if not self.consumers(n.name)]
        if unused:
            raise IRError(f"nodes {unused} feed nothing")

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def consumers(self, name: str) -> list[Node]:
        """Nodes that read ``name``'s output, in graph order."""
        return [n for n in self.nodes if name in n.inputs]

    @property
    def input(self) -> PixelInput:
        return self.nodes[0]

    @property
    def output(self) -> Argmax:
        return self.nodes[-1]

    @property
    def logits(self) -> str:
        """Name of the node whose output is the logits."""
        return self.output.inputs[0]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.types[self.input.name].shape

    @property
    def num_classes(self) -> int:
        return self.types[self.logits].channels

    def in_types(self, node: Node) -> list[TensorType]:
        return [self.types[i] for i in node.inputs]


# ---------------------------------------------------------------------------------------------
# persistence: graph.npz

#: ``format`` and ``version`` of the header of a saved graph.
GRAPH_FORMAT = ("instabnn-ir", 1)
_HEADER = "graph.json"
_HEADER_KEYS = ("format", "version", "model", "config", "nodes")
_NODE_KEYS = ("class", "name", "inputs", "fields")
#: Every member of the archive gets this date, so the same graph gives the same bytes.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)

# ---------------------------------------------------------------------------------------------
# persistence: graph.npz


def _node_classes() -> dict[str, type]:
    return {
        cls.__name__: cls
        for cls in globals().values()
        if isinstance(cls, type) and issubclass(cls, Node) and cls is not Node and not cls.__name__.startswith("_")
    }


def _encode(value, key: str, arrays: dict[str, np.ndarray]):
    """JSON for ``value``; arrays go to ``arrays`` under ``key`` (tuples and dicts are tagged)."""
    if isinstance(value, np.ndarray):
        arrays[key] = value
        return {"$array": key}
    if isinstance(value, tuple):
        return {"$tuple": [_encode(v, f"{key}.{j}", arrays) for j, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{key}.{j}", arrays) for j, v in enumerate(value)]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise IRError(f"{key}: only dicts with string keys can be saved, not {sorted(map(repr, value))}")
        return {"$dict": {k: _encode(v, f"{key}.{k}", arrays) for k, v in value.items()}}
    if isinstance(value, float) and not math.isfinite(value):
        # JSON has no such number; load_graph refuses the NaN / Infinity that json.dumps would write
        raise IRError(f"{key}: cannot save the number {value}")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise IRError(f"{key}: cannot save a value of type {type(value).__name__}")


class _Malformed(Exception):
    """A saved graph whose header or members do not fit the format; the message is the reason."""


def _decode(value, arrays: Mapping, used: set[str], where: str):
    """The value :func:`_encode` wrote as ``value``; ``used`` collects the array members it names."""
    if isinstance(value, list):
        return [_decode(v, arrays, used, f"{where}[{j}]") for j, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    if len(value) != 1 or next(iter(value)) not in ("$array", "$tuple", "$dict"):
        raise _Malformed(f"{where} is {short_repr(value)}, not a tagged $array, $tuple or $dict")
    ((tag, inner),) = value.items()
    if tag == "$array":
        if not isinstance(inner, str) or inner not in arrays:
            raise _Malformed(f"{where} names the array {short_repr(inner)}, which the archive does not hold")
        used.add(inner)
        return arrays[inner]
    if tag == "$tuple":
        if not isinstance(inner, list):
            raise _Malformed(f"{where}: $tuple holds a JSON {json_kind(inner)}, not an array")
        return tuple(_decode(v, arrays, used, f"{where}[{j}]") for j, v in enumerate(inner))
    if not isinstance(inner, dict):
        raise _Malformed(f"{where}: $dict holds a JSON {json_kind(inner)}, not an object")
    return {k: _decode(v, arrays, used, f"{where}.{k}") for k, v in inner.items()}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _tuple_of(check, length: int | None = None):
    return lambda v: isinstance(v, tuple) and (length is None or len(v) == length) and all(map(check, v))


#: Per annotation of a node field: (what a saved value must be, whether a decoded value is one).
_FIELD_KINDS = {
    "int": ("an integer", _is_int),
    "int | None": ("an integer or null", lambda v: v is None or _is_int(v)),
    "str": ("a string", lambda v: isinstance(v, str)),
    "bool": ("a boolean", lambda v: isinstance(v, bool)),
    "np.ndarray": ("an array", lambda v: isinstance(v, np.ndarray)),
    "np.ndarray | None": ("an array or null", lambda v: v is None or isinstance(v, np.ndarray)),
    "tuple[str, ...]": ("a $tuple of strings", _tuple_of(lambda x: isinstance(x, str))),
    "tuple[int, ...]": ("a $tuple of integers", _tuple_of(_is_int)),
    "tuple[int, int]": ("a $tuple of two integers", _tuple_of(_is_int, 2)),
}


def _keys_exactly(record: dict, keys, where: str) -> None:
    missing = [k for k in keys if k not in record]
    if missing:
        raise _Malformed(f"{where} misses {', '.join(map(repr, missing))}")
    extra = [k for k in record if k not in keys]
    if extra:
        raise _Malformed(f"{where} has unknown fields {', '.join(short_repr(k, 40) for k in extra[:5])}")


def _zip_member(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def save_graph(graph: Graph, path) -> None:
    """Writes ``graph`` to ``path`` as a ``.npz`` archive: ``graph.json`` (the nodes and their scalar
    fields) and one ``.npy`` member per array; loadable with :func:`load_graph` (and ``numpy.load``).

    Deterministic: the same graph gives the same bytes (fixed member dates and order).
    """
    if not isinstance(graph, Graph):
        raise TypeError(f"graph must be an ir.Graph, not {type(graph).__name__}")
    arrays: dict[str, np.ndarray] = {}
    nodes = []
    for j, node in enumerate(graph.nodes):
        fields = {
            f.name: _encode(getattr(node, f.name), f"n{j}.{f.name}", arrays)
            for f in dataclasses.fields(node)
            if f.name not in ("name", "inputs")
        }
        nodes.append({"class": type(node).__name__, "name": node.name, "inputs": list(node.inputs), "fields": fields})
    header = {
        "format": GRAPH_FORMAT[0],
        "version": GRAPH_FORMAT[1],
        "model": graph.model,
        "config": _encode(dict(graph.config), "config", arrays),
        "nodes": nodes,
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        _zip_member(archive, _HEADER, json.dumps(header, indent=1).encode())
        for key, array in arrays.items():
            data = io.BytesIO()
            np.lib.format.write_array(data, np.ascontiguousarray(array), allow_pickle=False)
            _zip_member(archive, f"{key}.npy", data.getvalue())
    with open(os.fspath(path), "wb") as f:
        f.write(buffer.getvalue())


def _read_archive(path: str) -> tuple[dict, dict[str, np.ndarray]]:
    """The header and the arrays (by member name without ``.npy``) of the archive ``path``."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            members = {info.filename: info for info in infos}
            if len(members) != len(infos):
                raise _Malformed("it holds a member twice")
            if _HEADER not in members:
                raise _Malformed(f"it has no {_HEADER}")
            if members[_HEADER].file_size > JSON_SIZE_LIMIT:
                raise _Malformed(f"its {_HEADER} is larger than {JSON_SIZE_LIMIT // 2**20} MiB")
            try:
                header = parse_json(archive.read(_HEADER))
            except ValueError as exc:
                raise _Malformed(f"its {_HEADER} {exc}") from None
            arrays = {}
            for name in members:
                if name == _HEADER:
                    continue
                if not name.endswith(".npy"):
                    raise _Malformed(f"it holds the member {short_repr(name)}, which is not a .npy array")
                try:
                    arrays[name[: -len(".npy")]] = np.lib.format.read_array(
                        io.BytesIO(archive.read(name)), allow_pickle=False
                    )
                except ValueError as exc:
                    raise _Malformed(f"its member {short_repr(name)} is not a plain .npy array ({exc})") from None
    except (OSError, zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        # a missing or unreadable file, no zip, a damaged member, a compression or encryption zipfile lacks
        raise _Malformed(str(exc) or type(exc).__name__) from None
    return header, arrays


def _check_header(path: str, header) -> None:
    if not isinstance(header, dict):
        raise _Malformed(f"its {_HEADER} holds a JSON {json_kind(header)}, not an object")
    found = (header.get("format"), header.get("version"))
    if not (found == GRAPH_FORMAT and _is_int(found[1])):
        raise IRError(
            f"{path} holds {short_repr(found[0])} version {short_repr(found[1])}, not "
            f"{GRAPH_FORMAT[0]!r} version {GRAPH_FORMAT[1]}"
        )
    _keys_exactly(header, _HEADER_KEYS, f"its {_HEADER}")
    if not isinstance(header["model"], str):
        raise _Malformed(f"its model is a JSON {json_kind(header['model'])}, not a string")
    if not isinstance(header["nodes"], list):
        raise _Malformed(f"its nodes are a JSON {json_kind(header['nodes'])}, not an array")


def _node_arguments(entry, j: int, classes: dict[str, type], arrays: Mapping, used: set[str]) -> tuple[type, dict]:
    """The node class and the keyword arguments of node ``j``'s header ``entry``, type-checked."""
    where = f"node {j}"
    if not isinstance(entry, dict):
        raise _Malformed(f"{where} is a JSON {json_kind(entry)}, not an object")
    _keys_exactly(entry, _NODE_KEYS, where)
    name, inputs, fields = entry["name"], entry["inputs"], entry["fields"]
    if not isinstance(name, str):
        raise _Malformed(f"{where}: its name is a JSON {json_kind(name)}, not a string")
    where = f"node {short_repr(name)}"
    cls = classes.get(entry["class"]) if isinstance(entry["class"], str) else None
    if cls is None:
        raise _Malformed(f"{where} has the unknown node type {short_repr(entry['class'])}")
    if not (isinstance(inputs, list) and all(isinstance(i, str) for i in inputs)):
        raise _Malformed(f"{where}: its inputs must be an array of names, not {short_repr(inputs)}")
    if not isinstance(fields, dict):
        raise _Malformed(f"{where}: its fields are a JSON {json_kind(fields)}, not an object")
    annotations = {f.name: f.type for f in dataclasses.fields(cls) if f.name not in ("name", "inputs")}
    _keys_exactly(fields, tuple(annotations), f"{where} ({cls.__name__})")
    arguments = {"name": name, "inputs": tuple(inputs)}
    for key, annotation in annotations.items():
        value = _decode(fields[key], arrays, used, f"{where}.{key}")
        kind = _FIELD_KINDS.get(annotation)
        if kind is not None and not kind[1](value):
            shown = f"an array of {value.dtype}" if isinstance(value, np.ndarray) else short_repr(value)
            raise _Malformed(f"{where}: {key} must be {kind[0]}, not {shown}")
        if isinstance(value, np.ndarray) and (value.dtype != np.int64 or value.ndim == 0):
            # save_graph writes the int64 vectors and matrices of the nodes, nothing else
            raise _Malformed(
                f"{where}: {key} must be an int64 vector or matrix, not {value.dtype} of shape {value.shape}"
            )
        arguments[key] = value
    return cls, arguments


def load_graph(path) -> Graph:
    """The graph :func:`save_graph` wrote to ``path`` (node for node, arrays int64 read-only).

    The archive must hold exactly what :func:`save_graph` writes: the header with its fields,
    every node with all the fields of its type, each of its type (integers, strings, int64
    arrays...), and the arrays the header names, no other member.

    Raises
    ------
    IRError
        One line naming the file: when ``path`` is not a saved graph of this format, or when its
        nodes do not make a consistent graph.
    """
    path = os.fspath(path)
    try:
        header, arrays = _read_archive(path)
        _check_header(path, header)
        used: set[str] = set()
        config = _decode(header["config"], arrays, used, "config")
        if not isinstance(config, dict):
            raise _Malformed(f"its config is {short_repr(config)}, not a $dict")
        classes = _node_classes()
        nodes = []
        for j, entry in enumerate(header["nodes"]):
            cls, arguments = _node_arguments(entry, j, classes, arrays, used)
            try:
                nodes.append(cls(**arguments))
            except IRError:
                raise
            except (TypeError, ValueError, IndexError, KeyError, AttributeError) as exc:
                # a combination of fields that the node's own checks do not expect
                raise IRError(f"{arguments['name']}: its fields do not fit its type {cls.__name__} ({exc})") from None
        unused = sorted(set(arrays) - used)
        if unused:
            raise _Malformed(f"it holds arrays no field names: {', '.join(f'{k}.npy' for k in unused[:5])}")
        try:
            return Graph(model=header["model"], config=config, nodes=tuple(nodes))
        except IRError:
            raise
        except (TypeError, ValueError, IndexError, KeyError, AttributeError) as exc:
            raise IRError(f"its nodes do not make a graph ({exc})") from None
    except _Malformed as exc:
        raise IRError(f"{path} is not a saved IR graph ({' '.join(str(exc).split())})") from None
    except IRError as exc:
        message = " ".join(str(exc).split())  # one line, whatever a value's text holds
        raise IRError(message if message.startswith(path) else f"{path}: {message}") from None
