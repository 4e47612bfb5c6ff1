# amaranth: UnusedElaboratable=no
"""The folding planner: FINN's CNV cycles, monotone folding, budgets, demand functions, FIFO depths."""

from __future__ import annotations

import json
import math
import os
import time

import graphs
import numpy as np
import pytest

from instabnn_hw.codegen import emit, ir, stages
from instabnn_hw.codegen.fifos import demand, fifo_depths
from instabnn_hw.codegen.fold_config import fold_config, read_fold_config
from instabnn_hw.codegen.plan import (
    Capacity,
    Fold,
    PlanError,
    fold_path,
    plan,
)
from instabnn_hw.codegen.stages import stage_spec, stage_widths
from instabnn_hw.errors import OptionError
from instabnn_hw.hw.figures import lut_estimate
from instabnn_hw.hw.simulate import simulate_streams
from instabnn_hw.sim.images import stream_payloads
from instabnn_hw.strict_json import JSON_SIZE_LIMIT

#: FINN's CNV W1A1 folding (PE, SIMD) of the nine MVU layers, graph order.
FINN_CNV = [(16, 3), (32, 32), (16, 32), (16, 32), (4, 32), (1, 32), (1, 4), (1, 8), (5, 1)]


def _sign(name, x, channels, rng):
    return ir.Threshold(
        name=name, inputs=(x,), thresholds=rng.integers(-3, 4, channels), flip=rng.integers(0, 2, channels)
    )


def cnv_graph(seed: int = 0) -> ir.Graph:
    """FINN's CNV: 3x32x32, six unpadded 3x3 convs 64-64-pool-128-128-pool-256-256, FC 256-512-512-10
    (XnorConv, kernel 1 on 256x1x1); the first conv an IntConv with +-1 weights."""
    rng = np.random.default_rng(seed)
    nodes = [ir.PixelInput(name="input", channels=3, height=32, width=32)]
    nodes.append(ir.IntConv(name="conv0", inputs=("input",), weights=rng.choice([-1, 1], (64, 27)), kernel=3))
    nodes.append(_sign("sign0", "conv0", 64, rng))
    x, c_in = "sign0", 64
    for k, (c, pool) in enumerate([(64, True), (128, False), (128, True), (256, False), (256, False)], start=1):
        nodes.append(ir.XnorConv(name=f"conv{k}", inputs=(x,), weights=rng.integers(0, 2, (c, 9 * c_in)), kernel=3))
        nodes.append(_sign(f"sign{k}", f"conv{k}", c, rng))
        x, c_in = f"sign{k}", c
        if pool:
            nodes.append(ir.MaxPool(name=f"pool{k}", inputs=(x,), kernel=2, stride=2))
            x = f"pool{k}"
    for k, c in enumerate([512, 512, 10]):
        nodes.append(ir.XnorConv(name=f"fc{k}", inputs=(x,), weights=rng.integers(0, 2, (c, c_in)), kernel=1))
        x, c_in = f"fc{k}", c
        if k < 2:
            nodes.append(_sign(f"fsign{k}", x, c, rng))
            x = f"fsign{k}"
    nodes.append(ir.Argmax(name="argmax", inputs=(x,)))
    return ir.Graph(model="cnv", config={}, nodes=nodes)


def block_graph(*, insta: bool = False, channels: int = 8, size: int = 8) -> ir.Graph:
    """PixelInput 1 x size x size -> stem IntConv 3x3 pad 1 -> Requantise ``q0`` -> [Threshold | InstaThreshold]
    -> XnorConv 3x3 pad 1 -> Requantise -> Add(., q0) -> [RPReLU | InstaPReLU] -> GlobalSumPool -> IntConv 1x1
    -> Argmax."""
    rng = np.random.default_rng(1)
    c = channels
    nodes = [
        ir.PixelInput(name="input", channels=1, height=size, width=size),
        ir.IntConv(name="stem", inputs=("input",), weights=rng.integers(-3, 4, (c, 9)), kernel=3, padding=1),
        ir.Requantise(
            name="q0", inputs=("stem",), mult=np.full(c, 3), bias=np.zeros(c, int), shift=6, low=-128, high=127
        ),
    ]
    if insta:
        nodes.append(
            ir.InstaThreshold(
                name="sign",
                inputs=("q0",),
                mode="th",
                stats=("m3",),
                shifts=(16,),
                alpha=rng.integers(-4, 4, c),
                beta=rng.integers(-4, 4, (c, 1)),
                out_shift=2,
                emit_stats=True,
            )
        )
    else:
        nodes.append(_sign("sign", "q0", c, rng))
    nodes += [
        ir.XnorConv(name="conv", inputs=("sign",), weights=rng.integers(0, 2, (c, 9 * c)), kernel=3, padding=1),
        ir.Requantise(
            name="q1", inputs=("conv",), mult=np.full(c, 5), bias=np.zeros(c, int), shift=3, low=-128, high=127
        ),
        ir.Add(name="add", inputs=("q1", "q0"), shifts=(0, 1)),
    ]
    act = {"gamma": np.zeros(c, int), "slope": np.full(c, 8), "zeta": np.zeros(c, int), "slope_shift": 4}
    act.update(out_shift=1, low=-128, high=127)
    if insta:
        hidden = 4
        nodes.append(
            ir.InstaPReLU(
                name="act",
                inputs=("add", "sign"),
                stats=("m3",),
                w1=rng.integers(-2, 3, (hidden, c)),
                b1=np.zeros(hidden, int),
                hidden_shift=4,
                hidden_max=15,
                w2=rng.integers(-2, 3, (c, hidden)),
                delta_shift=2,
                **act,
            )
        )
    else:
        nodes.append(ir.RPReLU(name="act", inputs=("add",), **act))
    nodes += [
        ir.GlobalSumPool(name="pool", inputs=("act",)),
        ir.IntConv(name="fc", inputs=("pool",), weights=rng.integers(-3, 4, (10, c)), kernel=1),
        ir.Argmax(name="argmax", inputs=("fc",)),
    ]
    return ir.Graph(model="block", config={}, nodes=nodes)


