# amaranth: UnusedElaboratable=no
"""The hardware of each IR node: which :mod:`instabnn_hw.hw` components, how wide, how fast.

:func:`stage_widths` applies the width rules (the width of a stream is its elements per word) to
a whole graph, and :func:`stage_spec` turns one IR node into a :class:`StageSpec`: its
components as ``(key, component class, parameters)`` in dataflow order, how they are wired to
each other, and the figures of the whole stage, summed from each component's own
(:meth:`instabnn_hw.hw.figures.Parameters.figures`), none of which builds a port. The planner
(:mod:`.plan`) sums the specs' figures; the emitter (:mod:`.emit`) builds the same specs
(:meth:`StageSpec.build`) and joins them.

Conventions
-----------
* Every stream between two stages carries channel words (:mod:`instabnn_hw.hw.layouts`) whose
  elements have the shape of the IR type of the producer (:attr:`~.ir.TensorType.element_shape`:
  ``unsigned(1)`` for binary tensors, else ``shape_for(low, high)`` of the type's exact range). A
  component whose own element shape differs (an MVU accumulator, a join) is linked element by
  element: values always lie in the IR range, so sign extension or truncation is exact.
* A stage takes each IR input at the width of its producer (``in_widths``) and converts it
  itself (:class:`~instabnn_hw.hw.reshape.WidthConverter`; through ``lcm`` with two converters
  when neither width divides the other: through ``gcd`` the stream would carry ``gcd`` elements per
  cycle, below the consumer's word rate, and an MVU reading its vector during its first fold would
  wait on it).
* Width rules: PixelInput ``in_channels``; XnorConv / IntConv ``pe``; Argmax 1 (one word per
  image); every other node the width of its first input.
* Every stage but the input and the Argmax ends in a
  :class:`~instabnn_hw.hw.plumbing.RegisterSlice` of its output stream (IR element shape, its
  width): ``valid``, payload and ``ready`` are registers at every boundary between two stages,
  so no combinational path runs from one stage into the next. A convolution's window reaches its
  MVU through one more slice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
from amaranth.hdl import Shape
from amaranth.lib import wiring

from instabnn_hw.hw.affine import Requantise, RPReLU
from instabnn_hw.hw.figures import Figures
from instabnn_hw.hw.fixed import shape_for
from instabnn_hw.hw.insta_prelu import InstaPReLU
from instabnn_hw.hw.int_mvu import Argmax, IntMatrixVector
from instabnn_hw.hw.layouts import channel_word, window_word
from instabnn_hw.hw.moments import MomentsThreshold
from instabnn_hw.hw.plumbing import JoinAdd, RegisterSlice
from instabnn_hw.hw.pool import GlobalSumPool, MaxPool, SumPool
from instabnn_hw.hw.reshape import Repeat, WidthConverter
from instabnn_hw.hw.threshold import StaticThreshold
from instabnn_hw.hw.window import SlidingWindow
from instabnn_hw.hw.xnor_mvu import XnorMatrixVector
from instabnn_hw.strict_json import short_repr

from . import ir

__all__ = [
    "MVU_TYPES",
    "Part",
    "Stage",
    "StageSpec",
    "build_stage",
    "check_fold",
    "data_consumers",
    "mvu_nodes",
    "stage_spec",
    "stage_widths",
    "trivial_window",
]

#: IR node types that are matrix-vector units (folded by PE and SIMD).
MVU_TYPES = (ir.XnorConv, ir.IntConv)

#: Options of :meth:`StageSpec.build` that change how a component is emitted, not what it computes.
_EMIT_OPTIONS = ("weights_file", "external_modules")


@dataclass(frozen=True, eq=False)
class Part:
    """One component of a stage: its class and parameters, checked when the part is made.

    Attributes
    ----------
    key : str
        The component's name in the stage (``"convert"``, ``"window"``, ``"mvu"``, ``"unit"``, ...).
    component : type
        The :mod:`instabnn_hw.hw` component class.
    params : mapping
        Its keyword parameters (:meth:`~instabnn_hw.hw.figures.Parameters.parameters`).
    words : int
        Input words of one frame.
    options : tuple of str
        The emission options it takes (``"weights_file"``, ``"external_modules"``).
    """

    key: str
    component: type
    params: Mapping
    words: int
    options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "parameters", self.component.parameters(**self.params))

    @cached_property
    def figures(self) -> Figures:
        return self.parameters.figures(self.words)

    def build(self, **options) -> wiring.Component:
        """The component, with those of ``options`` it takes."""
        return self.component(**self.params, **{k: v for k, v in options.items() if k in self.options})


@dataclass(frozen=True, eq=False)
class StageSpec:
    """The hardware of one IR node, before anything is built.

    Attributes
    ----------
    name : str
        The node's name.
    parts : tuple of Part
        In dataflow order, e.g. ``convert``, ``window``, ``mvu``; empty for a
        :class:`~.ir.PixelInput` (its MSB flip is inline in the top).
    in_widths : tuple of int
        Width each IR input arrives with (its producer's width; the stage converts). For an
        :class:`~.ir.InstaPReLU`'s statistics input it is 1 (one channel's features per word).
    out_width : int
        Width of the stream leaving the stage.
    inputs : tuple of str
        Per IR input, the port it enters by, as ``"component.port"`` (``"join.i.1"``).
    output : str
        The port of the stream leaving the stage (``"mvu.o"``); empty for a PixelInput.
    links : tuple of (str, str)
        Internal connections ``(source port, sink port)``, in dataflow order.
    in_shapes : tuple of Shape
        Element shape of each IR input stream (its producer's element shape).
    out_shape : Shape
        Element shape of the stream leaving the stage (the node's element shape).
    stats : str or None
        The statistics port of an :class:`~.ir.InstaThreshold` with ``emit_stats``.
    """

    name: str
    parts: tuple[Part, ...]
    in_widths: tuple[int, ...]
    out_width: int
    inputs: tuple[str, ...] = ()
    output: str = ""
    links: tuple[tuple[str, str], ...] = ()
    in_shapes: tuple[Shape, ...] = ()
    out_shape: Shape | None = None
    stats: str | None = None

    @cached_property
    def figures(self) -> Figures:
        """The stage's figures: the slowest part's cycles; latencies, costs and lags summed.

        ``latency`` is an estimate for an idle stage at full rate: each part fed one word per cycle.
        """
        parts = [part.figures for part in self.parts]
        return Figures(
            cycles=max((f.cycles for f in parts), default=0),
            latency=sum(f.latency for f in parts),
            post=sum(f.post for f in parts),
            luts=sum(f.luts for f in parts),
            memory_bits=sum(f.memory_bits for f in parts),
            multipliers=sum(f.multipliers for f in parts),
            lag=sum(f.lag for f in parts),
        )

    def part(self, key: str) -> Part:
        """The part called ``key``."""
        for part in self.parts:
            if part.key == key:
                return part
        raise KeyError(f"{self.name} has no component {key!r}")

    def build(self, *, weights_file: str | None = None, external_modules: bool = False) -> Stage:
        """The stage's components, built.

        Parameters
        ----------
        weights_file : str or None
            For an MVU: the ``$readmemh`` file of its weight memory (``None``: inline weights).
        external_modules : bool
            For Verilog output: the components' read/write memories (line and frame buffers,
            parameter banks, input buffers) are instances of :data:`~instabnn_hw.hw.ram.RAM_MODULE`
            and the XNOR MVUs' popcounts instances of the shared modules of
            :func:`~instabnn_hw.hw.popcount.popcount_verilog` (``False``: all inline, for Amaranth's
            simulator). The logic and the figures do not change.
        """
        options = {"weights_file": weights_file, "external_modules": external_modules}
        return Stage(self, tuple((part.key, part.build(**options)) for part in self.parts))


@dataclass(frozen=True, eq=False)
class Stage:
    """A :class:`StageSpec` built: its components, in the same order as its parts."""

    spec: StageSpec
    components: tuple[tuple[str, wiring.Component], ...] = field(default=())

    def component(self, name: str) -> wiring.Component:
        """The component called ``name``."""
        for key, component in self.components:
            if key == name:
                return component
        raise KeyError(f"{self.spec.name} has no component {name!r}")

    def port(self, path: str):
        """The stream interface at ``"component.port[.index]"``."""
        name, *rest = path.split(".")
        target = self.component(name)
        for part in rest:
            target = target[int(part)] if part.isdigit() else getattr(target, part)
        return target


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


def check_fold(graph: ir.Graph, name: str, value) -> tuple[int, int]:
    """``(pe, simd)`` of MVU node ``name`` from ``value`` (a ``(pe, simd)`` pair or an object with
    ``pe`` and ``simd``), checked against the layer.

    ``PE`` divides the output channels; ``SIMD`` the input channels, or for a fully connected layer
    (``kernel == H == W > 1``: its vector is its input frame in stream order) all its inputs.

    Raises
    ------
    ValueError
        One line naming the layer.
    """
    if hasattr(value, "pe") and hasattr(value, "simd"):
        pe, simd = value.pe, value.simd
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        pe, simd = value
    else:
        raise ValueError(f"fold of layer {name} must be (PE, SIMD), not {short_repr(value)}")
    node = graph.node(name)
    x = graph.types[node.inputs[0]]
    fc = trivial_window(node, x) and node.kernel > 1
    simd_of = (node.cols, "inputs") if fc else (x.channels, "input channels")
    for key, v, (of, of_name) in (("PE", pe, (node.out_channels, "output channels")), ("SIMD", simd, simd_of)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"layer {name}: {key} must be a positive integer, not {short_repr(v)}")
        if of % v:
            raise ValueError(f"layer {name}: {key} {v} does not divide its {of} {of_name}")
    return int(pe), int(simd)


def stage_widths(graph: ir.Graph, folding: Mapping) -> dict[str, int]:
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
        Naming the layer whose folding is missing or does not divide its channels.
    """
    widths: dict[str, int] = {}
    for node in graph.nodes:
        if isinstance(node, ir.PixelInput):
            widths[node.name] = node.channels
        elif isinstance(node, MVU_TYPES):
            if node.name not in folding:
                raise ValueError(f"layer {node.name}: the folding has no PE / SIMD for this layer")
            widths[node.name] = check_fold(graph, node.name, folding[node.name])[0]
        elif isinstance(node, ir.Argmax):
            widths[node.name] = 1
        else:
            widths[node.name] = widths[node.inputs[0]]
    return widths


class _Builder:
    """Collects a stage's parts and links."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.parts: list[Part] = []
        self.links: list[tuple[str, str]] = []

    def add(self, key: str, component: type, words: int, options: tuple[str, ...] = (), /, **params) -> Part:
        part = Part(key, component, params, int(words), options)
        self.parts.append(part)
        return part

    def convert(self, key: str, shape, elements: int, w_in: int, w_out: int) -> tuple[str, str] | None:
        """Converters from ``w_in`` to ``w_out`` elements per word; ``(first input, last output)`` ports."""
        if w_in == w_out:
            return None
        steps = [w_in, w_out] if max(w_in, w_out) % min(w_in, w_out) == 0 else [w_in, math.lcm(w_in, w_out), w_out]
        ports = []
        for j, (a, b) in enumerate(zip(steps, steps[1:], strict=False)):
            name = key if len(steps) == 2 else f"{key}{j}"
            self.add(name, WidthConverter, elements // a, shape=shape, in_count=a, out_count=b)
            if ports:
                self.links.append((ports[-1][1], f"{name}.i"))
            ports.append((f"{name}.i", f"{name}.o"))
        return ports[0][0], ports[-1][1]

    def window(self, x: ir.TensorType, shape, simd: int, node) -> Part:
        return self.add(
            "window",
            SlidingWindow,
            x.elements // simd,
            ("external_modules",),
            shape=shape,
            channels=x.channels,
            simd=simd,
            height=x.height,
            width=x.width,
            kernel=node.kernel,
            stride=node.stride,
            padding=node.padding,
        )

    def spec(self, **kwargs) -> StageSpec:
        return StageSpec(name=self.name, parts=tuple(self.parts), links=tuple(self.links), **kwargs)


def build_stage(
    graph: ir.Graph,
    name: str,
    *,
    folding,
    widths,
    parallel: int = 1,
    weights_file: str | None = None,
    external_modules: bool = False,
) -> Stage:
    """The hardware of node ``name``, built: :func:`stage_spec` then :meth:`StageSpec.build`."""
    spec = stage_spec(graph, name, folding=folding, widths=widths, parallel=parallel)
    return spec.build(weights_file=weights_file, external_modules=external_modules)


def stage_spec(graph: ir.Graph, name: str, *, folding, widths, parallel: int = 1) -> StageSpec:
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

    Raises
    ------
    ValueError
        Naming the layer when its folding or widths do not fit.
    """
    node = graph.node(name)
    in_types = graph.in_types(node)
    in_shapes = tuple(t.element_shape for t in in_types)
    in_widths = tuple(widths[i] for i in node.inputs)
    common = {"in_shapes": in_shapes, "out_shape": graph.types[name].element_shape}
    try:
        spec = _spec(
            node, graph, _Builder(name), in_types, in_shapes, in_widths, widths[name], common, folding, parallel
        )
    except (TypeError, ValueError) as exc:
        message = str(exc)
        if message.startswith(f"layer {name}:"):
            raise
        raise ValueError(f"layer {name}: {message}") from None
    if not spec.output or isinstance(node, ir.Argmax):
        return spec
    words = graph.types[name].elements // spec.out_width
    cut = Part("slice", RegisterSlice, {"shape": channel_word(spec.out_shape, spec.out_width)}, words)
    return replace(spec, parts=(*spec.parts, cut), links=(*spec.links, (spec.output, "slice.i")), output="slice.o")


def _spec(node, graph, b, in_types, in_shapes, in_widths, out_width, common, folding, parallel) -> StageSpec:
    name = node.name
    if isinstance(node, ir.PixelInput):
        return b.spec(in_widths=(), out_width=out_width, **common)

    x = in_types[0]
    shape = in_shapes[0]
    w = in_widths[0]
    if x.channels % w:
        raise ValueError(f"the incoming width {w} does not divide the {x.channels} channels")

    if isinstance(node, MVU_TYPES):
        if name not in folding:
            raise ValueError("the folding has no PE / SIMD for this layer")
        pe, simd = check_fold(graph, name, folding[name])
        if out_width != pe:
            raise ValueError(f"widths[{name!r}] is {out_width}, not PE ({pe})")
        ports = b.convert("convert", shape, x.elements, w, simd)
        entry, last = ports if ports else (None, None)
        trivial = trivial_window(node, x)
        words = x.elements // simd
        if not trivial:
            words = b.window(x, shape, simd, node).parameters.output_words
            if last:
                b.links.append((last, "window.i"))
            # the window's valid comes from its position counters and the MVU's ready stalls
            # them all: cut between the two, that loop is not one long path
            b.add("window_slice", RegisterSlice, words, shape=window_word(shape, simd))
            b.links.append(("window.o", "window_slice.i"))
            entry, last = entry or "window.i", "window_slice.o"
        options = ("weights_file", "external_modules")
        if isinstance(node, ir.XnorConv):
            b.add("mvu", XnorMatrixVector, words, options, weights=node.weights, pe=pe, simd=simd, masked=not trivial)
        else:
            mvu = {"weights": node.weights, "pe": pe, "simd": simd, "in_shape": shape, "masked": not trivial}
            b.add("mvu", IntMatrixVector, words, options, **mvu)
        if last:
            b.links.append((last, "mvu.i"))
        return b.spec(in_widths=in_widths, out_width=out_width, inputs=(entry or "mvu.i",), output="mvu.o", **common)

    words = x.elements // w  # words per frame of the (first) input
    if out_width != (1 if isinstance(node, ir.Argmax) else w):
        raise ValueError(f"widths[{name!r}] is {out_width}, but the width rule gives {w}")
    simple = {"in_widths": in_widths, "out_width": out_width, "inputs": ("unit.i",), "output": "unit.o", **common}
    frame = {"channels": x.channels, "simd": w, "height": x.height, "width": x.width}
    external = ("external_modules",)
    if isinstance(node, ir.Threshold):
        params = {"shape": shape, "channels": x.channels, "simd": w, "thresholds": node.thresholds, "flip": node.flip}
        b.add("unit", StaticThreshold, words, **params)
        return b.spec(**simple)
    if isinstance(node, ir.Requantise):
        affine = {"mult": node.mult, "bias": node.bias, "shift": node.shift, "low": node.low, "high": node.high}
        b.add("unit", Requantise, words, external, in_shape=shape, channels=x.channels, simd=w, **affine)
        return b.spec(**simple)
    if isinstance(node, ir.InstaThreshold):
        if node.mode == "th":
            mode = {"beta": node.beta}
        else:
            mode = {
                "w1": node.w1,
                "b1": node.b1,
                "hidden_shift": node.hidden_shift,
                "hidden_max": node.hidden_max,
                "w2": node.w2,
                "parallel": parallel,
            }
        constants = {"stats": node.stats, "shifts": node.shifts, "mode": node.mode, "alpha": node.alpha}
        b.add(
            "unit",
            MomentsThreshold,
            words,
            external,
            in_shape=shape,
            **frame,
            **constants,
            out_shift=node.out_shift,
            emit_stats=node.emit_stats,
            **mode,
        )
        return b.spec(**simple, stats="unit.stats" if node.emit_stats else None)
    if isinstance(node, ir.InstaPReLU):
        source = graph.node(node.inputs[1])
        (source_in,) = graph.in_types(source)
        b.add(
            "unit",
            InstaPReLU,
            words,
            external,
            in_shape=shape,
            **frame,
            stats_channels=node.stats_channels,
            stats=node.stats,
            feature_shape=shape_for(*source.feature_range(source_in)),
            **node.constants(),
            parallel=parallel,
        )
        return b.spec(**{**simple, "inputs": ("unit.i", "unit.stats"), "in_widths": (in_widths[0], 1)})
    if isinstance(node, ir.RPReLU):
        affine = {
            "gamma": node.gamma,
            "slope": node.slope,
            "zeta": node.zeta,
            "slope_shift": node.slope_shift,
            "out_shift": node.out_shift,
            "low": node.low,
            "high": node.high,
        }
        b.add("unit", RPReLU, words, external, in_shape=shape, channels=x.channels, simd=w, **affine)
        return b.spec(**simple)
    if isinstance(node, ir.Add):
        a_type, b_type = in_types
        wide = shape_for(min(a_type.low, b_type.low), max(a_type.high, b_type.high))
        ports = b.convert("convert", in_shapes[1], b_type.elements, in_widths[1], w)
        b.add("join", JoinAdd, words, shape=wide, count=w, shifts=node.shifts)
        if ports:
            b.links.append((ports[1], "join.i.1"))
        inputs = ("join.i.0", ports[0] if ports else "join.i.1")
        return b.spec(in_widths=in_widths, out_width=out_width, inputs=inputs, output="join.o", **common)
    if isinstance(node, (ir.MaxPool, ir.SumPool)):
        window = b.window(x, shape, w, node)
        kind = MaxPool if isinstance(node, ir.MaxPool) else SumPool
        b.add(
            "pool", kind, window.parameters.output_words, shape=shape, channels=x.channels, simd=w, kernel=node.kernel
        )
        b.links.append(("window.o", "pool.i"))
        return b.spec(in_widths=in_widths, out_width=out_width, inputs=("window.i",), output="pool.o", **common)
    if isinstance(node, ir.GlobalSumPool):
        b.add("unit", GlobalSumPool, words, shape=shape, **frame)
        return b.spec(**simple)
    if isinstance(node, ir.Repeat):
        b.add("unit", Repeat, words, shape=shape, count=w, words=x.channels // w, times=node.times)
        return b.spec(**simple)
    if isinstance(node, ir.Argmax):
        b.add("unit", Argmax, words, shape=shape, count=w, classes=x.channels)
        return b.spec(**simple)
    raise TypeError(f"no hardware for {type(node).__name__}")
