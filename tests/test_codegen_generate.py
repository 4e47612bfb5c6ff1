"""`instabnn-hw generate`: the files, determinism, fold configs, FINN's CNV cycles, and bad input."""

import dataclasses
import json

import numpy as np
import pytest
from graphs import tiny_cnv, tiny_mobilenet, tiny_resnet

from instabnn_hw.cli import main
from instabnn_hw.codegen import ir
from instabnn_hw.codegen.emit import build_top
from instabnn_hw.codegen.fold_config import read_fold_config
from instabnn_hw.codegen.plan import Plan, plan

SMALL = ["--model", "resnet-tiny", "--input-size", "8", "--width", "4", "--no-progress"]
FINN_CNV_FOLDING = [(16, 3), (32, 32), (16, 32), (16, 32), (4, 32), (1, 32), (1, 4), (1, 8), (5, 1)]


def _generate(tmp_path, name, *args):
    out = tmp_path / name
    assert main(["generate", *args, "--out", str(out)]) == 0
    return out


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
    assert manifest["files"]["graph"] == "graph.npz" and manifest["files"]["plan"] == "plan.json"
    verilog_files = manifest["files"]["verilog"]
    assert {"rtl/instabnn_top.v", "rtl/instabnn_rom.v"} <= set(verilog_files)
    assert verilog_files == sorted(str(p.relative_to(first)) for p in (first / "rtl").glob("*.v"))
    files = ["manifest.json", "folding.json", "report.md", "cycles.png", "graph.npz", "plan.json"]
    for relative in [*files, *manifest["files"]["memories"]]:
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative
    verilog = [(d / "rtl" / "instabnn_top.v").read_text() for d in (first, second)]
    assert verilog[0] == verilog[1] and "src =" not in verilog[0]
    assert "module instabnn_top" in verilog[0]
    report = (first / "report.md").read_text()
    assert "cycles.png" in report and manifest["layers"][0]["name"] in report


def assert_same_graph(a: ir.Graph, b: ir.Graph) -> None:
    assert (a.model, a.config) == (b.model, b.config)
    assert [type(v) for v in a.config.values()] == [type(v) for v in b.config.values()]
    assert len(a.nodes) == len(b.nodes)
    for x, y in zip(a.nodes, b.nodes, strict=True):
        assert type(x) is type(y) and (x.name, x.inputs) == (y.name, y.inputs)
        for f in dataclasses.fields(x):
            u, v = getattr(x, f.name), getattr(y, f.name)
            if isinstance(u, np.ndarray):
                assert v.dtype == u.dtype == np.int64 and np.array_equal(u, v) and not v.flags.writeable, f.name
            else:
                assert type(u) is type(v) and u == v, f.name
    assert a.types == b.types