def _mvus(graph):
    return [n.name for n in graph.nodes if isinstance(n, (ir.XnorConv, ir.IntConv))]


@pytest.fixture(scope="module")
def cnv():
    return cnv_graph()


# ------------------------------------------------------------------------------- CNV, FINN's figures


def test_cnv_finn_folding_gives_finns_cycles(cnv):
    fold = dict(zip(_mvus(cnv), (Fold(*f) for f in FINN_CNV), strict=True))
    result = plan(cnv, fold=fold)
    layers = {layer.name: layer for layer in result.layers}
    for name, (pe, simd) in zip(_mvus(cnv), FINN_CNV, strict=True):
        node = cnv.node(name)
        out = cnv.types[name]
        mh, mw = node.out_channels, node.cols
        assert (layers[name].pe, layers[name].simd) == (pe, simd)
        assert layers[name].cycles == (mh // pe) * (mw // simd) * out.height * out.width, name
    # FINN's CNV bottleneck: 32,768 cycles in the FC layers (3,052 frames/s estimated at 100 MHz)
    assert result.estimate.cycles_per_frame == 32768
    assert result.estimate.bottleneck in ("fc0", "fc1")
    assert result.estimate.fps == pytest.approx(100e6 / 32768)
    assert fold_config(result) == {n: {"PE": p, "SIMD": s} for n, (p, s) in zip(_mvus(cnv), FINN_CNV, strict=True)}


def test_cnv_plans_are_fast_and_consistent(cnv):
    start = time.perf_counter()
    result = plan(cnv, fps=3000)
    assert time.perf_counter() - start < 5
    est = result.estimate
    assert est.cycles_per_frame <= 100e6 / 3000
    assert est.cycles_per_frame == max(layer.cycles for layer in result.layers)
    assert est.luts == sum(layer.luts for layer in result.layers)
    assert est.memory_bits == sum(layer.memory_bits for layer in result.layers)
    assert est.multipliers == sum(layer.multipliers for layer in result.layers)
    assert est.latency_cycles >= est.cycles_per_frame  # the FC layers need whole frames
    assert [layer.name for layer in result.layers] == [n.name for n in cnv.nodes[1:]]
    # every weight bit of the design is in memory
    weights = sum(n.weights.size for n in cnv.nodes if isinstance(n, ir.XnorConv))
    assert est.memory_bits > weights


# ------------------------------------------------------------------------------- folding rules


def test_fold_path_is_fixed_and_increasing(cnv):
    for name in _mvus(cnv):
        path = fold_path(cnv, name)
        node = cnv.node(name)
        c_in = cnv.types[node.inputs[0]].channels
        assert path[0] == Fold(1, 1) and path[-1] == Fold(node.out_channels, c_in)
        for a, b in zip(path, path[1:], strict=False):
            assert (b.pe > a.pe and b.simd == a.simd) or (b.simd > a.simd and b.pe == a.pe)
        assert all(node.out_channels % f.pe == 0 and c_in % f.simd == 0 for f in path)


def _parallelism(result, graph):
    return {n: (result.folding[n].pe, result.folding[n].simd) for n in _mvus(graph)}, dict(result.parallel)


@pytest.mark.parametrize("graph_name", ["cnv", "block", "insta"])
def test_higher_fps_never_lowers_parallelism(graph_name, cnv):
    graph = {"cnv": cnv, "block": block_graph(), "insta": block_graph(insta=True)}[graph_name]
    fastest = plan(graph).estimate.fps  # the default: balanced to the bottleneck
    slowest = plan(graph, fps=1).estimate.fps
    rates = np.geomspace(max(1.0, slowest / 2), fastest, 14)
    previous = None
    for fps in rates:
        result = plan(graph, fps=float(fps))
        assert result.estimate.fps >= fps * (1 - 1e-9)
        folds, parallel = _parallelism(result, graph)
        for name, (pe, simd) in folds.items():
            node = graph.node(name)
            assert node.out_channels % pe == 0 and graph.types[node.inputs[0]].channels % simd == 0
        if previous is not None:
            for name in folds:
                assert folds[name][0] >= previous[0][name][0] and folds[name][1] >= previous[0][name][1], (name, fps)
            for name in parallel:
                assert parallel[name] >= previous[1][name]
        previous = folds, parallel


def test_default_is_balanced_to_the_pixel_layer(cnv):
    result = plan(cnv)
    conv0 = next(layer for layer in result.layers if layer.name == "conv0")
    # the pixel layer at full parallelism: one vector (9 words of 3 channels) per output pixel
    assert (conv0.pe, conv0.simd) == (64, 3)
    assert result.estimate.cycles_per_frame == 30 * 30 * 9
    # and nothing is wider than needed: every other MVU layer is at the first point meeting it
    for name in _mvus(cnv)[1:]:
        path = fold_path(cnv, name)
        fold = result.folding[name]
        k = path.index(fold)
        if k > 0:
            assert (
                plan(cnv, fold={**{n: result.folding[n] for n in _mvus(cnv)}, name: path[k - 1]})
                .layers[[layer.name for layer in result.layers].index(name)]
                .cycles
                > result.estimate.cycles_per_frame
            )


def test_non_mvu_stage_widens_its_producer():
    # a 3x3 stride-1 max pool after a 1x1 conv reads 9 window words per input word: the pool, not
    # the conv, sets the conv's PE
    rng = np.random.default_rng(0)
    nodes = [
        ir.PixelInput(name="input", channels=4, height=6, width=6),
        ir.IntConv(name="c0", inputs=("input",), weights=rng.integers(-2, 3, (16, 4)), kernel=1),
        ir.MaxPool(name="pool", inputs=("c0",), kernel=3, stride=1, padding=1),
        ir.Threshold(name="t", inputs=("pool",), thresholds=np.zeros(16, int), flip=np.zeros(16, int)),
        ir.XnorConv(name="fc", inputs=("t",), weights=rng.integers(0, 2, (4, 16 * 36)), kernel=6),
        ir.Argmax(name="argmax", inputs=("fc",)),
    ]
    graph = ir.Graph(model="pool", config={}, nodes=nodes)
    target = 36 * 9 * 4  # pool words at PE 4
    result = plan(graph, fps=100e6 / target)
    # the conv alone meets the target at PE 1, SIMD 2 (36 pixels x 16 folds x 2 words = 1152 cycles);
    # its PE is raised to 4 for the pool (36 x 9 x 16 / 4 = 1296 cycles), its SIMD kept
    assert result.folding["c0"] == Fold(4, 2)
    pool = next(layer for layer in result.layers if layer.name == "pool")
    assert pool.cycles == target


def test_widths_follow_the_rule(cnv):
    fold = dict(zip(_mvus(cnv), (Fold(*f) for f in FINN_CNV), strict=True))
    widths = stage_widths(cnv, fold)
    assert widths["input"] == 3 and widths["conv0"] == 16 and widths["sign0"] == 16
    assert widths["pool1"] == 32 and widths["fc2"] == 5 and widths["argmax"] == 1
    result = plan(cnv, fold=fold)
    assert result.widths == widths
    assert result.folding["sign0"] == Fold(16, 16) and result.folding["argmax"] == Fold(5, 5)


# ------------------------------------------------------------------------------- budgets and errors


def test_lut_budget_gives_the_fastest_design_that_fits(cnv):
    slowest = plan(cnv, fps=1).estimate  # every PE = SIMD = 1
    minimum = slowest.luts
    # at least as fast; wider words can cost fewer LUTs (a shallower window buffer's shorter addresses)
    smallest = plan(cnv, lut_budget=minimum).estimate
    assert smallest.luts <= minimum and smallest.cycles_per_frame <= slowest.cycles_per_frame
    fastest = plan(cnv, lut_budget=10**9).estimate
    with pytest.raises(PlanError, match=r"beyond this model's maximum"):
        plan(cnv, fps=100e6 / fastest.cycles_per_frame * 1.01)
    previous = None
    for budget in (minimum, minimum * 2, minimum * 4, fastest.luts - 1, fastest.luts):
        result = plan(cnv, lut_budget=budget)
        assert result.estimate.luts <= budget
        if previous is not None:
            assert result.estimate.cycles_per_frame <= previous
        # one cycle faster than this design does not fit (the search is exact on its monotone path)
        if result.estimate.cycles_per_frame > fastest.cycles_per_frame:
            faster = plan(cnv, fps=100e6 / (result.estimate.cycles_per_frame - 1))
            assert faster.estimate.luts > budget
        previous = result.estimate.cycles_per_frame
    assert previous == fastest.cycles_per_frame
    message = rf"--lut-budget {minimum - 1} is below the minimum design of {minimum} LUTs \(every PE = SIMD = 1\)"
    with pytest.raises(PlanError, match=message):
        plan(cnv, lut_budget=minimum - 1)


def _totals(estimate):
    return {"luts": estimate.luts, "memory_bits": estimate.memory_bits, "multipliers": estimate.multipliers}


def test_a_capacity_gives_the_fastest_design_that_fits_it(cnv):
    balanced, minimum = plan(cnv).estimate, plan(cnv, fps=1).estimate
    roomy = Capacity("roomy", luts=10**9, memory_bits=10**12, multipliers=10**6)
    assert plan(cnv, capacity=roomy).estimate == balanced  # never faster than the balanced design
    assert minimum.luts < balanced.luts
    limits = [
        Capacity("luts", luts=(minimum.luts + balanced.luts) // 2, memory_bits=10**12),
        Capacity("both", luts=balanced.luts - 1, memory_bits=10**12, multipliers=minimum.multipliers),
        Capacity("tight", luts=minimum.luts, memory_bits=minimum.memory_bits, multipliers=minimum.multipliers),
    ]
    for capacity in limits:
        result = plan(cnv, capacity=capacity).estimate
        assert not capacity.excess(_totals(result)), capacity.name
        assert result.cycles_per_frame > balanced.cycles_per_frame
        # one cycle faster does not fit
        faster = plan(cnv, fps=100e6 / (result.cycles_per_frame - 1)).estimate
        assert capacity.excess(_totals(faster)), capacity.name


def test_a_model_a_capacity_cannot_hold_is_one_line_naming_the_resource(cnv):
    minimum = plan(cnv, fps=1).estimate
    small = Capacity("small", luts=10**9, memory_bits=minimum.memory_bits - 1, bigger=("large",))
    message = (
        rf"^the design does not fit small at any folding: even with every PE = SIMD = 1 it needs "
        rf"{minimum.memory_bits:,} memory bits and small has {minimum.memory_bits - 1:,}; folding does not shrink "
        r"memory: generate a smaller model \(--width, --input-size\) or a bigger device \(large\)$"
    )
    with pytest.raises(PlanError, match=message):
        plan(cnv, capacity=small)
    few = Capacity("few", luts=10**9, memory_bits=10**12, multipliers=minimum.multipliers)
    assert plan(cnv, fps=10000).estimate.multipliers > minimum.multipliers
    with pytest.raises(PlanError, match=r"^with --fps 10000 the design needs .* multipliers and few has .*: leave"):
        plan(cnv, fps=10000, capacity=few)
    tiny = Capacity("tiny", luts=1, memory_bits=10**12)
    with pytest.raises(PlanError, match=r"^with --lut-budget 1000000000 the design needs .* LUT4 and tiny takes at"):
        plan(cnv, lut_budget=10**9, capacity=tiny)
    assert plan(cnv, fps=1, capacity=few).estimate == minimum
    with pytest.raises(TypeError, match="capacity must be a Capacity"):
        plan(cnv, capacity={"luts": 1})


@pytest.mark.parametrize("insta", [False, True])
def test_lut_budget_counts_forks_and_fifos(insta):
    graph = block_graph(insta=insta)
    minimum = plan(graph, fps=1).estimate.luts
    for budget in range(minimum, 3 * minimum, max(1, minimum // 7)):
        result = plan(graph, lut_budget=budget)
        assert result.estimate.luts <= budget
        assert sum(layer.luts for layer in result.layers) == result.estimate.luts


def test_fps_beyond_full_unrolling(cnv):
    with pytest.raises(PlanError) as info:
        plan(cnv, fps=1e6)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("--fps 1000000 is beyond this model's maximum of 12,346 frames/s at 100 MHz")
    assert "frames/s at 100 MHz (layer conv0 at full parallelism); lower --fps or raise --clock" in message
    # a faster clock allows it
    assert plan(cnv, fps=1e5, clock_mhz=1000).estimate.fps >= 1e5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fps": 0}, r"^fps must be > 0, not 0$"),
        ({"fps": "fast"}, r"^fps must be a finite number, not 'fast'$"),
        ({"fps": float("nan")}, r"^fps must be a finite number, not nan$"),
        ({"lut_budget": 10.5}, r"^lut_budget must be a whole number, not 10.5$"),
        ({"clock_mhz": -1}, r"^clock_mhz must be from 0.001 to 1000, not -1$"),
        ({"clock_mhz": 1e-300}, r"^clock_mhz must be from 0.001 to 1000, not 1e-300$"),
        ({"clock_mhz": 1e300}, r"^clock_mhz must be from 0.001 to 1000, not 1e\+300$"),
        ({"fps": 10, "lut_budget": 1000}, r"^fps and lut_budget are alternatives; give at most one$"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(OptionError, match=match) as error:
        plan(block_graph(), **kwargs)
    assert error.value.parameters[0] in kwargs


def test_fold_config_round_trip(tmp_path, cnv):
    result = plan(cnv, fps=2000)
    path = tmp_path / "fold.json"
    path.write_text(json.dumps({"Defaults": {}, **fold_config(result)}))
    fold = read_fold_config(path, cnv)
    assert fold == {n: result.folding[n] for n in _mvus(cnv)}
    again = plan(cnv, fold=fold)
    assert again.folding == result.folding
    assert [layer.cycles for layer in again.layers] == [layer.cycles for layer in result.layers]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", r"is not valid JSON"),
        ("[1, 2]", r"must be a JSON object of layer names, not a JSON array"),
        ('{"conv0": 3}', r"layer conv0 must be \{\"PE\": int, \"SIMD\": int\}, not 3"),
        ('{"conv0": {"PE": 16}}', r"layer conv0 must be"),
        ("MISSING", r"fold config misses the matrix-vector layers: conv1, conv2"),
        ("UNKNOWN", r"fold config names unknown layers: nosuch"),
        ("NOTMVU", r"not matrix-vector layers: sign0"),
        ("BADPE", r"layer conv1: PE 3 does not divide its 64 output channels"),
        ("BADSIMD", r"layer fc0: SIMD 5 does not divide its 256 input channels"),
        ("FLOAT", r"layer conv1: PE must be a positive integer, not 2.5"),
        ("ZERO", r"layer conv1: SIMD must be a positive integer, not 0"),
    ],
)
def test_malformed_fold_configs(tmp_path, cnv, content, match):
    good = {n: {"PE": p, "SIMD": s} for n, (p, s) in zip(_mvus(cnv), FINN_CNV, strict=True)}
    edits = {
        "MISSING": {k: v for k, v in good.items() if k not in ("conv1", "conv2")},
        "UNKNOWN": {**good, "nosuch": {"PE": 1, "SIMD": 1}},
        "NOTMVU": {**good, "sign0": {"PE": 1, "SIMD": 1}},
        "BADPE": {**good, "conv1": {"PE": 3, "SIMD": 32}},
        "BADSIMD": {**good, "fc0": {"PE": 1, "SIMD": 5}},
        "FLOAT": {**good, "conv1": {"PE": 2.5, "SIMD": 32}},
        "ZERO": {**good, "conv1": {"PE": 2, "SIMD": 0}},
    }
    path = tmp_path / "fold.json"
    path.write_text(json.dumps(edits[content]) if content in edits else content)
    with pytest.raises(PlanError, match=match) as info:
        read_fold_config(path, cnv)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_missing_fold_config_file(tmp_path, cnv):
    with pytest.raises(PlanError, match=r"cannot read the fold config .*nope.json"):
        read_fold_config(tmp_path / "nope.json", cnv)


def _finn_cnv_config(**changes) -> dict:
    """FINN's CNV folding as a fold config of :func:`cnv_graph`, with ``changes`` (layer -> entry) merged in."""
    layers = [f"conv{k}" for k in range(6)] + [f"fc{k}" for k in range(3)]
    good = {name: {"PE": pe, "SIMD": simd} for name, (pe, simd) in zip(layers, FINN_CNV, strict=True)}
    return {**good, **changes}


def _entry(pe, simd=32) -> bytes:
    return json.dumps(_finn_cnv_config(conv1={"PE": pe, "SIMD": simd})).encode()


#: (file bytes, fragment of the message): files a user may hand over, none of which is a fold config.
BAD_FOLD_FILES = {
    "utf-16": (json.dumps(_finn_cnv_config()).encode("utf-16"), "is not UTF-8 text (byte 0xff at offset 0)"),
    "binary junk": (bytes(range(256)) * 4, "is not UTF-8 text (byte 0x80 at offset 128)"),
    "nul bytes": (b"\0" * 64, "is not valid JSON"),
    "empty": (b"", "is not valid JSON: Expecting value at line 1 column 1"),
    "nested arrays": (b"[" * 100_000 + b"]" * 100_000, "nests arrays or objects deeper than 64 levels"),
    "nested objects": (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nests arrays or objects deeper than 64"),
    "nested a little too deep": (b"[" * 65 + b"]" * 65, "nests arrays or objects deeper than 64 levels"),
    "array": (b"[1, 2]", "must be a JSON object of layer names, not a JSON array"),
    "string": (b'"conv1"', "must be a JSON object of layer names, not a JSON string"),
    "null": (b"null", "must be a JSON object of layer names, not a JSON null"),
    "unknown layer": (
        json.dumps(_finn_cnv_config(nosuch={"PE": 1, "SIMD": 1})).encode(),
        "fold config names unknown layers: nosuch",
    ),
    "many unknown layers": (
        json.dumps(_finn_cnv_config(**{f"x{k}": {"PE": 1, "SIMD": 1} for k in range(8)})).encode(),
        "unknown layers: x0, x1, x2, x3, x4 and 3 more",
    ),
    "unknown layer with a newline": (
        json.dumps(_finn_cnv_config(**{"a\nb" * 40: {"PE": 1, "SIMD": 1}})).encode(),
        "unknown layers: 'a\\nba\\nb",
    ),
    "not a matrix-vector layer": (
        json.dumps(_finn_cnv_config(sign0={"PE": 1, "SIMD": 1})).encode(),
        "not matrix-vector layers: sign0",
    ),
    "PE a string": (_entry("2"), "layer conv1: PE must be a positive integer, not '2'"),
    "PE a float": (_entry(2.0), "layer conv1: PE must be a positive integer, not 2.0"),
    "PE a bool": (_entry(True), "layer conv1: PE must be a positive integer, not True"),
    "PE null": (_entry(None), "layer conv1: PE must be a positive integer, not None"),
    "PE a list": (_entry([2]), "layer conv1: PE must be a positive integer, not [2]"),
    "PE negative": (_entry(-2), "layer conv1: PE must be a positive integer, not -2"),
    "SIMD zero": (_entry(2, 0), "layer conv1: SIMD must be a positive integer, not 0"),
    "PE NaN": (_entry(float("nan")), "holds NaN, which is not a JSON number"),
    "PE Infinity": (_entry(float("inf")), "holds Infinity, which is not a JSON number"),
    "SIMD -Infinity": (_entry(2, float("-inf")), "holds -Infinity, which is not a JSON number"),
    "PE of 5000 digits": (_entry(2).replace(b'"PE": 2', b'"PE": ' + b"9" * 5000), "holds a number of more than"),
    "PE huge": (_entry(2**70), f"layer conv1: PE {2**70} does not divide its 64 output channels"),
    "an extra key": (
        json.dumps(_finn_cnv_config(conv1={"PE": 2, "SIMD": 32, "MMV": 1})).encode(),
        "layer conv1 must be {\"PE\": int, \"SIMD\": int}, not {'PE': 2, 'SIMD': 32, 'MMV': 1}",
    ),
    "a key twice": (_entry(2).replace(b'"PE": 2', b'"PE": 2, "PE": 4'), "repeats the key 'PE'"),
    "an entry that is a list": (
        json.dumps(_finn_cnv_config(conv1=[2, 32])).encode(),
        'layer conv1 must be {"PE": int, "SIMD": int}, not [2, 32]',
    ),
}


@pytest.mark.parametrize(("content", "fragment"), BAD_FOLD_FILES.values(), ids=BAD_FOLD_FILES.keys())
def test_a_bad_fold_config_file_is_one_line(tmp_path, cnv, content, fragment):
    path = tmp_path / "fold.json"
    path.write_bytes(content)
    with pytest.raises(PlanError) as info:
        read_fold_config(path, cnv)
    message = str(info.value)
    assert "\n" not in message and fragment in message and str(path) in message
    assert len(message) < 300 + len(str(path))


def test_a_fold_config_may_start_with_a_byte_order_mark(tmp_path, cnv):
    path = tmp_path / "fold.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(_finn_cnv_config()).encode())
    assert read_fold_config(path, cnv)["conv1"] == Fold(*FINN_CNV[1])


def _huge_file(path):
    with open(path, "wb") as f:
        f.truncate(JSON_SIZE_LIMIT + 1)  # sparse: no disk space taken


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda path: path.mkdir(), "cannot read the fold config {path}: Is a directory"),
        (lambda path: None, "cannot read the fold config {path}: No such file or directory"),
        (_huge_file, "fold config {path} is larger than 16 MiB"),
        pytest.param(
            lambda path: (path.write_text("{}"), path.chmod(0)),
            "cannot read the fold config {path}: Permission denied",
            marks=pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file"),
        ),
    ],
    ids=["folder", "missing", "huge", "unreadable"],
)
def test_a_fold_config_that_is_no_readable_file_is_one_line(tmp_path, cnv, make, fragment):
    path = tmp_path / "fold.json"
    make(path)
    with pytest.raises(PlanError) as info:
        read_fold_config(path, cnv)
    assert str(info.value) == fragment.format(path=path)


# ------------------------------------------------------------------------------- demand functions


def _brute_window_need(x: ir.TensorType, out: ir.TensorType, kernel, stride, padding, e: int) -> int:
    """Input elements a windowed stage needs for output element ``e``: every row of its window complete."""
    pixel = e // out.channels
    oy, ox = divmod(pixel, out.width)
    rows = [oy * stride - padding + ky for ky in range(kernel)]
    rows = [r for r in rows if 0 <= r < x.height]
    return (max(rows) + 1) * x.width * x.channels


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "size"), [(3, 1, 1, 6), (3, 1, 0, 6), (3, 2, 1, 7), (2, 2, 0, 6), (1, 2, 0, 5)]
)
def test_window_demand_matches_brute_force(kernel, stride, padding, size):
    rng = np.random.default_rng(0)
    c_in, c_out = 4, 6
    nodes = [
        ir.PixelInput(name="input", channels=c_in, height=size, width=size),
        ir.IntConv(
            name="conv",
            inputs=("input",),
            weights=rng.integers(-2, 3, (c_out, kernel * kernel * c_in)),
            kernel=kernel,
            stride=stride,
            padding=padding,
        ),
        ir.MaxPool(name="pool", inputs=("conv",), kernel=kernel, stride=stride, padding=min(padding, kernel - 1)),
        ir.GlobalSumPool(name="gp", inputs=("pool",)),
        ir.Argmax(name="argmax", inputs=("gp",)),
    ]
    graph = ir.Graph(model="w", config={}, nodes=nodes)
    for name in ("conv", "pool"):
        node = graph.node(name)
        x, out = graph.types[node.inputs[0]], graph.types[name]
        m = np.arange(out.elements + 1)
        got = demand(graph, name, 0, m)
        expected = [0] + [
            max(_brute_window_need(x, out, node.kernel, node.stride, node.padding, e) for e in range(k))
            for k in range(1, out.elements + 1)
        ]
        assert got.tolist() == expected, name
    # the global pool needs its whole frame for its first output
    assert demand(graph, "gp", 0, np.array([0, 1, 6])).tolist() == [0] + [graph.types["pool"].elements] * 2


