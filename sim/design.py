"""Bit-exact simulation of a generated design (`instabnn-hw simulate`): build, stream, compare, localise.

:func:`simulate_design` takes a folder written by `instabnn-hw generate` (its ``rtl/*.v``, the
memory files, ``graph.npz`` and ``plan.json``; neither torch nor the model is needed), builds it
with Verilator (ccache; the build is kept in ``DIR/sim/<simulator>/`` and reused while the Verilog
is unchanged) or Icarus, and runs the cocotb testbench :mod:`instabnn_hw.sim.design_tb` on a
batch of images: a reset in the middle of a frame first, then the images, the first half at full
rate (measured cycles per frame and latency) and the rest with random valid gaps and random
back-pressure. The testbench records every ``o`` and ``logits`` word; here they are compared in
order with the reference executor's (:func:`instabnn_hw.codegen.reference.run`, fed the same raw
8-bit pixels).

When an image fails, :func:`localise` runs the same stimulus again with every IR node's output
stream tapped (the ``<node>__out`` streams of the generated Verilog, read through the
simulator's VPI) up to that image, and reports the first node in topological order whose words
differ from the reference's tensor, with the channel, pixel and both values.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from amaranth.hdl import Shape

from ..codegen import ir, reference
from ..codegen.plan import Plan
from ..design_folder import GRAPH_FILE, PLAN_FILE, TOP_NAME, ManifestError, design_file, read_manifest
from ..errors import MAX_SEED, OptionError, UserError, check_number
from ..files import UnsafePathError, check_output_folder, inside
from ..hw.layouts import channel_word, tensor_to_words
from ..hw.payload import unpack
from ..strict_json import short_repr
from .streams import stimulus_seed
from .toolchain import BUILD_STAMP, SIMULATORS, build_cocotb, check_simulator, run_cocotb_tests

__all__ = [
    "BUILD_MARKER",
    "DesignFolder",
    "ImageResult",
    "Difference",
    "SimResult",
    "SimulationError",
    "check_build_dir",
    "check_image_count",
    "check_seed",
    "design_images",
    "extreme_images",
    "image_bytes",
    "load_design",
    "localise",
    "random_images",
    "result_summary",
    "simulate_design",
    "stream_payloads",
]

TOPLEVEL = TOP_NAME
TEST_MODULE = "instabnn_hw.sim.design_tb"
RESET_CYCLES = 3
#: At most this many whole frames of random pixels enter before the mid-frame reset.
JUNK_FRAMES = 4
#: The file simulate puts in every build folder it creates: the mark of a folder it may reuse and change.
BUILD_MARKER = ".instabnn-sim"
#: Bytes per pixel or logit of the stimulus and expected words: Python lists, packed words, hex strings, JSON.
STIMULUS_BYTES_PER_ELEMENT = 128


class SimulationError(UserError, ValueError):
    """A design folder, image batch or option that cannot be simulated; the message is one line."""


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# the design folder


@dataclass
class DesignFolder:
    """A generated design as :func:`load_design` reads it back.

    Attributes
    ----------
    path : Path
    manifest : dict
    graph : ir.Graph
    plan : codegen.plan.Plan
    top : codegen.emit.Top
        The design rebuilt in Python from graph and plan (its port shapes and stream widths).
    sources : list of Path
        Every ``rtl/*.v``.
    """

    path: Path
    manifest: dict
    graph: ir.Graph
    plan: object
    top: object
    sources: list[Path]

    @property
    def memory_dir(self) -> Path:
        return self.path / "rtl" / "mem"

    @property
    def estimate(self) -> dict:
        return dict(self.manifest.get("estimate", {}))


def _confined(path: Path, name: str, what: str) -> Path:
    try:
        return design_file(path, name, what)
    except ManifestError as exc:
        raise SimulationError(str(exc)) from None


def load_design(path) -> DesignFolder:
    """Reads the design folder ``path`` (manifest.json, graph.npz, plan.json, rtl/).

    Every file the manifest names must lie inside ``path`` (a ``..`` or a link out of it is
    refused), and every manifest field the tools read must have its type.

    Raises
    ------
    SimulationError
        When ``path`` is not a folder written by `instabnn-hw generate`, or one of its files
        cannot be read or is not what generate writes (one line saying what is wrong).
    """
    from ..codegen.emit import build_top

    path = Path(path)
    hint = "give a folder written by `instabnn-hw generate`"
    try:
        manifest = read_manifest(path)
    except ManifestError as exc:
        raise SimulationError(str(exc)) from None
    files = manifest["files"]
    if os.path.lexists(path / "rtl" / "mem"):  # the build folder links to it
        _confined(path, "rtl/mem", "the design's memory folder")
    sources = [_confined(path, name, "manifest.json files.verilog") for name in files["verilog"]]
    memories = [_confined(path, name, "manifest.json files.memories") for name in files.get("memories", [])]
    graph_path = _confined(path, files.get("graph", GRAPH_FILE), "manifest.json files.graph")
    plan_path = _confined(path, files.get("plan", PLAN_FILE), "manifest.json files.plan")
    for name, file in ((GRAPH_FILE, graph_path), (PLAN_FILE, plan_path)):
        if not file.is_file():
            raise SimulationError(f"{path} has no {name}: generate the design again")
    try:
        graph = ir.load_graph(graph_path)
        plan = Plan.read(plan_path)
    except OSError as exc:
        raise SimulationError(f"cannot read {exc.filename or graph_path} ({exc.strerror or exc})") from None
    except (ValueError, TypeError, KeyError, IndexError, EOFError, zipfile.BadZipFile) as exc:
        raise SimulationError(f"{path}: {_first_line(exc)}; generate it again") from None
    if not any(source.name == f"{TOPLEVEL}.v" for source in sources):
        raise SimulationError(f"{path} has no rtl/{TOPLEVEL}.v; {hint}")
    missing = [file for file in sources + memories if not file.is_file()]
    if missing:
        raise SimulationError(f"{path} lacks {missing[0].relative_to(path)}; generate it again")
    try:
        top, _ = build_top(graph, plan, rom_dir="mem")
    except (ValueError, TypeError, KeyError) as exc:
        raise SimulationError(f"{path}: graph.npz and plan.json do not fit together ({_first_line(exc)})") from None
    return DesignFolder(path=path, manifest=manifest, graph=graph, plan=plan, top=top, sources=sources)


# ---------------------------------------------------------------------------------------------
# images and stream payloads


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


def _physical_memory() -> int | None:
    """Bytes of memory of this machine (``None`` where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_image_count(design: DesignFolder, count: int) -> None:
    """Raises :class:`SimulationError` when ``count`` images do not fit this machine's memory.

    Checked before anything is allocated: :func:`image_bytes` of the design's graph times
    ``count`` against the physical memory.
    """
    memory = _physical_memory()
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


def _element_width(shape) -> int:
    return Shape.cast(shape).width


def pack_words(layout, words: np.ndarray) -> list[int]:
    """Rows of ``words`` (``(n, length)`` ints) packed as payloads of the ArrayLayout ``layout``."""
    width = _element_width(layout.elem_shape)
    mask = (1 << width) - 1
    words = np.asarray(words).reshape(-1, layout.length)
    if width * layout.length <= 63 and words.dtype != object:
        words = words.astype(np.int64)
        packed = np.zeros(len(words), dtype=np.int64)
        for k in range(layout.length):
            packed |= (words[:, k] & mask) << (k * width)
        return [int(v) for v in packed]
    result = []
    for row in words.tolist():
        value = 0
        for k, element in enumerate(row):
            value |= (int(element) & mask) << (k * width)
        result.append(value)
    return result


def unpack_words(layout, payloads: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`pack_words`: ``(n, length)`` int64 (object for elements over 62 bits)."""
    shape = Shape.cast(layout.elem_shape)
    width, mask = shape.width, (1 << shape.width) - 1
    rows = []
    for payload in payloads:
        row = []
        for k in range(layout.length):
            value = (payload >> (k * width)) & mask
            if shape.signed and value >> (width - 1):
                value -= 1 << width
            row.append(value)
        rows.append(row)
    dtype = np.int64 if width <= 62 else object
    return np.array(rows, dtype=dtype).reshape(len(rows), layout.length)


def stream_payloads(graph: ir.Graph, widths: dict[str, int], pixels, trace=None) -> tuple[list, list, list]:
    """The top's stimulus and expected outputs for ``pixels`` (N x C x H x W, 0..255):
    ``(i words, o payloads, logits words)``: ``i`` words as lists of ``C`` pixels, ``o`` payloads
    as ``{"index", "value"}`` (the class and its logit), logits words as lists of
    ``widths[graph.logits]`` logits, the outputs from :func:`reference.run` (or ``trace``)."""
    pixels = np.asarray(pixels)
    trace = reference.run(graph, pixels) if trace is None else trace
    words = [w for image in pixels for w in tensor_to_words(image, graph.input.channels).tolist()]
    results = [{"index": int(c), "value": int(row[c])} for c, row in zip(trace.classes, trace.logits, strict=True)]
    logits = trace.logits.reshape(-1, widths[graph.logits]).tolist()
    return words, results, logits


# ---------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class ImageResult:
    """One image: its ``label`` (or ``None``), the hardware's class (``None`` when it never came
    out), the reference's class, whether every output word was equal, and ``cycles`` from its
    first pixel accepted to its class leaving ``o`` (``None`` when it never came out)."""

    index: int
    label: int | None
    hw_class: int | None
    reference_class: int
    equal: bool
    cycles: int | None

    def record(self) -> dict:
        return {
            "index": self.index,
            "label": self.label,
            "hw_class": self.hw_class,
            "reference_class": self.reference_class,
            "equal": self.equal,
            "cycles": self.cycles,
        }


@dataclass(frozen=True)
class Difference:
    """Where hardware and reference first differ: ``layer`` (IR node name, as in the manifest) and
    its ``op``, the ``image``, ``channel`` and pixel ``(y, x)`` of the first differing element and
    both values. ``hardware`` is ``None`` when the layer produced too few words (``words`` says
    how many of ``expected_words`` of that image came); ``differing`` counts the differing
    elements of that layer and image."""

    layer: str
    op: str
    image: int
    channel: int | None
    y: int | None
    x: int | None
    hardware: int | None
    reference: int | None
    differing: int = 0
    words: int | None = None
    expected_words: int | None = None

    def describe(self) -> str:
        where = f"layer {self.layer} ({self.op}), image {self.image}"
        if self.hardware is None:
            return f"{where}: produced {self.words} of its {self.expected_words} words"
        return (
            f"{where}, channel {self.channel}, pixel (y={self.y}, x={self.x}): hardware {self.hardware}, "
            f"reference {self.reference} ({self.differing} elements of this layer differ)"
        )


@dataclass
class SimResult:
    """What :func:`simulate_design` measured and compared.

    Attributes
    ----------
    design : Path
    simulator : str
    seed : int
    images : list of ImageResult
    cycles_per_frame : float or None
        Steady-state cycles between two classes at full rate (the later half of the full-rate
        images); ``None`` with fewer than two full-rate images.
    input_cycles_per_frame : float or None
        The same between two frames' first pixels accepted.
    latency : int or None
        Cycles from the first pixel of the first image (design idle, full rate) to its class.
    estimate : dict
        The manifest's estimate (``cycles_per_frame``, ``latency_cycles``, ``fps``...).
    clock_mhz : float
    cycles : int
        Simulated cycles after the mid-frame reset.
    built : bool
        Whether this run built the design (``False``: the build was reused).
    build_seconds, run_seconds : float
    problems : list of str
        Stalls, extra outputs, a run that hit its cycle limit.
    difference : Difference or None
        The first difference (:func:`localise`) when an image failed and localisation ran.
    localised : bool
        Whether localisation ran.
    pre_reset : dict or None
        ``{"words": pixel words accepted, "outputs": output words}`` before the mid-frame reset.
    waves : Path or None
        The waveform file, with ``waves=True``.
    build_dir : Path
    """

    design: Path
    simulator: str
    seed: int
    images: list[ImageResult]
    cycles_per_frame: float | None
    input_cycles_per_frame: float | None
    latency: int | None
    estimate: dict
    clock_mhz: float
    cycles: int
    built: bool
    build_seconds: float
    run_seconds: float
    build_dir: Path
    problems: list[str] = field(default_factory=list)
    difference: Difference | None = None
    localised: bool = False
    waves: Path | None = None
    pre_reset: dict | None = None

    @property
    def passed(self) -> int:
        return sum(r.equal for r in self.images)

    @property
    def failed(self) -> int:
        return len(self.images) - self.passed

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.problems

    @property
    def cycles_per_second(self) -> float:
        return self.cycles / self.run_seconds if self.run_seconds > 0 else 0.0

    def accuracy(self, which: str = "hw") -> float | None:
        """Top-1 accuracy of the hardware (``"hw"``) or reference (``"reference"``) against the labels."""
        labelled = [r for r in self.images if r.label is not None]
        if not labelled:
            return None
        key = "hw_class" if which == "hw" else "reference_class"
        return sum(getattr(r, key) == r.label for r in labelled) / len(labelled)


# ---------------------------------------------------------------------------------------------
# running the testbench


def _hex(values: Sequence[int]) -> list[str]:
    return [format(v, "x") for v in values]


def _identifier(name: str) -> str:
    """The Verilog name prefix the emitter gives a node's streams."""
    return re.sub(r"\W", "_", name)


def _taps(design: DesignFolder, images: int) -> list[dict]:
    """The output stream of every node except the Argmax (the input as ``pixels``)."""
    graph, widths = design.graph, design.top.widths
    taps = []
    for node in graph.nodes[:-1]:
        words = graph.types[node.name].elements // widths[node.name]
        signal = "pixels" if isinstance(node, ir.PixelInput) else f"{_identifier(node.name)}__out"
        taps.append({"name": node.name, "signal": signal, "limit": words * images})
    return taps


class _Progress(threading.Thread):
    """Tails the testbench's progress file: one line per second at most, ``images done``."""

    def __init__(self, path: Path, total: int, report: Callable[[str], None]) -> None:
        super().__init__(daemon=True)
        self.path, self.total, self.report = path, total, report
        self.finished = threading.Event()
        self.shown = 0

    def run(self) -> None:
        started = time.monotonic()
        while not self.finished.wait(1.0):
            self.poll(started)
        self.poll(started)

    def poll(self, started: float) -> None:
        try:
            lines = self.path.read_text().split("\n")
        except OSError:
            return
        complete = [line for line in lines[:-1] if line]
        if complete and len(complete) > self.shown:
            self.shown = len(complete)
            done, cycle = complete[-1].split()
            elapsed = time.monotonic() - started
            self.report(f"simulated {done}/{self.total} images, {int(cycle):,} cycles, {elapsed:.1f} s")


def _build_dir_owner(folder: Path) -> str | None:
    """``None`` when simulate may build in the existing ``folder`` (empty, or one it wrote), else why not."""
    names = {entry.name for entry in folder.iterdir()}
    if not names or BUILD_MARKER in names or BUILD_STAMP in names:
        return None
    return "holds files simulate did not write"


def _check_memory_link(build_dir: Path) -> None:
    """``build_dir/mem`` may only be the link to the design's memory files that simulate makes."""
    link = build_dir / "mem"
    if os.path.lexists(link) and not link.is_symlink():
        what = "a folder" if link.is_dir() else "a file"
        raise SimulationError(
            f"{link} is {what}, not the link to the design's memory files that simulate makes; "
            "move it away or give another --build-dir"
        )


def check_build_dir(design: DesignFolder, build_dir=None, *, simulator: str = "verilator", waves: bool = False) -> Path:
    """The folder :func:`simulate_design` builds and runs in, checked before anything is simulated; absolute.

    ``build_dir`` is new, empty, or a build folder simulate wrote (its :data:`BUILD_MARKER` or the
    build stamp); the default ``DIR/sim/<simulator>`` (``<simulator>-waves`` with ``waves``) is
    simulate's own, confined to the design folder. A symbolic link is refused, and so is a
    ``mem`` in it that is not the link simulate makes.

    Raises
    ------
    SimulationError
        When the folder must not be written or cannot be (one line).
    """
    default = build_dir is None
    if default:
        name = f"{simulator}-waves" if waves else simulator
        build_dir = design.path / "sim" / name
        try:
            inside(design.path, f"sim/{name}", what="the default build folder")
        except UnsafePathError:
            raise SimulationError(
                f"the default build folder {build_dir} lies outside the design folder (through a link); "
                "give --build-dir"
            ) from None
        label = f"the build folder {build_dir}"
    else:
        label = f"--build-dir {build_dir}"
    try:
        absolute = check_output_folder(build_dir, label=label, owner=lambda folder: None)
    except UnsafePathError as exc:
        raise SimulationError(f"{exc}" + ("; give --build-dir" if default else "")) from None
    if absolute.is_dir():
        try:
            reason = None if default else _build_dir_owner(absolute)
        except OSError as exc:
            raise SimulationError(f"{label}: cannot read it ({exc.strerror or exc})") from None
        if reason is not None:
            raise SimulationError(f"{label} exists and {reason}; give a new or empty folder")
        _check_memory_link(absolute)
    return absolute


def _prepare_build_dir(design: DesignFolder, build_dir: Path) -> None:
    """Creates ``build_dir`` (marked as simulate's) and points its ``mem`` link at the design's memory files.

    Only a link is ever replaced there: a real ``mem`` folder or file is refused.
    """
    _check_memory_link(build_dir)
    link = build_dir / "mem"
    try:
        build_dir.mkdir(parents=True, exist_ok=True)
        marker = build_dir / BUILD_MARKER
        if not marker.exists():
            marker.write_text("a build folder of `instabnn-hw simulate`: it reuses and replaces what is here\n")
        if link.is_symlink():
            link.unlink()
        if design.memory_dir.is_dir():
            target = design.memory_dir.resolve()
            try:
                relative = os.path.relpath(target, build_dir.resolve())
            except ValueError:
                relative = str(target)
            link.symlink_to(relative, target_is_directory=True)
    except OSError as exc:
        raise SimulationError(f"cannot prepare the build folder {build_dir} ({exc.strerror or exc})") from None


def _build(design: DesignFolder, simulator: str, build_dir: Path, waves: bool, report) -> tuple[bool, float]:
    check_simulator(simulator)
    build_dir = Path(build_dir)
    _prepare_build_dir(design, build_dir)
    report(f"building {design.path.name} with {simulator} in {build_dir}")
    started = time.monotonic()
    args = ["--trace-fst"] if waves and simulator == "verilator" else []
    try:
        built = build_cocotb(
            sources=design.sources,
            toplevel=TOPLEVEL,
            build_dir=build_dir,
            simulator=simulator,
            build_args=args,
            waves=waves,
            reuse=True,
        )
    except RuntimeError as exc:
        raise SimulationError(str(exc).splitlines()[0] + f" (see {Path(build_dir) / 'build.log'})") from None
    seconds = time.monotonic() - started
    report(f"built in {seconds:.1f} s" if built else f"reused the build in {build_dir} (Verilog unchanged)")
    return built, seconds


def _run(design: DesignFolder, spec: dict, build_dir: Path, simulator: str, waves: bool, report) -> tuple[dict, float]:
    build_dir = Path(build_dir).resolve()
    spec_path, record_path = build_dir / "design_spec.json", build_dir / "design_record.json"
    progress_path = build_dir / "progress.txt"
    progress_path.write_text("")
    spec = dict(spec, progress=str(progress_path))
    spec_path.write_text(json.dumps(spec))
    record_path.unlink(missing_ok=True)
    env = {"INSTABNN_DESIGN_SPEC": str(spec_path), "INSTABNN_DESIGN_RECORD": str(record_path)}
    tail = _Progress(progress_path, spec["images"], report)
    tail.start()
    started = time.monotonic()
    try:
        run_cocotb_tests(
            toplevel=TOPLEVEL,
            test_module=TEST_MODULE,
            build_dir=build_dir,
            simulator=simulator,
            extra_env=env,
            waves=waves,
        )
    except AssertionError:
        if not record_path.exists():
            raise SimulationError(
                f"the {simulator} simulation failed without a record; see {build_dir / 'test.log'}"
            ) from None
    finally:
        tail.finished.set()
        tail.join()
    return json.loads(record_path.read_text()), time.monotonic() - started


def _spec(design: DesignFolder, pixels: np.ndarray, trace, *, seed, valid_probability, ready_probability, full, reset):
    graph, top = design.graph, design.top
    words, _, logits = stream_payloads(graph, top.widths, pixels, trace)
    i_layout = top.i.payload.shape()
    per_image = len(words) // len(pixels)
    estimate = design.estimate
    period = max(1, int(estimate.get("cycles_per_frame", 0)) or per_image)
    latency = max(period, int(estimate.get("latency_cycles", 0)))
    rng = random.Random(seed)
    junk = np.zeros((0, graph.input.channels), dtype=np.int64)
    if reset:
        # enough frames to have every stage busy (up to JUNK_FRAMES), then part of one more
        frames = min(JUNK_FRAMES, max(1, math.ceil(latency / period)))
        count = frames * per_image + (rng.randrange(1, per_image) if per_image > 1 else 0)
        junk = np.array([rng.randrange(256) for _ in range(count * graph.input.channels)]).reshape(count, -1)
    slowest = max(0.05, min(valid_probability, ready_probability))
    n = len(pixels)
    return {
        "seed": rng.randrange(1 << 30),
        "valid_probability": valid_probability,
        "ready_probability": ready_probability,
        "images": n,
        "full_rate_images": full,
        "words_per_image": per_image,
        "logits_words_per_image": len(logits) // n,
        "stimulus": _hex(pack_words(i_layout, np.array(words))),
        "junk": _hex(pack_words(i_layout, junk)) if reset else [],
        "reset_cycles": RESET_CYCLES,
        "idle_limit": 4 * (period + latency) + 1000,
        "max_cycles": int((n + 3) * period * 4 / slowest + 4 * latency + 10_000),
        "stop_after_image": None,
        "taps": [],
    }


def _steady(times: Sequence[int]) -> float | None:
    """Mean interval over the later half of ``times`` (``None`` for fewer than two)."""
    if len(times) < 2:
        return None
    start = (len(times) - 1) // 2 if len(times) >= 3 else 0
    return (times[-1] - times[start]) / (len(times) - 1 - start)


def simulate_design(
    path,
    pixels,
    labels=None,
    *,
    simulator: str = "verilator",
    seed: int | None = None,
    waves: bool = False,
    build_dir=None,
    valid_probability: float = 0.7,
    ready_probability: float = 0.6,
    full_rate_images: int | None = None,
    mid_frame_reset: bool = True,
    localise_failures: bool = True,
    progress: Callable[[str], None] | None = None,
    design: DesignFolder | None = None,
) -> SimResult:
    """Simulates the generated design in ``path`` on ``pixels`` and compares it with the reference.

    Parameters
    ----------
    path : str or Path
        A folder written by `instabnn-hw generate`.
    pixels : array (N, C, H, W)
        Raw 8-bit pixels 0..255 of the design's input shape (the reference gets the same).
    labels : sequence of int, optional
        For the accuracy.
    simulator : {"verilator", "icarus"}
    seed : int, optional
        Of the junk before the reset and of the flow control; default :func:`stimulus_seed`.
    waves : bool
        Record a waveform (Verilator FST ``dump.fst``; Icarus ``instabnn_top.fst``), in its own
        build folder.
    build_dir : str or Path, optional
        Default ``path/sim/<simulator>`` (``<simulator>-waves`` with ``waves``). The build is reused
        while the Verilog is unchanged; the memory files are read from ``path/rtl/mem`` at every run.
        Another folder must be new, empty or one simulate wrote (:func:`check_build_dir`).
    valid_probability, ready_probability : float
        Of the random flow control after the full-rate images.
    full_rate_images : int, optional
        Images streamed with valid and ready always high (the measurement); default half, rounded
        up, and at least two.
    mid_frame_reset : bool
        Reset in the middle of a frame (after more than a frame of random pixels) before the images.
    localise_failures : bool
        Run :func:`localise` on the first failing image.
    progress : callable, optional
        Called with a line of text at each step (build, run, every second of simulation).
    design : DesignFolder, optional
        ``path`` already loaded (:func:`load_design`).

    Raises
    ------
    SimulationError
        A folder that is not a generated design, pixels of the wrong shape or range, more images
        than memory holds, a seed out of range, a build folder that must not be written, a failed
        build (one line); all but the last before anything is simulated.
    SimulatorMissing
        When ``simulator`` is not installed.
    """
    report = progress or (lambda text: None)
    if simulator not in SIMULATORS:
        raise SimulationError(f"simulator must be one of {', '.join(SIMULATORS)}, not {simulator!r}")
    for name, p in (("valid_probability", valid_probability), ("ready_probability", ready_probability)):
        if not 0 < p <= 1:
            raise SimulationError(f"{name} must be in (0, 1], not {p!r}")
    design = design or load_design(path)
    try:
        pixels = reference.check_pixels(design.graph, pixels)
    except ValueError as exc:
        raise SimulationError(str(exc)) from None
    n = len(pixels)
    if n < 1:
        raise SimulationError("give at least one image")
    check_image_count(design, n)
    seed = check_seed(seed)
    # where it builds is checked before the (possibly long) reference run
    build_dir = check_build_dir(design, build_dir, simulator=simulator, waves=waves)
    if labels is not None:
        labels = [int(v) for v in labels]
        if len(labels) != n:
            raise SimulationError(f"{len(labels)} labels for {n} images")
    full = max(min(n, 2), math.ceil(n / 2)) if full_rate_images is None else full_rate_images
    if not 0 <= full <= n:
        raise SimulationError(f"full_rate_images must be in 0..{n}, not {full}")

    report(f"reference: {n} images")
    trace = reference.run(design.graph, pixels)
    built, build_seconds = _build(design, simulator, build_dir, waves, report)
    spec = _spec(
        design,
        pixels,
        trace,
        seed=seed,
        valid_probability=valid_probability,
        ready_probability=ready_probability,
        full=full,
        reset=mid_frame_reset,
    )
    report(f"simulating {n} images with {simulator} (seed {seed})")
    record, run_seconds = _run(design, spec, build_dir, simulator, waves, report)

    top = design.top
    o_shape, logits_layout = top.o.payload.shape(), top.logits.payload.shape()
    per_logits = spec["logits_words_per_image"]
    expected_logits = trace.logits.reshape(n, -1)
    results = []
    for k in range(n):
        hw_class = cycles = None
        equal = False
        if k < len(record["o"]):
            cycle, payload = record["o"][k]
            got = unpack(o_shape, int(payload, 16))
            hw_class = int(got["index"])
            if k < len(record["first_accept"]):
                cycles = cycle - record["first_accept"][k]
            words = record["logits"][k * per_logits : (k + 1) * per_logits]
            if len(words) == per_logits:
                hw_logits = unpack_words(logits_layout, [int(w, 16) for _, w in words]).reshape(-1)
                equal = got == {
                    "index": int(trace.classes[k]),
                    "value": int(expected_logits[k, trace.classes[k]]),
                } and np.array_equal(hw_logits, expected_logits[k])
        results.append(
            ImageResult(
                index=k,
                label=None if labels is None else labels[k],
                hw_class=hw_class,
                reference_class=int(trace.classes[k]),
                equal=equal,
                cycles=cycles,
            )
        )
    problems = []
    if record["stop"] == "idle":
        problems.append(
            f"the design stalled: no stream moved for {spec['idle_limit']:,} cycles after {record['cycles']:,} "
            f"cycles ({len(record['o'])} of {n} classes out, {len(record['first_accept'])} images entered)"
        )
    elif record["stop"] == "max_cycles":
        problems.append(f"the run reached its limit of {spec['max_cycles']:,} cycles")
    for port, count in record["extra"].items():
        if count:
            problems.append(f"{count} words on {port} beyond the expected ones (from before the reset?)")
    problems += [f"stream protocol: {line}" for line in record["protocol"]]

    o_times = [cycle for cycle, _ in record["o"][:full]]
    accept_times = record["first_accept"][:full]
    latency = results[0].cycles if full >= 1 and results[0].cycles is not None else None
    result = SimResult(
        design=design.path,
        simulator=simulator,
        seed=seed,
        images=results,
        cycles_per_frame=_steady(o_times) if len(o_times) == full else None,
        input_cycles_per_frame=_steady(accept_times) if len(accept_times) == full else None,
        latency=latency,
        estimate=design.estimate,
        clock_mhz=float(design.manifest.get("clock_mhz", 100.0)),
        cycles=int(record["cycles"]),
        built=built,
        build_seconds=build_seconds,
        run_seconds=run_seconds,
        build_dir=build_dir,
        problems=problems,
        pre_reset=record["pre_reset"],
    )
    if waves:
        result.waves = build_dir / ("dump.fst" if simulator == "verilator" else f"{TOPLEVEL}.fst")
    failing = [r.index for r in results if not r.equal]
    if failing and localise_failures:
        report(f"localising the first mismatch (image {failing[0]}): re-running with every layer's stream tapped")
        result.localised = True
        result.difference = localise(
            design, pixels, failing[0], spec=spec, build_dir=build_dir, simulator=simulator, trace=None
        )
    return result


def localise(
    design: DesignFolder,
    pixels: np.ndarray,
    image: int,
    *,
    spec: dict,
    build_dir: Path,
    simulator: str,
    trace=None,
) -> Difference | None:
    """Re-runs ``spec`` (the failing run's stimulus and flow control) with every node's output stream
    tapped until image ``image`` is out, and returns the first difference from the reference in
    topological order (``None`` when every tapped stream matched up to that image)."""
    graph, widths = design.graph, design.top.widths
    count = image + 1
    trace = reference.run(graph, pixels[:count], keep=True) if trace is None else trace
    tapped = dict(spec, stop_after_image=image, taps=_taps(design, count))
    record, _ = _run(design, tapped, Path(build_dir), simulator, False, lambda text: None)
    for node in graph.nodes[:-1]:
        t = graph.types[node.name]
        if node.name in record["missing_taps"]:
            continue
        width = widths[node.name]
        layout = channel_word(t.element_shape, width)
        got = unpack_words(layout, [int(w, 16) for w in record["taps"].get(node.name, [])])
        per_image = t.elements // width
        groups = t.channels // width
        for j in range(count):
            expected = tensor_to_words(trace.tensors[node.name][j], width)
            mine = got[j * per_image : (j + 1) * per_image]
            rows = min(len(mine), per_image)
            differs = np.nonzero(np.any(mine[:rows] != expected[:rows], axis=1))[0] if rows else np.array([], int)
            if len(differs):
                w = int(differs[0])
                e = int(np.nonzero(mine[w] != expected[w])[0][0])
                pixel, group = divmod(w, groups)
                return Difference(
                    layer=node.name,
                    op=node.op,
                    image=j,
                    channel=group * width + e,
                    y=pixel // t.width,
                    x=pixel % t.width,
                    hardware=int(mine[w][e]),
                    reference=int(expected[w][e]),
                    differing=int(np.count_nonzero(mine[:rows] != expected[:rows])),
                )
            if len(mine) < per_image:
                return Difference(
                    layer=node.name,
                    op=node.op,
                    image=j,
                    channel=None,
                    y=None,
                    x=None,
                    hardware=None,
                    reference=None,
                    words=len(mine),
                    expected_words=per_image,
                )
    # every tapped stream matched: the classifier's argmax (or the outputs after the taps)
    o_shape = design.top.o.payload.shape()
    for j, (_, payload) in enumerate(record["o"][:count]):
        got = unpack(o_shape, int(payload, 16))
        if got["index"] != int(trace.classes[j]):
            node = graph.output
            return Difference(
                layer=node.name,
                op=node.op,
                image=j,
                channel=0,
                y=0,
                x=0,
                hardware=int(got["index"]),
                reference=int(trace.classes[j]),
                differing=1,
            )
    return None


def _number(value, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def result_summary(result: SimResult, *, source: str | None = None) -> str:
    """The text `instabnn-hw simulate` prints (without the final ``N passed, M failed`` line)."""
    from instabnn_hw.table import format_table

    e, clock = result.estimate, result.clock_mhz
    measured_fps = clock * 1e6 / result.cycles_per_frame if result.cycles_per_frame else None

    def ratio(measured, estimate):
        return f"{measured / estimate:.3f}" if measured and estimate else "-"

    rows = [
        (
            "cycles per frame",
            _number(result.cycles_per_frame, 1),
            _number(e.get("cycles_per_frame")),
            ratio(result.cycles_per_frame, e.get("cycles_per_frame")),
        ),
        (
            "latency (cycles)",
            _number(result.latency),
            _number(e.get("latency_cycles")),
            ratio(result.latency, e.get("latency_cycles")),
        ),
        (
            f"frames/s at {clock:g} MHz",
            _number(measured_fps, 1),
            _number(e.get("fps"), 1),
            ratio(measured_fps, e.get("fps")),
        ),
    ]
    build = f"{result.build_seconds:.1f} s" if result.built else "reused"
    lines = [
        f"design: {result.design} ({source or f'{len(result.images)} images'})",
        f"simulator: {result.simulator}, seed {result.seed}; {result.cycles:,} cycles in {result.run_seconds:.1f} s "
        f"({result.cycles_per_second:,.0f} cycles/s); build {build} in {result.build_dir}",
        "",
        format_table(("", "measured", "estimate", "ratio"), rows),
        "",
    ]
    hw, ref = result.accuracy("hw"), result.accuracy("reference")
    if hw is not None:
        labelled = sum(r.label is not None for r in result.images)
        lines.append(f"accuracy: hardware {hw:.3f}, reference {ref:.3f} ({labelled} labelled images)")
    failing = [r for r in result.images if not r.equal]
    for r in failing[:5]:
        if r.hw_class is None:
            what = f"no result came out (reference class {r.reference_class})"
        elif r.hw_class == r.reference_class:
            what = f"the logits differ (class {r.hw_class} on both)"
        else:
            what = f"hardware class {r.hw_class}, reference class {r.reference_class}"
        lines.append(f"mismatch: image {r.index}: {what}")
    if len(failing) > 5:
        lines.append(f"mismatch: ... and {len(failing) - 5} more images")
    lines += [f"problem: {p}" for p in result.problems]
    if result.difference is not None:
        lines.append(f"first difference: {result.difference.describe()}")
    elif result.localised:
        lines.append("first difference: not found in the layers' streams (see the outputs above)")
    if result.waves is not None:
        lines.append(f"waves: {result.waves}")
    return "\n".join(lines)
