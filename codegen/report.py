"""What `instabnn-hw generate` writes beside the RTL: manifest.json, report.md and the cycles chart.

Everything here is a pure function of the graph, the plan and the options, so the same inputs
give the same bytes (no dates, no absolute paths).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from instabnn_hw.manifest import TOP_NAME
from instabnn_hw.strict_json import json_kind, read_json, short_repr
from instabnn_hw.table import format_table

from . import ir

__all__ = [
    "GRAPH_FILE",
    "MANIFEST_VERSION",
    "PLAN_FILE",
    "PLAN_VERSION",
    "SavedPlan",
    "manifest",
    "manifest_json",
    "plan_json",
    "read_plan",
    "report_markdown",
    "cycles_chart",
]

MANIFEST_VERSION = 1
#: Version of plan.json.
PLAN_VERSION = 1

#: What :func:`~.generate.write_design` writes beside the RTL (relative paths).
GRAPH_FILE = "graph.npz"
PLAN_FILE = "plan.json"


def _layer_record(layer) -> dict:
    return {
        "name": layer.name,
        "op": layer.op,
        "in_shape": list(layer.in_shape),
        "out_shape": list(layer.out_shape),
        "pe": layer.pe,
        "simd": layer.simd,
        "cycles": layer.cycles,
        "latency": layer.latency,
        "luts": layer.luts,
        "memory_bits": layer.memory_bits,
        "multipliers": layer.multipliers,
    }


def manifest(
    graph: ir.Graph,
    plan,
    *,
    source: dict,
    memory_files: list[str],
    preprocessing: dict,
    verilog_files: list[str] | None = None,
) -> dict:
    """The design's description: model, shapes, layers with folding and estimates, totals, files."""
    config = graph.config
    estimate = plan.estimate
    return {
        "version": MANIFEST_VERSION,
        "top": TOP_NAME,
        "model": graph.model,
        "insta": config.get("insta"),
        "prelu": config.get("prelu"),
        "config": config,
        "source": source,
        "input_shape": list(graph.input_shape),
        "num_classes": graph.num_classes,
        "preprocessing": preprocessing,
        "ports": {
            "i": f"pixels, {graph.input_shape[0]} x 8 bits per word, raster order, "
            f"{graph.input_shape[1] * graph.input_shape[2]} words per image",
            "o": "per image one word {index, value}: the class and its logit",
            "logits": "per image the logits, in words of the classifier's PE",
        },
        "clock_mhz": estimate.clock_mhz,
        "layers": [_layer_record(layer) for layer in plan.layers],
        "fifos": [{"from": a, "to": b, "depth": depth} for (a, b), depth in sorted(plan.fifo_depths.items())],
        "estimate": {
            "cycles_per_frame": estimate.cycles_per_frame,
            "latency_cycles": estimate.latency_cycles,
            "fps": round(estimate.fps, 3),
            "luts": estimate.luts,
            "memory_bits": estimate.memory_bits,
            "multipliers": estimate.multipliers,
            "bottleneck": estimate.bottleneck,
        },
        "files": {
            "verilog": verilog_files or ["rtl/instabnn_top.v", "rtl/instabnn_rom.v"],
            "memories": memory_files,
            "graph": GRAPH_FILE,
            "plan": PLAN_FILE,
        },
    }