def test_elementwise_repeat_fc_and_stats_demand():
    graph = block_graph(insta=True)
    m = np.arange(0, 20)
    assert demand(graph, "q1", 0, m).tolist() == m.tolist()
    assert demand(graph, "add", 1, m).tolist() == m.tolist()
    assert demand(graph, "sign", 0, m).tolist() == [0] + [8 * 8 * 8] * 19  # whole frame
    assert demand(graph, "act", 1, m).tolist() == [0] + [8] * 19  # the statistics words
    assert demand(graph, "fc", 0, np.array([0, 1, 10])).tolist() == [0, 8, 8]  # 1x1 on 8x1x1
    # Repeat: the first copy passes through, the replay needs the whole pixel
    rng = np.random.default_rng(0)
    nodes = [
        ir.PixelInput(name="input", channels=3, height=2, width=2),
        ir.Repeat(name="rep", inputs=("input",), times=2),
        ir.GlobalSumPool(name="gp", inputs=("rep",)),
        ir.IntConv(name="fc", inputs=("gp",), weights=rng.integers(-1, 2, (2, 6)), kernel=1),
        ir.Argmax(name="argmax", inputs=("fc",)),
    ]
    graph = ir.Graph(model="r", config={}, nodes=nodes)
    got = demand(graph, "rep", 0, np.arange(0, 13)).tolist()
    assert got == [0, 1, 2, 3, 3, 3, 3, 4, 5, 6, 6, 6, 6]


