"""The images a simulation streams and what the top must answer: datasets, random and extreme pixels.

:func:`design_images` gives the test images of a design's dataset (or random pixels) as the raw
8-bit pixels the model, the reference and the hardware all see, after checking that the batch
fits this machine's memory (:func:`check_image_count`); :func:`stream_payloads` turns pixels into
the top's stimulus words and the reference's expected class and logits words.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ..codegen import ir, reference
from ..errors import MAX_SEED, OptionError, check_number
from ..hw.layouts import tensor_to_words
from ..machine import physical_memory
from ..strict_json import short_repr
from .folder import DesignFolder, SimulationError
from .streams import stimulus_seed

__all__ = [
    "check_image_count",
    "check_seed",
    "design_images",
    "extreme_images",
    "image_bytes",
    "random_images",
    "stream_payloads",
]

#: Bytes per pixel or logit of the stimulus and expected words: Python lists, packed words, hex strings, JSON.
STIMULUS_BYTES_PER_ELEMENT = 128


def random_images(shape: Sequence[int], count: int, seed: int = 1) -> np.ndarray:
    """``count`` images of uniformly random pixels 0..255, int64 ``(count, C, H, W)``."""
    return np.random.default_rng(seed).integers(0, 256, size=(count, *shape), dtype=np.int64)


def extreme_images(shape: Sequence[int], seed: int = 1) -> np.ndarray:
    """Saturating inputs, int64 ``(N, C, H, W)``: all black, all white, checkerboards, stripes,
    a single white pixel on black and its inverse, the two halves, and random 0 / 255 pixels."""
    c, h, w = shape
    y, x = np.mgrid[0:h, 0:w]
    planes = [
        np.zeros((h, w)),
        np.ones((h, w)),
        (y + x) % 2,
        1 - (y + x) % 2,
        y % 2,
        x % 2,
        (y // 2 + x // 2) % 2,
        (y == h // 2) & (x == w // 2),
        1 - ((y == 0) & (x == 0)),
        x < w // 2,
        y >= h // 2,
    ]
    images = [np.broadcast_to(p, (c, h, w)) * 255 for p in planes]
    rng = np.random.default_rng(seed)
    images += [rng.integers(0, 2, size=(c, h, w)) * 255 for _ in range(2)]
    if c > 1:  # channels at opposite extremes
        images.append(np.stack([np.full((h, w), 255 * (k % 2)) for k in range(c)]))
    return np.stack(images).astype(np.int64)


def check_seed(seed: int | None) -> int:
    """``seed``, or :func:`~.streams.stimulus_seed` for ``None``, checked to be a whole number in 0..MAX_SEED.

    Raises
    ------
    OptionError
        For a seed numpy's generators do not take (negative, too large, not a whole number).
    SimulationError
        For an ``$INSTABNN_SEED`` that is not a number.
    """
    if seed is None:
        try:
            seed = stimulus_seed()
        except ValueError:
            raise SimulationError(
                f"INSTABNN_SEED must be a whole number, not {short_repr(os.environ.get('INSTABNN_SEED'), 40)}"
            ) from None
    return int(check_number("seed", seed, integer=True, low=0, high=MAX_SEED))


def image_bytes(graph: ir.Graph) -> int:
    """Bytes of memory one image takes in a simulation run, an upper estimate.

    The reference run holds every node's output tensor (int64; :func:`localise` keeps them all)
    and the windows of the largest convolution (per-image vectors and masks, and both
    concatenated: about four int64 copies, as measured); the stimulus and the expected outputs
    hold each pixel and logit several times over (lists, packed words, hex strings, the JSON spec).
    """
    tensors = sum(graph.types[node.name].elements for node in graph.nodes)
    windows = 0
    for node in graph.nodes:
        if isinstance(node, (ir.XnorConv, ir.IntConv)):
            out, x = graph.types[node.name], graph.in_types(node)[0]
            windows = max(windows, out.height * out.width * node.kernel * node.kernel * x.channels)
    words = graph.types[graph.input.name].elements + graph.types[graph.logits].elements
    return 8 * (tensors + 4 * windows) + STIMULUS_BYTES_PER_ELEMENT * words


def check_image_count(design: DesignFolder, count: int) -> None:
    """Raises :class:`SimulationError` when ``count`` images do not fit this machine's memory.

    Checked before anything is allocated: :func:`image_bytes` of the design's graph times
    ``count`` against the physical memory.
    """
    memory = physical_memory()
    need = image_bytes(design.graph) * count
    if memory is not None and need > memory:
        raise SimulationError(
            f"{count:,} images need about {need / 2**30:,.1f} GiB for the reference run; this machine has "
            f"{memory / 2**30:,.1f} GiB: give fewer images"
        )


def design_images(
    design: DesignFolder,
    count: int,
    *,
    dataset: str | None = None,
    random_pixels: bool = False,
    data_dir=None,
    seed: int | None = None,
) -> tuple[np.ndarray, list[int] | None, str]:
    """``(pixels, labels, description)``: the first ``count`` test images of ``dataset`` (default: the
    manifest's preprocessing dataset) at the design's input size, as raw 8-bit pixels (what the
    model saw in training and the reference and the hardware see), or ``count`` random images
    (``random_pixels``, or a manifest that names no dataset; labels ``None``).

    Raises
    ------
    SimulationError
        An unknown or missing dataset, one whose images do not fit the design's input, a seed out
        of range, or more images than this machine's memory holds (:func:`check_image_count`); one line.
    """
    shape = tuple(design.graph.input_shape)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise SimulationError(f"the number of images must be >= 1, not {count!r}")
    preprocessing = design.manifest.get("preprocessing") or {}
    name = None if random_pixels else (dataset or preprocessing.get("dataset"))
    seed = check_seed(seed)
    if name is None:
        if data_dir is not None:
            raise OptionError("data_dir", "names a dataset folder, but the images are random pixels: leave it out")
        check_image_count(design, count)
        why = "" if random_pixels else " (the manifest names no dataset)"
        return random_images(shape, count, seed), None, f"{count} images of random pixels, seed {seed}{why}"
    from instabnn_hw.quant.data import DataError, dataset_info, load_dataset

    try:
        info = dataset_info(name)
        if info.in_channels != shape[0]:
            raise SimulationError(
                f"{name} images have {info.in_channels} channels; the design takes {shape[0]}: give --dataset "
                "with matching images or --random"
            )
        data = load_dataset(name, "test", data_dir=data_dir, input_size=shape[1], limit=count)
    except DataError as exc:
        raise SimulationError(str(exc)) from None
    if hasattr(data, "images"):
        pixels, labels = data.images.numpy().astype(np.int64), data.labels.tolist()
    else:
        items = [data[k] for k in range(len(data))]
        pixels = np.stack([image.numpy() for image, _ in items]).round().astype(np.int64)
        labels = [int(label) for _, label in items]
    if pixels.shape[1:] != shape:
        raise SimulationError(f"{name} gives images of {pixels.shape[1:]}; the design takes {shape}")
    check_image_count(design, len(pixels))  # a test set is only as big as it is: checked once loaded
    note = f" (the test set has only {len(pixels)})" if len(pixels) < count else ""
    return pixels, [int(v) for v in labels], f"{len(pixels)} {name} test images{note}"


def stream_payloads(graph: ir.Graph, logits_per_word: int, pixels, trace=None) -> tuple[list, list, list]:
    """The top's stimulus and expected outputs for ``pixels`` (N x C x H x W, 0..255):
    ``(i words, o payloads, logits words)``: ``i`` words as lists of ``C`` pixels, ``o`` payloads
    as ``{"index", "value"}`` (the class and its logit), logits words as lists of
    ``logits_per_word`` logits, the outputs from :func:`reference.run` (or ``trace``)."""
    pixels = np.asarray(pixels)
    trace = reference.run(graph, pixels) if trace is None else trace
    words = [w for image in pixels for w in tensor_to_words(image, graph.input.channels).tolist()]
    results = [{"index": int(c), "value": int(row[c])} for c, row in zip(trace.classes, trace.logits, strict=True)]
    logits = trace.logits.reshape(-1, logits_per_word).tolist()
    return words, results, logits
