# amaranth: UnusedElaboratable=no
"""codegen.stages: width rules, conversions, the components of each node, cycles and errors."""

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned
from graphs import activation_summary, tiny_cnv, tiny_mobilenet, tiny_resnet

from instabnn_hw.codegen import ir
from instabnn_hw.codegen.stages import (
    build_stage,
    data_consumers,
    mvu_nodes,
    stage_spec,
    stage_widths,
    trivial_window,
)
from instabnn_hw.hw.affine import Requantise, RPReLU
from instabnn_hw.hw.insta_prelu import InstaPReLU
from instabnn_hw.hw.int_mvu import Argmax, IntMatrixVector
from instabnn_hw.hw.layouts import channel_word, window_word
from instabnn_hw.hw.moments import MomentsThreshold
from instabnn_hw.hw.plumbing import JoinAdd, RegisterSlice
from instabnn_hw.hw.pool import GlobalSumPool, MaxPool, SumPool
from instabnn_hw.hw.reshape import Repeat, WidthConverter
from instabnn_hw.hw.threshold import StaticThreshold
from instabnn_hw.hw.window import SlidingWindow
from instabnn_hw.hw.xnor_mvu import XnorMatrixVector

RESNET_FOLD = {"stem.conv": (4, 1), "layer1.conv": (2, 8), "layer2.conv": (8, 4), "layer2.down": (16, 2), "fc": (5, 8)}
MOBILENET_FOLD = {"stem.conv": (3, 3), "b1.conv": (6, 2), "b2.conv": (4, 3), "fc": (2, 4)}


def stage(graph, name, folding, **kwargs):
    return build_stage(graph, name, folding=folding, widths=stage_widths(graph, folding), **kwargs)


def kinds(s):
    """The stage's components but the register slice that ends every stage with an output to
    another stage (checked here; the Argmax's is the top's port)."""
    found = [(key, type(component)) for key, component in s.components]
    if s.spec.output and found[-1][1] is not Argmax:
        assert found[-1] == ("slice", RegisterSlice) and s.spec.output == "slice.o", found
        return found[:-1]
    return found


def test_widths_follow_the_rules():
    graph = tiny_resnet(0)
    widths = stage_widths(graph, RESNET_FOLD)
    assert widths["input"] == 1  # in_channels
    assert widths["stem.conv"] == 4 and widths["layer1.conv"] == 2 and widths["layer2.down"] == 16  # PE
    assert widths["stem.bn"] == widths["layer1.sign"] == 4  # the first input's width
    assert widths["layer1.add"] == widths["layer1.bn"] == 2 and widths["layer2.add"] == 8
    assert widths["layer2.pool"] == widths["layer1.act"] == 2
    assert widths["pool"] == 8 and widths["fc"] == 5 and widths["argmax"] == 1
    # planner Fold objects work too
    fold = type("Fold", (), {})
    folds = {}
    for name, (pe, simd) in RESNET_FOLD.items():
        folds[name] = fold()
        folds[name].pe, folds[name].simd = pe, simd
    assert stage_widths(graph, folds) == widths