def manifest_json(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


@dataclass(frozen=True)
class SavedPlan:
    """The parts of a :class:`~.plan.Plan` that :func:`~.emit.build_top` reads, as plan.json keeps them.

    Attributes
    ----------
    folding : dict of str to Fold
        Every node's PE / SIMD.
    widths : dict of str to int
    parallel : dict of str to int
    fifo_depths : dict of (str, str) to int
    """

    folding: dict
    widths: dict
    parallel: dict
    fifo_depths: dict


def plan_json(plan) -> str:
    """plan.json: the folding, widths, MLP parallelism and FIFO depths of ``plan`` (deterministic)."""
    data = {
        "version": PLAN_VERSION,
        "folding": {name: [fold.pe, fold.simd] for name, fold in plan.folding.items()},
        "widths": dict(plan.widths),
        "parallel": dict(plan.parallel),
        "fifo_depths": [[a, b, depth] for (a, b), depth in sorted(plan.fifo_depths.items())],
    }
    return json.dumps(data, indent=1) + "\n"


#: The keys of plan.json, in the order :func:`plan_json` writes them.
_PLAN_KEYS = ("version", "folding", "widths", "parallel", "fifo_depths")


class _BadPlan(Exception):
    """plan.json content that :func:`plan_json` never writes; the message says what."""


def _positive_int(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _BadPlan(f"{where} must be a positive integer, not {short_repr(value)}")
    return value


def _names_to(data: dict, key: str, convert) -> dict:
    """``data[key]``, an object of node names, with each value through ``convert(value, where)``."""
    table = data[key]
    if not isinstance(table, dict):
        raise _BadPlan(f"{key} is a JSON {json_kind(table)}, not an object of node names")
    return {name: convert(value, f"{key}[{short_repr(name, 40)}]") for name, value in table.items()}


def _fold(value, where: str):
    from .plan import Fold

    if not (isinstance(value, list) and len(value) == 2):
        raise _BadPlan(f"{where} must be [PE, SIMD], not {short_repr(value)}")
    return Fold(_positive_int(value[0], f"{where} PE"), _positive_int(value[1], f"{where} SIMD"))


def _fifo_depths(data: dict) -> dict:
    rows = data["fifo_depths"]
    if not isinstance(rows, list):
        raise _BadPlan(f"fifo_depths is a JSON {json_kind(rows)}, not an array")
    depths = {}
    for j, row in enumerate(rows):
        if not (isinstance(row, list) and len(row) == 3 and all(isinstance(name, str) for name in row[:2])):
            raise _BadPlan(f"fifo_depths[{j}] must be [producer, consumer, depth], not {short_repr(row)}")
        edge = (row[0], row[1])
        if edge in depths:
            raise _BadPlan(f"fifo_depths gives the edge {short_repr(edge)} twice")
        depths[edge] = _positive_int(row[2], f"fifo_depths[{j}] depth")
    return depths


def _saved_plan(data) -> SavedPlan:
    if not isinstance(data, dict):
        raise _BadPlan(f"it holds a JSON {json_kind(data)}, not an object")
    version = data.get("version")
    if isinstance(version, bool) or version != PLAN_VERSION:
        raise _BadPlan(f"version {short_repr(version)}, not {PLAN_VERSION}")
    missing = [k for k in _PLAN_KEYS if k not in data]
    if missing:
        raise _BadPlan(f"it misses {', '.join(missing)}")
    extra = [k for k in data if k not in _PLAN_KEYS]
    if extra:
        raise _BadPlan(f"it has unknown keys {', '.join(short_repr(k, 40) for k in extra[:5])}")
    return SavedPlan(
        folding=_names_to(data, "folding", _fold),
        widths=_names_to(data, "widths", _positive_int),
        parallel=_names_to(data, "parallel", _positive_int),
        fifo_depths=_fifo_depths(data),
    )


def read_plan(path) -> SavedPlan:
    """The :class:`SavedPlan` in ``path`` (a plan.json).

    The file must hold exactly what :func:`plan_json` writes: its keys, every PE, SIMD, width,
    parallelism and depth a positive integer, every node name a string.

    Raises
    ------
    ValueError
        One line naming the file when it is unreadable or not a plan.json of this version.
    """
    path = Path(path)
    what = f"{path} is not a plan.json of version {PLAN_VERSION}"
    try:
        return _saved_plan(read_json(path))
    except OSError as exc:
        raise ValueError(f"{what} (cannot read it: {exc.strerror or exc})") from None
    except ValueError as exc:  # the file is not strict JSON (parse_json completes the sentence)
        raise ValueError(f"{what} (the file {exc})") from None
    except _BadPlan as exc:
        raise ValueError(f"{what} ({' '.join(str(exc).split())})") from None


def report_markdown(data: dict, *, chart: str = "cycles.png") -> str:
    """report.md: the summary, the totals and the per-layer table, with the chart."""
    e = data["estimate"]
    c, h, w = data["input_shape"]
    lines = [
        f"# {data['model']} (insta {data['insta']}) on FPGA: design report",
        "",
        f"Input {c} x {h} x {w} pixels, {data['num_classes']} classes, clock {data['clock_mhz']:g} MHz. "
        f"Source: {data['source'].get('kind')} {data['source'].get('name', '')}".rstrip()
        + ".",
        "",
        "## Estimate",
        "",
        "| cycles per frame | frames/s | latency (cycles) | latency (us) | LUT4 | memory bits | multipliers "
        "| bottleneck |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
        f"| {e['cycles_per_frame']:,} | {e['fps']:,.1f} | {e['latency_cycles']:,} | "
        f"{e['latency_cycles'] / data['clock_mhz']:,.1f} | {e['luts']:,} | {e['memory_bits']:,} | "
        f"{e['multipliers']:,} | {e['bottleneck']} |",
        "",
        "## Layers",
        "",
        f"![cycles per frame of each layer]({chart})",
        "",
        "| layer | op | in | out | PE | SIMD | cycles | latency | LUT4 | memory bits | multipliers |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for layer in data["layers"]:
        shape_in = "x".join(map(str, layer["in_shape"]))
        shape_out = "x".join(map(str, layer["out_shape"]))
        lines.append(
            f"| {layer['name']} | {layer['op']} | {shape_in} | {shape_out} | {layer['pe']} | {layer['simd']} | "
            f"{layer['cycles']:,} | {layer['latency']:,} | {layer['luts']:,} | {layer['memory_bits']:,} | "
            f"{layer['multipliers']} |"
        )
    if data["fifos"]:
        lines += ["", "## FIFOs (depths from the cycle model)", "", "| from | to | depth |", "|---|---|---:|"]
        lines += [f"| {f['from']} | {f['to']} | {f['depth']:,} |" for f in data["fifos"]]
    return "\n".join(lines) + "\n"


def summary_table(data: dict) -> str:
    """The per-layer table for the terminal."""
    rows = [
        (
            layer["name"],
            layer["op"],
            str(layer["pe"]),
            str(layer["simd"]),
            f"{layer['cycles']:,}",
            f"{layer['luts']:,}",
            f"{layer['memory_bits']:,}",
        )
        for layer in data["layers"]
    ]
    return format_table(("layer", "op", "PE", "SIMD", "cycles", "LUT4", "memory bits"), rows, text_columns=2)


def cycles_chart(data: dict) -> Image.Image:
    """A horizontal bar chart of each layer's cycles per frame; the bottleneck in red."""
    layers = data["layers"]
    font = ImageFont.load_default()
    row, label_width, bar_width, margin = 14, 8 + 7 * max(len(layer["name"]) for layer in layers), 520, 10
    width = margin * 2 + label_width + bar_width + 90
    height = margin * 2 + row * (len(layers) + 2)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    peak = max(layer["cycles"] for layer in layers) or 1
    title = f"cycles per frame by layer ({data['model']}, insta {data['insta']})"
    draw.text((margin, margin), title, fill="black", font=font)
    for k, layer in enumerate(layers):
        y = margin + row * (k + 2)
        draw.text((margin, y), layer["name"], fill="black", font=font)
        length = round(bar_width * layer["cycles"] / peak)
        colour = (200, 40, 40) if layer["cycles"] == peak else (60, 110, 180)
        x0 = margin + label_width
        draw.rectangle((x0, y + 2, x0 + max(1, length), y + row - 3), fill=colour)
        draw.text((x0 + length + 4, y), f"{layer['cycles']:,}", fill="black", font=font)
    return image
