"""Lowering: every zoo model lowers to an integer IR that follows the Brevitas model."""

import numpy as np
import pytest
import torch

from instabnn_hw.codegen import ir, reference
from instabnn_hw.codegen.fidelity import measure_fidelity
from instabnn_hw.codegen.lower import LoweringError, lower, random_model
from instabnn_hw.quant.models import build_model

# (model, options, minimum agreement of binary activations on random images). Random binary
# networks amplify a one-LSB rounding difference layer after layer, so the deep ones (26 binary
# layers of mobilenetv1) agree less than trained ones (99.99 % for the shipped checkpoints).
CASES = [
    ("resnet-tiny", dict(insta="rsign"), 0.9999),
    ("resnet-tiny", dict(insta="none"), 0.9999),
    ("resnet-tiny", dict(insta="th", stats=("m1", "var", "skew")), 0.999),
    ("resnet-tiny", dict(insta="th+"), 0.995),
    ("resnet-tiny", dict(insta="th", prelu="insta"), 0.999),
    ("resnet-tiny", dict(insta="rsign", prelu="insta"), 0.999),
    ("cnv", dict(insta="rsign"), 1.0),
    ("mobilenetv1", dict(insta="th", input_size=32, width=8, num_classes=10), 0.99),
    ("resnet18", dict(insta="th", input_size=32, width=8, num_classes=10), 0.999),
]


def _pixels(graph, count, seed=0):
    c, h, w = graph.input_shape
    return np.random.default_rng(seed).integers(0, 256, (count, c, h, w))


def _worst_case_images(graph):
    c, h, w = graph.input_shape
    checker = (np.indices((h, w)).sum(axis=0) % 2 * 255)[None].repeat(c, axis=0)
    return np.stack([np.zeros((c, h, w)), np.full((c, h, w), 255), checker, 255 - checker]).astype(np.int64)


@pytest.mark.parametrize(("name", "options", "agreement"), CASES, ids=[f"{c[0]}-{c[1]['insta']}" for c in CASES])
def test_random_models_lower_and_follow_the_model(name, options, agreement, one_thread):
    model = random_model(name, seed=3, **options)
    graph = lower(model)
    assert graph.model == name
    fidelity = measure_fidelity(model, graph, _pixels(graph, 8))
    assert fidelity.activation_agreement >= agreement, fidelity
    # nothing stays float: every array in every node is an integer array
    for node in graph.nodes:
        for value in node.params().values():
            if isinstance(value, np.ndarray):
                assert value.dtype == np.int64, (node.name, value.dtype)


@pytest.mark.parametrize("name", ["resnet-tiny", "cnv"])
def test_every_tensor_stays_in_its_derived_range_on_worst_case_images(name, one_thread):
    options = dict(insta="th", prelu="insta") if name == "resnet-tiny" else dict(insta="th")
    graph = lower(random_model(name, seed=5, **options))
    trace = reference.run(graph, _worst_case_images(graph), keep=True)
    for node in graph.nodes:
        t = graph.types[node.name]
        values = trace.tensors[node.name]
        assert values.shape[1:] == t.shape, node.name
        assert t.low <= values.min() and values.max() <= t.high, (node.name, values.min(), values.max(), t)


def test_residual_graph_structure(one_thread):
    graph = lower(random_model("resnet-tiny", seed=0, insta="th", prelu="insta"))
    ops = [node.op for node in graph.nodes]
    assert ops[:3] == ["input", "int_conv", "requantise"] and ops[-3:] == ["global_sumpool", "int_conv", "argmax"]
    assert ops.count("xnor_conv") == 6 and ops.count("add") == 6 and ops.count("insta_prelu") == 6
    # the two downsampling blocks: sum pool, 1x1 integer conv and batch norm on the shortcut
    assert ops.count("sumpool") == 2 and ops.count("int_conv") == 4
    # the block input is read twice (threshold and shortcut): a fork the emitter must buffer
    assert len(graph.consumers("blocks.0.act")) == 2


def test_lowering_is_deterministic(one_thread):
    graphs = [lower(random_model("resnet-tiny", seed=7, insta="th+")) for _ in range(2)]
    for a, b in zip(*(g.nodes for g in graphs), strict=True):
        for key, value in a.params().items():
            other = b.params()[key]
            if isinstance(value, np.ndarray):
                assert np.array_equal(value, other), (a.name, key)
            else:
                assert value == other, (a.name, key)


def test_bad_models_are_refused_in_one_line(one_thread):
    model = random_model("resnet-tiny", seed=0)
    with pytest.raises(LoweringError, match="eval mode"):
        lower(model.train())
    step1 = build_model("resnet-tiny", binary_weights=False).eval()
    with pytest.raises(LoweringError, match="real-valued weights"):
        lower(step1)
    with pytest.raises(LoweringError, match="not a model of the zoo"):
        lower(torch.nn.Linear(2, 2).eval())


def test_reference_single_image_equals_batch_and_rejects_bad_pixels(one_thread):
    graph = lower(random_model("cnv", seed=2, insta="rsign"))
    pixels = _pixels(graph, 3)
    batch = reference.run(graph, pixels)
    for k in range(3):
        one = reference.run(graph, pixels[k])
        assert one.classes[0] == batch.classes[k] and np.array_equal(one.logits[0], batch.logits[k])
    with pytest.raises(ValueError, match="N x 3 x 32 x 32"):
        reference.run(graph, pixels[:, :, :8])
    with pytest.raises(ValueError, match="0..255"):
        reference.run(graph, pixels + 255)


def test_ir_rejects_inconsistent_graphs():
    x = ir.PixelInput(name="in", channels=1, height=4, width=4)
    bad_conv = ir.XnorConv(name="c", inputs=("in",), weights=np.ones((2, 9), np.int64), kernel=3)
    with pytest.raises(ir.IRError, match="c: takes a binary tensor"):
        ir.Graph("m", {}, (x, bad_conv, ir.Argmax(name="out", inputs=("c",))))
    with pytest.raises(ir.IRError, match="weights must be <= 1"):
        ir.XnorConv(name="c", inputs=("t",), weights=np.full((2, 9), 2), kernel=3)
    with pytest.raises(ir.IRError, match="not produced by an earlier node"):
        ir.Graph("m", {}, (x, ir.Argmax(name="out", inputs=("nowhere",))))
