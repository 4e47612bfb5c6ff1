# amaranth: UnusedElaboratable=no
"""`instabnn-hw simulate` and :func:`simulate_design` on a tiny generated design under cocotb + Verilator:
bit-exact with back-pressure and a mid-frame reset, measured cycles next to the estimate, worst-case
inputs, a corrupted weight found and localised to its layer, and the Icarus variant (slow).

One design is generated and built once per module (Verilator's C++ at -O0: half the build time of
the default, and these runs are short); the tests reuse the build.
"""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from verilator_builds import quick_verilator_builds

from instabnn_hw.cli import main
from instabnn_hw.errors import OptionError
from instabnn_hw.sim import design as sim_design
from instabnn_hw.sim import images as sim_images
from instabnn_hw.sim.design import simulate_design
from instabnn_hw.sim.folder import BUILD_MARKER, SimulationError, check_build_dir, load_design, prepare_build_dir
from instabnn_hw.sim.images import check_image_count, check_seed, extreme_images, image_bytes, random_images
from instabnn_hw.sim.toolchain import BUILD_STAMP

CORRUPTED_LAYER = "blocks.1.conv"


@pytest.fixture(scope="module")
def design(tmp_path_factory):
    """A generated resnet-tiny (INSTA-Th, 8 x 8 input, width 4), built with Verilator at -O0."""
    from instabnn_hw.codegen.generate import GenerateOptions, generate

    out = tmp_path_factory.mktemp("sim") / "tiny"
    generate(GenerateOptions(out=str(out), model="resnet-tiny", input_size=8, width=4, seed=5), progress=False)
    with quick_verilator_builds():
        yield out


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


@pytest.mark.cocotb
def test_tiny_design_is_bit_exact_with_back_pressure_and_a_mid_frame_reset(design):
    loaded = load_design(design)
    pixels = random_images(loaded.graph.input_shape, 6, seed=11)
    result = simulate_design(design, pixels, labels=[0, 1, 2, 3, 4, 5], seed=3, design=loaded)
    assert result.ok and result.passed == 6 and result.failed == 0, result.problems
    assert result.built and (design / "sim" / "verilator" / "instabnn_top").exists()
    # the testbench records what came (the host compares it): it ended drained, with no protocol violation
    record = json.loads((design / "sim" / "verilator" / "design_record.json").read_text())
    assert record["stop"] == "done" and record["protocol"] == [] and record["extra"] == {"o": 0, "logits": 0}
    assert len(record["o"]) == 6 and "expected_o" not in (design / "sim" / "verilator" / "design_spec.json").read_text()
    # the reset came in the middle of a frame, after more than one whole frame
    per_image = int(np.prod(loaded.graph.input_shape[1:]))
    assert result.pre_reset["words"] > per_image and result.pre_reset["words"] % per_image
    # the first three images at full rate, the other three with random flow control
    assert [r.equal for r in result.images] == [True] * 6
    assert all(r.cycles > 0 for r in result.images) and result.latency == result.images[0].cycles > 0
    estimate = loaded.manifest["estimate"]
    assert result.cycles_per_frame == pytest.approx(estimate["cycles_per_frame"], rel=0.05)
    assert result.accuracy("hw") == result.accuracy("reference")


