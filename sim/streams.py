"""Bit-exact stream tests of hardware components under cocotb (Verilator or Icarus).

Several components, each with the payloads to feed it and the payloads it must produce, are
built into one Verilog top (one simulator build serves them all) and run by the generic
testbench :mod:`instabnn_hw.sim.stream_tb` (its components are those of
:mod:`instabnn_hw.sim.cocotb_streams`): a driver per input stream with random valid gaps, random
ready back-pressure per output, a monitor per output that checks that the component holds
``valid`` and the payload until the transfer, and an in-order scoreboard per output that compares
every payload with the expected one and checks that nothing is lost or duplicated.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Module
from amaranth.lib import stream, wiring

from ..hw.payload import pack, unpack
from ..hw.verilog_modules import module_sources
from .toolchain import run_cocotb

__all__ = ["StreamCase", "StreamBundle", "run_stream_cases", "stream_ports", "stimulus_seed"]


def stimulus_seed(default: int = 1) -> int:
    """The seed of random stimulus and flow control: ``$INSTABNN_SEED`` or ``default``."""
    return int(os.environ.get("INSTABNN_SEED", default))


@dataclass
class StreamCase:
    """One component with the payloads it receives and must send, keyed by stream path.

    Paths name a stream member: ``"i"``, ``"o"``, or ``"o.1"`` for an element of an array.
    """

    component: wiring.Component
    inputs: Mapping[str, Sequence] = field(default_factory=dict)
    outputs: Mapping[str, Sequence] = field(default_factory=dict)


def stream_ports(component: wiring.Component) -> dict[str, tuple[wiring.Member, object]]:
    """Every stream of ``component`` by path, with its signature member and interface object."""
    ports = {}
    for name, member in component.signature.members.items():
        if not (member.is_signature and isinstance(member.signature, stream.Signature)):
            raise TypeError(f"{type(component).__name__}.{name} is not a stream; only streams can be tested")
        interface = getattr(component, name)
        if member.dimensions:
            for index, element in enumerate(interface):
                ports[f"{name}.{index}"] = (member, element)
        else:
            ports[name] = (member, interface)
    return ports


def _member_name(case: str, path: str) -> str:
    return f"{case}_{path.replace('.', '_')}"


class StreamBundle(wiring.Component):
    """Several components side by side, each stream exposed as ``<case>_<path>``."""

    def __init__(self, components: Mapping[str, wiring.Component]) -> None:
        self._components = dict(components)
        self._ports = {}
        members = {}
        for case, component in self._components.items():
            if not case.isidentifier() or "__" in case:
                raise ValueError(f"case names must be identifiers without '__', not {case!r}")
            for path, (member, interface) in stream_ports(component).items():
                name = _member_name(case, path)
                self._ports[name] = (member.flow, interface)
                # one stream per bundle member, even for an element of an array member
                signature = member.signature.flip() if member.flow == wiring.In else member.signature
                members[name] = wiring.Member(member.flow, signature)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        for case, component in self._components.items():
            m.submodules[case] = component
        for name, (flow, interface) in self._ports.items():
            outer = getattr(self, name)
            if flow == wiring.In:
                wiring.connect(m, wiring.flipped(outer), interface)
            else:
                wiring.connect(m, interface, wiring.flipped(outer))
        return m


def run_stream_cases(
    cases: Mapping[str, StreamCase],
    *,
    build_dir: Path,
    simulator: str = "verilator",
    seed: int | None = None,
    valid_probability: float = 0.6,
    ready_probability: float = 0.6,
    max_cycles: int = 500_000,
) -> dict:
    """Run ``cases`` in one cocotb simulation; return the testbench's record.

    The shared modules a component built with ``external_modules`` instantiates
    (:func:`~instabnn_hw.hw.verilog_modules.module_sources`, with the cases' popcount sizes) are
    written to ``build_dir`` and compiled with the bundle. The simulator runs in
    ``build_dir / simulator``, so a relative ``$readmemh`` path resolves there.

    The record holds, per output stream, the cycle of every transfer. Raises ``AssertionError``
    naming the case, stream, index, expected and received payload of the first mismatches,
    the streams that stalled, or the outputs that dropped ``valid`` or changed their payload
    before the transfer.
    """
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    bundle = StreamBundle({case: c.component for case, c in cases.items()})
    (build_dir / "bundle.v").write_text(verilog.convert(bundle, name="bundle", emit_src=False))
    popcount_sizes = set().union(*(getattr(c.component, "popcount_sizes", ()) for c in cases.values()))
    shared = []
    for module, source in module_sources(popcount_sizes).items():
        shared.append(build_dir / f"{module}.v")
        shared[-1].write_text(source)
    streams = []
    for case, c in cases.items():
        ports = stream_ports(c.component)
        for direction, values in (("in", c.inputs), ("out", c.outputs)):
            for path, payloads in values.items():
                if path not in ports:
                    raise KeyError(f"{case} has no stream {path!r}; it has {sorted(ports)}")
                shape = ports[path][1].payload.shape()
                streams.append(
                    {
                        "name": _member_name(case, path),
                        "direction": direction,
                        "words": [format(pack(shape, value), "x") for value in payloads],
                    }
                )
    seed = stimulus_seed() if seed is None else seed
    spec = {
        "seed": random.Random(seed).randrange(1 << 30),
        "valid_probability": valid_probability,
        "ready_probability": ready_probability,
        "max_cycles": max_cycles,
        "streams": streams,
    }
    (build_dir / "streams.json").write_text(json.dumps(spec))
    record_path = build_dir / "record.json"
    record_path.unlink(missing_ok=True)
    env = {
        "INSTABNN_STREAMS": str((build_dir / "streams.json").resolve()),
        "INSTABNN_RECORD": str(record_path.resolve()),
    }
    failure = None
    try:
        run_cocotb(
            verilog=build_dir / "bundle.v",
            toplevel="bundle",
            test_module="instabnn_hw.sim.stream_tb",
            build_dir=build_dir / simulator,
            simulator=simulator,
            extra_env=env,
            extra_sources=shared,
        )
    except AssertionError as error:
        if not record_path.exists():
            raise
        failure = error  # the record below says what went wrong
    record = json.loads(record_path.read_text())
    problems = [*record["stalled"], *record["protocol"]]
    shapes = {
        _member_name(case, path): interface.payload.shape()
        for case, c in cases.items()
        for path, (_, interface) in stream_ports(c.component).items()
    }
    for mismatch in record["mismatches"][:5]:
        shape = shapes[mismatch["stream"]]
        problems.append(
            f"{mismatch['stream']}[{mismatch['index']}]: expected {unpack(shape, int(mismatch['expected'], 16))}, "
            f"got {unpack(shape, int(mismatch['got'], 16))}"
        )
    if problems:
        total = len(record["mismatches"])
        raise AssertionError(f"{simulator} (seed {seed}): {total} mismatches; " + "; ".join(problems))
    if failure is not None:
        raise failure
    return record
