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
* ``fold``: the given PE / SIMD of every MVU layer (:func:`.fold_config.read_fold_config`); the MLPs get the
  least parallelism that keeps them off the critical path.
* none of these: the design balanced to the unavoidable bottleneck, i.e. ``T`` = the cycles of
  the first MVU layer (the pixel layer, whose SIMD is bounded by the input channels) at full
  parallelism, or the slowest stage of the full-parallelism design when that is slower.

Stream widths: :func:`~.stages.stage_widths`, the emitter's rule.

FIFO depths: :func:`.fifos.fifo_depths`, from the demand functions of :func:`.fifos.demand`.

Estimates: per layer, its stage's figures (:attr:`.stages.StageSpec.figures`: the sums of the
hw components' own, :mod:`instabnn_hw.hw.figures`, the LUTs by its calibrated model), for the
very components the emitter builds from the same specs. Forks (one per extra consumer of a
stream) and FIFOs are attributed to the layer they feed, width converters to their stage.
Totals: ``cycles_per_frame`` = the slowest stage, ``fps = clock / cycles_per_frame``,
``latency_cycles`` = the longest path from the first pixel to the class (:func:`_latency`);
LUTs, memory bits and multipliers are sums.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from amaranth.hdl import unsigned

from instabnn_hw.errors import OptionError, check_clock, check_number
from instabnn_hw.hw.fixed import shape_for
from instabnn_hw.hw.plumbing import Fifo, Fork
from instabnn_hw.strict_json import printable_names

from . import ir
from .fifos import data_inputs, demand, fifo_depths
from .plan_data import RESOURCE_NAMES, Capacity, Estimate, Fold, LayerEstimate, Plan, PlanError
from .stages import MVU_TYPES, check_fold, mvu_nodes, stage_spec, stage_widths

__all__ = [
    "PlanError",
    "Capacity",
    "Fold",
    "LayerEstimate",
    "Estimate",
    "Plan",
    "plan",
    "check_fold_mapping",
    "fold_path",
]


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def fold_path(graph: ir.Graph, name: str) -> list[Fold]:
    """The fixed increasing path of ``(PE, SIMD)`` points of MVU node ``name``: SIMD through the
    divisors of ``C_in`` (PE 1), then PE through the divisors of ``C_out`` (SIMD = ``C_in``)."""
    node = graph.node(name)
    if not isinstance(node, MVU_TYPES):
        raise ValueError(f"{name} is not a matrix-vector layer")
    c_in = graph.types[node.inputs[0]].channels
    path = [Fold(1, s) for s in _divisors(c_in)]
    path += [Fold(p, c_in) for p in _divisors(node.out_channels)[1:]]
    return path


# ---------------------------------------------------------------------------------------------
# the cost of one node's hardware: its stage's figures


@dataclass(frozen=True)
class _Cost:
    cycles: int
    latency: int
    post: int  # pipeline latency after the demand of the first output word is met
    lag: int  # FIFO margins: the stage's latency plus the lag of its last fold (an upper bound)
    memory_bits: int
    multipliers: int
    luts: int


class _Model:
    """The cost of every node for a folding, from its stage's figures, with a cache (the planner's
    search runs on it)."""

    def __init__(self, graph: ir.Graph) -> None:
        self.graph = graph
        self.types = graph.types
        self.nodes = {n.name: n for n in graph.nodes}
        self.consumers = {n.name: [c.name for c in graph.consumers(n.name)] for n in graph.nodes}
        self.mvus = mvu_nodes(graph)
        self.mlp_nodes = [
            n.name
            for n in graph.nodes
            if (isinstance(n, ir.InstaThreshold) and n.mode == "th+") or isinstance(n, ir.InstaPReLU)
        ]
        self.paths = {name: fold_path(graph, name) for name in self.mvus}
        self._cache: dict = {}

    def hidden(self, name: str) -> int:
        return self.nodes[name].w1.shape[0]

    def mvu_core_cycles(self, name: str, fold: Fold) -> int:
        """Cycles of the window and MVU of an MVU stage (independent of the incoming width)."""
        key = ("core", name, fold)
        cycles = self._cache.get(key)
        if cycles is None:
            widths = {self.nodes[name].inputs[0]: fold.simd, name: fold.pe}
            spec = stage_spec(self.graph, name, folding={name: fold}, widths=widths)
            cycles = self._cache[key] = spec.figures.cycles
        return cycles

    def cost(self, name: str, folding, widths, parallel) -> _Cost:
        node = self.nodes[name]
        w_in = widths[node.inputs[0]] if node.inputs else 0
        fold = folding.get(name) if isinstance(node, MVU_TYPES) else None
        w_extra = widths[node.inputs[1]] if isinstance(node, ir.Add) else 0
        p = parallel.get(name, 1)
        key = ("cost", name, fold, w_in, w_extra, p)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        figures = stage_spec(self.graph, name, folding=folding, widths=widths, parallel=p).figures
        cost = _Cost(
            cycles=figures.cycles,
            latency=figures.latency,
            post=figures.post,
            lag=figures.latency + figures.lag,
            memory_bits=figures.memory_bits,
            multipliers=figures.multipliers,
            luts=figures.luts,
        )
        self._cache[key] = cost
        return cost

    def producer(self, name: str) -> str:
        """The MVU (or the PixelInput) whose PE sets the width of ``name``'s output stream."""
        node = self.nodes[name]
        while not isinstance(node, (*MVU_TYPES, ir.PixelInput)):
            node = self.nodes[node.inputs[0]]
        return node.name


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
            widths = stage_widths(self.graph, folding)
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
                for u in node.inputs if isinstance(node, ir.Add) else data_inputs(node):
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


