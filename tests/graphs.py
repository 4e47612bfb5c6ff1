"""Small random IR graphs for compiler tests (numpy only, seeded): tiny ResNet, CNV and MobileNet.

Constants are calibrated on a batch of random pixels as the graph grows (with the reference
executor's own node semantics), so activations are varied: multi-bit tensors span much of
their range and bits are neither all 0 nor all 1. Channel counts are small (4 to 16) so that
simulating a whole network takes seconds.
"""

from __future__ import annotations

import numpy as np

from instabnn_hw.codegen import ir, reference
from instabnn_hw.hw.insta import moment_sums, statistic_features

__all__ = [
    "GraphBuilder",
    "activation_summary",
    "standin_plan",
    "tiny_cnv",
    "tiny_mobilenet",
    "tiny_resnet",
]


class GraphBuilder:
    """Grows a graph node by node, executing each on calibration pixels to choose constants."""

    def __init__(self, model: str, seed: int, shape: tuple[int, int, int], *, images: int = 16) -> None:
        self.model = model
        self.rng = np.random.default_rng(seed)
        self.pixels = self.rng.integers(0, 256, size=(images, *shape))
        self.nodes: list[ir.Node] = []
        self.types: dict[str, ir.TensorType] = {}
        self.values: dict[str, np.ndarray] = {}
        self.trace = reference.Trace(classes=np.zeros(0, np.int64), logits=np.zeros(0, np.int64))
        self.input = self.add(ir.PixelInput(name="input", channels=shape[0], height=shape[1], width=shape[2]))

    # the "graph" that reference._execute reads
    def in_types(self, node: ir.Node) -> list[ir.TensorType]:
        return [self.types[i] for i in node.inputs]

    def add(self, node: ir.Node) -> str:
        self.types[node.name] = node.infer(self.in_types(node))
        inputs = [self.values[i] for i in node.inputs]
        self.values[node.name] = reference._execute(node, inputs, self.pixels, self, self.trace)
        self.nodes.append(node)
        return node.name

    def graph(self) -> ir.Graph:
        return ir.Graph(model=self.model, config={}, nodes=self.nodes)

    # -- layers with calibrated constants

    def _channel_stats(self, x: str) -> tuple[np.ndarray, np.ndarray]:
        v = np.moveaxis(self.values[x], 1, 0).reshape(self.types[x].channels, -1).astype(np.float64)
        return v.mean(axis=1), np.maximum(v.std(axis=1), 1.0)

    def _median(self, x: str) -> np.ndarray:
        v = np.moveaxis(self.values[x], 1, 0).reshape(self.types[x].channels, -1)
        return np.round(np.median(v, axis=1)).astype(np.int64)

    def int_conv(self, x: str, name: str, c_out: int, *, kernel: int, stride: int = 1, padding: int = 0, wmax=3):
        cols = kernel * kernel * self.types[x].channels
        w = self.rng.integers(-wmax, wmax + 1, size=(c_out, cols))
        if wmax == 1:  # +-1 weights (CNV's first layer)
            w = np.where(w >= 0, 1, -1)
        return self.add(ir.IntConv(name=name, inputs=(x,), weights=w, kernel=kernel, stride=stride, padding=padding))

    def xnor_conv(self, x: str, name: str, c_out: int, *, kernel: int, stride: int = 1, padding: int = 0):
        cols = kernel * kernel * self.types[x].channels
        w = self.rng.integers(0, 2, size=(c_out, cols))
        return self.add(ir.XnorConv(name=name, inputs=(x,), weights=w, kernel=kernel, stride=stride, padding=padding))

    def requantise(self, x: str, name: str, *, low=-128, high=127, spread=40.0, shift=12):
        mean, std = self._channel_stats(x)
        sign = np.where(self.rng.random(len(mean)) < 0.25, -1, 1)
        mult = np.maximum(1, np.round(spread / std * 2**shift)).astype(np.int64) * sign
        offset = self.rng.uniform(-spread / 4, spread / 4, size=len(mean)) * 2**shift
        bias = np.round(-mean * mult + offset).astype(np.int64)
        node = ir.Requantise(name=name, inputs=(x,), mult=mult, bias=bias, shift=shift, low=low, high=high)
        return self.add(node)

    def threshold(self, x: str, name: str, *, flip_probability=0.3):
        t = self._median(x)
        flip = (self.rng.random(len(t)) < flip_probability).astype(np.int64)
        return self.add(ir.Threshold(name=name, inputs=(x,), thresholds=t, flip=flip))

    def insta_threshold(self, x: str, name: str, *, mode: str, stats=("m1", "var"), emit_stats=False):
        t = self.types[x]
        n = t.height * t.width
        c = t.channels
        values = self.values[x]
        # shifts: features of about 10 bits
        raw = np.stack(
            [statistic_features(moment_sums(img), pixels=n, stats=stats, shifts=(0,) * len(stats)) for img in values]
        ).astype(object)
        shifts = tuple(
            0 if s == "m1" else max(0, int(max(abs(int(v)) for v in raw[:, j].reshape(-1))).bit_length() - 10)
            for j, s in enumerate(stats)
        )
        _, std = self._channel_stats(x)
        log_n = (n - 1).bit_length()
        if mode == "th":
            out_shift = log_n + 2
            beta = self.rng.integers(-2, 3, size=(c, len(stats)))
            if "m1" in stats:
                beta[:, stats.index("m1")] = round(2**out_shift / n)
            alpha = np.round(self.rng.uniform(-0.3, 0.3, size=c) * std * 2**out_shift).astype(np.int64)
            node = ir.InstaThreshold(
                name=name,
                inputs=(x,),
                mode="th",
                stats=stats,
                shifts=shifts,
                alpha=alpha,
                beta=beta,
                out_shift=out_shift,
                emit_stats=emit_stats,
            )
            return self.add(node)
        # th+: hidden units +-F_m1 per channel (an identity through ReLU), plus two random ones
        ns = len(stats)
        j = stats.index("m1")
        hidden = 2 * c + 2
        w1 = np.zeros((hidden, ns * c), dtype=np.int64)
        for ch in range(c):
            w1[2 * ch, j * c + ch] = 1
            w1[2 * ch + 1, j * c + ch] = -1
        w1[2 * c :] = self.rng.integers(-1, 2, size=(2, ns * c))
        b1 = np.zeros(hidden, dtype=np.int64)
        peak = n * 128
        hidden_shift = max(0, peak.bit_length() - 9)
        out_shift = 4
        k = max(1, round(2 ** (hidden_shift + out_shift) / n))
        w2 = np.zeros((c, hidden), dtype=np.int64)
        for ch in range(c):
            w2[ch, 2 * ch], w2[ch, 2 * ch + 1] = k, -k
        w2[:, 2 * c :] = self.rng.integers(-1, 2, size=(c, 2))
        alpha = np.round(self.rng.uniform(-0.3, 0.3, size=c) * std * 2**out_shift).astype(np.int64)
        node = ir.InstaThreshold(
            name=name,
            inputs=(x,),
            mode="th+",
            stats=stats,
            shifts=shifts,
            alpha=alpha,
            out_shift=out_shift,
            w1=w1,
            b1=b1,
            hidden_shift=hidden_shift,
            hidden_max=(1 << 9) - 1,
            w2=w2,
            emit_stats=emit_stats,
        )
        return self.add(node)

    def _prelu_constants(self, x: str, *, spread: float, slope_shift: int):
        _, std = self._channel_stats(x)
        c = len(std)
        gamma = self._median(x)
        slope = self.rng.integers(1, 9, size=c)
        out_shift = max(0, slope_shift + round(float(np.log2(np.median(std) / spread))))
        zeta = np.round(self.rng.uniform(-spread / 4, spread / 4, size=c) * 2**out_shift).astype(np.int64)
        return gamma, slope, zeta, out_shift

    def rprelu(self, x: str, name: str, *, low=-128, high=127, spread=40.0, slope_shift=4):
        gamma, slope, zeta, out_shift = self._prelu_constants(x, spread=spread, slope_shift=slope_shift)
        node = ir.RPReLU(
            name=name,
            inputs=(x,),
            gamma=gamma,
            slope=slope,
            zeta=zeta,
            slope_shift=slope_shift,
            out_shift=out_shift,
            low=low,
            high=high,
        )
        return self.add(node)

    def insta_prelu(self, x: str, source: str, name: str, *, low=-128, high=127, spread=40.0, slope_shift=4):
        gamma, slope, zeta, out_shift = self._prelu_constants(x, spread=spread, slope_shift=slope_shift)
        src = self.nodes[[n.name for n in self.nodes].index(source)]
        features = self.trace.features[source].astype(object)  # (images, stats, C_s)
        flat = features.reshape(features.shape[0], -1)
        hidden = 4
        w1 = self.rng.integers(-2, 3, size=(hidden, flat.shape[1]))
        pre = np.array([[int(v) for v in row] for row in flat.dot(w1.T.astype(object))], dtype=object)
        b1 = np.array([-int(np.median([int(v) for v in pre[:, h]])) for h in range(hidden)], dtype=np.int64)
        peak = max(1, max(abs(int(v)) for v in (pre + b1.astype(object)).reshape(-1)))
        hidden_shift = max(0, peak.bit_length() - 4)
        w2 = self.rng.integers(-3, 4, size=(len(gamma), hidden))
        _, std = self._channel_stats(x)
        delta_peak = 15 * 3 * hidden
        delta_shift = max(0, delta_peak.bit_length() - max(1, int(0.3 * float(np.median(std))).bit_length()))
        node = ir.InstaPReLU(
            name=name,
            inputs=(x, source),
            gamma=gamma,
            slope=slope,
            zeta=zeta,
            slope_shift=slope_shift,
            out_shift=out_shift,
            low=low,
            high=high,
            stats=src.stats,
            w1=w1,
            b1=b1,
            hidden_shift=hidden_shift,
            hidden_max=15,
            w2=w2,
            delta_shift=delta_shift,
        )
        return self.add(node)


