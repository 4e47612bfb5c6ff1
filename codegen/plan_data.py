"""The planner's results as data: the folding (:class:`Fold`), the estimates (:class:`LayerEstimate`,
:class:`Estimate`), the :class:`Plan` with its plan.json form, a device's :class:`Capacity`, and
:class:`PlanError` for a request that cannot be met."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from instabnn_hw.strict_json import json_kind, read_json, short_repr

__all__ = ["PlanError", "Fold", "Capacity", "LayerEstimate", "Estimate", "Plan", "RESOURCE_NAMES"]


#: Version of plan.json.
PLAN_VERSION = 1


class PlanError(ValueError):
    """A folding request that cannot be met; the message is one line for users."""


@dataclass(frozen=True)
class Fold:
    """Folding of one node: ``pe`` output channels and ``simd`` input elements per cycle."""

    pe: int
    simd: int


@dataclass(frozen=True)
class Capacity:
    """What a device offers a design: ``luts`` (the LUT4 an estimate may take, a margin for
    routing already taken off), ``memory_bits`` of block RAM and ``multipliers`` (DSP blocks;
    ``None`` where products are built from logic). ``name`` and ``bigger`` (larger parts of the
    family) are for messages."""

    name: str
    luts: int
    memory_bits: int
    multipliers: int | None = None
    bigger: tuple[str, ...] = ()

    def excess(self, totals: Mapping[str, int]) -> list[tuple[str, int, int]]:
        """``(resource, need, capacity)`` of every resource of ``totals`` over capacity, the worst first."""
        limits = {"luts": self.luts, "memory_bits": self.memory_bits, "multipliers": self.multipliers}
        over = [
            (totals[key] / limit, key, totals[key], limit)
            for key, limit in limits.items()
            if limit is not None and totals[key] > limit
        ]
        return [(RESOURCE_NAMES[key], need, limit) for _, key, need, limit in sorted(over, reverse=True)]

    def offers(self, resource: str) -> str:
        return "takes at most" if resource == RESOURCE_NAMES["luts"] else "has"

    def hint(self, resource: str) -> str:
        bigger = f" or a bigger device ({', '.join(self.bigger)})" if self.bigger else ""
        if resource == RESOURCE_NAMES["memory_bits"]:
            return f"folding does not shrink memory: generate a smaller model (--width, --input-size){bigger}"
        return f"generate a smaller model (--width, --input-size){bigger}"


RESOURCE_NAMES = {"luts": "LUT4", "memory_bits": "memory bits", "multipliers": "multipliers"}


@dataclass(frozen=True)
class LayerEstimate:
    """One node's hardware: geometry, folding and estimates (see the module docstring)."""

    name: str
    op: str
    in_shape: tuple
    out_shape: tuple
    pe: int
    simd: int
    cycles: int
    latency: int
    luts: int
    memory_bits: int
    multipliers: int


@dataclass(frozen=True)
class Estimate:
    """The whole design: ``cycles_per_frame`` (slowest stage), ``fps`` at ``clock_mhz``, the
    longest-path ``latency_cycles``, summed ``luts`` / ``memory_bits`` / ``multipliers`` and the
    name of the ``bottleneck`` stage."""

    cycles_per_frame: int
    latency_cycles: int
    fps: float
    luts: int
    memory_bits: int
    multipliers: int
    clock_mhz: float
    bottleneck: str


@dataclass(frozen=True)
class Plan:
    """The planner's decisions and estimates for one graph.

    Attributes
    ----------
    folding : dict of str to Fold
        Every node: MVUs their PE / SIMD; other nodes ``pe = simd`` = their (input) stream width.
    widths : dict of str to int
        Elements per word of the stream leaving each node.
    parallel : dict of str to int
        MLP multiply-accumulates per cycle of each ``"th+"`` InstaThreshold and InstaPReLU.
    fifo_depths : dict of (str, str) to int
        ``(producer, consumer)`` edge -> FIFO depth in words of that edge.
    layers : tuple of LayerEstimate
        Graph order, every node except the PixelInput (empty in a plan read from plan.json: the
        estimates are in the manifest).
    estimate : Estimate or None
        ``None`` in a plan read from plan.json.
    """

    folding: dict[str, Fold]
    widths: dict[str, int]
    parallel: dict[str, int]
    fifo_depths: dict[tuple[str, str], int]
    layers: tuple[LayerEstimate, ...] = ()
    estimate: Estimate | None = None

    def to_json(self) -> str:
        """plan.json: the folding, widths, MLP parallelism and FIFO depths (deterministic text)."""
        data = {
            "version": PLAN_VERSION,
            "folding": {name: [fold.pe, fold.simd] for name, fold in self.folding.items()},
            "widths": dict(self.widths),
            "parallel": dict(self.parallel),
            "fifo_depths": [[a, b, depth] for (a, b), depth in sorted(self.fifo_depths.items())],
        }
        return json.dumps(data, indent=1) + "\n"

    @classmethod
    def read(cls, path) -> Plan:
        """The plan in ``path``, a plan.json: its decisions (no estimates).

        The file must hold exactly what :meth:`to_json` writes: its keys, every PE, SIMD, width,
        parallelism and depth a positive integer, every node name a string.

        Raises
        ------
        ValueError
            One line naming the file when it is unreadable or not a plan.json of this version.
        """
        path = Path(path)
        what = f"{path} is not a plan.json of version {PLAN_VERSION}"
        try:
            return _plan_from(read_json(path))
        except OSError as exc:
            raise ValueError(f"{what} (cannot read it: {exc.strerror or exc})") from None
        except ValueError as exc:  # the file is not strict JSON (parse_json completes the sentence)
            raise ValueError(f"{what} (the file {exc})") from None
        except _BadPlan as exc:
            raise ValueError(f"{what} ({' '.join(str(exc).split())})") from None


#: The keys of plan.json, in the order :meth:`Plan.to_json` writes them.
_PLAN_KEYS = ("version", "folding", "widths", "parallel", "fifo_depths")


class _BadPlan(Exception):
    """plan.json content that :meth:`Plan.to_json` never writes; the message says what."""


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


def _fold(value, where: str) -> Fold:
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


def _plan_from(data) -> Plan:
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
    return Plan(
        folding=_names_to(data, "folding", _fold),
        widths=_names_to(data, "widths", _positive_int),
        parallel=_names_to(data, "parallel", _positive_int),
        fifo_depths=_fifo_depths(data),
    )


# ---------------------------------------------------------------------------------------------
# folding paths
