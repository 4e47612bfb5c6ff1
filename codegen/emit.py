# amaranth: UnusedElaboratable=no
"""The emitter: one dataflow design ``instabnn_top`` from an IR graph and a plan.

:func:`build_top` instantiates every node's :class:`~.stages.Stage` and joins them into
:class:`Top`: a node read more than once feeds a chain of :class:`~instabnn_hw.hw.plumbing.Fork`
(one more branch each), every edge the plan gives a depth gets a
:class:`~instabnn_hw.hw.plumbing.Fifo` right after the fork, and every link whose element shapes
differ (an accumulator into the IR range, a narrow branch into a wider join) goes element by
element (:func:`_link`). :func:`emit` writes the Verilog, the ROM, RAM and popcount modules and
the weight memory files.

Ports of the top (:mod:`instabnn_hw.hw.layouts` conventions):

* ``i``: pixels, ``ArrayLayout(unsigned(8), in_channels)``, one pixel per word, raster order;
  the network sees ``p - 128`` (an MSB flip, inline);
* ``o``: one word per image, ``StructLayout({"index", "value"})`` of the
  :class:`~instabnn_hw.hw.int_mvu.Argmax` (the class and its logit);
* ``logits``: the logits, channel words at the width reaching the Argmax.

Both outputs must be consumed (tie ``ready`` high for one that is not needed).
"""

from __future__ import annotations

import re
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Module, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from instabnn_hw.design_folder import TOP_NAME, DesignPorts, StreamPort, tap_signal
from instabnn_hw.hw.layouts import channel_word
from instabnn_hw.hw.plumbing import Fifo, Fork
from instabnn_hw.hw.rom import rom_files
from instabnn_hw.hw.verilog_modules import module_sources

from . import ir
from .plan import Plan
from .stages import MVU_TYPES, Stage, data_consumers, stage_spec, stage_widths

__all__ = ["TOP_NAME", "Top", "build_top", "emit", "memory_file_name"]

#: Name of the top-level Verilog module.

#: The top's name for the logits output, as an edge consumer in ``plan.fifo_depths``.
LOGITS = "logits"


def memory_file_name(name: str, taken: set[str] | None = None) -> str:
    """``name`` with every character outside ``[A-Za-z0-9_.-]`` replaced by ``_``, plus ``.hex``.

    With ``taken`` (names already used, updated), a clash gets a ``_2``, ``_3``... suffix.
    """
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or "node"
    candidate, k = f"{base}.hex", 2
    if taken is not None:
        while candidate in taken:
            candidate, k = f"{base}_{k}.hex", k + 1
        taken.add(candidate)
    return candidate


def _identifier(text: str) -> str:
    return re.sub(r"\W", "_", text)


def _link(m: Module, src, dst) -> None:
    """``src`` drives ``dst`` (valid, payload; ready back), element by element where shapes differ.

    Channel words whose element shapes differ are sign- or zero-extended (per the source's
    signedness) or truncated element by element: the compiler only links streams whose values
    fit both shapes (the IR range).
    """
    m.d.comb += [dst.valid.eq(src.valid), src.ready.eq(dst.ready)]
    s_shape, d_shape = src.payload.shape(), dst.payload.shape()
    if s_shape == d_shape:
        m.d.comb += dst.payload.eq(src.payload)
        return
    if (
        isinstance(s_shape, data.ArrayLayout)
        and isinstance(d_shape, data.ArrayLayout)
        and s_shape.length == d_shape.length
    ):
        m.d.comb += [dst.payload[k].eq(src.payload[k]) for k in range(s_shape.length)]
        return
    raise TypeError(f"cannot link a stream of {s_shape!r} to one of {d_shape!r}")


