# amaranth: UnusedElaboratable=no
"""codegen.emit: whole generated designs in Amaranth's simulator equal the reference, and emit() is deterministic."""

import re
from pathlib import Path

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Fragment, Shape, unsigned
from amaranth.lib import data
from graphs import GraphBuilder, standin_plan, tiny_cnv, tiny_mobilenet, tiny_resnet

from instabnn_hw.codegen import ir
from instabnn_hw.codegen.emit import Top, build_top, emit, memory_file_name
from instabnn_hw.hw.fixed import shape_for
from instabnn_hw.hw.popcount import POPCOUNT_MODULE, popcount_levels, popcount_module_name
from instabnn_hw.hw.ram import RAM_MODULE, Ram, ram_verilog
from instabnn_hw.hw.rom import rom_hex, rom_verilog
from instabnn_hw.hw.simulate import simulate_streams
from instabnn_hw.hw.xnor_mvu import XnorMatrixVector
from instabnn_hw.sim.images import stream_payloads

#: Foldings that exercise the width converters: 3 -> 6 -> 2 and 6 -> 12 -> 4 (through the least common
#: multiple), FC SIMD > C_in.
MOBILENET_FOLD = {"stem.conv": (3, 3), "b1.conv": (6, 2), "b2.conv": (4, 3), "fc": (2, 4)}
CNV_FOLD = {"conv0": (2, 3), "conv1": (4, 8), "fc0": (2, 16), "fc1": (5, 2)}

DESIGNS = {
    # name: (graph factory, folding, INSTA parallel, valid / ready probabilities)
    "resnet_rsign": (lambda: tiny_resnet(1), None, 1, (1.0, 1.0)),
    "resnet_th_insta": (lambda: tiny_resnet(2, insta="th", prelu="insta"), None, 1, (0.5, 0.7)),
    "resnet_thplus_insta": (lambda: tiny_resnet(3, insta="th+", prelu="insta", downsample=False), None, 2, (0.9, 0.3)),
    "cnv": (lambda: tiny_cnv(4), CNV_FOLD, 1, (0.5, 0.7)),
    "mobilenet": (lambda: tiny_mobilenet(5), MOBILENET_FOLD, 1, (0.9, 0.3)),
}


def simulate(graph, plan, pixels, *, seed=0, valid=1.0, ready=1.0):
    top, files = build_top(graph, plan, rom_dir=None)
    assert files == {}
    words, results, logits = stream_payloads(graph, top.ports.logits.elements, pixels)
    run = simulate_streams(
        top,
        {"i": words},
        {"o": len(results), "logits": len(logits)},
        seed=seed,
        valid_probability=valid,
        ready_probability=ready,
        max_cycles=60_000,
    )
    return run, results, logits


@pytest.mark.parametrize("design", sorted(DESIGNS))
def test_design_equals_reference(design):
    factory, folding, parallel, (valid, ready) = DESIGNS[design]
    graph = factory()
    plan = standin_plan(graph, folding, parallel=parallel)
    pixels = np.random.default_rng(7).integers(0, 256, size=(2, *graph.input_shape))
    pixels[1, :, :2] = 255  # saturated rows
    run, results, logits = simulate(graph, plan, pixels, seed=11, valid=valid, ready=ready)
    assert run.outputs["logits"] == logits
    assert run.outputs["o"] == results


def test_top_ports_and_stages():
    graph = tiny_resnet(1)
    plan = standin_plan(graph)
    top, _ = build_top(graph, plan, rom_dir=None)
    assert top.i.payload.shape() == data.ArrayLayout(unsigned(8), 1)
    logits_type = graph.types["fc"]
    width = top.widths["fc"]
    assert top.logits.payload.shape() == data.ArrayLayout(shape_for(logits_type.low, logits_type.high), width)
    o = top.o.payload.shape()
    assert isinstance(o, data.StructLayout)
    assert Shape.cast(o["index"].shape) == unsigned(4) and Shape.cast(o["value"].shape) == shape_for(
        logits_type.low, logits_type.high
    )
    assert list(top.stages) == [n.name for n in graph.nodes]


