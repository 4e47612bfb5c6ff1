# amaranth: UnusedElaboratable=no
"""`instabnn-hw simulate` and :func:`simulate_design` on a tiny generated design under cocotb + Verilator:
bit-exact with back-pressure and a mid-frame reset, measured cycles next to the estimate, worst-case
inputs, a corrupted weight found and localised to its layer, and the Icarus variant (slow).

One design is generated and built once per module (Verilator's C++ at -O0: half the build time of
the default, and these runs are short); the tests reuse the build.
"""

import json
import shutil

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned
from amaranth.lib import data
from verilator_builds import quick_verilator_builds

from instabnn_hw.cli import main
from instabnn_hw.hw.payload import pack, unpack
from instabnn_hw.sim.design import (
    extreme_images,
    load_design,
    pack_words,
    random_images,
    simulate_design,
    unpack_words,
)

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


@pytest.mark.parametrize(
    "elem",
    [unsigned(1), signed(8), unsigned(8), signed(20), signed(33), unsigned(70)],
)
@pytest.mark.parametrize("length", [1, 3, 8])
def test_packing_words_agrees_with_amaranth(elem, length):
    layout = data.ArrayLayout(elem, length)
    low, high = (-(1 << (elem.width - 1)), (1 << (elem.width - 1)) - 1) if elem.signed else (0, (1 << elem.width) - 1)
    rng = np.random.default_rng(length * 100 + elem.width)
    rows = [[int(v) for v in rng.integers(max(low, -(2**62)), min(high, 2**62), size=length)] for _ in range(20)]
    rows += [[low] * length, [high] * length]
    packed = pack_words(layout, np.array(rows, dtype=object))
    assert packed == [pack(layout, row) for row in rows]
    assert unpack_words(layout, packed).tolist() == [unpack(layout, p) for p in packed]