@pytest.mark.parametrize(
    "factory",
    [
        lambda: tiny_resnet(41),
        lambda: tiny_resnet(42, insta="th+", prelu="insta"),
        lambda: tiny_resnet(43, insta="th", prelu="insta", downsample=False),
        lambda: tiny_cnv(44),
        lambda: tiny_mobilenet(45),
    ],
)
def test_a_saved_graph_loads_back_exactly_and_saves_to_the_same_bytes(tmp_path, factory):
    graph = dataclasses.replace(factory(), config={"name": "x", "stats": ("m1", "var"), "width": None, "k": [1, 2]})
    ir.save_graph(graph, tmp_path / "a.npz")
    loaded = ir.load_graph(tmp_path / "a.npz")
    assert_same_graph(graph, loaded)
    ir.save_graph(loaded, tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert set(np.load(tmp_path / "a.npz").keys()) >= {"graph.json", "n1.weights"}  # a plain .npz


def test_loading_something_else_is_one_clear_error(tmp_path):
    (tmp_path / "x.npz").write_text("not a zip")
    with pytest.raises(ir.IRError, match="is not a saved IR graph"):
        ir.load_graph(tmp_path / "x.npz")
    np.savez(tmp_path / "y.npz", a=np.zeros(3))
    with pytest.raises(ir.IRError, match="is not a saved IR graph"):
        ir.load_graph(tmp_path / "y.npz")


def test_the_saved_graph_and_plan_rebuild_the_design(tmp_path):
    out = _generate(tmp_path, "a", *SMALL, "--insta", "th+", "--prelu", "insta", "--fps", "20000")
    graph = ir.load_graph(out / "graph.npz")
    saved = Plan.read(out / "plan.json")
    # the folding file alone also reproduces the plan
    again = plan(graph, fold=read_fold_config(out / "folding.json", graph))
    assert (saved.folding, saved.widths, saved.parallel, saved.fifo_depths) == (
        again.folding,
        again.widths,
        again.parallel,
        again.fifo_depths,
    )
    top, files = build_top(graph, saved)
    for relative, text in files.items():
        assert (out / "rtl" / relative).read_text() == text, relative
    manifest = json.loads((out / "manifest.json").read_text())
    assert [layer["name"] for layer in manifest["layers"]] == [node.name for node in graph.nodes[1:]]
    assert top.widths == saved.widths | {graph.output.name: top.widths[graph.output.name]}


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
        ([*SMALL, "--fps", "-3"], "--fps must be > 0, not -3.0"),
        ([*SMALL, "--fps", "nan"], "--fps must be a finite number, not nan"),
        ([*SMALL, "--clock", "1e-300"], "--clock must be from 0.001 to 1000, not 1e-300"),
        ([*SMALL, "--clock", "1e300"], "--clock must be from 0.001 to 1000, not 1e+300"),
        ([*SMALL, "--seed", "99999999999999999999999"], "--seed must be from 0 to 2**63 - 1"),
        ([*SMALL, "--seed", "-1"], "--seed must be from 0 to 2**63 - 1, not -1"),
        (["--model", "resnet18", "--width", "100000", "--no-progress"], "width 100000"),
        (["--model", "resnet18", "--input-size", "100000", "--no-progress"], "input_size 100000"),
        ([*SMALL, "--fold-config", "UTF16"], "UTF-8"),
        ([*SMALL, "--fold-config", "NESTED"], "nest"),
        ([*SMALL, "--fold-config", "BINARY"], "fold config"),
        ([*SMALL, "--device", "xc7a35t"], "unknown device 'xc7a35t'"),
        ([*SMALL, "--board", "de10"], "unknown board 'de10'"),
        ([*SMALL, "--device", "LFE5U-25F", "--board", "icebreaker"], "board icebreaker carries a up5k, not LFE5U-25F"),
        ([*SMALL, "--device", "LFE5U-25F"], "does not fit LFE5U-25F at any folding: even with every PE = SIMD = 1"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path, capsys, args, message):
    files = {"FOLD": '{"stem.conv": {"PE": "many"}}'.encode(), "UTF16": '{"stem.conv": {}}'.encode("utf-16")}
    files |= {"NESTED": b"[" * 100_000 + b"]" * 100_000, "BINARY": bytes(range(256)) * 4}
    for name, data in files.items():
        (tmp_path / f"{name}.json").write_bytes(data)
    args = [str(tmp_path / f"{a}.json") if a in files else a for a in args]
    out = tmp_path / "design"
    assert main(["generate", *args, "--no-progress", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("instabnn-hw: error:"), err
    assert message in err[0].lower() or message in err[0], err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".design")], "no staging folder left behind"


def test_a_design_generated_for_a_device_fits_it_and_names_it(tmp_path, capsys, monkeypatch):
    from instabnn_hw.hw.devices import DEVICES, PLANNED_LUT_SHARE, Device

    out = tmp_path / "design"
    assert main(["generate", *SMALL, "--device", "lfe5u-85f", "--board", "ulx3s-85f", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    device, e = DEVICES["LFE5U-85F"], manifest["estimate"]
    assert (manifest["device"], manifest["board"]) == ("LFE5U-85F", "ulx3s-85f")
    assert e["luts"] <= device.luts * PLANNED_LUT_SHARE and e["multipliers"] <= device.dsp
    assert e["memory_bits"] <= device.memory_bits
    # it fits at the balanced folding, so that is what it gets
    assert main(["generate", *SMALL, "--out", str(tmp_path / "plain")]) == 0
    plain = json.loads((tmp_path / "plain" / "manifest.json").read_text())
    assert e == plain["estimate"] and "device" not in plain and "board" not in plain
    # without a board the ports are the pins: a part with too few is one line, and nothing is written
    few_pins = Device("few-pins", "ecp5", "85k", "CABGA381", 83640, 83640, 208, 18432, 156, 10)
    monkeypatch.setitem(DEVICES, "few-pins", few_pins)
    capsys.readouterr()
    other = tmp_path / "other"
    assert main(["generate", *SMALL, "--device", "few-pins", "--out", str(other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "I/O pins but few-pins has 10: generate with --board" in err[0], err
    assert not other.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".other")]
