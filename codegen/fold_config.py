"""FINN-style folding configs: ``{layer: {"PE": int, "SIMD": int}}`` written and read back."""

from __future__ import annotations

from pathlib import Path

from instabnn_hw.strict_json import json_kind, printable_name, read_json, short_repr

from . import ir
from .plan import Fold, Plan, PlanError, check_fold_mapping

__all__ = ["fold_config", "read_fold_config"]


def fold_config(plan: Plan) -> dict:
    """FINN's folding-config shape for the MVU layers: ``{name: {"PE": pe, "SIMD": simd}}``."""
    mvu_ops = {"xnor_conv", "int_conv"}
    return {layer.name: {"PE": layer.pe, "SIMD": layer.simd} for layer in plan.layers if layer.op in mvu_ops}


def read_fold_config(path, graph: ir.Graph) -> dict[str, Fold]:
    """Reads a FINN-style folding config (``{layer: {"PE": int, "SIMD": int}}``, a ``"Defaults"``
    entry is ignored) and checks it against ``graph``: every MVU layer listed, nothing else,
    PE dividing the output channels and SIMD the input channels.

    The file is strict JSON in UTF-8 (:func:`~.read_json`: at most 16 MiB, no ``NaN``, no key
    twice); PE and SIMD are JSON integers (not ``2.0``, ``"2"`` or ``true``).

    Raises
    ------
    PlanError
        One line naming the file and what is wrong (unreadable, not JSON, bad entry, layer and value).
    """
    path = Path(path)
    try:
        data = read_json(path)
    except OSError as exc:
        raise PlanError(f"cannot read the fold config {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise PlanError(f"fold config {path} {exc}") from None
    if not isinstance(data, dict):
        raise PlanError(f"fold config {path} must be a JSON object of layer names, not a JSON {json_kind(data)}")
    fold = {}
    for name, entry in data.items():
        if name == "Defaults":
            continue
        if not isinstance(entry, dict) or set(entry) - {"PE", "SIMD"} or not {"PE", "SIMD"} <= set(entry):
            raise PlanError(
                f'fold config {path}: layer {printable_name(name)} must be {{"PE": int, "SIMD": int}}, '
                f"not {short_repr(entry)}"
            )
        fold[name] = (entry["PE"], entry["SIMD"])
    try:
        return check_fold_mapping(graph, fold)
    except PlanError as exc:
        raise PlanError(f"fold config {path}: {exc}") from None
