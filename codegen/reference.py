"""The reference executor: THE golden model of a lowered network.

It runs an IR :class:`~.ir.Graph` on a batch of images with the numpy models of
:mod:`instabnn_hw.hw`, the same functions the hardware components are tested against, so a
generated design is correct exactly when its outputs equal these for every image. Binary
convolutions run bit-packed (:func:`~instabnn_hw.hw.xnor_mvu.xnor_matvec`). With
``keep=True`` every intermediate tensor (and every INSTA unit's features and thresholds) is
returned, for locating the first layer where hardware and reference differ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from instabnn_hw.hw.affine import requantise, rprelu
from instabnn_hw.hw.fixed import bounds, shape_for
from instabnn_hw.hw.insta import (
    binarise,
    insta_prelu,
    moment_sums,
    statistic_features,
    th_thresholds,
    thplus_thresholds,
)
from instabnn_hw.hw.int_mvu import argmax, int_matvec
from instabnn_hw.hw.plumbing import join_add
from instabnn_hw.hw.pool import global_sum_pool, max_pool, sum_pool
from instabnn_hw.hw.threshold import threshold
from instabnn_hw.hw.window import sliding_windows
from instabnn_hw.hw.xnor_mvu import xnor_matvec

from . import ir

__all__ = ["Trace", "run", "check_pixels"]


@dataclass
class Trace:
    """What :func:`run` computed for ``N`` images.

    Attributes
    ----------
    classes : int64 array (N,)
        The class of each image (first maximum of the logits).
    logits : int64 array (N, classes)
        The classifier's integer outputs.
    tensors : dict of str to int64 array (N, C, H, W)
        Every node's output with ``keep=True``; else only the logits node's.
    features, thresholds : dict of str to int64 array
        Per :class:`~.ir.InstaThreshold`: features ``(N, len(stats), C)`` and thresholds ``(N, C)``.
    """

    classes: np.ndarray
    logits: np.ndarray
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    features: dict[str, np.ndarray] = field(default_factory=dict)
    thresholds: dict[str, np.ndarray] = field(default_factory=dict)


def check_pixels(graph: ir.Graph, pixels) -> np.ndarray:
    """``pixels`` as an int64 ``(N, C, H, W)`` batch of the graph's input shape, values 0..255.

    Raises
    ------
    ValueError
        Naming the expected shape or the out-of-range value.
    """
    array = np.asarray(pixels)
    if array.ndim == 3:
        array = array[None]
    shape = graph.input_shape
    if array.ndim != 4 or array.shape[1:] != shape:
        raise ValueError(f"images must be N x {shape[0]} x {shape[1]} x {shape[2]} pixels, not {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        if not np.array_equal(array, np.round(array)):
            raise ValueError("pixels must be integers 0..255")
    array = array.astype(np.int64)
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"pixels must be in 0..255, found {array.min()}..{array.max()}")
    return array


def _channels_last(x: np.ndarray) -> np.ndarray:
    return np.moveaxis(x, 1, -1)


def _channels_first(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(x, -1, 1))


def _image_windows(x: np.ndarray, node):
    """Each image's window stream at one word per pixel position: ``(words, mask)`` per image."""
    for image in x:
        yield sliding_windows(image, kernel=node.kernel, stride=node.stride, padding=node.padding, simd=x.shape[1])


def _windows(x: np.ndarray, node, *, with_mask: bool):
    """All images' windows as ``(N * pixels, K*K*C)`` vectors (and position masks)."""
    channels = x.shape[1]
    vectors, masks = [], []
    for words, mask in _image_windows(x, node):
        vectors.append(words.reshape(-1, node.kernel * node.kernel * channels))
        if with_mask:
            masks.append(np.repeat(mask, channels).reshape(vectors[-1].shape))
    return np.concatenate(vectors), (np.concatenate(masks) if with_mask else None)


def _conv_output(flat: np.ndarray, n: int, out_type: ir.TensorType) -> np.ndarray:
    return _channels_first(flat.reshape(n, out_type.height, out_type.width, out_type.channels))


def _pool_windows(x: np.ndarray, node, model: Callable) -> np.ndarray:
    channels = x.shape[1]
    return np.stack(
        [model(w, m, kernel=node.kernel, channels=channels, simd=channels) for w, m in _image_windows(x, node)]
    )