def test_fork_chain_and_fifos_of_three_readers():
    # "bn" is read three times (a chain of two forks, a FIFO on each branch); the logits twice
    b = GraphBuilder("fork3", 9, (2, 6, 6))
    q = b.requantise(b.int_conv(b.input, "conv", 4, kernel=3, padding=1), "bn")
    y = b.requantise(b.xnor_conv(b.threshold(q, "sign"), "xconv", 4, kernel=3, padding=1), "xbn")
    y = b.add(ir.Add(name="add1", inputs=(y, q), shifts=(0, 1)))
    y = b.add(ir.Add(name="add2", inputs=(q, y), shifts=(2, 0)))
    y = b.add(ir.GlobalSumPool(name="pool", inputs=(y,)))
    b.add(ir.Argmax(name="argmax", inputs=(b.int_conv(y, "fc", 3, kernel=1),)))
    graph = b.graph()
    plan = standin_plan(graph, {"conv": (2, 2), "xconv": (4, 2), "fc": (1, 2)})
    top, _ = build_top(graph, plan, rom_dir=None)
    subs = {name for _, name, _ in Fragment.get(top, None).subfragments}
    assert {"bn__fork0", "bn__fork1", "fc__fork0"} <= subs
    assert {"bn__fifo_sign_0", "bn__fifo_add1_1", "bn__fifo_add2_0"} <= subs
    pixels = np.random.default_rng(3).integers(0, 256, size=(2, *graph.input_shape))
    run, results, logits = simulate(graph, plan, pixels, seed=5, valid=0.8, ready=0.6)
    assert run.outputs["logits"] == logits and run.outputs["o"] == results


def test_missing_fifo_depth_names_the_edge():
    graph = tiny_resnet(1, insta="th", prelu="insta")
    plan = standin_plan(graph)
    del plan.fifo_depths[("stem.bn", "layer1.add")]
    with pytest.raises(ValueError, match=r"the edge stem\.bn -> layer1\.add needs a FIFO"):
        Top(graph, plan)
    plan = standin_plan(graph)
    del plan.fifo_depths[("layer1.sign", "layer1.act")]
    with pytest.raises(ValueError, match=r"the edge layer1\.sign -> layer1\.act needs a FIFO"):
        Top(graph, plan)
    plan = standin_plan(graph)
    plan.fifo_depths[("stem.conv", "layer1.add")] = 4
    with pytest.raises(ValueError, match=r"stem\.conv -> layer1\.add, which is not in the graph"):
        Top(graph, plan)
    plan = standin_plan(graph)
    plan.fifo_depths[("stem.bn", "layer1.add")] = 0
    with pytest.raises(ValueError, match=r"must be >= 1, not 0"):
        Top(graph, plan)


def test_bad_plans_name_the_node():
    graph = tiny_resnet(1)
    plan = standin_plan(graph)
    plan.widths["layer1.bn"] = 8
    with pytest.raises(ValueError, match=r"layer1\.bn: the plan's width 8 differs from the width rule's 4"):
        Top(graph, plan)
    plan = standin_plan(graph)
    del plan.folding["layer1.conv"]
    with pytest.raises(ValueError, match=r"layer1\.conv: the folding has no PE / SIMD"):
        Top(graph, plan)


def test_fifo_and_fork_instances():
    graph = tiny_resnet(1, insta="th", prelu="insta", downsample=False)
    plan = standin_plan(graph)
    plan.fifo_depths[("layer1.add", "layer1.act")] = 5  # any edge may get a FIFO
    top, _ = build_top(graph, plan, rom_dir=None)
    subs = {name: sub for sub, name, _ in Fragment.get(top, None).subfragments}
    assert {name for name in subs if "fork" in name} == {"stem_bn__fork0", "fc__fork0"}
    assert {name for name in subs if "fifo" in name} == {
        "stem_bn__fifo_layer1_sign_0",
        "stem_bn__fifo_layer1_add_1",
        "layer1_sign__stats_fifo_layer1_act_1",
        "layer1_add__fifo_layer1_act_0",
    }


def test_memory_files_and_names(tmp_path):
    assert memory_file_name("layer1.0/conv 2") == "layer1.0_conv_2.hex"
    taken = set()
    assert [memory_file_name(n, taken) for n in ("a/b", "a_b", "a:b")] == ["a_b.hex", "a_b_2.hex", "a_b_3.hex"]
    graph = tiny_cnv(4)
    plan = standin_plan(graph, CNV_FOLD)
    top, files = build_top(graph, plan)
    assert sorted(files) == ["mem/conv0.hex", "mem/conv1.hex", "mem/fc0.hex", "mem/fc1.hex"]
    mvu = top.stages["conv1"].component("mvu")
    assert mvu.weights_file == "mem/conv1.hex"
    assert files["mem/conv1.hex"] == rom_hex(mvu.weight_words(), mvu.weight_word_width)
    top, _ = build_top(graph, plan, rom_dir="/abs/roms")
    assert top.stages["fc0"].component("mvu").weights_file == "/abs/roms/fc0.hex"