def plan(
    graph: ir.Graph, *, fps=None, lut_budget=None, fold=None, clock_mhz: float = 100.0, capacity: Capacity | None = None
) -> Plan:
    """Folds ``graph`` for ``fps`` frames/s, or within ``lut_budget`` LUTs, or as ``fold`` says, or
    (none of these, with ``capacity``) as fast as a device holds.

    Parameters
    ----------
    graph : Graph
        The lowered model.
    fps : float, optional
        Target frames per second at ``clock_mhz``.
    lut_budget : int, optional
        LUT4 equivalents the design may use: the fastest design within it.
    fold : dict of str to Fold (or (pe, simd)), optional
        PE / SIMD of every MVU layer (from :func:`.fold_config.read_fold_config`).
    clock_mhz : float
        Clock frequency of the estimates.
    capacity : Capacity, optional
        A device's resources: with no target, the fastest folding whose estimate fits them (never
        faster than the balanced design); with one, a check that its design fits.

    At most one of ``fps``, ``lut_budget`` and ``fold``; none: the balanced design (module
    docstring), or with ``capacity`` the fastest that fits.

    Raises
    ------
    PlanError
        With one line: an impossible fps, a budget below the minimum design, a bad fold, a model
        that fits ``capacity`` at no folding or a target whose design does not fit it.
    """
    if capacity is not None and not isinstance(capacity, Capacity):
        raise TypeError(f"capacity must be a Capacity, not {type(capacity).__name__}")
    if not isinstance(graph, ir.Graph):
        raise TypeError(f"graph must be an ir.Graph, not {type(graph).__name__}")
    clock_mhz = check_targets(fps=fps, lut_budget=lut_budget, fold=fold, clock_mhz=clock_mhz)
    clock_hz = clock_mhz * 1e6
    planner = _Planner(graph)
    model = planner.model

    full_folding, full_parallel = planner.full_parallel()
    full_cycles = planner.cycles(full_folding, stage_widths(graph, full_folding), full_parallel)
    bottleneck = max(full_cycles, key=full_cycles.__getitem__)
    min_cycles = full_cycles[bottleneck]

    if fold is not None:
        folding = check_fold_mapping(graph, fold)
        widths = stage_widths(graph, folding)
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
            if capacity is not None:
                target = _capacity_target(planner, capacity, target)
        try:
            folding, widths, parallel = planner.choose(target)
        except _Infeasible as exc:
            raise PlanError(
                f"no folding meets {target} cycles per frame: layer {exc.name} cannot run faster; "
                f"lower --fps or raise --clock"
            ) from None
    result = _finish(planner, folding, widths, parallel, clock_mhz)
    if capacity is not None and (fps is not None or lut_budget is not None or fold is not None):
        _check_capacity(result.estimate, capacity, fps=fps, lut_budget=lut_budget)
    return result


def _check_capacity(estimate: Estimate, capacity: Capacity, *, fps, lut_budget) -> None:
    totals = {"luts": estimate.luts, "memory_bits": estimate.memory_bits, "multipliers": estimate.multipliers}
    over = capacity.excess(totals)
    if not over:
        return
    resource, need, available = over[0]
    if fps is not None:
        given = f"--fps {_format_number(fps)}"
    elif lut_budget is not None:
        given = f"--lut-budget {lut_budget}"
    else:
        given = "--fold-config"
    if resource == RESOURCE_NAMES["memory_bits"]:
        hint = capacity.hint(resource)
    else:
        hint = f"leave {given} out for the fastest folding that fits"
    raise PlanError(
        f"with {given} the design needs {need:,} {resource} and {capacity.name} {capacity.offers(resource)} "
        f"{available:,}: {hint}"
    )