def run(graph: ir.Graph, pixels, *, keep: bool = False) -> Trace:
    """Executes ``graph`` on a batch of images (``(N, C, H, W)`` or ``(C, H, W)`` pixels 0..255)."""
    pixels = check_pixels(graph, pixels)
    n = pixels.shape[0]
    values: dict[str, np.ndarray] = {}
    trace = Trace(classes=np.zeros(0, np.int64), logits=np.zeros(0, np.int64))
    remaining = {node.name: len(graph.consumers(node.name)) for node in graph.nodes}
    for node in graph.nodes:
        inputs = [values[name] for name in node.inputs]
        values[node.name] = _execute(node, inputs, pixels, graph, trace)
        if not keep:  # free tensors nobody reads any more
            for name in node.inputs:
                remaining[name] -= 1
                if remaining[name] == 0 and name != graph.logits:
                    del values[name]
    logits = values[graph.logits].reshape(n, -1)
    trace.logits = logits
    trace.classes = values[graph.output.name].reshape(n)
    trace.tensors = values if keep else {graph.logits: values[graph.logits]}
    return trace


def _execute(node: ir.Node, inputs: list[np.ndarray], pixels: np.ndarray, graph: ir.Graph, trace: Trace):
    out_type = graph.types[node.name]
    in_types = graph.in_types(node)
    n = pixels.shape[0]
    if isinstance(node, ir.PixelInput):
        return pixels - 128
    x = inputs[0]
    if isinstance(node, ir.XnorConv):
        padded = node.padding > 0
        vectors, mask = _windows(x, node, with_mask=padded)
        return _conv_output(xnor_matvec(node.weights, vectors, mask), n, out_type)
    if isinstance(node, ir.IntConv):
        vectors, _ = _windows(x, node, with_mask=False)  # padding words are zero: they add 0
        return _conv_output(np.asarray(int_matvec(node.weights, vectors), dtype=np.int64), n, out_type)
    if isinstance(node, ir.Threshold):
        return _channels_first(threshold(_channels_last(x), node.thresholds, node.flip))
    if isinstance(node, ir.InstaThreshold):
        return _insta_threshold(node, x, in_types[0], trace)
    if isinstance(node, ir.Requantise):
        y = requantise(_channels_last(x), node.mult, node.bias, shift=node.shift, low=node.low, high=node.high)
        return _channels_first(np.asarray(y, dtype=np.int64))
    if isinstance(node, ir.Add):
        return join_add(x, inputs[1], shifts=node.shifts)
    if isinstance(node, ir.InstaPReLU):
        features = trace.features[node.inputs[1]]
        constants = node.constants()
        return np.stack([insta_prelu(image, f, **constants) for image, f in zip(x, features, strict=True)])
    if isinstance(node, ir.RPReLU):
        y = rprelu(
            _channels_last(x),
            node.gamma,
            node.slope,
            node.zeta,
            slope_shift=node.slope_shift,
            out_shift=node.out_shift,
            low=node.low,
            high=node.high,
        )
        return _channels_first(np.asarray(y, dtype=np.int64))
    if isinstance(node, ir.MaxPool):
        return _conv_output(_pool_windows(x, node, max_pool), n, out_type)
    if isinstance(node, ir.SumPool):
        return _conv_output(_pool_windows(x, node, sum_pool), n, out_type)
    if isinstance(node, ir.GlobalSumPool):
        return np.stack([global_sum_pool(image) for image in x])[:, :, None, None]
    if isinstance(node, ir.Repeat):
        return np.concatenate([x] * node.times, axis=1)
    if isinstance(node, ir.Argmax):
        index, _ = argmax(x.reshape(n, -1))
        return index.reshape(n, 1, 1, 1)
    raise TypeError(f"no reference for {type(node).__name__}")


def _insta_threshold(node: ir.InstaThreshold, x: np.ndarray, in_type: ir.TensorType, trace: Trace) -> np.ndarray:
    # the hardware clamps thresholds to its input element shape's range plus one
    low, high = bounds(shape_for(in_type.low, in_type.high))
    clamp = {"low": low, "high": high + 1}
    pixels = x.shape[2] * x.shape[3]
    bits, all_features, all_thresholds = [], [], []
    for image in x:
        features = statistic_features(moment_sums(image), pixels=pixels, stats=node.stats, shifts=node.shifts)
        if node.mode == "th":
            t = th_thresholds(features, alpha=node.alpha, beta=node.beta, out_shift=node.out_shift, **clamp)
        else:
            t = thplus_thresholds(
                features,
                w1=node.w1,
                b1=node.b1,
                hidden_shift=node.hidden_shift,
                hidden_max=node.hidden_max,
                w2=node.w2,
                alpha=node.alpha,
                out_shift=node.out_shift,
                **clamp,
            )
        bits.append(binarise(image, t))
        all_features.append(np.asarray(features, dtype=np.int64))
        all_thresholds.append(t)
    trace.features[node.name] = np.stack(all_features)
    trace.thresholds[node.name] = np.stack(all_thresholds)
    return np.stack(bits)