def _binarise(b: GraphBuilder, x: str, name: str, insta: str, *, emit_stats: bool = False) -> str:
    if insta == "rsign":
        return b.threshold(x, name)
    return b.insta_threshold(x, name, mode=insta, emit_stats=emit_stats)


def tiny_resnet(seed: int = 0, *, insta: str = "rsign", prelu: str = "rprelu", downsample: bool = True) -> ir.Graph:
    """PixelInput 1x8x8 -> IntConv stem 3x3 pad 1 (8 channels) -> Requantise int8 -> a basic block
    (threshold -> XnorConv 3x3 -> Requantise -> Add with the identity, shifts (0, 4) -> RPReLU or
    InstaPReLU) -> optionally a downsampling block to 16 x 4 x 4 (XnorConv stride 2; shortcut SumPool
    2x2 -> IntConv 1x1 -> Requantise; Add shifts (1, 0)) -> GlobalSumPool -> IntConv 1x1 (10 classes) -> Argmax.

    ``insta``: ``"rsign"`` (static Threshold), ``"th"`` or ``"th+"`` (InstaThreshold);
    ``prelu``: ``"rprelu"`` or ``"insta"`` (InstaPReLU, needs an InstaThreshold).
    """
    if insta not in ("rsign", "th", "th+") or prelu not in ("rprelu", "insta"):
        raise ValueError(f"insta must be rsign, th or th+ and prelu rprelu or insta, not {insta!r}, {prelu!r}")
    if prelu == "insta" and insta == "rsign":
        raise ValueError("prelu='insta' needs an InstaThreshold (insta 'th' or 'th+')")
    b = GraphBuilder(f"tiny_resnet_{insta}_{prelu}", seed, (1, 8, 8))
    x = b.int_conv(b.input, "stem.conv", 8, kernel=3, padding=1, wmax=3)
    x = b.requantise(x, "stem.bn")

    def block(x: str, prefix: str, *, c_out: int, stride: int) -> str:
        sign = _binarise(b, x, f"{prefix}.sign", insta, emit_stats=prelu == "insta")
        y = b.xnor_conv(sign, f"{prefix}.conv", c_out, kernel=3, stride=stride, padding=1)
        y = b.requantise(y, f"{prefix}.bn")
        if stride == 1:
            s = x
            shifts = (0, 4)
        else:
            s = b.add(ir.SumPool(name=f"{prefix}.pool", inputs=(x,), kernel=2, stride=2))
            s = b.int_conv(s, f"{prefix}.down", c_out, kernel=1, wmax=2)
            s = b.requantise(s, f"{prefix}.down_bn")
            shifts = (1, 0)
        y = b.add(ir.Add(name=f"{prefix}.add", inputs=(y, s), shifts=shifts))
        if prelu == "insta":
            return b.insta_prelu(y, sign, f"{prefix}.act")
        return b.rprelu(y, f"{prefix}.act")

    x = block(x, "layer1", c_out=8, stride=1)
    if downsample:
        x = block(x, "layer2", c_out=16, stride=2)
    x = b.add(ir.GlobalSumPool(name="pool", inputs=(x,)))
    x = b.int_conv(x, "fc", 10, kernel=1, wmax=3)
    b.add(ir.Argmax(name="argmax", inputs=(x,)))
    return b.graph()


