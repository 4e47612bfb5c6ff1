# amaranth: UnusedElaboratable=no
"""`instabnn-hw simulate` on bad input: one line on stderr, nothing on stdout, exit status 2; and the
folder it reads (written from a small test graph, without torch or a simulator build)."""

import json

import numpy as np
import pytest
from cli_errors import fails_with_one_line
from graphs import tiny_resnet

from instabnn_hw.cli import SIMULATE_IMAGES, build_parser
from instabnn_hw.codegen.generate import write_design
from instabnn_hw.codegen.plan import plan
from instabnn_hw.sim.design import design_images, load_design


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
    assert design.graph.input_shape == (1, 8, 8) and design.top.widths
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
    fails_with_one_line(capsys, ["simulate", str(tmp_path)], "not readable JSON")


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