def test_emit_is_deterministic(tmp_path):
    graph = tiny_cnv(4)
    written = [emit(graph, standin_plan(graph, CNV_FOLD), tmp_path / name)[0] for name in ("a", "b")]
    names = [sorted(p.relative_to(tmp_path / d).as_posix() for p in w) for d, w in zip("ab", written, strict=True)]
    assert (
        names[0]
        == names[1]
        == [
            "instabnn_mul.v",
            "instabnn_popcount.v",
            "instabnn_ram.v",
            "instabnn_rom.v",
            "instabnn_top.v",
            "mem/conv0.hex",
            "mem/conv1.hex",
            "mem/fc0.hex",
            "mem/fc1.hex",
        ]
    )
    for name in names[0]:
        a, b = ((tmp_path / d / name).read_bytes() for d in "ab")
        assert a == b, name
        if name.endswith(".v"):
            # no source-location attributes: they name the files of this install
            assert b"src =" not in a and str(Path(ir.__file__).parents[2]).encode() not in a, name
    top = (tmp_path / "a" / "instabnn_top.v").read_text()
    assert "module instabnn_top(" in top and '.INIT_FILE("mem/conv1.hex")' in top
    assert (tmp_path / "a" / "instabnn_rom.v").read_text() == rom_verilog()
    assert (tmp_path / "a" / "instabnn_ram.v").read_text() == ram_verilog()
    assert f"{RAM_MODULE} #(" in top  # the line buffers
    popcounts = (tmp_path / "a" / "instabnn_popcount.v").read_text()
    # conv1 (PE 4, SIMD 8), fc0 (PE 2, SIMD 16), fc1 (PE 5, SIMD 2): one module each, the PEs instantiate it
    sizes = {(simd, 1 + popcount_levels(simd)) for simd in (8, 16, 2)}
    assert build_top(graph, standin_plan(graph, CNV_FOLD))[0].popcount_sizes == sizes
    assert sorted(re.findall(r"^module (\S+)\(", popcounts, re.M)) == sorted(popcount_module_name(*s) for s in sizes)
    assert top.count(f"{popcount_module_name(8, 1 + popcount_levels(8))} ") == 4


def _rams(top) -> list[Ram]:
    """Every :class:`Ram` in the elaborated hierarchy of ``top``."""

    def walk(fragment):
        yield fragment
        for sub, _, _ in fragment.subfragments:
            yield from walk(sub)

    return [o for f in walk(Fragment.get(top, None)) for o in (f.origins or ()) if isinstance(o, Ram)]


def test_read_write_memories_are_external_only_for_verilog():
    """emit()'s design: every Ram an instance of the RAM module; build_top(rom_dir=None): all inline."""
    graph = tiny_resnet(2, insta="th", prelu="insta")
    plan = standin_plan(graph)
    inline, _ = build_top(graph, plan, rom_dir=None)
    assert not inline.external_modules and not any(ram.external_modules for ram in _rams(inline))
    top, _ = build_top(graph, plan)
    rams = _rams(top)
    assert top.external_modules and rams and all(ram.external_modules for ram in rams)
    # every kind the design uses: frame and line buffers, FIFOs, the sums (two read ports), the banks (lanes)
    assert {ram.read_ports for ram in rams} == {("sync",), ("sync", "sync")}
    assert max(ram.lanes for ram in rams) > 1
    text = verilog.convert(top, name="instabnn_top")
    assert text.count(f"{RAM_MODULE} #(") == len(rams)
    # each became an instance instead of an inline memory (reg [w:0] name [d:0])
    memories = re.compile(r"reg \[\d+:0\] \S+ \[\d+:0\];")
    inline_text = verilog.convert(Top(graph, plan, rom_dir="mem", external_modules=False), name="instabnn_top")
    assert RAM_MODULE not in inline_text and POPCOUNT_MODULE not in inline_text
    assert len(memories.findall(inline_text)) - len(memories.findall(text)) == len(rams)
    # the popcounts: instances of the shared modules instead of inline logic
    assert top.popcount_sizes == inline.popcount_sizes and top.popcount_sizes
    xnor = [c for s in top.stages.values() for _, c in s.components if isinstance(c, XnorMatrixVector)]
    assert all(mvu.external_modules for mvu in xnor)
    assert sum(text.count(f"{popcount_module_name(*size)} ") for size in top.popcount_sizes) == sum(m.pe for m in xnor)
    with pytest.raises(TypeError, match="external_modules must be a bool or None, not 1"):
        Top(graph, plan, external_modules=1)