def test_windowless_mvu_with_several_folds_gets_one_input_vector_of_fifo():
    graph = block_graph()
    # fc (8 -> 10 classes, 1x1 on the pooled 8x1x1 vector) at PE 1: ten folds; its input vector
    # is 8 elements, 2 words of the 4-wide pool stream
    folding = {"stem": Fold(4, 1), "conv": Fold(4, 8), "fc": Fold(1, 8)}
    widths = stage_widths(graph, folding)
    assert widths["pool"] == 4
    assert fifo_depths(graph, widths)[("pool", "fc")] == 2
    # one fold (PE = all outputs), or a one-word vector: no FIFO
    for fc in (Fold(10, 8), Fold(5, 8)):
        folding = {"stem": Fold(8, 1), "conv": Fold(8, 8), "fc": fc}
        depths = fifo_depths(graph, stage_widths(graph, folding))
        assert ("pool", "fc") not in depths


def test_pool_shortcut_gets_one_pixel_of_fifo_and_keeps_the_planned_rate():
    """The pool emits a pixel's 16 one-channel words after its 64-word window; a FIFO of one
    pixel keeps the Add from holding the conv (PE 1, 16 folds of 9 cycles) at the start of every
    pixel (before every stage ended in a register slice, MobileNetV1 reduced ran at 2,608 cycles
    per frame for 2,304 without it)."""
    graph = graphs.pool_shortcut_block(3)
    result = plan(graph, fold={"stem.conv": (1, 3), "b1.conv": (1, 16), "fc": (4, 16)})
    assert result.widths["b1.pool"] == 1 and result.estimate.cycles_per_frame == 16 * 16 * 9
    assert result.fifo_depths[("b1.pool", "b1.add")] == 16
    pixels = np.random.default_rng(7).integers(0, 256, size=(4, *graph.input_shape))
    top, _ = emit.build_top(graph, result, rom_dir=None)
    words, classes, logits = stream_payloads(graph, top.ports.logits.elements, pixels)
    run = simulate_streams(top, {"i": words}, {"o": len(classes), "logits": len(logits)}, max_cycles=100_000)
    assert run.outputs["o"] == classes and run.outputs["logits"] == logits
    assert np.diff(run.cycles["o"]).tolist() == [result.estimate.cycles_per_frame] * 3