def tiny_cnv(seed: int = 0) -> ir.Graph:
    """PixelInput 3x12x12 -> IntConv 3x3 (+-1 weights, unpadded, 8 ch) -> Threshold (some flipped) ->
    XnorConv 3x3 -> Threshold -> MaxPool 2x2 on bits -> XnorConv FC (kernel 4 = H) -> Threshold ->
    XnorConv 1x1 (10 classes) -> Argmax."""
    b = GraphBuilder("tiny_cnv", seed, (3, 12, 12))
    x = b.int_conv(b.input, "conv0", 8, kernel=3, wmax=1)
    x = b.threshold(x, "sign0", flip_probability=0.3)
    x = b.xnor_conv(x, "conv1", 8, kernel=3)
    x = b.threshold(x, "sign1")
    x = b.add(ir.MaxPool(name="pool1", inputs=(x,), kernel=2, stride=2))
    x = b.xnor_conv(x, "fc0", 16, kernel=4)
    x = b.threshold(x, "sign2")
    x = b.xnor_conv(x, "fc1", 10, kernel=1)
    b.add(ir.Argmax(name="argmax", inputs=(x,)))
    return b.graph()


def pool_shortcut_block(seed: int = 0, *, channels: int = 16) -> ir.Graph:
    """One reduction block fed by a 1x1 stem: PixelInput 3x8x8 -> IntConv 1x1 (``channels``) ->
    Requantise -> Threshold -> XnorConv 3x3 stride 2 pad 1; shortcut SumPool 2x2 stride 2; Add
    (2, 0) -> RPReLU -> GlobalSumPool -> IntConv 1x1 (4 classes) -> Argmax. With the block's
    conv at PE 1 it is the slowest stage and the pool's shortcut words arrive in bursts."""
    b = GraphBuilder("pool_shortcut_block", seed, (3, 8, 8))
    x = b.int_conv(b.input, "stem.conv", channels, kernel=1, wmax=2)
    x = b.requantise(x, "stem.bn")
    s = b.threshold(x, "b1.sign")
    y = b.xnor_conv(s, "b1.conv", channels, kernel=3, stride=2, padding=1)
    y = b.requantise(y, "b1.bn")
    p = b.add(ir.SumPool(name="b1.pool", inputs=(x,), kernel=2, stride=2))
    y = b.add(ir.Add(name="b1.add", inputs=(y, p), shifts=(2, 0)))
    x = b.rprelu(y, "b1.act")
    x = b.add(ir.GlobalSumPool(name="pool", inputs=(x,)))
    x = b.int_conv(x, "fc", 4, kernel=1)
    b.add(ir.Argmax(name="argmax", inputs=(x,)))
    return b.graph()