@pytest.mark.cocotb
def test_cli_passes_and_writes_records(design, tmp_path, capsys):
    records = tmp_path / "records.json"
    status = main(["simulate", str(design), "--random", "--images", "3", "--json", str(records), "--no-progress"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert _last_line(out) == "3 passed, 0 failed"
    assert "cycles per frame" in out and "reused" in out
    rows = json.loads(records.read_text())
    assert [row["index"] for row in rows] == [0, 1, 2]
    for row in rows:
        assert set(row) == {"index", "label", "hw_class", "reference_class", "equal", "cycles"}
        assert row["label"] is None and row["equal"] and row["hw_class"] == row["reference_class"] and row["cycles"] > 0


@pytest.mark.cocotb
def test_worst_case_inputs_end_to_end(design):
    loaded = load_design(design)
    pixels = extreme_images(loaded.graph.input_shape)
    assert {0, 255} == set(np.unique(pixels)) and len(pixels) >= 10
    result = simulate_design(design, pixels, seed=4, ready_probability=0.4, design=loaded)
    assert result.ok and result.failed == 0, [r for r in result.images if not r.equal]


@pytest.mark.cocotb
def test_a_corrupted_weight_is_found_and_localised(design, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(design, bad, ignore=shutil.ignore_patterns("sim"))
    hex_file = bad / "rtl" / "mem" / f"{CORRUPTED_LAYER}.hex"
    lines = hex_file.read_text().splitlines()
    lines[4] = format(int(lines[4], 16) ^ 0xFF, f"0{len(lines[4])}x")  # 8 weights of one word flipped
    hex_file.write_text("\n".join(lines) + "\n")
    records = tmp_path / "records.json"
    build = design / "sim" / "verilator"  # the same Verilog: its build is reused
    status = main(
        ["simulate", str(bad), "--random", "--images", "4", "--build-dir", str(build), "--json", str(records)]
    )
    out = capsys.readouterr().out
    assert status == 1, out
    passed, failed = (int(part.split()[0]) for part in _last_line(out).split(", "))
    assert failed >= 1 and passed + failed == 4
    (line,) = [line for line in out.splitlines() if line.startswith("first difference:")]
    assert line.startswith(f"first difference: layer {CORRUPTED_LAYER} (xnor_conv), image "), line
    assert "hardware" in line and "reference" in line
    assert sum(not row["equal"] for row in json.loads(records.read_text())) == failed


@pytest.mark.cocotb
@pytest.mark.slow
def test_tiny_design_under_icarus(design):
    loaded = load_design(design)
    result = simulate_design(design, random_images(loaded.graph.input_shape, 3, seed=12), simulator="icarus", seed=5)
    assert result.ok and result.passed == 3
    assert result.cycles_per_frame == pytest.approx(loaded.manifest["estimate"]["cycles_per_frame"], rel=0.05)


# ---------------------------------------------------------------------------------------------
# where simulate builds, how many images it takes: checked before anything runs (no simulator needed)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A design folder of a tests/graphs.py network (no torch, no build)."""
    from graphs import tiny_resnet

    from instabnn_hw.codegen.plan import plan
    from instabnn_hw.design_folder import write_design

    graph = tiny_resnet(31)
    out = tmp_path_factory.mktemp("checks") / "design"
    write_design(out, graph, plan(graph), source={"kind": "test", "name": graph.model}, preprocessing={})
    return out


def _listing(root):
    return sorted(str(path.relative_to(root)) for path in Path(root).rglob("*"))


@pytest.mark.parametrize(
    ("prepare", "entries"),
    [
        ("new", None),
        ("new-nested", None),
        ("empty", []),
        ("marked", [BUILD_MARKER]),
        ("stamped", [BUILD_STAMP, "instabnn_top"]),
        ("linked", [BUILD_MARKER, "mem"]),
    ],
)
def test_build_dirs_simulate_may_use_are_accepted_and_left_as_they_are(written, tmp_path, prepare, entries):
    build = tmp_path / "build" / ("deeper/still" if prepare == "new-nested" else "")
    if entries is not None:
        build.mkdir(parents=True)
        for name in entries:
            if name == "mem":
                (build / name).symlink_to(tmp_path, target_is_directory=True)
            else:
                (build / name).write_text("x")
    before = _listing(tmp_path)
    assert check_build_dir(load_design(written), build) == build.absolute()
    assert _listing(tmp_path) == before  # the check creates nothing


def test_the_default_build_dir_is_inside_the_design(written):
    design = load_design(written)
    assert check_build_dir(design) == (written / "sim" / "verilator").absolute()
    assert check_build_dir(design, simulator="icarus", waves=True) == (written / "sim" / "icarus-waves").absolute()
    assert not (written / "sim").exists()


def test_only_the_mem_link_is_replaced_and_the_folder_is_marked(written, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "kept.hex").write_text("0\n")
    build = tmp_path / "build"
    build.mkdir()
    (build / "mem").symlink_to(elsewhere, target_is_directory=True)
    prepare_build_dir(load_design(written), build)
    assert (build / "mem").resolve() == (written / "rtl" / "mem").resolve()
    assert (elsewhere / "kept.hex").read_text() == "0\n" and (build / BUILD_MARKER).is_file()
    # a real folder there is a user's: refused, untouched
    (build / "mem").unlink()
    (build / "mem").mkdir()
    (build / "mem" / "precious.txt").write_text("precious")
    with pytest.raises(SimulationError, match="is a folder, not the link"):
        prepare_build_dir(load_design(written), build)
    assert (build / "mem" / "precious.txt").read_text() == "precious"


def test_a_linked_design_folder_is_read(written, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(written, target_is_directory=True)
    design = load_design(link)
    assert [p.name for p in design.sources] == [p.name for p in load_design(written).sources]


def test_the_image_count_is_held_against_the_machines_memory(written, monkeypatch):
    design = load_design(written)
    per_image = image_bytes(design.graph)
    assert per_image >= 8 * sum(design.graph.types[n.name].elements for n in design.graph.nodes)
    check_image_count(design, 20)  # the default fits any machine
    monkeypatch.setattr(sim_images, "physical_memory", lambda: 10 * per_image)
    check_image_count(design, 10)
    with pytest.raises(SimulationError, match="11 images need about 0.0 GiB for the reference run; this machine"):
        check_image_count(design, 11)
    monkeypatch.setattr(sim_images, "physical_memory", lambda: None)  # a system that does not say
    check_image_count(design, 10**20)


@pytest.mark.parametrize("seed", [-1, 2**63, 10**30, 1.5, True, "3"])
def test_seeds_numpy_does_not_take_are_refused(seed):
    with pytest.raises(OptionError, match=r"^seed must be (from 0 to 2\*\*63 - 1|a whole number), not "):
        check_seed(seed)


def test_seeds_in_range_pass():
    assert [check_seed(s) for s in (0, 7, 2**63 - 1, np.int64(5))] == [0, 7, 2**63 - 1, 5]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"seed": -1}, "seed must be from 0 to 2**63 - 1, not -1"),
        ({"build_dir": "/proc/instabnn"}, "cannot write in /proc"),
        ({"valid_probability": float("nan")}, "valid_probability must be in (0, 1]"),
    ],
)
def test_simulate_design_refuses_before_the_reference_run(written, monkeypatch, options, message):
    def started(*args, **kwargs):
        pytest.fail("the reference run started before the input was refused")

    monkeypatch.setattr(sim_design.reference, "run", started)
    design = load_design(written)
    pixels = random_images(design.graph.input_shape, 2, seed=1)
    before = _listing(written)
    with pytest.raises((SimulationError, OptionError), match=re.escape(message)):
        simulate_design(written, pixels, design=design, **options)
    assert _listing(written) == before