def test_identity_residual_fifo_depth():
    graph = block_graph()
    folding = {"stem": Fold(8, 1), "conv": Fold(8, 8), "fc": Fold(1, 8)}
    widths = stage_widths(graph, folding)
    depths = fifo_depths(graph, widths)
    # fork q0 (8 ch, 8x8, 8 per word): the conv branch needs 2 complete rows (2 * 8 * 8 elements)
    # before the Add's first word, the identity branch one word: (128 - 8) / 8 = 15 words, margin 2
    assert depths == {("q0", "add"): 15 + 2}
    # with a narrower stream the depth counts words at that width
    folding = {"stem": Fold(2, 1), "conv": Fold(4, 2), "fc": Fold(1, 8)}
    widths = stage_widths(graph, folding)
    # the Add takes 4-wide words; identity input converted from 2: first word needs 4 elements
    assert fifo_depths(graph, widths)[("q0", "add")] == (128 - 4) // 2 + 2


def test_insta_residual_fifo_holds_a_frame_and_stats_their_channels():
    graph = block_graph(insta=True)
    folding = {"stem": Fold(8, 1), "conv": Fold(8, 8), "fc": Fold(1, 8)}
    widths = stage_widths(graph, folding)
    depths = fifo_depths(graph, widths)
    # the InstaThreshold needs the whole frame (512 elements) before the block's first word
    assert depths[("q0", "add")] == (512 - 8) // 8 + 2
    assert depths[("sign", "act")] == 8
    # the margin grows with the long branch's pipeline latency at the fork's rate
    lagged = fifo_depths(graph, widths, {"sign": 100, "conv": 10, "q1": 4}, cycles_per_frame=128)
    assert lagged[("q0", "add")] == (512 - 8) // 8 + 2 + int(np.ceil(64 / 128 * 114))


