"""The design folder: what `instabnn-hw generate` writes, and how the tools read it back.

Layout: ``rtl/`` (the Verilog, ``TOP_NAME.v`` and its modules, and ``rtl/mem/`` the weight
memories), ``manifest.json`` (the model, the ports as data, the layers' folding and estimates,
the totals and the files), ``graph.npz`` (the IR), ``plan.json`` (the planner's decisions),
``folding.json`` (FINN's folding-config shape), ``report.md`` and ``cycles.png``; simulate and
build add ``sim/``, ``build/`` and ``build-failed/``. :func:`write_design` writes it (atomically);
:func:`read_manifest` reads the manifest back, refusing anything generate does not write (one
line naming the field); :func:`design_file` keeps every file it names inside the folder; and
:class:`DesignPorts` is the top's streams as the manifest describes them, all that simulate,
build and the board wrappers need to know of its ports.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from amaranth.hdl import Shape, signed, unsigned
from amaranth.lib import data

from .errors import CLOCK_MHZ, UserError
from .files import UnsafePathError, inside, staged_folder
from .strict_json import read_json, short_repr

__all__ = [
    "CHART_FILE",
    "DESIGN_FILES",
    "FOLDING_FILE",
    "GRAPH_FILE",
    "MANIFEST_FILE",
    "PLAN_FILE",
    "REPORT_FILE",
    "TOOL_FOLDERS",
    "TOP_NAME",
    "DesignPorts",
    "ManifestError",
    "StreamPort",
    "design_file",
    "design_owner",
    "read_manifest",
    "tap_signal",
    "write_design",
]

#: The name of the generated top-level Verilog module (and of its file, ``rtl/TOP_NAME.v``).
TOP_NAME = "instabnn_top"
MANIFEST_FILE = "manifest.json"
GRAPH_FILE = "graph.npz"
PLAN_FILE = "plan.json"
FOLDING_FILE = "folding.json"
REPORT_FILE = "report.md"
CHART_FILE = "cycles.png"
#: What :func:`write_design` puts in a design folder.
DESIGN_FILES = ("rtl", MANIFEST_FILE, GRAPH_FILE, PLAN_FILE, FOLDING_FILE, REPORT_FILE, CHART_FILE)
#: The folders `instabnn-hw simulate` and `build` add to a design (their builds, replaced with it).
TOOL_FOLDERS = ("sim", "build", "build-failed")
#: The estimate's entries that count things.
_COUNTS = ("cycles_per_frame", "latency_cycles", "luts", "memory_bits", "multipliers")


class ManifestError(UserError, ValueError):
    """A folder that is not a design generate wrote, or a manifest that was edited; one line."""


def tap_signal(node: str) -> str:
    """The Verilog name of the stream leaving IR node ``node`` inside the top (``<node>__out``)."""
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in node) + "__out"


@dataclass(frozen=True)
class StreamPort:
    """One stream of the generated top: signals ``<signal>__valid``, ``__ready`` and ``__payload``.

    Attributes
    ----------
    signal : str
        The signals' common prefix.
    elements : int
        Elements per word (channel words, :mod:`instabnn_hw.hw.layouts`); 1 for a struct.
    bits : int
        Bits of one element (of the whole struct for a struct payload).
    signed : bool
        Whether the elements are signed.
    words_per_image : int
        Transfers of one image.
    fields : tuple of (str, int, bool)
        A struct payload's fields, least significant first: ``(name, bits, signed)``.
    """

    signal: str
    elements: int
    bits: int
    signed: bool
    words_per_image: int
    fields: tuple[tuple[str, int, bool], ...] = ()

    @property
    def width(self) -> int:
        """Bits of ``__payload``."""
        return self.elements * self.bits

    @property
    def layout(self) -> data.Layout:
        """The payload's layout: ``ArrayLayout(element, elements)``, or the struct of ``fields``."""
        if self.fields:
            return data.StructLayout({name: (signed if s else unsigned)(bits) for name, bits, s in self.fields})
        return data.ArrayLayout((signed if self.signed else unsigned)(self.bits), self.elements)

    @classmethod
    def of(cls, signal: str, layout, words_per_image: int) -> StreamPort:
        """The port of a payload ``layout`` (an ArrayLayout of integers or a StructLayout of them)."""
        if isinstance(layout, data.StructLayout):
            fields = tuple((name, f.shape.width, f.shape.signed) for name, f in layout)
            return cls(signal, 1, layout.size, False, words_per_image, fields)
        element = Shape.cast(layout.elem_shape)
        return cls(signal, layout.length, element.width, element.signed, words_per_image)

    def to_json(self) -> dict:
        record = {"signal": self.signal, "width": self.width, "words_per_image": self.words_per_image}
        if self.fields:
            record["fields"] = [{"name": name, "bits": bits, "signed": s} for name, bits, s in self.fields]
        else:
            record.update(elements=self.elements, bits=self.bits, signed=self.signed)
        return record

    @classmethod
    def from_json(cls, record, where: str) -> StreamPort:
        """The port ``record`` describes (as :meth:`to_json` writes it).

        Raises
        ------
        ValueError
            Naming ``where`` and the field that is wrong.
        """
        if not isinstance(record, dict):
            raise ValueError(f"{where} must be an object, not {short_repr(record, 40)}")
        signal = record.get("signal")
        if not (isinstance(signal, str) and signal.isidentifier()):
            raise ValueError(f"{where}.signal must be a Verilog name, not {short_repr(signal, 40)}")
        words = record.get("words_per_image")
        if not _is_count(words, 1):
            raise ValueError(f"{where}.words_per_image must be a whole number >= 1, not {short_repr(words, 40)}")
        if "fields" in record:
            fields = record["fields"]
            if not (isinstance(fields, list) and fields and all(_is_field(f) for f in fields)):
                want = "a list of {name, bits, signed}"
                raise ValueError(f"{where}.fields must be {want}, not {short_repr(fields, 40)}")
            parts = tuple((f["name"], f["bits"], f["signed"]) for f in fields)
            port = cls(signal, 1, sum(bits for _, bits, _ in parts), False, words, parts)
        else:
            elements, bits, is_signed = record.get("elements"), record.get("bits"), record.get("signed")
            for key, value in (("elements", elements), ("bits", bits)):
                if not _is_count(value, 1):
                    raise ValueError(f"{where}.{key} must be a whole number >= 1, not {short_repr(value, 40)}")
            if not isinstance(is_signed, bool):
                raise ValueError(f"{where}.signed must be true or false, not {short_repr(is_signed, 40)}")
            port = cls(signal, elements, bits, is_signed, words)
        if record.get("width") != port.width:
            raise ValueError(f"{where}.width must be {port.width}, not {short_repr(record.get('width'), 40)}")
        return port


