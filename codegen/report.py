"""What `instabnn-hw generate` writes beside the RTL: manifest.json, report.md and the cycles chart.

Everything here is a pure function of the graph, the plan and the options, so the same inputs
give the same bytes (no dates, no absolute paths).
"""

from __future__ import annotations

import json

from PIL import Image, ImageDraw, ImageFont

from instabnn_hw.design_folder import GRAPH_FILE, PLAN_FILE, TOP_NAME
from instabnn_hw.table import format_table

from . import ir

__all__ = [
    "MANIFEST_VERSION",
    "manifest",
    "manifest_json",
    "report_markdown",
    "cycles_chart",
]

MANIFEST_VERSION = 1


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
    ports,
    verilog_files: list[str],
    memory_files: list[str],
    preprocessing: dict,
    target: dict | None = None,
) -> dict:
    """The design's description: model, shapes, ports (a :class:`~instabnn_hw.design_folder.DesignPorts`),
    the ``target`` device and board it was folded for (when given), layers with folding and
    estimates, totals, files."""
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
        "ports": ports.to_json(),
        "clock_mhz": estimate.clock_mhz,
        **(target or {}),
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
            "verilog": verilog_files,
            "memories": memory_files,
            "graph": GRAPH_FILE,
            "plan": PLAN_FILE,
        },
    }


def manifest_json(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


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
