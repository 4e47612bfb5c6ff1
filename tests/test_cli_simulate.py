# amaranth: UnusedElaboratable=no
"""`instabnn-hw simulate` on bad input: one line on stderr, nothing on stdout, exit status 2; and the
folder it reads (written from a small test graph, without torch or a simulator build)."""

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_errors import fails_with_one_line
from graphs import tiny_resnet

from instabnn_hw import strict_json
from instabnn_hw.cli import SIMULATE_IMAGES, build_parser
from instabnn_hw.codegen import ir
from instabnn_hw.codegen.plan import plan
from instabnn_hw.design_folder import write_design
from instabnn_hw.sim import design as sim_design
from instabnn_hw.sim.folder import BUILD_MARKER, load_design
from instabnn_hw.sim.images import design_images
from instabnn_hw.sim.toolchain import BUILD_STAMP


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A design folder of a tests/graphs.py network, written as `generate` writes one."""
    graph = tiny_resnet(31)
    out = tmp_path_factory.mktemp("cli") / "design"
    preprocessing = {"dataset": "fashion-mnist", "input_size": 8}
    write_design(out, graph, plan(graph), source={"kind": "test", "name": graph.model}, preprocessing=preprocessing)
    return out


def test_help_names_the_default_image_count():
    text = build_parser()._subparsers._group_actions[0].choices["simulate"].format_help()
    assert f"(default: {SIMULATE_IMAGES})" in text and "--random" in text and "--waves" in text


def test_the_folder_loads_with_its_graph_and_plan(folder):
    design = load_design(folder)
    assert design.graph.input_shape == (1, 8, 8) and design.ports.taps
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["files"]["graph"] == "graph.npz" and manifest["files"]["plan"] == "plan.json"
    assert manifest["files"]["verilog"] == [str(p.relative_to(folder)) for p in design.sources]
    pixels, labels, text = design_images(design, 3, random_pixels=True, seed=2)
    assert pixels.shape == (3, 1, 8, 8) and labels is None and "random" in text
    assert np.array_equal(pixels, design_images(design, 3, random_pixels=True, seed=2)[0])


def test_no_folder(capsys, tmp_path):
    fails_with_one_line(capsys, ["simulate", str(tmp_path / "missing")], "is not a folder")


def test_a_file_is_not_a_design(capsys, tmp_path):
    path = tmp_path / "file.txt"
    path.write_text("x")
    fails_with_one_line(capsys, ["simulate", str(path)], "is not a folder")


def test_no_manifest(capsys, tmp_path):
    fails_with_one_line(capsys, ["simulate", str(tmp_path)], "has no manifest.json")


def test_not_a_generated_folder(capsys, tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"model": "something else"}))
    fails_with_one_line(capsys, ["simulate", str(tmp_path)], "not the manifest of a generated design")
    (tmp_path / "manifest.json").write_text("{not json")
    fails_with_one_line(capsys, ["simulate", str(tmp_path)], "manifest.json is not valid JSON: Expecting")


def test_a_folder_without_its_graph(capsys, tmp_path, folder):
    (tmp_path / "manifest.json").write_text((folder / "manifest.json").read_text())
    fails_with_one_line(capsys, ["simulate", str(tmp_path)], "has no graph.npz")


@pytest.mark.parametrize("count", ["0", "-3", "many"])
def test_bad_image_counts(capsys, folder, count):
    fails_with_one_line(capsys, ["simulate", str(folder), "--images", count], "--images")


def test_unknown_dataset(capsys, folder):
    fails_with_one_line(capsys, ["simulate", str(folder), "--dataset", "nosuchdata"], "unknown dataset")


def test_dataset_that_does_not_fit(capsys, folder):
    fails_with_one_line(capsys, ["simulate", str(folder), "--dataset", "cifar10"], "3 channels")


def test_dataset_and_random_exclude_each_other(capsys, folder):
    fails_with_one_line(capsys, ["simulate", str(folder), "--dataset", "digits", "--random"], "not allowed with")


def test_unknown_simulator(capsys, folder):
    fails_with_one_line(capsys, ["simulate", str(folder), "--simulator", "modelsim"], "invalid choice")


def test_missing_simulator(capsys, folder, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    fails_with_one_line(capsys, ["simulate", str(folder), "--simulator", "icarus", "--random"], "not installed")


# ---------------------------------------------------------------------------------------------
# bad input never costs a user's files, follows no path out of the design, leaves nothing behind


def _snapshot(*roots):
    """Every entry under ``roots`` (hidden ones too, links not followed): its bytes, its link target or "folder"."""
    entries = {}
    for root in roots:
        root = Path(root)
        if not os.path.lexists(root):
            continue
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
def nothing_simulated(monkeypatch):
    """Fails the test when the reference run or the simulator build starts: every check must come first."""

    def started(*args, **kwargs):
        pytest.fail("the reference run or the build started before the input was refused")

    monkeypatch.setattr(sim_design.reference, "run", started)
    monkeypatch.setattr(sim_design, "_build", started)


@pytest.fixture
def copy(tmp_path, folder):
    """A copy of the design folder that a test may break."""
    target = tmp_path / "design"
    shutil.copytree(folder, target, symlinks=True)
    return target


def _marked(path, *, stamp=False):
    """A build folder as simulate leaves one: its marker (or only the build stamp of an older version)."""
    path.mkdir(parents=True)
    (path / (BUILD_STAMP if stamp else BUILD_MARKER)).write_text("{}")
    return path


def _user_build_dir(tmp):
    build = tmp / "mine"
    build.mkdir()
    (build / "notes.txt").write_text("mine")
    return build


def _mem_folder(tmp):
    build = _marked(tmp / "build")
    (build / "mem").mkdir()
    (build / "mem" / "precious.txt").write_bytes(b"\x00precious")
    return build


def _mem_file(tmp):
    build = _marked(tmp / "build", stamp=True)
    (build / "mem").write_bytes(b"precious")
    return build


def _link_to_folder(tmp):
    real = tmp / "real"
    real.mkdir()
    (real / "kept.txt").write_text("kept")
    (tmp / "link").symlink_to(real, target_is_directory=True)
    return tmp / "link"


def _a_file(tmp):
    (tmp / "file.txt").write_text("a file")
    return tmp / "file.txt"


def _under_a_file(tmp):
    return _a_file(tmp) / "build"


BUILD_DIRS = [
    (_user_build_dir, "holds files simulate did not write; give a new or empty folder"),
    (_mem_folder, "mem is a folder, not the link to the design's memory files that simulate makes"),
    (_mem_file, "mem is a file, not the link to the design's memory files that simulate makes"),
    (_link_to_folder, "is a symbolic link"),
    (_a_file, "is a file; give a folder to write into"),
    (_under_a_file, "file.txt is a file, not a folder"),
    (lambda tmp: Path("/proc/instabnn-simulate"), "cannot write in /proc"),
    (lambda tmp: Path("/proc/self/instabnn/simulate"), "cannot write in /proc/self"),
]


@pytest.mark.parametrize(("make", "message"), BUILD_DIRS, ids=[make.__name__ for make, _ in BUILD_DIRS])
def test_a_build_dir_simulate_must_not_write_is_refused_first(
    capsys, tmp_path, folder, nothing_simulated, make, message
):
    place = tmp_path / "place"
    place.mkdir()
    build_dir = make(place)
    before = _snapshot(place, folder)
    argv = ["simulate", str(folder), "--random", "--no-progress", "--images", "1", "--build-dir", str(build_dir)]
    fails_with_one_line(capsys, argv, message)
    assert _snapshot(place, folder) == before


def _default_mem_folder(design):
    build = design / "sim" / "verilator"
    (build / "mem").mkdir(parents=True)
    (build / "mem" / "precious.txt").write_text("precious")


def _sim_links_out(design):
    outside = design.parent / "elsewhere"
    outside.mkdir()
    (design / "sim").symlink_to(outside, target_is_directory=True)


def _default_is_a_link(design):
    (design / "sim" / "real").mkdir(parents=True)
    (design / "sim" / "verilator").symlink_to("real", target_is_directory=True)


DEFAULT_BUILD_DIRS = [
    (_default_mem_folder, "mem is a folder, not the link"),
    (_sim_links_out, "sim/verilator lies outside the design folder (through a link); give --build-dir"),
    (_default_is_a_link, "verilator is a symbolic link"),
]


@pytest.mark.parametrize(("make", "message"), DEFAULT_BUILD_DIRS, ids=[make.__name__ for make, _ in DEFAULT_BUILD_DIRS])
def test_the_default_build_dir_is_checked_too(capsys, copy, nothing_simulated, make, message):
    make(copy)
    before = _snapshot(copy.parent)
    fails_with_one_line(capsys, ["simulate", str(copy), "--random", "--no-progress", "--images", "1"], message)
    assert _snapshot(copy.parent) == before


def test_a_design_folder_that_cannot_be_written_is_one_line(capsys, copy, nothing_simulated, monkeypatch):
    """A read-only design folder (root writes anywhere, so the file system's refusal is played here)."""
    real_open = os.open

    def read_only(path, *args, **kwargs):
        if str(path).startswith(str(copy)):
            raise PermissionError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    before = _snapshot(copy.parent)
    fails_with_one_line(
        capsys, ["simulate", str(copy), "--random", "--no-progress", "--images", "1"], "cannot write in " + str(copy)
    )
    assert _snapshot(copy.parent) == before


def _write_manifest(design, change):
    path = design / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def change(manifest):
        place = manifest
        for key in keys[:-1]:
            place = place[key]
        place[keys[-1]] = value

    return change


MANIFESTS = [
    ("verilog-up", _set("files", "verilog", ["../../x.v"]), "names ../../x.v, which lies outside the design folder"),
    ("verilog-absolute", _set("files", "verilog", ["/etc/hostname"]), "names /etc/hostname, outside the design"),
    ("memory-up", _set("files", "memories", ["rtl/../../x.hex"]), "which lies outside the design folder"),
    ("graph-absolute", _set("files", "graph", "/etc/hostname"), "files.graph names /etc/hostname"),
    ("plan-up", _set("files", "plan", "../plan.json"), "files.plan names ../plan.json"),
    ("verilog-missing", _set("files", "verilog", ["rtl/instabnn_top.v", "rtl/gone.v"]), "lacks rtl/gone.v"),
    ("files-text", _set("files", "rtl"), "files must be an object naming the design's files, not 'rtl'"),
    ("verilog-text", _set("files", "verilog", "rtl/a.v"), "files.verilog must be a list of file names"),
    ("verilog-numbers", _set("files", "verilog", [1]), "files.verilog must be a list of file names"),
    ("memories-text", _set("files", "memories", "rtl/mem"), "files.memories must be a list of file names"),
    ("graph-number", _set("files", "graph", 3), "files.graph must be a file name, not 3"),
    ("estimate-list", _set("estimate", [1, 2]), "estimate must be an object of numbers"),
    (
        "estimate-text",
        _set("estimate", "cycles_per_frame", "fast"),
        "cycles_per_frame must be a whole number >= 0, not 'fast'",
    ),
    ("estimate-nan", _set("estimate", "fps", float("nan")), "holds NaN, which is not a JSON number"),
    (
        "estimate-bool",
        _set("estimate", "latency_cycles", True),
        "latency_cycles must be a whole number >= 0, not True",
    ),
    ("estimate-negative", _set("estimate", "luts", -1), "estimate.luts must be a whole number >= 0, not -1"),
    ("clock-text", _set("clock_mhz", "100"), "clock_mhz must be a number of MHz from 0.001 to 1000, not '100'"),
    ("preprocessing-text", _set("preprocessing", "fashion"), "preprocessing must be an object"),
    ("dataset-number", _set("preprocessing", "dataset", 3), "preprocessing.dataset must be a dataset name, not 3"),
    ("top-number", _set("top", 5), "is not the manifest of a generated design"),
    ("tap-missing", lambda m: m["ports"]["taps"].popitem(), "graph.npz and the manifest's ports do not fit together"),
    ("tap-bits", lambda m: _widen_first_layer(m["ports"]["taps"]), "the tap carries 9-bit elements"),
    ("logits-per-word", lambda m: _double(m["ports"]["logits"]), "logits carries"),
]


def _widen_first_layer(taps):
    """The first tap after the pixels: one bit more per element, its width to match (a well-formed port)."""
    tap = list(taps.values())[1]
    tap["bits"] = 9
    tap["width"] = tap["elements"] * 9


def _double(port):
    """Twice the elements per word: a well-formed port of another design."""
    port["elements"] *= 2
    port["width"] = port["elements"] * port["bits"]


@pytest.mark.parametrize(("change", "message"), [m[1:] for m in MANIFESTS], ids=[m[0] for m in MANIFESTS])
def test_a_bad_manifest_is_one_line(capsys, copy, nothing_simulated, change, message):
    _write_manifest(copy, change)
    before = _snapshot(copy.parent)
    fails_with_one_line(capsys, ["simulate", str(copy), "--random", "--no-progress", "--images", "1"], message)
    assert _snapshot(copy.parent) == before


def _link_out(design, name, target):
    path = design / name
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    path.symlink_to(target)


BROKEN_FILES = [
    ("binary-manifest", lambda d: (d / "manifest.json").write_bytes(b"\xff\xfe\x00{"), "is not UTF-8 text"),
    ("manifest-list", lambda d: (d / "manifest.json").write_text("[1]"), "not the manifest of a generated design"),
    ("graph-garbage", lambda d: (d / "graph.npz").write_bytes(b"garbage"), "graph.npz is not a saved IR graph"),
    ("graph-zip", lambda d: (d / "graph.npz").write_bytes(b"PK\x03\x04x"), "graph.npz is not a saved IR graph"),
    ("plan-garbage", lambda d: (d / "plan.json").write_text("{"), "plan.json is not a plan.json"),
    ("plan-list", lambda d: (d / "plan.json").write_text("[]"), "plan.json is not a plan.json"),
    ("top-links-out", lambda d: _link_out(d, "rtl/instabnn_top.v", "/etc/hostname"), "lies outside the design"),
    ("mem-links-out", lambda d: _link_out(d, "rtl/mem", d.parent), "rtl/mem, which lies outside the design folder"),
    ("graph-links-out", lambda d: _link_out(d, "graph.npz", d.parent / "x.npz"), "graph.npz, which lies outside"),
]


@pytest.mark.parametrize(("damage", "message"), [b[1:] for b in BROKEN_FILES], ids=[b[0] for b in BROKEN_FILES])
def test_a_broken_design_file_is_one_line(capsys, copy, nothing_simulated, damage, message):
    damage(copy)
    before = _snapshot(copy.parent)
    fails_with_one_line(capsys, ["simulate", str(copy), "--random", "--no-progress", "--images", "1"], message)
    assert _snapshot(copy.parent) == before


def test_unreadable_files_are_one_line(capsys, copy, nothing_simulated, monkeypatch):
    """Root reads any file, so the file system's refusal is played: the manifest, then the graph."""

    def unreadable_manifest(path, *args, **kwargs):
        if Path(path).name == "manifest.json":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return open(path, *args, **kwargs)

    def unreadable_graph(path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    before = _snapshot(copy.parent)
    argv = ["simulate", str(copy), "--random", "--no-progress", "--images", "1"]
    with monkeypatch.context() as patch:
        patch.setattr(strict_json, "open", unreadable_manifest, raising=False)
        fails_with_one_line(capsys, argv, f"cannot read {copy / 'manifest.json'} (Permission denied)")
    with monkeypatch.context() as patch:
        patch.setattr(ir, "load_graph", unreadable_graph)
        fails_with_one_line(capsys, argv, f"cannot read {copy / 'graph.npz'} (Permission denied)")
    assert _snapshot(copy.parent) == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--images", "99999999999999999999"], "99,999,999,999,999,999,999 images need about"),
        (["--images", "100000000"], "GiB for the reference run; this machine has"),
        (["--images", "100000000"], "GiB: give fewer images"),
        (["--seed", "-1"], "--seed must be from 0 to 2**63 - 1, not -1"),
        (["--seed", str(10**30)], "--seed must be from 0 to 2**63 - 1, not 10000"),
    ],
)
def test_image_counts_and_seeds_beyond_the_machine_are_one_line(capsys, folder, nothing_simulated, argv, message):
    before = _snapshot(folder)
    fails_with_one_line(capsys, ["simulate", str(folder), "--random", "--no-progress", *argv], message)
    assert _snapshot(folder) == before


def test_a_seed_from_the_environment_is_checked(capsys, folder, nothing_simulated, monkeypatch):
    monkeypatch.setenv("INSTABNN_SEED", "abc")
    fails_with_one_line(
        capsys, ["simulate", str(folder), "--random", "--no-progress"], "INSTABNN_SEED must be a whole number"
    )
    monkeypatch.setenv("INSTABNN_SEED", "-5")
    fails_with_one_line(
        capsys, ["simulate", str(folder), "--random", "--no-progress"], "--seed must be from 0 to 2**63 - 1, not -5"
    )