def _is_field(record) -> bool:
    return (
        isinstance(record, dict)
        and set(record) == {"name", "bits", "signed"}
        and isinstance(record["name"], str)
        and record["name"].isidentifier()
        and _is_count(record["bits"], 1)
        and isinstance(record["signed"], bool)
    )


@dataclass(frozen=True)
class DesignPorts:
    """The streams of a generated top, as its manifest's ``ports`` describe them.

    Attributes
    ----------
    i : StreamPort
        The pixels in: one pixel (``in_channels`` unsigned bytes) per word, raster order.
    o : StreamPort
        One word per image: ``{index, value}``, the class and its logit.
    logits : StreamPort
        The logits, channel words at the width reaching the classifier.
    taps : dict of str to StreamPort
        Every IR node's output stream inside the top (the pixel input's is ``pixels``), graph order.

    Besides these, the top has the inputs ``clk`` and ``rst``.
    """

    i: StreamPort
    o: StreamPort
    logits: StreamPort
    taps: dict[str, StreamPort] = field(default_factory=dict)

    @property
    def pins(self) -> int:
        """Bits of the top's ports: ``clk``, ``rst`` and each stream's payload, ``valid`` and ``ready``."""
        return 2 + sum(port.width + 2 for port in (self.i, self.o, self.logits))

    def to_json(self) -> dict:
        return {
            "i": self.i.to_json(),
            "o": self.o.to_json(),
            "logits": self.logits.to_json(),
            "taps": {name: port.to_json() for name, port in self.taps.items()},
        }

    @classmethod
    def from_json(cls, record, where: str = "ports") -> DesignPorts:
        """The ports ``record`` describes (:meth:`to_json`); ``ValueError`` naming the field that is wrong."""
        if not isinstance(record, dict) or set(record) != {"i", "o", "logits", "taps"}:
            raise ValueError(f"{where} must be an object of i, o, logits and taps, not {short_repr(record, 40)}")
        taps = record["taps"]
        if not isinstance(taps, dict):
            raise ValueError(f"{where}.taps must be an object of node names, not {short_repr(taps, 40)}")
        return cls(
            **{key: StreamPort.from_json(record[key], f"{where}.{key}") for key in ("i", "o", "logits")},
            taps={
                name: StreamPort.from_json(tap, f"{where}.taps[{short_repr(name, 40)}]") for name, tap in taps.items()
            },
        )

    @classmethod
    def of_manifest(cls, manifest: dict) -> DesignPorts:
        """The ports of a manifest :func:`read_manifest` returned (whose ``ports`` it checked)."""
        return cls.from_json(manifest["ports"])


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _is_names(value, *, empty: bool = True) -> bool:
    return isinstance(value, list) and (empty or bool(value)) and all(isinstance(name, str) for name in value)