def test_plan_fifos_cover_every_join():
    for graph in (block_graph(), block_graph(insta=True)):
        result = plan(graph)
        assert ("q0", "add") in result.fifo_depths
        assert all(d >= 1 for d in result.fifo_depths.values())
        # the FIFO's memory is attributed to the layer it feeds
        add = next(layer for layer in result.layers if layer.name == "add")
        assert add.memory_bits >= result.fifo_depths[("q0", "add")] * result.widths["q0"] * 8


# ------------------------------------------------------------------------------- the cost model


@pytest.mark.parametrize(("pe", "simd"), [(1, 1), (2, 4), (8, 8), (4, 2)])
def test_mvu_figures_are_the_built_components(pe, simd):
    """The figures the planner reads from a spec are those of the component the emitter builds from it."""
    graph = block_graph()
    folding = {"stem": Fold(pe, 1), "conv": Fold(pe, simd), "fc": Fold(1, 8)}
    widths = stage_widths(graph, folding)
    for name in ("stem", "conv", "fc"):
        spec = stage_spec(graph, name, folding=folding, widths=widths)
        part = spec.part("mvu")
        mvu = spec.build().component("mvu")
        assert mvu.masked == (name != "fc"), name
        figures = part.figures
        assert figures.memory_bits == mvu.memory_bits, name
        assert figures.multipliers == getattr(mvu, "multipliers", 0), name
        assert figures.latency == figures.post == mvu.synapse_fold - 1 + mvu.latency, name
        assert figures.lag == (mvu.neuron_fold - 1) * mvu.synapse_fold, name
        assert figures.luts == lut_estimate(mvu.lut_kind, mvu.lut_features()), name
        assert figures.cycles == mvu.cycles_per_vector * graph.types[name].height * graph.types[name].width, name