def test_width_errors_name_the_node():
    graph = tiny_resnet(0)
    for change, message in [
        ({"layer1.conv": (3, 8)}, r"layer layer1\.conv: PE 3 does not divide its 8 output channels"),
        ({"layer1.conv": (2, 3)}, r"layer layer1\.conv: SIMD 3 does not divide its 8 input channels"),
        ({"layer1.conv": (0, 8)}, r"layer layer1\.conv: PE must be a positive integer, not 0"),
        ({"layer1.conv": (2,)}, r"fold of layer layer1\.conv must be \(PE, SIMD\), not \(2,\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            stage_widths(graph, {**RESNET_FOLD, **change})
    with pytest.raises(ValueError, match=r"layer fc: the folding has no PE / SIMD for this layer"):
        stage_widths(graph, {k: v for k, v in RESNET_FOLD.items() if k != "fc"})
    widths = stage_widths(graph, RESNET_FOLD)
    with pytest.raises(ValueError, match=r"layer layer1\.bn: widths\['layer1\.bn'\] is 4, but the width rule gives 2"):
        build_stage(graph, "layer1.bn", folding=RESNET_FOLD, widths={**widths, "layer1.bn": 4})
    with pytest.raises(ValueError, match=r"layer layer1\.conv: widths\['layer1\.conv'\] is 4, not PE \(2\)"):
        build_stage(graph, "layer1.conv", folding=RESNET_FOLD, widths={**widths, "layer1.conv": 4})


def test_mvu_stage_components_and_cycles():
    graph = tiny_resnet(0)
    # stem: 1 channel at width 1 = SIMD 1: no converter; 3x3 pad 1: a window, masked
    s = stage(graph, "stem.conv", RESNET_FOLD)
    assert kinds(s) == [("window", SlidingWindow), ("window_slice", RegisterSlice), ("mvu", IntMatrixVector)]
    assert s.spec.inputs == ("window.i",)
    assert s.spec.links == (("window.o", "window_slice.i"), ("window_slice.o", "mvu.i"), ("mvu.o", "slice.i"))
    # the window's slice carries its window words
    assert s.component("window_slice").shape == window_word(s.spec.in_shapes[0], 1)
    # the slice carries the IR's element shape at the stage's width
    assert s.component("slice").shape == channel_word(s.spec.out_shape, 4)
    mvu = s.component("mvu")
    assert mvu.masked and mvu.pe == 4 and mvu.simd == 1 and mvu.in_shape == signed(8)
    assert s.spec.in_widths == (1,) and s.spec.out_width == 4 and s.spec.figures.multipliers == 4
    # out_pixels * (C_out / PE) * (K*K*C_in / SIMD)
    assert s.spec.figures.cycles == 64 * (8 // 4) * (9 * 1 // 1)
    assert s.spec.figures.memory_bits == s.component("window").memory_bits + mvu.memory_bits
    # layer1: incoming width 4 (the stem's PE) -> SIMD 8: a widening converter
    s = stage(graph, "layer1.conv", RESNET_FOLD)
    assert kinds(s) == [
        ("convert", WidthConverter),
        ("window", SlidingWindow),
        ("window_slice", RegisterSlice),
        ("mvu", XnorMatrixVector),
    ]
    assert s.spec.links[:3] == (("convert.o", "window.i"), ("window.o", "window_slice.i"), ("window_slice.o", "mvu.i"))
    assert s.spec.inputs == ("convert.i",)
    assert s.spec.figures.cycles == 64 * (8 // 2) * (9 * 8 // 8)
    assert s.component("mvu").masked
    # 1x1 shortcut and classifier: trivial windows, channel words
    s = stage(graph, "layer2.down", RESNET_FOLD)
    assert kinds(s) == [("mvu", IntMatrixVector)] and not s.component("mvu").masked
    assert s.spec.in_shapes == (graph.types["layer2.pool"].element_shape,) == (signed(10),)
    s = stage(graph, "fc", RESNET_FOLD)
    assert kinds(s) == [("mvu", IntMatrixVector)] and s.spec.figures.cycles == 1 * (10 // 5) * (16 // 8)
    # the MVU dominates: pe = simd = 1
    slow = {**RESNET_FOLD, "layer1.conv": (1, 1)}
    s = stage(graph, "layer1.conv", slow)
    assert s.spec.figures.cycles == 64 * 8 * 72 and s.spec.figures.cycles == s.component("mvu").cycles_per_vector * 64


def test_stride_two_and_fully_connected_layers():
    graph = tiny_resnet(0)
    s = stage(graph, "layer2.conv", RESNET_FOLD)  # 8 -> 16, 3x3, stride 2, pad 1; width 2 -> SIMD 4
    assert s.component("window").stride == 2 and s.spec.figures.cycles == 16 * (16 // 8) * (72 // 4)
    cnv = tiny_cnv(0)
    fold = {"conv0": (2, 3), "conv1": (4, 8), "fc0": (2, 16), "fc1": (5, 2)}
    assert trivial_window(cnv.node("fc0"), cnv.types["pool1"]) and not trivial_window(
        cnv.node("conv1"), cnv.types["sign0"]
    )
    s = stage(cnv, "fc0", fold)  # kernel 4 = H = W: one vector per frame; SIMD 16 > C_in 8 is fine
    assert kinds(s) == [("convert", WidthConverter), ("mvu", XnorMatrixVector)]
    assert not s.component("mvu").masked and s.spec.figures.cycles == 1 * (16 // 2) * (128 // 16)
    with pytest.raises(ValueError, match=r"layer fc0: SIMD 48 does not divide its 128 inputs"):
        stage_widths(cnv, {**fold, "fc0": (2, 48)})


def test_converters_through_the_least_common_multiple():
    graph = tiny_mobilenet(0)
    s = stage(graph, "b1.conv", MOBILENET_FOLD)  # width 3 -> SIMD 2: 3 -> 6 -> 2, two elements a cycle
    convs = [c for _, c in s.components if isinstance(c, WidthConverter)]
    assert [(c.i.payload.shape().length, c.o.payload.shape().length) for c in convs] == [(3, 6), (6, 2)]
    assert s.spec.links[0] == ("convert0.o", "convert1.i") and s.spec.inputs == ("convert0.i",)
    s = stage(graph, "b2.add", MOBILENET_FOLD)  # input 1 (Repeat, width 6) -> input 0's width 4
    assert kinds(s) == [("convert0", WidthConverter), ("convert1", WidthConverter), ("join", JoinAdd)]
    assert s.spec.inputs == ("join.i.0", "convert0.i") and s.spec.links[-2] == ("convert1.o", "join.i.1")
    assert s.spec.in_widths == (4, 6) and s.spec.out_width == 4


def test_elementwise_components():
    graph = tiny_mobilenet(0)
    fold = MOBILENET_FOLD
    expect = {
        "stem.bn": [("unit", Requantise)],
        "stem.pool": [("window", SlidingWindow), ("pool", MaxPool)],
        "b1.sign": [("unit", StaticThreshold)],
        "b1.pool": [("window", SlidingWindow), ("pool", SumPool)],
        "b1.add": [("convert", WidthConverter), ("join", JoinAdd)],
        "b1.act": [("unit", RPReLU)],
        "b2.repeat": [("unit", Repeat)],
        "pool": [("unit", GlobalSumPool)],
        "argmax": [("unit", Argmax)],
    }
    for name, components in expect.items():
        assert kinds(stage(graph, name, fold)) == components, name
    s = stage(graph, "stem.pool", fold)
    assert s.component("window").padding == 1 and s.component("pool").kernel == 3
    assert s.spec.out_shape == signed(8) and s.spec.figures.cycles == 64 * 9 * 2  # the window's output words
    s = stage(graph, "b1.add", fold)
    join = s.component("join")
    lo = min(graph.types["b1.bn"].low, graph.types["b1.pool"].low)
    assert join.i[0].payload.shape().elem_shape == signed(10) and lo == -512 and join.i[0].payload.shape().length == 6
    s = stage(graph, "b2.repeat", fold)
    assert s.spec.figures.cycles == 16 * 2 * (6 // 6) and s.component("unit").times == 2
    s = stage(graph, "argmax", fold)
    assert s.spec.out_width == 1 and s.component("unit").classes == 4 and s.spec.figures.cycles == 2
    s = stage(graph, "input", fold)
    assert s.components == () and s.spec.out_width == 3 and s.spec.figures.cycles == 0 and s.spec.in_widths == ()


def test_insta_stages():
    graph = tiny_resnet(0, insta="th+", prelu="insta")
    widths = stage_widths(graph, RESNET_FOLD)
    s = build_stage(graph, "layer1.sign", folding=RESNET_FOLD, widths=widths, parallel=3)
    unit = s.component("unit")
    assert isinstance(unit, MomentsThreshold) and unit.mode == "th+" and unit.parallel == 3
    assert unit.emit_stats and s.spec.stats == "unit.stats" and unit.simd == 4 and s.spec.out_shape == unsigned(1)
    assert s.spec.figures.cycles == unit.cycles_per_frame and s.spec.figures.memory_bits == unit.memory_bits
    assert s.spec.figures.multipliers == unit.multipliers
    p = build_stage(graph, "layer1.act", folding=RESNET_FOLD, widths=widths, parallel=2)
    prelu = p.component("unit")
    assert isinstance(prelu, InstaPReLU) and prelu.parallel == 2 and p.spec.inputs == ("unit.i", "unit.stats")
    assert p.spec.in_widths == (2, 1)
    assert prelu.stats.payload.shape() == unit.stats.payload.shape()  # the source's feature shape
    th = tiny_resnet(0, insta="th")
    s = stage(th, "layer1.sign", RESNET_FOLD)
    assert s.component("unit").mode == "th" and s.spec.stats is None


def test_weights_file_and_consumers():
    graph = tiny_resnet(0, insta="th", prelu="insta")
    s = stage(graph, "layer1.conv", RESNET_FOLD, weights_file="mem/layer1.conv.hex")
    assert s.component("mvu").weights_file == "mem/layer1.conv.hex"
    assert mvu_nodes(graph) == ["stem.conv", "layer1.conv", "layer2.conv", "layer2.down", "fc"]
    # the InstaPReLU reads the InstaThreshold's statistics, not its bits
    assert [(n.name, k) for n, k in data_consumers(graph, "layer1.sign")] == [("layer1.conv", 0)]
    assert [(n.name, k) for n, k in data_consumers(graph, "stem.bn")] == [("layer1.sign", 0), ("layer1.add", 1)]
    assert ir.TensorType(4, 2, 2, 0, 1, binary=True).element_shape == unsigned(1)
    assert ir.TensorType(4, 2, 2, 0, 200).element_shape == unsigned(8)
    assert ir.TensorType(4, 2, 2, -129, 5).element_shape == signed(9)


def test_external_modules_reach_the_components_and_keep_the_figures():
    """For Verilog output: RAM module instances and shared popcounts, the same figures as inline."""
    graph = tiny_resnet(0, insta="th+", prelu="insta")
    widths = stage_widths(graph, RESNET_FOLD)
    for node in graph.nodes[1:]:
        spec = stage_spec(graph, node.name, folding=RESNET_FOLD, widths=widths)
        inline, verilog = spec.build(), spec.build(external_modules=True)
        for part, (key, a), (_, b) in zip(spec.parts, inline.components, verilog.components, strict=True):
            assert a.figures(part.words) == b.figures(part.words) == part.figures, (node.name, key)
            if hasattr(b, "external_modules"):
                assert b.external_modules and not a.external_modules, (node.name, key)
    mvu = stage(graph, "layer1.conv", RESNET_FOLD, external_modules=True).component("mvu")
    assert isinstance(mvu, XnorMatrixVector) and mvu.external_modules
    assert stage(graph, "layer1.conv", RESNET_FOLD, external_modules=True).component("window").external_modules
    assert stage(graph, "layer1.sign", RESNET_FOLD, external_modules=True).component("unit").external_modules
    assert stage(graph, "stem.conv", RESNET_FOLD, external_modules=True).component("mvu").external_modules


@pytest.mark.parametrize(
    "factory",
    [
        lambda: tiny_resnet(1),
        lambda: tiny_resnet(2, insta="th", prelu="insta"),
        lambda: tiny_resnet(3, insta="th+", prelu="insta"),
        lambda: tiny_cnv(4),
        lambda: tiny_mobilenet(5),
    ],
)
def test_test_graphs_have_varied_activations(factory):
    graph = factory()
    pixels = np.random.default_rng(0).integers(0, 256, size=(4, *graph.input_shape))
    summary = activation_summary(graph, pixels)
    for node in graph.nodes[1:-1]:
        value, saturated = summary[node.name]
        if isinstance(node, (ir.Threshold, ir.InstaThreshold)):
            assert 0.2 <= value <= 0.8, (node.name, value)  # fraction of ones
        elif isinstance(node, (ir.Requantise, ir.RPReLU)):
            assert value >= 0.5 and saturated < 0.05, (node.name, value, saturated)  # range spanned