def _check_fields(path: Path, manifest: dict) -> None:
    def wrong(field: str, value, want: str) -> ManifestError:
        return ManifestError(f"{path}: {field} must be {want}, not {short_repr(value, 40)}; regenerate the design")

    try:
        DesignPorts.from_json(manifest.get("ports"))
    except ValueError as exc:
        raise ManifestError(f"{path}: {exc}; regenerate the design") from None
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise wrong("files", files, "an object naming the design's files")
    if not _is_names(files.get("verilog"), empty=False):
        raise wrong("files.verilog", files.get("verilog"), "a list of file names")
    if not _is_names(files.get("memories", [])):
        raise wrong("files.memories", files.get("memories"), "a list of file names")
    for key in ("graph", "plan"):
        if key in files and not isinstance(files[key], str):
            raise wrong(f"files.{key}", files[key], "a file name")
    estimate = manifest.get("estimate")
    if not isinstance(estimate, dict):
        raise wrong("estimate", estimate, "an object of numbers")
    for key in _COUNTS:
        if key in estimate and not _is_count(estimate[key]):
            raise wrong(f"estimate.{key}", estimate[key], "a whole number >= 0")
    if "fps" in estimate and not (_is_number(estimate["fps"]) and estimate["fps"] > 0):
        raise wrong("estimate.fps", estimate["fps"], "a number > 0")
    low, high = CLOCK_MHZ
    if "clock_mhz" in manifest and not (_is_number(manifest["clock_mhz"]) and low <= manifest["clock_mhz"] <= high):
        raise wrong("clock_mhz", manifest["clock_mhz"], f"a number of MHz from {low:g} to {high:g}")
    for key in ("device", "board"):
        if key in manifest and not (isinstance(manifest[key], str) and manifest[key].isprintable()):
            raise wrong(key, manifest[key], f"the name of a {key}")
    shape = manifest.get("input_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_count(v, 1) for v in shape)):
        raise wrong("input_shape", shape, "three whole numbers >= 1 (channels, height, width)")
    if not _is_count(manifest.get("num_classes"), 1):
        raise wrong("num_classes", manifest.get("num_classes"), "a whole number >= 1")
    preprocessing = manifest.get("preprocessing")
    if preprocessing is not None:
        if not isinstance(preprocessing, dict):
            raise wrong("preprocessing", preprocessing, "an object")
        dataset = preprocessing.get("dataset")
        if dataset is not None and not isinstance(dataset, str):
            raise wrong("preprocessing.dataset", dataset, "a dataset name")


def design_owner(folder: Path) -> str | None:
    """``None`` when ``folder`` is a design folder generate wrote and may replace, else why not.

    A design is recognised by its manifest; a folder that also holds files generate, simulate
    and build did not write is not replaced, so nothing a user put there is lost.
    """
    manifest = folder / MANIFEST_FILE
    try:
        data = read_json(manifest)
    except FileNotFoundError:
        return "is not a design folder (it has no manifest.json)" if any(folder.iterdir()) else None
    except (OSError, ValueError):
        return "holds a manifest.json that generate did not write"
    if not isinstance(data, dict) or data.get("top") != TOP_NAME:
        return "holds a manifest.json that generate did not write"
    known = set(DESIGN_FILES) | set(TOOL_FOLDERS)
    foreign = sorted(p.name for p in folder.iterdir() if p.name not in known and not p.name.startswith("."))
    if foreign:
        shown = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        return f"holds files generate did not write ({shown})"
    return None


def write_design(
    out: Path, graph, plan, *, source: dict, preprocessing: dict, target=None, check_ports=None, step=None
) -> dict:
    """Writes the design folder ``out`` (atomically) for ``graph`` folded by ``plan``; returns the manifest.

    ``out`` must be new or a design folder (:func:`design_owner`): it is replaced whole, in one
    rename (:func:`~instabnn_hw.files.staged_folder`). ``target`` (``{"device": ..., "board": ...}``)
    goes into the manifest; ``check_ports(ports)`` sees the emitted :class:`DesignPorts` and may
    raise, which leaves ``out`` as it was. ``step(text)`` is called before the two slow steps
    (progress lines).
    """
    from .codegen.emit import emit
    from .codegen.fold_config import fold_config
    from .codegen.ir import save_graph
    from .codegen.report import cycles_chart, manifest, manifest_json, report_markdown

    step = step or (lambda text: None)
    with staged_folder(Path(out)) as folder:
        step("emitting Verilog and memory files")
        files, ports = emit(graph, plan, folder / "rtl")
        if check_ports is not None:
            check_ports(ports)
        relative = sorted(str(f.relative_to(folder)) for f in files)
        data = manifest(
            graph,
            plan,
            source=source,
            ports=ports,
            memory_files=[f for f in relative if f.endswith(".hex")],
            preprocessing=preprocessing,
            verilog_files=[f for f in relative if f.endswith(".v")],
            target=target,
        )
        step("writing manifest, graph, plan, report and chart")
        (folder / MANIFEST_FILE).write_text(manifest_json(data))
        save_graph(graph, folder / GRAPH_FILE)
        (folder / PLAN_FILE).write_text(plan.to_json())
        (folder / FOLDING_FILE).write_text(json.dumps(fold_config(plan), indent=2) + "\n")
        (folder / REPORT_FILE).write_text(report_markdown(data, chart=CHART_FILE))
        cycles_chart(data).save(folder / CHART_FILE, format="PNG", optimize=False)
    return data


def read_manifest(folder) -> dict:
    """The manifest of the design folder ``folder``, every field the tools read checked.

    Raises
    ------
    ManifestError
        When ``folder`` is not a folder, has no manifest, or the manifest cannot be read, is not
        strict JSON, is not a generated design's, or has a field of the wrong type.
    """
    folder = Path(folder)
    hint = "give a folder written by `instabnn-hw generate`"
    if not folder.is_dir():
        raise ManifestError(f"{folder} is not a folder; {hint}")
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise ManifestError(f"{folder} has no manifest.json; {hint}")
    try:
        manifest = read_json(path)
    except OSError as exc:
        raise ManifestError(f"cannot read {path} ({exc.strerror or exc})") from None
    except ValueError as exc:  # not strict JSON: the message completes the sentence
        raise ManifestError(f"{path} {exc}; {hint}") from None
    if not isinstance(manifest, dict) or manifest.get("top") != TOP_NAME:
        raise ManifestError(f"{path} is not the manifest of a generated design; {hint}")
    _check_fields(path, manifest)
    return manifest


def design_file(folder, name, what: str) -> Path:
    """``folder / name`` once :func:`~instabnn_hw.files.inside` has confined it to the design folder.

    Raises
    ------
    ManifestError
        When ``name`` is not a relative name inside ``folder`` (a ``..``, an absolute path, a link out).
    """
    try:
        inside(folder, name, what=what)
    except UnsafePathError as exc:
        raise ManifestError(str(exc)) from None
    return Path(folder) / name
