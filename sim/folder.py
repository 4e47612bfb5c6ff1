"""The folders `instabnn-hw simulate` works with: the design folder it reads, the build folder it writes.

:func:`load_design` reads a folder written by `instabnn-hw generate` (its manifest, ``graph.npz``,
``plan.json`` and ``rtl/``) and checks that the graph and the manifest's ports describe one
design; the top's stream shapes come from the manifest's ports, so nothing is elaborated.
:func:`check_build_dir` decides whether a build folder may be written, and
:func:`prepare_build_dir` marks it as simulate's own and links it to the design's memory files.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..codegen import ir
from ..codegen.plan import Plan
from ..design_folder import (
    GRAPH_FILE,
    PLAN_FILE,
    TOP_NAME,
    DesignPorts,
    ManifestError,
    design_file,
    read_manifest,
)
from ..errors import UserError
from ..files import UnsafePathError, check_output_folder, inside
from .toolchain import BUILD_STAMP

__all__ = [
    "BUILD_MARKER",
    "DesignFolder",
    "SimulationError",
    "check_build_dir",
    "load_design",
    "prepare_build_dir",
]

#: The file simulate puts in every build folder it creates: the mark of a folder it may reuse and change.
BUILD_MARKER = ".instabnn-sim"


class SimulationError(UserError, ValueError):
    """A design folder, image batch or option that cannot be simulated; the message is one line."""


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


@dataclass
class DesignFolder:
    """A generated design as :func:`load_design` reads it back.

    Attributes
    ----------
    path : Path
    manifest : dict
    graph : ir.Graph
    plan : codegen.plan.Plan
    ports : DesignPorts
        The top's streams, from the manifest: their payload layouts, and every layer's tap.
    sources : list of Path
        Every ``rtl/*.v``.
    """

    path: Path
    manifest: dict
    graph: ir.Graph
    plan: Plan
    ports: DesignPorts
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
    if not any(source.name == f"{TOP_NAME}.v" for source in sources):
        raise SimulationError(f"{path} has no rtl/{TOP_NAME}.v; {hint}")
    missing = [file for file in sources + memories if not file.is_file()]
    if missing:
        raise SimulationError(f"{path} lacks {missing[0].relative_to(path)}; generate it again")
    ports = DesignPorts.of_manifest(manifest)
    misfit = _misfit(graph, ports)
    if misfit:
        raise SimulationError(f"{path}: graph.npz and the manifest's ports do not fit together ({misfit})")
    return DesignFolder(path=path, manifest=manifest, graph=graph, plan=plan, ports=ports, sources=sources)


def _misfit(graph: ir.Graph, ports: DesignPorts) -> str | None:
    """Why ``ports`` are not the streams of a top generated from ``graph`` (``None`` when they are).

    Every layer but the classifier's argmax has its tap, carrying the layer's elements in channel
    words of its element shape; ``i`` carries the pixels' words, ``logits`` the logits' words
    and ``o`` the class and its logit.
    """
    nodes = graph.nodes[:-1]
    if list(ports.taps) != [node.name for node in nodes]:
        return f"the ports tap {len(ports.taps)} layers, the graph has {len(nodes)} with an output stream"
    for node in nodes:
        t, tap = graph.types[node.name], ports.taps[node.name]
        element = t.element_shape
        if (tap.bits, tap.signed) != (element.width, element.signed) or tap.fields:
            return f"layer {node.name}: the tap carries {tap.bits}-bit elements, the layer {element}"
        if t.channels % tap.elements or tap.words_per_image * tap.elements != t.elements:
            return f"layer {node.name}: {tap.words_per_image} words of {tap.elements} for {t.elements} elements"
    pixels, logits = ports.taps[graph.input.name], ports.taps[graph.logits]
    if (ports.i.elements, ports.i.words_per_image) != (pixels.elements, pixels.words_per_image):
        return f"i carries {ports.i.elements} pixels a word, the input {pixels.elements}"
    if (ports.logits.elements, ports.logits.words_per_image) != (logits.elements, logits.words_per_image):
        return f"logits carries {ports.logits.elements} logits a word, the classifier {logits.elements}"
    if [name for name, _, _ in ports.o.fields] != ["index", "value"]:
        return "o is not the class and its logit"
    return None


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


def prepare_build_dir(design: DesignFolder, build_dir: Path) -> None:
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
