# amaranth: UnusedElaboratable=no
"""The hardware of each IR node: which :mod:`instabnn_hw.hw` components, how wide, how fast.

:func:`stage_widths` applies the width rules (the width of a stream is its elements per word) to
a whole graph, and :func:`build_stage` turns one IR node into a :class:`Stage`: its components
in dataflow order, how they are wired to each other, and the figures the planner needs (cycles
per frame, latency, memory bits, multipliers). The emitter (:mod:`.emit`) instantiates the
stages and joins them; the planner (:mod:`.plan`) reads their figures. Instantiating components
elaborates nothing, so building a stage is cheap.

Conventions
-----------
* Every stream between two stages carries channel words (:mod:`instabnn_hw.hw.layouts`) whose
  elements have the shape of the IR type of the producer (:func:`element_shape`: ``unsigned(1)``
  for binary tensors, else ``shape_for(low, high)`` of the type's exact range). A component whose
  own element shape differs (an MVU accumulator, a join) is linked element by element: values
  always lie in the IR range, so sign extension or truncation is exact.
* A stage takes each IR input at the width of its producer (``in_widths``) and converts it
  itself (:class:`~instabnn_hw.hw.plumbing.WidthConverter`; through ``gcd`` with two converters
  when neither width divides the other).
* Width rules: PixelInput ``in_channels``; XnorConv / IntConv ``pe``; Argmax 1 (one word per
  image); every other node the width of its first input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Shape, unsigned
from amaranth.lib import wiring

from instabnn_hw.hw.affine import Requantise, RPReLU
from instabnn_hw.hw.fixed import shape_for
from instabnn_hw.hw.insta import InstaPReLU, MomentsThreshold
from instabnn_hw.hw.int_mvu import Argmax, IntMatrixVector
from instabnn_hw.hw.plumbing import JoinAdd, Repeat, WidthConverter
from instabnn_hw.hw.pool import GlobalSumPool, MaxPool, SumPool
from instabnn_hw.hw.threshold import StaticThreshold
from instabnn_hw.hw.window import SlidingWindow
from instabnn_hw.hw.xnor_mvu import XnorMatrixVector

from . import ir

__all__ = [
    "Stage",
    "build_stage",
    "data_consumers",
    "element_shape",
    "mvu_nodes",
    "stage_widths",
    "trivial_window",
]

#: IR node types that are matrix-vector units (folded by PE and SIMD).
MVU_TYPES = (ir.XnorConv, ir.IntConv)


@dataclass
class Stage:
    """The hardware of one IR node.

    Attributes
    ----------
    name : str
        The node's name.
    components : list of (str, wiring.Component)
        In dataflow order, e.g. ``[("convert", WidthConverter), ("window", SlidingWindow),
        ("mvu", XnorMatrixVector)]``; empty for a :class:`~.ir.PixelInput` (its MSB flip is
        inline in the top).
    in_widths : tuple of int
        Width each IR input arrives with (its producer's width; the stage converts). For an
        :class:`~.ir.InstaPReLU`'s statistics input it is 1 (one channel's features per word).
    out_width : int
        Width of the stream leaving the stage.
    cycles : int
        Cycles per frame at full rate: the maximum over the components.
    latency : int
        Cycles from the first input word to the first output word for an idle stage at full
        rate (an estimate: the sum of the components' latencies to their first output, each
        fed one word per cycle).
    memory_bits : int
        RAM / ROM bits of the components (line buffers, weights, tables).
    multipliers : int
        Hardware multipliers of the components.
    inputs : tuple of str
        Per IR input, the port it enters by, as ``"component.port"`` (``"join.i.1"``).
    output : str
        The port of the stream leaving the stage (``"mvu.o"``); empty for a PixelInput.
    links : tuple of (str, str)
        Internal connections ``(source port, sink port)``, in dataflow order.
    in_shapes : tuple of Shape
        Element shape of each IR input stream (its producer's :func:`element_shape`).
    out_shape : Shape
        Element shape of the stream leaving the stage (:func:`element_shape` of the node).
    stats : str or None
        The statistics port of an :class:`~.ir.InstaThreshold` with ``emit_stats``.
    """

    name: str
    components: list[tuple[str, wiring.Component]]
    in_widths: tuple[int, ...]
    out_width: int
    cycles: int
    latency: int
    memory_bits: int
    multipliers: int
    inputs: tuple[str, ...] = ()
    output: str = ""
    links: tuple[tuple[str, str], ...] = ()
    in_shapes: tuple[Shape, ...] = ()
    out_shape: Shape | None = None
    stats: str | None = None

    def component(self, name: str) -> wiring.Component:
        """The component called ``name``."""
        for key, component in self.components:
            if key == name:
                return component
        raise KeyError(f"{self.name} has no component {name!r}")

    def port(self, path: str):
        """The stream interface at ``"component.port[.index]"``."""
        name, *rest = path.split(".")
        target = self.component(name)
        for part in rest:
            target = target[int(part)] if part.isdigit() else getattr(target, part)
        return target


def element_shape(t: ir.TensorType) -> Shape:
    """Element shape of a stream carrying ``t``: ``unsigned(1)`` for bits, else ``shape_for(low, high)``."""
    return unsigned(1) if t.binary else shape_for(t.low, t.high)


def trivial_window(node: ir.Node, x: ir.TensorType) -> bool:
    """Whether a convolution's window stream is its input stream itself (no SlidingWindow).

    True for ``kernel == stride == 1, padding == 0`` (a vector per pixel) and for ``kernel == H ==
    W, padding == 0`` (one vector per frame: a fully connected layer).
    """
    if node.padding:
        return False
    if node.kernel == 1 and node.stride == 1:
        return True
    return node.kernel == x.height == x.width


def mvu_nodes(graph: ir.Graph) -> list[str]:
    """Names of the nodes folded by PE and SIMD (XnorConv, IntConv), graph order."""
    return [n.name for n in graph.nodes if isinstance(n, MVU_TYPES)]


def data_consumers(graph: ir.Graph, name: str) -> list[tuple[ir.Node, int]]:
    """``(consumer, input index)`` of every read of ``name``'s main output, graph order.

    An :class:`~.ir.InstaPReLU` reads its statistics input (index 1) from the ``stats`` port of
    an InstaThreshold, not from its main output, so that read is not listed.
    """
    reads = []
    for node in graph.consumers(name):
        for index, source in enumerate(node.inputs):
            if source == name and not (isinstance(node, ir.InstaPReLU) and index == 1):
                reads.append((node, index))
    return reads


def _fold(name: str, folding) -> tuple[int, int]:
    if name not in folding:
        raise ValueError(f"{name}: the folding has no PE / SIMD for this layer")
    value = folding[name]
    if hasattr(value, "pe") and hasattr(value, "simd"):
        pe, simd = value.pe, value.simd
    else:
        try:
            pe, simd = value
        except (TypeError, ValueError):
            raise ValueError(f"{name}: folding must be (pe, simd), not {value!r}") from None
    for label, v in (("PE", pe), ("SIMD", simd)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name}: {label} must be a positive integer, not {v!r}")
    return int(pe), int(simd)


def _check_fold(node: ir.Node, x: ir.TensorType, pe: int, simd: int) -> None:
    if node.out_channels % pe:
        raise ValueError(f"{node.name}: PE ({pe}) must divide the output channels ({node.out_channels})")
    fc = trivial_window(node, x) and node.kernel > 1
    if fc:
        if node.cols % simd:
            raise ValueError(f"{node.name}: SIMD ({simd}) must divide the {node.cols} inputs of the layer")
    elif x.channels % simd:
        raise ValueError(f"{node.name}: SIMD ({simd}) must divide the input channels ({x.channels})")


def stage_widths(graph: ir.Graph, folding) -> dict[str, int]:
    """The width (elements per word) of the stream leaving each node.

    Parameters
    ----------
    graph : ir.Graph
    folding : mapping
        MVU node name -> ``(pe, simd)`` (or an object with ``pe`` and ``simd``, e.g. a planner
        ``Fold``); other entries are ignored.

    Raises
    ------
    ValueError
        Naming the node whose folding is missing or does not divide its channels.
    """
    widths: dict[str, int] = {}
    for node in graph.nodes:
        if isinstance(node, ir.PixelInput):
            widths[node.name] = node.channels
        elif isinstance(node, MVU_TYPES):
            pe, simd = _fold(node.name, folding)
            _check_fold(node, graph.types[node.inputs[0]], pe, simd)
            widths[node.name] = pe
        elif isinstance(node, ir.Argmax):
            widths[node.name] = 1
        else:
            widths[node.name] = widths[node.inputs[0]]
    return widths


# -- component figures: cycles per frame and latency to the first output word, full rate


def _converter_latency(c: WidthConverter) -> int:
    # narrowing: the first piece leaves one cycle after the word arrives; widening: after all pieces
    return c.initiation_interval


class _Builder:
    """Collects a stage's components, links and figures."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.components: list[tuple[str, wiring.Component]] = []
        self.links: list[tuple[str, str]] = []
        self.cycles = 0
        self.latency = 0
        self.memory_bits = 0
        self.multipliers = 0

    def add(self, key: str, component: wiring.Component, *, cycles: int, latency: int, memory_bits: int = 0):
        self.components.append((key, component))
        self.cycles = max(self.cycles, int(cycles))
        self.latency += int(latency)
        self.memory_bits += int(memory_bits)
        self.multipliers += int(getattr(component, "multipliers", 0))
        return component

    def convert(self, key: str, shape, elements: int, w_in: int, w_out: int) -> tuple[str, str] | None:
        """Converters from ``w_in`` to ``w_out`` elements per word; ``(first input, last output)`` ports."""
        if w_in == w_out:
            return None
        steps = [w_in, w_out] if max(w_in, w_out) % min(w_in, w_out) == 0 else [w_in, math.gcd(w_in, w_out), w_out]
        ports = []
        for j, (a, b) in enumerate(zip(steps, steps[1:], strict=False)):
            name = key if len(steps) == 2 else f"{key}{j}"
            c = WidthConverter(shape=shape, in_count=a, out_count=b)
            self.add(name, c, cycles=elements // min(a, b), latency=_converter_latency(c))
            if ports:
                self.links.append((ports[-1][1], f"{name}.i"))
            ports.append((f"{name}.i", f"{name}.o"))
        return ports[0][0], ports[-1][1]

    def stage(self, **kwargs) -> Stage:
        return Stage(
            name=self.name,
            components=self.components,
            cycles=self.cycles,
            latency=self.latency,
            memory_bits=self.memory_bits,
            multipliers=self.multipliers,
            links=tuple(self.links),
            **kwargs,
        )


def build_stage(
    graph: ir.Graph,
    name: str,
    *,
    folding,
    widths,
    parallel: int = 1,
    weights_file=None,
    external_modules: bool = False,
) -> Stage:
    """The hardware of node ``name`` (see the module notes for the rules).

    Parameters
    ----------
    graph : ir.Graph
    name : str
        The node.
    folding : mapping
        MVU node name -> ``(pe, simd)`` (or a ``Fold``); only this node's entry is read.
    widths : mapping of str to int
        :func:`stage_widths` of the graph (the width leaving every node).
    parallel : int
        Multiply-accumulates per cycle of an InstaThreshold's (``"th+"``) or InstaPReLU's MLP.
    weights_file : str or None
        For an MVU: the ``$readmemh`` file of its weight memory (``None``: inline weights).
    external_modules : bool
        For Verilog output: the components' read/write memories (line and frame buffers,
        parameter banks, input buffers) are instances of :data:`~instabnn_hw.hw.ram.RAM_MODULE`
        and the XNOR MVUs' popcounts instances of the shared modules of
        :func:`~instabnn_hw.hw.popcount.popcount_verilog` (``False``: all inline, for Amaranth's
        simulator). The logic and the figures do not change.

    Raises
    ------
    ValueError
        Naming the node when its folding or widths do not fit.
    """
    node = graph.node(name)
    out_type = graph.types[name]
    in_types = graph.in_types(node)
    in_shapes = tuple(element_shape(t) for t in in_types)
    in_widths = tuple(widths[i] for i in node.inputs)
    out_width = widths[name]
    b = _Builder(name)
    common = {"in_shapes": in_shapes, "out_shape": element_shape(out_type)}
    try:
        return _build(
            node,
            graph,
            b,
            in_types,
            in_shapes,
            in_widths,
            out_width,
            common,
            folding,
            parallel,
            weights_file,
            external_modules,
        )
    except (TypeError, ValueError) as exc:
        message = str(exc)
        if message.startswith(f"{name}:"):
            raise
        raise ValueError(f"{name}: {message}") from None


def _build(
    node, graph, b, in_types, in_shapes, in_widths, out_width, common, folding, parallel, weights_file, external
):
    name = node.name
    out_type = graph.types[name]
    if isinstance(node, ir.PixelInput):
        words = out_type.height * out_type.width
        b.cycles = words
        return b.stage(in_widths=(), out_width=out_width, **common)

    x = in_types[0] if in_types else None
    shape = in_shapes[0] if in_shapes else None
    w = in_widths[0] if in_widths else None
    pixels = x.height * x.width
    frame_elements = x.elements
    if w is not None and x.channels % w:
        raise ValueError(f"{name}: the incoming width {w} does not divide the {x.channels} channels")

    if isinstance(node, MVU_TYPES):
        pe, simd = _fold(name, folding)
        _check_fold(node, x, pe, simd)
        if out_width != pe:
            raise ValueError(f"{name}: widths[{name!r}] is {out_width}, not PE ({pe})")
        ports = b.convert("convert", shape, frame_elements, w, simd)
        entry = ports[0] if ports else None
        last = ports[1] if ports else None
        trivial = trivial_window(node, x)
        vectors = out_type.height * out_type.width
        if not trivial:
            window = SlidingWindow(
                shape=shape,
                channels=x.channels,
                simd=simd,
                height=x.height,
                width=x.width,
                kernel=node.kernel,
                stride=node.stride,
                padding=node.padding,
                external_memories=external,
            )
            rows = min(x.height, node.kernel - node.padding)
            b.add(
                "window",
                window,
                cycles=window.cycles_per_frame,
                latency=rows * x.width * window.groups + 1,
                memory_bits=window.memory_bits,
            )
            if last:
                b.links.append((last, "window.i"))
            entry = entry or "window.i"
            last = "window.o"
        if isinstance(node, ir.XnorConv):
            mvu = XnorMatrixVector(
                weights=node.weights,
                pe=pe,
                simd=simd,
                masked=not trivial,
                weights_file=weights_file,
                shared_popcounts=external,
            )
        else:
            mvu = IntMatrixVector(
                weights=node.weights,
                pe=pe,
                simd=simd,
                in_shape=shape,
                masked=not trivial,
                weights_file=weights_file,
                external_memories=external,
            )
        b.add(
            "mvu",
            mvu,
            cycles=mvu.cycles_per_vector * vectors,
            latency=mvu.synapse_fold - 1 + mvu.latency,
            memory_bits=mvu.memory_bits,
        )
        if last:
            b.links.append((last, "mvu.i"))
        return b.stage(in_widths=in_widths, out_width=out_width, inputs=(entry or "mvu.i",), output="mvu.o", **common)

    words = frame_elements // w  # words per frame of the (first) input
    if out_width != (1 if isinstance(node, ir.Argmax) else w):
        raise ValueError(f"{name}: widths[{name!r}] is {out_width}, but the width rule gives {w}")
    simple = {"in_widths": in_widths, "out_width": out_width, "inputs": ("unit.i",), "output": "unit.o", **common}
    if isinstance(node, ir.Threshold):
        unit = StaticThreshold(shape=shape, channels=x.channels, simd=w, thresholds=node.thresholds, flip=node.flip)
        b.add("unit", unit, cycles=words, latency=unit.latency, memory_bits=unit.memory_bits)
        return b.stage(**simple)
    if isinstance(node, ir.Requantise):
        unit = Requantise(
            in_shape=shape,
            channels=x.channels,
            simd=w,
            mult=node.mult,
            bias=node.bias,
            shift=node.shift,
            low=node.low,
            high=node.high,
        )
        b.add("unit", unit, cycles=words, latency=unit.latency, memory_bits=unit.memory_bits)
        return b.stage(**simple)
    if isinstance(node, ir.InstaThreshold):
        unit = _moments_threshold(node, x, shape, w, parallel, external)
        b.add("unit", unit, cycles=unit.cycles_per_frame, latency=unit.latency, memory_bits=unit.memory_bits)
        return b.stage(**simple, stats="unit.stats" if node.emit_stats else None)
    if isinstance(node, ir.InstaPReLU):
        source = graph.node(node.inputs[1])
        (source_in,) = graph.in_types(source)
        feature_shape = shape_for(*source.feature_range(source_in))  # = that MomentsThreshold's feature_shape
        unit = InstaPReLU(
            in_shape=shape,
            channels=x.channels,
            simd=w,
            height=x.height,
            width=x.width,
            stats_channels=node.stats_channels,
            stats=node.stats,
            feature_shape=feature_shape,
            **node.constants(),
            parallel=parallel,
            external_memories=external,
        )
        b.add("unit", unit, cycles=unit.cycles_per_frame, latency=unit.latency, memory_bits=unit.memory_bits)
        simple["inputs"] = ("unit.i", "unit.stats")
        simple["in_widths"] = (in_widths[0], 1)
        return b.stage(**simple)
    if isinstance(node, ir.RPReLU):
        unit = RPReLU(
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
        )
        b.add("unit", unit, cycles=words, latency=unit.latency, memory_bits=unit.memory_bits)
        return b.stage(**simple)
    if isinstance(node, ir.Add):
        a_type, b_type = in_types
        wide = shape_for(min(a_type.low, b_type.low), max(a_type.high, b_type.high))
        ports = b.convert("convert", in_shapes[1], b_type.elements, in_widths[1], w)
        join = JoinAdd(shape=wide, count=w, shifts=node.shifts)
        b.add("join", join, cycles=words, latency=1)
        if ports:
            b.links.append((ports[1], "join.i.1"))
        inputs = ("join.i.0", ports[0] if ports else "join.i.1")
        return b.stage(in_widths=in_widths, out_width=out_width, inputs=inputs, output="join.o", **common)
    if isinstance(node, (ir.MaxPool, ir.SumPool)):
        window = SlidingWindow(
            shape=shape,
            channels=x.channels,
            simd=w,
            height=x.height,
            width=x.width,
            kernel=node.kernel,
            stride=node.stride,
            padding=node.padding,
            external_memories=external,
        )
        rows = min(x.height, node.kernel - node.padding)
        b.add(
            "window",
            window,
            cycles=window.cycles_per_frame,
            latency=rows * x.width * window.groups + 1,
            memory_bits=window.memory_bits,
        )
        kind = MaxPool if isinstance(node, ir.MaxPool) else SumPool
        pool = kind(shape=shape, channels=x.channels, simd=w, kernel=node.kernel)
        b.add("pool", pool, cycles=window.output_words, latency=(node.kernel**2 - 1) * pool.groups + 1)
        b.links.append(("window.o", "pool.i"))
        return b.stage(in_widths=in_widths, out_width=out_width, inputs=("window.i",), output="pool.o", **common)
    if isinstance(node, ir.GlobalSumPool):
        unit = GlobalSumPool(shape=shape, channels=x.channels, simd=w, height=x.height, width=x.width)
        b.add("unit", unit, cycles=unit.cycles_per_frame, latency=(pixels - 1) * unit.groups + 1)
        return b.stage(**simple)
    if isinstance(node, ir.Repeat):
        unit = Repeat(shape=shape, count=w, words=x.channels // w, times=node.times)
        b.add("unit", unit, cycles=words * node.times, latency=unit.latency, memory_bits=unit.buffer_bits)
        return b.stage(**simple)
    if isinstance(node, ir.Argmax):
        unit = Argmax(shape=shape, count=w, classes=x.channels)
        b.add("unit", unit, cycles=words, latency=unit.words_per_frame - 1 + unit.latency)
        return b.stage(**simple)
    raise TypeError(f"{name}: no hardware for {type(node).__name__}")


def _moments_threshold(node: ir.InstaThreshold, x: ir.TensorType, shape, simd: int, parallel: int, external: bool):
    kwargs = {}
    if node.mode == "th":
        kwargs["beta"] = node.beta
    else:
        kwargs.update(
            w1=node.w1,
            b1=node.b1,
            hidden_shift=node.hidden_shift,
            hidden_max=node.hidden_max,
            w2=node.w2,
            parallel=parallel,
        )
    return MomentsThreshold(
        in_shape=shape,
        channels=x.channels,
        simd=simd,
        height=x.height,
        width=x.width,
        stats=node.stats,
        shifts=node.shifts,
        mode=node.mode,
        alpha=node.alpha,
        out_shift=node.out_shift,
        emit_stats=node.emit_stats,
        external_memories=external,
        **kwargs,
    )