def test_estimates_are_the_stage_figures():
    cases = [
        graphs.tiny_resnet(0),
        graphs.tiny_resnet(1, insta="th", prelu="insta"),
        graphs.tiny_resnet(2, insta="th+", prelu="insta"),
        graphs.tiny_cnv(0),
        graphs.tiny_mobilenet(0),
    ]
    # a fully connected layer may take SIMD wider than its input channels from a fold config
    wide_fc = {"conv0": (2, 3), "conv1": (4, 8), "fc0": (2, 16), "fc1": (5, 2)}
    for graph in cases:
        for kwargs in ({}, {"fps": 1}, {"fold": wide_fc} if graph.model == "tiny_cnv" else {"fps": 2}):
            result = plan(graph, **kwargs)
            folding = {n: result.folding[n] for n in _mvus(graph)}
            assert stages.stage_widths(graph, folding) == result.widths
            for layer in result.layers:
                parallel = result.parallel.get(layer.name, 1)
                spec = stage_spec(graph, layer.name, folding=folding, widths=result.widths, parallel=parallel)
                figures = spec.figures
                assert layer.cycles == figures.cycles, (graph.model, layer.name)
                assert layer.latency == figures.latency, (graph.model, layer.name)
                assert layer.multipliers == figures.multipliers, (graph.model, layer.name)
                # forks and FIFOs are attributed to the layer they feed
                assert layer.memory_bits >= figures.memory_bits, (graph.model, layer.name)
                assert layer.luts >= figures.luts, (graph.model, layer.name)
                built = spec.build()
                for (key, component), part in zip(built.components, spec.parts, strict=True):
                    assert key == part.key and type(component) is part.component