class Top(wiring.Component):
    """The generated design ``instabnn_top`` (see the module notes for the ports).

    Parameters
    ----------
    graph : ir.Graph
    plan : codegen.plan.Plan
        Read: ``folding`` (PE, SIMD of the MVUs), ``widths`` (checked against the width rules),
        ``parallel`` (MLP MACs per cycle of INSTA units) and ``fifo_depths``.
    rom_dir : str or None
        Directory that the MVUs' ``$readmemh`` paths name (``"<rom_dir>/<node>.hex"``); ``None``
        keeps every weight memory inline (for Amaranth's simulator).
    external_modules : bool or None
        For Verilog output: the read/write memories (line and frame buffers, FIFOs, parameter
        banks) are instances of :data:`~instabnn_hw.hw.ram.RAM_MODULE` and the XNOR MVUs'
        popcounts instances of the shared modules of :attr:`popcount_sizes`
        (:func:`~instabnn_hw.hw.popcount.popcount_verilog`); ``False``: all inline, for
        Amaranth's simulator. ``None``: when ``rom_dir`` is given.

    Members
    -------
    i : In(stream.Signature(ArrayLayout(unsigned(8), in_channels)))
    o : Out(stream.Signature(StructLayout({"index": ..., "value": ...})))
    logits : Out(stream.Signature(channel_word(logits shape, width)))

    Raises
    ------
    ValueError
        When the plan does not fit the graph: widths that break the rules, a missing folding,
        or an edge that needs a FIFO (a fork branch into an Add, an InstaThreshold's statistics
        into an InstaPReLU) without a depth.
    """

    def __init__(
        self, graph: ir.Graph, plan, *, rom_dir: str | None = None, external_modules: bool | None = None
    ) -> None:
        self._graph = graph
        self._pixels = graph.input.height * graph.input.width
        if external_modules is None:
            external_modules = rom_dir is not None
        if not isinstance(external_modules, bool):
            raise TypeError(f"external_modules must be a bool or None, not {external_modules!r}")
        self._external = external_modules
        if not isinstance(plan, Plan):
            raise TypeError(f"plan must be a codegen.plan.Plan, not {type(plan).__name__}")
        folding = plan.folding
        widths = stage_widths(graph, folding)
        for name, width in plan.widths.items():
            node = graph.node(name) if name in widths else None
            if node is not None and not isinstance(node, ir.Argmax) and width != widths[name]:
                raise ValueError(f"{name}: the plan's width {width} differs from the width rule's {widths[name]}")
        self._widths = widths
        self._fifo_depths = dict(plan.fifo_depths)
        parallel = dict(plan.parallel)
        self._memory_files: dict[str, str] = {}
        self._stages: dict[str, Stage] = {}
        taken: set[str] = set()
        for node in graph.nodes:
            weights_file = None
            if isinstance(node, MVU_TYPES) and rom_dir is not None:
                file_name = memory_file_name(node.name, taken)
                weights_file = f"{rom_dir}/{file_name}"
            spec = stage_spec(graph, node.name, folding=folding, widths=widths, parallel=parallel.get(node.name, 1))
            stage = spec.build(weights_file=weights_file, external_modules=external_modules)
            if weights_file is not None:
                mvu = stage.component("mvu")
                for name, text in rom_files(file_name, mvu.weight_words(), mvu.weight_word_width).items():
                    self._memory_files[f"mem/{name}"] = text
            self._stages[node.name] = stage
        self._check_fifos()
        argmax = self._stages[graph.output.name].component("unit")
        logits = graph.logits
        super().__init__(
            {
                "i": In(stream.Signature(channel_word(unsigned(8), graph.input.channels))),
                "o": Out(stream.Signature(argmax.o.payload.shape())),
                LOGITS: Out(stream.Signature(channel_word(self._stages[logits].spec.out_shape, widths[logits]))),
            }
        )

    @property
    def graph(self) -> ir.Graph:
        return self._graph

    @property
    def stages(self) -> dict[str, Stage]:
        """Every node's :class:`~.stages.Stage`, graph order."""
        return dict(self._stages)

    @property
    def widths(self) -> dict[str, int]:
        return dict(self._widths)

    @property
    def external_modules(self) -> bool:
        """Whether the RAMs and popcounts are instances of Verilog modules (see the parameter)."""
        return self._external

    @property
    def popcount_sizes(self) -> set[tuple[int, int]]:
        """``{(width, stages)}`` of the XNOR MVUs' popcounts: the shared modules the design needs."""
        sizes = set()
        for stage in self._stages.values():
            for _, component in stage.components:
                sizes |= getattr(component, "popcount_sizes", set())
        return sizes

    @property
    def ports(self) -> DesignPorts:
        """The top's streams as data (what the manifest records): ``i``, ``o``, ``logits`` and the taps."""
        graph = self._graph
        taps = {graph.input.name: StreamPort.of("pixels", channel_word(signed(8), graph.input.channels), self._pixels)}
        for node in graph.nodes[1:-1]:
            spec = self._stages[node.name].spec
            words = graph.types[node.name].elements // spec.out_width
            taps[node.name] = StreamPort.of(tap_signal(node.name), channel_word(spec.out_shape, spec.out_width), words)
        logits = graph.logits
        return DesignPorts(
            i=StreamPort.of("i", self.i.payload.shape(), self._pixels),
            o=StreamPort.of("o", self.o.payload.shape(), 1),
            logits=StreamPort.of("logits", self.logits.payload.shape(), taps[logits].words_per_image),
            taps=taps,
        )

    @property
    def memory_files(self) -> dict[str, str]:
        """``{"mem/<file>": text}`` of the MVU weight memories: ``mem/<node>.hex``, or one file per
        tile of a deep one (:func:`~instabnn_hw.hw.rom.rom_files`); empty with inline ROMs."""
        return dict(self._memory_files)

    def _readers(self, name: str) -> list[tuple[str, int]]:
        """``(consumer, input index)`` of every read of ``name``'s main output (the logits port last)."""
        reads = [(node.name, index) for node, index in data_consumers(self._graph, name)]
        if name == self._graph.logits:
            reads.append((LOGITS, 0))
        return reads

    def _stats_readers(self, name: str) -> list[tuple[str, int]]:
        return [
            (node.name, 1)
            for node in self._graph.consumers(name)
            if isinstance(node, ir.InstaPReLU) and node.inputs[1] == name
        ]

    def _check_fifos(self) -> None:
        graph = self._graph
        for node in graph.nodes:
            readers = self._readers(node.name)
            if len(readers) > 1:
                for consumer, _ in readers:
                    if consumer != LOGITS and isinstance(graph.node(consumer), ir.Add):
                        self._depth(node.name, consumer, required=True)
            for consumer, _ in self._stats_readers(node.name):
                self._depth(node.name, consumer, required=True)
        for (producer, consumer), depth in self._fifo_depths.items():
            known = (
                [c for c, _ in self._readers(producer) + self._stats_readers(producer)]
                if producer in self._stages
                else []
            )
            if consumer not in known:
                raise ValueError(
                    f"the plan gives a FIFO to the edge {producer} -> {consumer}, which is not in the graph"
                )
            if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
                raise ValueError(f"the FIFO depth of the edge {producer} -> {consumer} must be >= 1, not {depth!r}")

    def _depth(self, producer: str, consumer: str, *, required: bool = False) -> int | None:
        depth = self._fifo_depths.get((producer, consumer))
        if depth is None and required:
            raise ValueError(f"the edge {producer} -> {consumer} needs a FIFO, but the plan gives it no depth")
        return depth

    def elaborate(self, platform):
        m = Module()
        graph = self._graph
        sources = {}  # node -> stream of its output (IR element shape, its width)
        stats = {}  # InstaThreshold -> stream of its statistics

        def interface(shape, width, name):
            return stream.Signature(channel_word(shape, width)).create(path=(name,))

        # the pixels: p - 128 is the MSB flip
        pixels = interface(signed(8), graph.input.channels, "pixels")
        m.d.comb += [pixels.valid.eq(self.i.valid), self.i.ready.eq(pixels.ready)]
        for k in range(graph.input.channels):
            m.d.comb += pixels.payload[k].eq((self.i.payload[k] ^ 0x80).as_signed())
        sources[graph.input.name] = pixels

        for node in graph.nodes[1:]:
            stage = self._stages[node.name]
            prefix = _identifier(node.name)
            for key, component in stage.components:
                m.submodules[f"{prefix}__{key}"] = component
            spec = stage.spec
            for src, dst in spec.links:
                _link(m, stage.port(src), stage.port(dst))
            if isinstance(node, ir.Argmax):
                _link(m, stage.port(spec.output), self.o)
                continue
            out = interface(spec.out_shape, spec.out_width, tap_signal(node.name))
            _link(m, stage.port(spec.output), out)
            sources[node.name] = out
            if spec.stats is not None:
                stats[node.name] = stage.port(spec.stats)

        # the edges: forks, FIFOs, links into the consumers' ports
        def sink(consumer: str, index: int):
            if consumer == LOGITS:
                return self.logits
            stage = self._stages[consumer]
            return stage.port(stage.spec.inputs[index])

        def distribute(producer: str, source, readers, tag: str):
            if not readers:
                m.d.comb += source.ready.eq(1)
                return
            branches = [source]
            for j in range(len(readers) - 1):
                fork = Fork(shape=source.payload.shape())
                m.submodules[f"{_identifier(producer)}__{tag}fork{j}"] = fork
                _link(m, branches.pop(), fork.i)
                branches += [fork.o[0], fork.o[1]]
            for branch, (consumer, index) in zip(branches, readers, strict=True):
                depth = self._depth(producer, consumer)
                if depth is not None:
                    fifo = Fifo(shape=branch.payload.shape(), depth=depth, external_modules=self._external)
                    m.submodules[f"{_identifier(producer)}__{tag}fifo_{_identifier(consumer)}_{index}"] = fifo
                    _link(m, branch, fifo.i)
                    branch = fifo.o
                _link(m, branch, sink(consumer, index))

        for node in graph.nodes[:-1]:
            distribute(node.name, sources[node.name], self._readers(node.name), "")
            if node.name in stats:
                distribute(node.name, stats[node.name], self._stats_readers(node.name), "stats_")
        return m


