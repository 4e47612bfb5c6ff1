"""The squeeze-and-excitation MLP of the INSTA units (:func:`~.insta.se_mlp`) on shared multipliers.

:class:`SeMlpParameters` sizes it (widths, cycles, memory bits) from its constants;
:class:`SeMlp` is the hardware, which an INSTA-Th+ :class:`~.moments.MomentsThreshold` and an
:class:`~.insta_prelu.InstaPReLU` build from their parameters.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
from amaranth.hdl import Cat, Elaboratable, Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data

from ._checks import check_int, check_int_array
from .banks import constant_memory, counter, ram_ports
from .delay import delayed
from .fixed import bounds, hdl_round_shift
from .insta import MAX_SHIFT
from .intervals import array_bounds, prefix_bounds, shape_of
from .multiplier import MUL_LATENCY, registered_product, registered_product_blocks

__all__ = ["PRODUCT_LATENCY", "SeMlp", "SeMlpParameters"]

#: Cycles from a weight read's data to its product: the operands are registered beside the
#: multipliers (a weight memory's clock-to-output and the route to a DSP block would not share a
#: cycle), then :data:`~.multiplier.MUL_LATENCY`.
PRODUCT_LATENCY = 1 + MUL_LATENCY


def _check_constants(owner: str, *, w1, b1, hidden_shift, hidden_max, w2, inputs: int, outputs: int) -> dict:
    """The validated constants of an SE branch with ``inputs`` features and ``outputs`` outputs."""
    if w1 is None or b1 is None or w2 is None or hidden_shift is None or hidden_max is None:
        raise TypeError(f"{owner} needs w1, b1, hidden_shift, hidden_max and w2")
    w1 = check_int_array("w1", w1)
    if w1.ndim != 2 or w1.shape[0] < 1 or w1.shape[1] != inputs:
        raise ValueError(f"w1 must have shape (hidden, {inputs}) with hidden >= 1, not {w1.shape}")
    hidden = w1.shape[0]
    return {
        "w1": w1,
        "b1": check_int_array("b1", b1, shape=(hidden,)),
        "hidden_shift": check_int("hidden_shift", hidden_shift, low=0, high=MAX_SHIFT),
        "hidden_max": check_int("hidden_max", hidden_max, low=1, high=(1 << 32) - 1),
        "w2": check_int_array("w2", w2, shape=(outputs, hidden)),
    }


def _memory_bits(depth: int, shape) -> int:
    return depth * Shape.cast(shape).width


class SeMlpParameters:
    """The validated constants of an :class:`SeMlp` and its sizes, widths and cycle count.

    Parameters
    ----------
    owner : str
        What the MLP belongs to, for the error that names missing constants.
    outputs : int
        Rows of FC2 (``w2``).
    stats_channels : int
        Channels whose features feed the MLP.
    n_stats : int
        Features per channel (statistics).
    feature_shape : shape
        Element shape of a feature.
    feature_bounds : sequence of (int, int)
        ``(low, high)`` of each statistic's features.
    w1, b1, hidden_shift, hidden_max, w2 : arrays and ints
        The constants of :func:`~.insta.se_mlp`: ``w1`` is ``(hidden, n_stats * stats_channels)``,
        ``w2`` is ``(outputs, hidden)``.
    parallel : int
        Multiply-accumulates per cycle, 1 to ``hidden``.
    """

    def __init__(
        self,
        *,
        owner: str,
        stats_channels: int,
        n_stats: int,
        outputs: int,
        feature_shape,
        feature_bounds,
        w1,
        b1,
        hidden_shift: int | None,
        hidden_max: int | None,
        w2,
        parallel: int,
    ) -> None:
        self._stats_channels, self._n_stats = stats_channels, n_stats
        self._features = n_stats * stats_channels
        self._constants = _check_constants(
            owner,
            w1=w1,
            b1=b1,
            hidden_shift=hidden_shift,
            hidden_max=hidden_max,
            w2=w2,
            inputs=self._features,
            outputs=outputs,
        )
        w1, b1, w2 = self._constants["w1"], self._constants["b1"], self._constants["w2"]
        hidden_shift, hidden_max = self._constants["hidden_shift"], self._constants["hidden_max"]
        hidden = w1.shape[0]
        self._parallel = check_int("parallel", parallel, high=hidden)
        self._chunks = -(-hidden // self._parallel)
        padded = self._chunks * self._parallel
        self._outputs = w2.shape[0]
        self._hidden_shift, self._hidden_max = hidden_shift, hidden_max
        # weights padded with zero hidden units to whole chunks of ``parallel``
        self._w1 = np.zeros((padded, self._features), dtype=np.int64)
        self._w1[:hidden] = w1
        self._b1 = np.zeros(padded, dtype=np.int64)
        self._b1[:hidden] = b1
        self._w2 = np.zeros((self._outputs, padded), dtype=np.int64)
        self._w2[:, :hidden] = w2
        self._feature_shape = feature_shape
        self._feature_bounds = list(feature_bounds)
        self._w1_shape = shape_of(array_bounds(self._w1))
        self._b1_shape = shape_of(array_bounds(self._b1))
        self._h_shape = unsigned(hidden_max.bit_length())
        self._w2_shape = shape_of(array_bounds(self._w2))
        self._out_bounds = [
            prefix_bounds([min(0, int(w) * hidden_max) for w in row], [max(0, int(w) * hidden_max) for w in row])
            for row in self._w2
        ]
        self._out_shape = shape_of(*self._out_bounds)

    @property
    def constants(self) -> dict:
        """``w1``, ``b1``, ``hidden_shift``, ``hidden_max`` and ``w2`` as given (validated, not
        padded): the keywords of :func:`~.insta.se_mlp` and the models that call it."""
        return dict(self._constants)

    @property
    def stats_channels(self) -> int:
        return self._stats_channels

    @property
    def n_stats(self) -> int:
        return self._n_stats

    @property
    def features(self) -> int:
        """Inputs of FC1: ``n_stats * stats_channels`` (index ``j * stats_channels + c``)."""
        return self._features

    @property
    def parallel(self) -> int:
        return self._parallel

    @property
    def chunks(self) -> int:
        """Passes of FC1 over the features: ``ceil(hidden / parallel)``."""
        return self._chunks

    @property
    def outputs(self) -> int:
        """Rows of FC2."""
        return self._outputs

    @property
    def hidden_shift(self) -> int:
        return self._hidden_shift

    @property
    def hidden_max(self) -> int:
        return self._hidden_max

    @property
    def w1(self) -> np.ndarray:
        """FC1 weights, ``(chunks * parallel, features)``: ``w1`` with zero rows to whole chunks."""
        return self._w1

    @property
    def b1(self) -> np.ndarray:
        """FC1 biases, ``chunks * parallel`` (zeros after ``hidden``)."""
        return self._b1

    @property
    def w2(self) -> np.ndarray:
        """FC2 weights, ``(outputs, chunks * parallel)`` (zero columns after ``hidden``)."""
        return self._w2

    @property
    def feature_shape(self) -> Shape:
        return self._feature_shape

    @property
    def w1_shape(self) -> Shape:
        return self._w1_shape

    @property
    def b1_shape(self) -> Shape:
        return self._b1_shape

    @property
    def h_shape(self) -> Shape:
        """Shape of a hidden activation, ``0 .. hidden_max``."""
        return self._h_shape

    @property
    def w2_shape(self) -> Shape:
        return self._w2_shape

    @property
    def out_bounds(self) -> list[tuple[int, int]]:
        """``(low, high)`` of each output (and of its partial sums)."""
        return list(self._out_bounds)

    @property
    def out_shape(self) -> Shape:
        """Shape of an output (covers every row's :attr:`out_bounds`)."""
        return self._out_shape

    @cached_property
    def acc1_shape(self) -> Shape:
        """Shape of an FC1 accumulator: the partial sums of every row (``b1`` is added after the last feature)."""
        f_bounds = [self._feature_bounds[i // self._stats_channels] for i in range(self._features)]
        acc1 = [
            prefix_bounds(
                [min(int(w) * b[0], int(w) * b[1]) for w, b in zip(row, f_bounds, strict=True)],
                [max(int(w) * b[0], int(w) * b[1]) for w, b in zip(row, f_bounds, strict=True)],
            )
            for row in self._w1
        ]
        return shape_of(*acc1)

    @property
    def cycles(self) -> int:
        """Cycles from the ``start`` cycle to the last output: FC1, the wait for its last hidden
        units (the products' :data:`PRODUCT_LATENCY` and 4: the read, the sum with the bias,
        the rounded shift, the clamp), FC2, its last product."""
        return self._chunks * self._features + self._outputs * self._chunks + 5 + 2 * PRODUCT_LATENCY

    @property
    def operand_shapes(self) -> tuple[Shape, Shape]:
        """The shared multipliers' operands: a weight of FC1 or FC2, a feature or a hidden unit."""
        return (
            shape_of(bounds(self.w1_shape), bounds(self.w2_shape)),
            shape_of(bounds(self.feature_shape), (0, self.hidden_max)),
        )

    @property
    def multipliers(self) -> int:
        """MULT18X18D blocks of the ``parallel`` shared multipliers (:func:`~.multiplier.registered_product_blocks`)."""
        return self._parallel * registered_product_blocks(*self.operand_shapes)

    def lut_features(self) -> tuple[float, float]:
        """The MLP's share of its owner's LUT features: one for being there, and the bits of its
        datapath (per shared multiplier its operands' multiplexers, its FC1 accumulator and
        hidden-unit steps; the hidden units held and picked by chunk; FC2's accumulator)."""
        a, b = self.operand_shapes
        lane = a.width + b.width + self.acc1_shape.width + self._h_shape.width
        held = self._chunks * self._h_shape.width
        return (1.0, float(self._parallel * (lane + held) + self._out_shape.width))

    @property
    def memory_bits(self) -> int:
        """Bits of the feature memory and the weight ROMs."""
        return (
            _memory_bits(self._stats_channels, data.ArrayLayout(self._feature_shape, self._n_stats))
            + _memory_bits(self._chunks * self._features, data.ArrayLayout(self._w1_shape, self._parallel))
            + _memory_bits(self._chunks, data.ArrayLayout(self._b1_shape, self._parallel))
            + _memory_bits(self._outputs * self._chunks, data.ArrayLayout(self._w2_shape, self._parallel))
        )


class SeMlp(Elaboratable):
    """The squeeze-and-excitation MLP (:func:`~.insta.se_mlp`) on ``parallel`` shared multipliers.

    Holds the feature memory (``stats_channels`` words of ``len(stats)`` features, written
    through ``feat_w_*``), the weight ROMs and the hidden registers. A ``start`` pulse (when
    idle, features complete) runs FC1 (``parallel`` hidden units per pass over the ``nf``
    features, one feature per cycle), then FC2 (one output row at a time, ``parallel`` hidden
    units per cycle) and emits each output ``o = 0 .. outputs-1`` as a one-cycle pulse of
    ``out_valid`` with ``out_index``, ``out_value`` and ``out_last``. The last output is seen
    ``cycles`` cycles after the ``start`` cycle.

    Parameters
    ----------
    plan : SeMlpParameters
        Its constants, widths and sizes.
    external_modules : bool
        Make the feature memory a :class:`~.ram.Ram` instance of the Verilog module (the weight
        ROMs stay inline).
    """

    def __init__(self, plan: SeMlpParameters, *, external_modules: bool = False):
        self.plan = plan
        self.external_modules = external_modules
        self.start = Signal()
        self.feat_w_addr = counter(plan.stats_channels)
        self.feat_w_data = Signal(data.ArrayLayout(plan.feature_shape, plan.n_stats))
        self.feat_w_en = Signal()
        self.out_valid = Signal()
        self.out_last = Signal()
        self.out_index = counter(plan.outputs)
        self.out_value = Signal(plan.out_shape)

    def elaborate(self, platform):
        m = Module()
        plan = self.plan
        cs, ns, nf, nc, par, nout = (
            plan.stats_channels,
            plan.n_stats,
            plan.features,
            plan.chunks,
            plan.parallel,
            plan.outputs,
        )
        fw, (fr,) = ram_ports(
            m, "features", data.ArrayLayout(plan.feature_shape, ns), cs, external_modules=self.external_modules
        )
        m.d.comb += [fw.addr.eq(self.feat_w_addr), fw.data.eq(self.feat_w_data), fw.en.eq(self.feat_w_en)]
        # w1 in FC1 order: chunk q, then feature i = j*C + c; lane p is hidden unit q*P + p
        w1_words = [[int(plan.w1[q * par + p, i]) for p in range(par)] for q in range(nc) for i in range(nf)]
        m.submodules.w1 = w1_rom = constant_memory(nc * nf, data.ArrayLayout(plan.w1_shape, par), w1_words)
        b1_words = [[int(plan.b1[q * par + p]) for p in range(par)] for q in range(nc)]
        m.submodules.b1 = b1_rom = constant_memory(nc, data.ArrayLayout(plan.b1_shape, par), b1_words)
        w2_words = [[int(plan.w2[o, q * par + p]) for p in range(par)] for o in range(nout) for q in range(nc)]
        m.submodules.w2 = w2_rom = constant_memory(nout * nc, data.ArrayLayout(plan.w2_shape, par), w2_words)
        w1r, b1r, w2r = w1_rom.read_port(), b1_rom.read_port(), w2_rom.read_port()
        h = [Signal(plan.h_shape, name=f"h{k}") for k in range(nc * par)]

        # stage 0: address counters
        q, j, c, o = counter(nc, name="q"), counter(ns, name="j"), counter(cs, name="c"), counter(nout, name="o")
        k1, k2 = counter(nc * nf, name="k1"), counter(nout * nc, name="k2")
        m.d.comb += [fr.addr.eq(c), w1r.addr.eq(k1), w2r.addr.eq(k2)]
        # stage 1 (multiply-accumulate) and stage 2 (FC1 post-processing) registers
        v1_fc1, v1_fc2 = Signal(name="v1_fc1"), Signal(name="v1_fc2")
        first1, last1 = Signal(name="first1"), Signal(name="last1")
        j1, q1, o1 = counter(ns, name="j1"), counter(nc, name="q1"), counter(nout, name="o1")
        v2, q2 = Signal(name="v2"), counter(nc, name="q2")
        v3, q3 = Signal(name="v3"), counter(nc, name="q3")
        v4, q4 = Signal(name="v4"), counter(nc, name="q4")
        drain = Signal(range(PRODUCT_LATENCY + 3), name="drain")
        m.d.sync += [v1_fc1.eq(0), v1_fc2.eq(0), v2.eq(0), v3.eq(0), v4.eq(0)]
        m.d.sync += [self.out_valid.eq(0), self.out_last.eq(0)]

        with m.FSM(name="mlp"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [q.eq(0), j.eq(0), c.eq(0), k1.eq(0), k2.eq(0), o.eq(0)]
                    m.next = "FC1"
            with m.State("FC1"):
                end_c = c == cs - 1
                end_j = end_c & (j == ns - 1)
                m.d.sync += [v1_fc1.eq(1), first1.eq((c == 0) & (j == 0)), last1.eq(end_j), j1.eq(j), q1.eq(q)]
                m.d.sync += [c.eq(Mux(end_c, 0, c + 1)), k1.eq(Mux(k1 == nc * nf - 1, 0, k1 + 1))]
                with m.If(end_c):
                    m.d.sync += j.eq(Mux(end_j, 0, j + 1))
                with m.If(end_j):
                    m.d.sync += q.eq(Mux(q == nc - 1, 0, q + 1))
                    with m.If(q == nc - 1):
                        m.next = "DRAIN"
            with m.State("DRAIN"):  # until the last chunk's hidden units are written
                with m.If(drain == PRODUCT_LATENCY + 2):
                    m.d.sync += drain.eq(0)
                    m.next = "FC2"
                with m.Else():
                    m.d.sync += drain.eq(drain + 1)
            with m.State("FC2"):
                end_q = q == nc - 1
                m.d.sync += [v1_fc2.eq(1), first1.eq(q == 0), last1.eq(end_q), q1.eq(q), o1.eq(o)]
                m.d.sync += k2.eq(Mux(k2 == nout * nc - 1, 0, k2 + 1))
                m.d.sync += q.eq(Mux(end_q, 0, q + 1))
                with m.If(end_q):
                    m.d.sync += o.eq(Mux(o == nout - 1, 0, o + 1))
                    with m.If(o == nout - 1):
                        m.next = "IDLE"

        # the shared multipliers: FC1 (w1 x feature) or FC2 (w2 x hidden)
        f_sel = fr.data[j1]
        width = plan.h_shape.width
        chunk = Cat(*h).word_select(q1, par * width)
        h_sel = [chunk[p * width : (p + 1) * width] for p in range(par)]
        a_shape, b_shape = plan.operand_shapes
        prods = []
        for p in range(par):
            a, b = Signal(a_shape, name=f"mul_a{p}"), Signal(b_shape, name=f"mul_b{p}")
            m.d.sync += [a.eq(Mux(v1_fc2, w2r.data[p], w1r.data[p])), b.eq(Mux(v1_fc2, h_sel[p], f_sel))]
            prods.append(
                registered_product(m, a, b, latency=MUL_LATENCY, external_modules=self.external_modules, name=f"mul{p}")
            )
        # what the accumulators need of each product's cycle, delayed as long as the product
        tags = {"fc1": v1_fc1, "fc2": v1_fc2, "first": first1, "last": last1, "q": q1, "o": o1}
        tags = {name: delayed(m, tag, PRODUCT_LATENCY, name=f"{name}_d") for name, tag in tags.items()}
        fc1, fc2, first, last, q_p, o_p = (tags[name] for name in ("fc1", "fc2", "first", "last", "q", "o"))

        acc1 = [Signal(plan.acc1_shape, name=f"acc1_{p}") for p in range(par)]
        acc2 = Signal(plan.out_shape)
        with m.If(fc1):
            m.d.sync += [acc1[p].eq(Mux(first, 0, acc1[p]) + prods[p]) for p in range(par)]
            m.d.sync += [v2.eq(last), q2.eq(q_p)]
        m.d.comb += b1r.addr.eq(q_p)
        # a hidden unit in three steps, one carry chain each: the sum with its bias, the rounded
        # shift of its positive part, the clamp
        pre = [Signal((acc1[p] + b1r.data[p]).shape(), name=f"pre{p}") for p in range(par)]
        with m.If(v2):
            m.d.sync += [pre[p].eq(acc1[p] + b1r.data[p]) for p in range(par)]
            m.d.sync += [v3.eq(1), q3.eq(q2)]
        shifted = [hdl_round_shift(Mux(pre[p] < 0, 0, pre[p]), plan.hidden_shift) for p in range(par)]
        hid = [Signal(shifted[p].shape(), name=f"hid{p}") for p in range(par)]
        with m.If(v3):
            m.d.sync += [hid[p].eq(shifted[p]) for p in range(par)]
            m.d.sync += [v4.eq(1), q4.eq(q3)]
        with m.If(v4):
            with m.Switch(q4):
                for qq in range(nc):
                    with m.Case(qq):
                        for p in range(par):
                            m.d.sync += h[qq * par + p].eq(Mux(hid[p] > plan.hidden_max, plan.hidden_max, hid[p]))
        total = Mux(first, 0, acc2) + sum(prods[1:], prods[0])
        with m.If(fc2):
            m.d.sync += acc2.eq(total)
            with m.If(last):
                m.d.sync += [
                    self.out_valid.eq(1),
                    self.out_index.eq(o_p),
                    self.out_value.eq(total),
                    self.out_last.eq(o_p == nout - 1),
                ]
        return m
