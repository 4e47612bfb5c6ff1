"""`instabnn-hw generate`: the files, determinism, fold configs, FINN's CNV cycles, and bad input."""

import json
import re

import pytest

from instabnn_hw.cli import main

SMALL = ["--model", "resnet-tiny", "--input-size", "8", "--width", "4", "--no-progress"]
FINN_CNV_FOLDING = [(16, 3), (32, 32), (16, 32), (16, 32), (4, 32), (1, 32), (1, 4), (1, 8), (5, 1)]


def _generate(tmp_path, name, *args):
    out = tmp_path / name
    assert main(["generate", *args, "--out", str(out)]) == 0
    return out


def _verilog_without_sources(path):
    return re.sub(r'\(\* src = "[^"]*" \*\)', "", path.read_text())


def test_generate_writes_the_design_and_is_deterministic(tmp_path):
    first = _generate(tmp_path, "a", *SMALL, "--insta", "th", "--prelu", "insta")
    second = _generate(tmp_path, "b", *SMALL, "--insta", "th", "--prelu", "insta")
    manifest = json.loads((first / "manifest.json").read_text())
    for key in ("model", "insta", "input_shape", "num_classes", "layers", "estimate"):
        assert key in manifest
    assert manifest["input_shape"] == [1, 8, 8] and manifest["num_classes"] == 10
    for layer in manifest["layers"]:
        assert {"name", "op", "in_shape", "out_shape", "pe", "simd", "cycles", "luts", "memory_bits"} <= set(layer)
    assert max(layer["cycles"] for layer in manifest["layers"]) == manifest["estimate"]["cycles_per_frame"]
    for key in ("cycles_per_frame", "latency_cycles", "fps", "luts", "memory_bits", "multipliers"):
        assert manifest["estimate"][key] > 0
    assert manifest["files"]["memories"], "the weights live in memory files"
    for relative in ["manifest.json", "folding.json", "report.md", "cycles.png", *manifest["files"]["memories"]]:
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative
    verilog = [_verilog_without_sources(d / "rtl" / "instabnn_top.v") for d in (first, second)]
    assert verilog[0] == verilog[1]
    assert "module instabnn_top" in verilog[0]
    report = (first / "report.md").read_text()
    assert "cycles.png" in report and manifest["layers"][0]["name"] in report


def test_a_generated_folding_file_reproduces_the_design(tmp_path):
    first = _generate(tmp_path, "a", *SMALL, "--fps", "20000")
    again = _generate(tmp_path, "b", *SMALL, "--fold-config", str(first / "folding.json"))
    assert (first / "folding.json").read_text() == (again / "folding.json").read_text()
    layers = [json.loads((d / "manifest.json").read_text())["layers"] for d in (first, again)]
    assert layers[0] == layers[1]


def test_finn_cnv_folding_gives_finns_cycles(tmp_path):
    probe = _generate(tmp_path, "probe", "--model", "cnv", "--insta", "rsign", "--no-progress")
    mvus = [layer for layer in json.loads((probe / "manifest.json").read_text())["layers"] if "conv" in layer["op"]]
    assert len(mvus) == len(FINN_CNV_FOLDING)
    fold = {layer["name"]: {"PE": pe, "SIMD": simd} for layer, (pe, simd) in zip(mvus, FINN_CNV_FOLDING, strict=True)}
    config = tmp_path / "finn.json"
    config.write_text(json.dumps(fold))
    out = _generate(
        tmp_path, "finn", "--model", "cnv", "--insta", "rsign", "--fold-config", str(config), "--no-progress"
    )
    layers = {layer["name"]: layer for layer in json.loads((out / "manifest.json").read_text())["layers"]}
    for name, folding in fold.items():
        layer = layers[name]
        mh, mw = layer["out_shape"][0], layer["in_shape"][0] * (9 if layer["in_shape"][1] > 1 else 1)
        pixels = layer["out_shape"][1] * layer["out_shape"][2]
        assert (layer["pe"], layer["simd"]) == (folding["PE"], folding["SIMD"])
        assert layer["cycles"] == (mh // folding["PE"]) * (mw // folding["SIMD"]) * pixels, name
    assert json.loads((out / "manifest.json").read_text())["estimate"]["cycles_per_frame"] == 32768


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nosuchnet"], "unknown model"),
        (["--model", "resnet18", "--checkpoint", "quant/checkpoints/resnet-tiny-th-fashion-mnist.pt"], "holds model"),
        (["--checkpoint", "missing.pt"], "no checkpoint"),
        ([*SMALL, "--fps", "1e12"], "beyond"),
        ([*SMALL, "--lut-budget", "10"], "budget"),
        ([*SMALL, "--fps", "100", "--lut-budget", "100000"], "alternatives"),
        ([*SMALL, "--fold-config", "FOLD"], "fold"),
        ([*SMALL, "--fps", "-3"], "positive"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path, capsys, args, message):
    fold = tmp_path / "bad.json"
    fold.write_text('{"stem.conv": {"PE": "many"}}')
    args = [str(fold) if a == "FOLD" else a for a in args]
    out = tmp_path / "design"
    assert main(["generate", *args, "--no-progress", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("instabnn-hw: error:"), err
    assert message in err[0].lower() or message in err[0], err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".design")], "no staging folder left behind"