def build_top(
    graph: ir.Graph, plan, *, rom_dir: str | None = "mem", external_modules: bool | None = None
) -> tuple[Top, dict[str, str]]:
    """The top component and the memory files it reads: ``{"mem/<node>.hex": text}``.

    ``rom_dir`` is the directory the ``$readmemh`` paths name (relative to the simulator's or
    synthesis tool's working directory, or absolute); ``None`` keeps the weights inline (for
    Amaranth's simulator) and returns no files. ``external_modules`` (default: ``rom_dir`` is
    given) makes the RAMs and popcounts instances of Verilog modules (see :class:`Top`), so
    ``build_top(graph, plan, rom_dir=None)`` is all inline.
    """
    top = Top(graph, plan, rom_dir=rom_dir, external_modules=external_modules)
    return top, top.memory_files


def emit(graph: ir.Graph, plan, rtl_dir) -> tuple[list[Path], DesignPorts]:
    """Writes ``rtl_dir/``: ``instabnn_top.v``, ``instabnn_rom.v``, ``instabnn_ram.v``, ``instabnn_mul.v``,
    ``instabnn_popcount.v`` and ``mem/*.hex``.

    The design's sources are every ``*.v`` in ``rtl_dir``: the top instantiates the shared modules of
    :func:`~instabnn_hw.hw.verilog_modules.module_sources`:
    :data:`~instabnn_hw.hw.rom.ROM_MODULE` (weights), :data:`~instabnn_hw.hw.ram.RAM_MODULE`
    (line and frame buffers, FIFOs, parameter banks; their zero start is simulation-only, outside
    ``SYNTHESIS``), :data:`~instabnn_hw.hw.multiplier.MULTIPLIER_MODULE` (the products on DSP
    blocks' registers when ``INSTABNN_ECP5`` is defined) and one popcount module per size
    (:func:`~instabnn_hw.hw.popcount.popcount_verilog`).
    The ``$readmemh`` paths are ``mem/<node>.hex``, relative: run simulators and synthesis from
    ``rtl_dir`` (or copy ``mem/`` beside them). Deterministic: the same graph and plan give
    byte-identical files, wherever the package is installed (no source-location attributes).
    Returns the files written, sorted, and the top's ports.
    """
    rtl_dir = Path(rtl_dir)
    top, files = build_top(graph, plan, rom_dir="mem", external_modules=True)
    (rtl_dir / "mem").mkdir(parents=True, exist_ok=True)
    written = []
    for relative, text in sorted(files.items()):
        path = rtl_dir / relative
        path.write_text(text)
        written.append(path)
    top_path = rtl_dir / f"{TOP_NAME}.v"
    top_path.write_text(verilog.convert(top, name=TOP_NAME, emit_src=False))
    for module, source in module_sources(top.popcount_sizes).items():
        path = rtl_dir / f"{module}.v"
        path.write_text(source)
        written.append(path)
    written.append(top_path)
    return sorted(written), top.ports