def tiny_mobilenet(seed: int = 0) -> ir.Graph:
    """ReActNet-A in miniature: PixelInput 3x8x8 -> IntConv 3x3 pad 1 (6 ch) -> Requantise ->
    MaxPool 3x3 pad 1 on int8 -> a reduction block (Threshold -> XnorConv 3x3 stride 2; shortcut
    SumPool 2x2 stride 2; Add (2, 0) -> RPReLU) -> a doubling block (Threshold -> XnorConv 1x1 to 12
    ch; shortcut Repeat x2; Add -> RPReLU) -> GlobalSumPool -> IntConv 1x1 (4 classes) -> Argmax."""
    b = GraphBuilder("tiny_mobilenet", seed, (3, 8, 8))
    x = b.int_conv(b.input, "stem.conv", 6, kernel=3, padding=1, wmax=2)
    x = b.requantise(x, "stem.bn")
    x = b.add(ir.MaxPool(name="stem.pool", inputs=(x,), kernel=3, stride=1, padding=1))
    # reduction block
    s = b.threshold(x, "b1.sign")
    y = b.xnor_conv(s, "b1.conv", 6, kernel=3, stride=2, padding=1)
    y = b.requantise(y, "b1.bn")
    p = b.add(ir.SumPool(name="b1.pool", inputs=(x,), kernel=2, stride=2))
    y = b.add(ir.Add(name="b1.add", inputs=(y, p), shifts=(2, 0)))
    x = b.rprelu(y, "b1.act")
    # doubling block
    s = b.threshold(x, "b2.sign")
    y = b.xnor_conv(s, "b2.conv", 12, kernel=1)
    y = b.requantise(y, "b2.bn")
    r = b.add(ir.Repeat(name="b2.repeat", inputs=(x,), times=2))
    y = b.add(ir.Add(name="b2.add", inputs=(y, r), shifts=(0, 0)))
    x = b.rprelu(y, "b2.act")
    x = b.add(ir.GlobalSumPool(name="pool", inputs=(x,)))
    x = b.int_conv(x, "fc", 4, kernel=1, wmax=3)
    b.add(ir.Argmax(name="argmax", inputs=(x,)))
    return b.graph()