def _totals(planner: _Planner, target: int) -> dict[str, int]:
    """LUT4, memory bits and multipliers of the least folding meeting ``target`` cycles per frame."""
    _, _, numbers = _numbers(planner, *planner.choose(target))
    return {
        "luts": sum(n[4] for n in numbers.values()),
        "memory_bits": sum(n[2] for n in numbers.values()),
        "multipliers": sum(n[3] for n in numbers.values()),
    }


def _slowest_target(planner: _Planner) -> int:
    """Cycles per frame of the minimum design: every PE = SIMD = 1 (no stage needs widening at its
    own bottleneck)."""
    folding = {name: Fold(1, 1) for name in planner.model.mvus}
    parallel = {name: 1 for name in planner.model.mlp_nodes}
    widths = stage_widths(planner.graph, folding)
    return max(planner.cycles(folding, widths, parallel).values())


def _fastest_fitting(planner: _Planner, fits, min_cycles: int, high: int) -> int:
    """The least target in ``[min_cycles, high]`` whose totals ``fits`` (``high``'s do)."""
    low = min_cycles
    if fits(_totals(planner, low)):
        return low
    while high - low > 1:  # high fits, low does not
        mid = (low + high) // 2
        if fits(_totals(planner, mid)):
            high = mid
        else:
            low = mid
    return high


def _budget_target(planner: _Planner, budget: int, min_cycles: int) -> int:
    high = _slowest_target(planner)
    minimum = _totals(planner, high)["luts"]
    if minimum > budget:
        raise PlanError(
            f"--lut-budget {budget} is below the minimum design of {minimum} LUTs (every PE = SIMD = 1); "
            f"raise the budget"
        )
    return _fastest_fitting(planner, lambda totals: totals["luts"] <= budget, min_cycles, high)


def _capacity_target(planner: _Planner, capacity: Capacity, min_cycles: int) -> int:
    high = _slowest_target(planner)
    over = capacity.excess(_totals(planner, high))
    if over:
        resource, need, available = over[0]
        raise PlanError(
            f"the design does not fit {capacity.name} at any folding: even with every PE = SIMD = 1 it needs "
            f"{need:,} {resource} and {capacity.name} {capacity.offers(resource)} {available:,}; "
            f"{capacity.hint(resource)}"
        )
    return _fastest_fitting(planner, lambda totals: not capacity.excess(totals), min_cycles, high)


def check_fold_mapping(graph: ir.Graph, fold: Mapping) -> dict[str, Fold]:
    """``fold`` (layer name -> ``(PE, SIMD)`` or Fold) checked against ``graph``: every MVU layer, nothing else.

    Raises
    ------
    PlanError
        One line naming the layer and what is wrong.
    """
    if not isinstance(fold, Mapping):
        raise PlanError(f"the fold config must map layer names to PE / SIMD, not {type(fold).__name__}")
    mvus = mvu_nodes(graph)
    names = {n.name for n in graph.nodes}
    unknown = [k for k in fold if k not in names]
    if unknown:
        raise PlanError(f"fold config names unknown layers: {printable_names(unknown)}")
    other = [k for k in fold if k not in mvus]
    if other:
        raise PlanError(f"fold config names layers that are not matrix-vector layers: {printable_names(other)}")
    missing = [k for k in mvus if k not in fold]
    if missing:
        raise PlanError(f"fold config misses the matrix-vector layers: {', '.join(missing)}")
    try:
        return {name: Fold(*check_fold(graph, name, fold[name])) for name in mvus}
    except ValueError as exc:
        raise PlanError(str(exc)) from None


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
        bits = widths[node.name] * graph.types[node.name].element_shape.width
        for consumer in consumers[1:]:
            numbers[consumer][4] += Fork.parameters(shape=unsigned(bits)).luts
    for (producer, consumer), depth in depths.items():
        if isinstance(model.nodes[consumer], ir.InstaPReLU) and producer == model.nodes[consumer].inputs[1]:
            node = model.nodes[consumer]
            source = model.nodes[producer]
            (source_in,) = graph.in_types(source)
            bits = len(node.stats) * shape_for(*source.feature_range(source_in)).width
        else:
            bits = widths[producer] * graph.types[producer].element_shape.width
        fifo = Fifo.parameters(shape=unsigned(bits), depth=depth)
        numbers[consumer][2] += fifo.memory_bits
        numbers[consumer][4] += fifo.luts
    return costs, depths, numbers


def _finish(planner: _Planner, folding, widths, parallel, clock_mhz: float) -> Plan:
    graph = planner.graph
    costs, depths, numbers = _numbers(planner, folding, widths, parallel)
    full_folding = {}
    layers = []
    for node in graph.nodes:
        if isinstance(node, MVU_TYPES):
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
