"""The FIFOs of a dataflow design, sized from the cycle model (never simulated).

:func:`fifo_depths`: for each residual :class:`~.ir.Add` the two branches from
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
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from . import ir
from .stages import MVU_TYPES, trivial_window

__all__ = ["data_inputs", "demand", "fifo_depths"]


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
    if isinstance(node, MVU_TYPES):
        if trivial_window(node, x):
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


def data_inputs(node) -> tuple[str, ...]:
    """The inputs of ``node`` that carry data branches (an InstaPReLU's statistics have their own FIFO)."""
    return node.inputs[:1] if isinstance(node, ir.InstaPReLU) else node.inputs


def _branch_demand(graph, widths, fork: str, name: str, m: np.ndarray, inside: set[str]) -> np.ndarray:
    """Elements of ``fork``'s output needed for ``name`` to emit ``m`` elements (through the sub-DAG)."""
    if name == fork:
        return m
    node = graph.node(name)
    need = np.zeros_like(m)
    for k, u in enumerate(data_inputs(node)):
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
        if isinstance(node, MVU_TYPES) and node.out_channels > widths[node.name]:
            x, source = graph.types[node.inputs[0]], node.inputs[0]
            if trivial_window(node, x) and not isinstance(graph.node(source), ir.PixelInput):
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