def activation_summary(graph: ir.Graph, pixels) -> dict[str, tuple[float, float]]:
    """Per node with a multi-bit output: ``(fraction of its range spanned, fraction saturated)``;
    per binary node: ``(fraction of ones, 0)``. Runs the reference with ``keep=True``."""
    trace = reference.run(graph, pixels, keep=True)
    summary = {}
    for node in graph.nodes[1:-1]:
        t = graph.types[node.name]
        v = trace.tensors[node.name]
        if t.binary:
            summary[node.name] = (float(v.mean()), 0.0)
        else:
            span = (int(v.max()) - int(v.min())) / max(1, t.high - t.low)
            saturated = float(np.mean((v == t.low) | (v == t.high)))
            summary[node.name] = (span, saturated)
    return summary


def _largest_divisor(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def standin_plan(graph: ir.Graph, folding: dict[str, tuple[int, int]] | None = None, *, parallel: int = 1):
    """A plan with the planner's fields, for emitter tests: MVU folding (default: PE the largest
    divisor of C_out up to 4, SIMD of C_in up to 8), widths by the rules, ``parallel`` for every INSTA
    unit, and a FIFO on every fork branch (a frame of words plus 32) and every statistics edge (2C)."""
    from instabnn_hw.codegen.plan import Fold, Plan
    from instabnn_hw.codegen.stages import data_consumers, mvu_nodes, stage_widths

    folding = dict(folding or {})
    for name in mvu_nodes(graph):
        if name not in folding:
            node = graph.node(name)
            c_in = graph.types[node.inputs[0]].channels
            folding[name] = (_largest_divisor(node.out_channels, 4), _largest_divisor(c_in, 8))
    widths = stage_widths(graph, folding)
    depths = {}
    for node in graph.nodes:
        t = graph.types[node.name]
        readers = data_consumers(graph, node.name)
        if len(readers) > 1:
            for consumer, _ in readers:
                depths[(node.name, consumer.name)] = t.elements // widths[node.name] + 32
        for consumer in graph.consumers(node.name):
            if isinstance(consumer, ir.InstaPReLU) and consumer.inputs[1] == node.name:
                depths[(node.name, consumer.name)] = 2 * t.channels
    folds = {n.name: Fold(widths[n.name], widths[n.name]) for n in graph.nodes}
    for name, (pe, simd) in folding.items():
        folds[name] = Fold(pe, simd)
    insta = {n.name: parallel for n in graph.nodes if isinstance(n, (ir.InstaThreshold, ir.InstaPReLU))}
    return Plan(folding=folds, widths=widths, parallel=insta, fifo_depths=depths)
