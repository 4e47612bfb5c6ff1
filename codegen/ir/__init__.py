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

The package: :mod:`.nodes` (:class:`TensorType` and the node types), :mod:`.graph`
(:class:`Graph`) and :mod:`.archive` (``graph.npz``: :func:`save_graph`, :func:`load_graph`).
"""

from .archive import GRAPH_FORMAT, load_graph, save_graph
from .graph import Graph
from .nodes import (
    Add,
    Argmax,
    GlobalSumPool,
    InstaPReLU,
    InstaThreshold,
    IntConv,
    IRError,
    MaxPool,
    Node,
    PixelInput,
    Repeat,
    Requantise,
    RPReLU,
    SumPool,
    TensorType,
    Threshold,
    XnorConv,
)

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
