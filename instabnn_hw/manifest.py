"""A design folder's ``manifest.json`` as the tools read it back: strict JSON, checked fields, confined paths.

`instabnn-hw generate` writes the manifest (:func:`instabnn_hw.codegen.report.manifest`);
`simulate` and `build` read it with :func:`read_manifest`, which refuses anything generate does
not write (one line naming the field), and reach every file it names through
:func:`design_file`, which keeps them inside the design folder.
"""

from __future__ import annotations

import math
from pathlib import Path

from .errors import CLOCK_MHZ, UserError
from .files import UnsafePathError, inside
from .strict_json import read_json, short_repr

__all__ = ["ManifestError", "TOP_NAME", "design_file", "read_manifest"]

#: The name of the generated top-level Verilog module (and of its file, ``rtl/TOP_NAME.v``).
TOP_NAME = "instabnn_top"
#: The estimate's entries that count things.
_COUNTS = ("cycles_per_frame", "latency_cycles", "luts", "memory_bits", "multipliers")


class ManifestError(UserError, ValueError):
    """A folder that is not a design generate wrote, or a manifest that was edited; one line."""


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _is_names(value, *, empty: bool = True) -> bool:
    return isinstance(value, list) and (empty or bool(value)) and all(isinstance(name, str) for name in value)


def _check_fields(path: Path, manifest: dict) -> None:
    def wrong(field: str, value, want: str) -> ManifestError:
        return ManifestError(f"{path}: {field} must be {want}, not {short_repr(value, 40)}; regenerate the design")

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
    path = folder / "manifest.json"
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