def _output_cycles(graph, result, pixels) -> list[int]:
    """The cycles at which the emitted design's classes of ``pixels`` leave (each checked against the
    reference), the images streamed at full rate."""
    top, _ = emit.build_top(graph, result, rom_dir=None)
    words, classes, logits = stream_payloads(graph, top.ports.logits.elements, pixels)
    run = simulate_streams(top, {"i": words}, {"o": len(classes), "logits": len(logits)}, seed=3, max_cycles=400_000)
    assert run.outputs["o"] == classes and run.outputs["logits"] == logits
    return run.cycles["o"]


@pytest.mark.parametrize("design", ["resnet_th_insta", "mobilenet_fps"])
def test_planned_design_runs_at_the_planned_rate(design):
    """The emitter's design with this plan's folding and FIFO depths, in Amaranth's simulator: the
    reference's results, and frames leave at the planned period (no FIFO starves a branch)."""
    if design == "resnet_th_insta":
        graph = graphs.tiny_resnet(2, insta="th", prelu="insta")
        result = plan(graph)
    else:
        graph = graphs.tiny_mobilenet(5)
        result = plan(graph, fps=100e6 / (3 * plan(graph).estimate.cycles_per_frame))
    out = _output_cycles(graph, result, np.random.default_rng(7).integers(0, 256, size=(3, *graph.input_shape)))
    assert np.diff(out).tolist() == [result.estimate.cycles_per_frame] * (len(out) - 1)
    # the latency estimate is an upper bound within a factor of two of the first frame's
    assert out[0] <= result.estimate.latency_cycles < 2 * out[0]


# (width, input size, threshold, fps): widths whose streams need two width converters (6 into SIMD 4,
# 3 into 2), a pooled shortcut, INSTA's frame buffers, several folds
RANDOM_DESIGNS = [
    (6, 8, "th+", None),
    pytest.param(6, 8, "rsign", None, marks=pytest.mark.slow),
    pytest.param(4, 8, "th", 60_000.0, marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("width", "size", "insta", "fps"), RANDOM_DESIGNS)
def test_random_small_models_run_at_the_estimated_cycles_per_frame(width, size, insta, fps):
    """Lowered random models in Amaranth's simulator: once the pipeline is full, frames leave at
    exactly the estimated period (the first periods may be shorter while buffers fill)."""
    from instabnn_hw.codegen.lower import lower, random_model

    seed = int(os.environ.get("INSTABNN_SEED", "994302"))
    graph = lower(random_model("resnet-tiny", seed=seed, insta=insta, width=width, input_size=size))
    result = plan(graph, fps=fps)
    estimate = result.estimate
    frames = math.ceil(estimate.latency_cycles / estimate.cycles_per_frame) + 4
    pixels = np.random.default_rng(frames).integers(0, 256, size=(frames, *graph.input_shape))
    periods = np.diff(_output_cycles(graph, result, pixels)).tolist()
    assert periods[-3:] == [estimate.cycles_per_frame] * 3, (periods, estimate.cycles_per_frame)
