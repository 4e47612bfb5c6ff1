"""Integer matrix-vector unit (first layer, classifier) and the classifier's argmax.

:class:`IntMatrixVector` multiplies streamed integer vectors by a constant integer matrix, folded
like FINN's MVAU: ``pe`` output channels times ``simd`` input elements per cycle, one hardware
multiplier per lane (at most 18 x 18 bits, one ECP5 ``MULT18X18D``). :class:`Argmax` picks the
class of a stream of logits.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Const, Module, Mux, Shape, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ._checks import check_divides, check_int, check_int_array, check_shape
from .delay import delayed
from .figures import Figures, Parameters, bram_mux, rom_luts
from .fixed import bounds, hdl_fit, hdl_greater, int_array, product_range, shape_for
from .layouts import channel_word
from .multiplier import MUL_LATENCY, registered_product, registered_product_blocks
from .mvu import MatrixVectorParameters, MatrixVectorUnit
from .ram import Ram
from .rom import Rom

__all__ = [
    "Argmax",
    "ArgmaxParameters",
    "IntMatrixVector",
    "IntMatrixVectorParameters",
    "argmax",
    "int_matvec",
    "int_matvec_bounds",
]

#: Widest weight and input element: one ECP5 MULT18X18D per product.
MAX_OPERAND_BITS = 18

#: Adder-tree levels between two pipeline registers.
TREE_LEVELS_PER_STAGE = 1


def _magnitude(array) -> int:
    """The largest ``|element|`` of ``array``, at least 1."""
    return max(1, abs(int(array.min())), abs(int(array.max()))) if array.size else 1


def int_matvec(weights, vectors) -> np.ndarray:
    """Numpy model of :class:`IntMatrixVector`: ``vectors @ weights.T``, exact.

    ``weights`` is ``rows x cols``, ``vectors`` ``(n, cols)`` (or ``(cols,)``); the result is
    ``(n, rows)`` int64, or Python ints (object array) when the bound ``cols * max|w| * max|x|``
    does not fit comfortably in int64.
    """
    weights, vectors = np.asarray(weights), np.asarray(vectors)
    bound = _magnitude(weights) * _magnitude(vectors) * weights.shape[-1]
    w, v = int_array(weights, -bound, bound), int_array(vectors, -bound, bound)
    return v @ w.T if w.dtype != object else np.dot(v, w.T)


def int_matvec_bounds(weights, in_shape) -> tuple[int, int]:
    """The exact range of ``int_matvec(weights, x)`` over every vector ``x`` of ``in_shape`` elements.

    Per row the extremes pick, per column, the input extreme that maximises (minimises)
    ``w * x``; the range is the smallest row minimum and the largest row maximum. Partial sums
    over any subset of columns lie in it too (every term's range contains 0).
    """
    weights = np.asarray(weights)
    low, high = bounds(Shape.cast(in_shape))
    largest = _magnitude(weights) * max(1, -low, high) * max(1, weights.shape[1])
    # int64 is exact (and fast on a classifier's matrix) while no product or row sum can reach 2**63
    weights = weights.astype(np.int64 if largest < 1 << 63 else object)
    a, b = weights * low, weights * high
    lows = np.minimum(a, b).sum(axis=1)
    highs = np.maximum(a, b).sum(axis=1)
    return int(min(lows)), int(max(highs))


class IntMatrixVectorParameters(MatrixVectorParameters):
    """The parameters of an :class:`IntMatrixVector` and the figures derived from them.

    Cheap for any matrix: the weights are checked and bounded, not packed (:meth:`weight_words`
    packs them).
    """

    lut_kind = "int_mvu"

    def __init__(self, *, weights, pe: int, simd: int, in_shape, masked: bool = False) -> None:
        weights = check_int_array("weights", weights)
        if weights.ndim != 2 or weights.size == 0:
            raise ValueError(f"weights must be a non-empty 2-D array, not one of shape {weights.shape}")
        self._check_folding(weights, pe=pe, simd=simd, masked=masked)
        self._in_shape = check_shape("in_shape", in_shape, max_width=MAX_OPERAND_BITS)
        self._weight_shape = shape_for(int(self._weights.min()), int(self._weights.max()))
        if self._weight_shape.width > MAX_OPERAND_BITS:
            raise ValueError(
                f"weights must fit {MAX_OPERAND_BITS} bits (one MULT18X18D per product), "
                f"but range over [{self._weights.min()}, {self._weights.max()}] ({self._weight_shape})"
            )
        self._acc_bounds = int_matvec_bounds(self._weights, self._in_shape)
        self._acc_shape = shape_for(*self._acc_bounds)

    @property
    def weight_shape(self) -> Shape:
        """Shape of one stored weight."""
        return self._weight_shape

    @property
    def tree_stages(self) -> int:
        """Pipeline registers in the adder tree: ``ceil(ceil(log2(simd)) / TREE_LEVELS_PER_STAGE)``."""
        levels = (self._simd - 1).bit_length()
        return -(-levels // TREE_LEVELS_PER_STAGE)

    @property
    def latency(self) -> int:
        """Cycles from the transfer of a vector's last input word to its first output word's
        ``valid`` (no back-pressure): memory read (:attr:`weight_read_latency`), operand
        registers, the products' :data:`~.multiplier.MUL_LATENCY` registers, tree stages,
        accumulator."""
        return 2 + self.weight_read_latency + MUL_LATENCY + self.tree_stages

    @property
    def multipliers(self) -> int:
        """MULT18X18D blocks of the ``pe * simd`` products (:func:`~.multiplier.registered_product_blocks`)."""
        return self._pe * self._simd * registered_product_blocks(self._in_shape, self._weight_shape)

    @property
    def memory_bits(self) -> int:
        """Weight memory plus the input buffer (none when ``NF = 1``)."""
        weight_bits = self._weights.size * self._weight_shape.width
        buffer_bits = self._weights.shape[1] * self._in_shape.width if self.neuron_fold > 1 else 0
        return weight_bits + buffer_bits

    @property
    def weight_word_width(self) -> int:
        """Bits per weight memory word: ``pe * simd * weight_shape.width``."""
        return self._pe * self._simd * self._weight_shape.width

    def weight_words(self) -> list[int]:
        """The weight memory's ``NF * SF`` words in address order: word ``f * SF + s`` holds
        ``W[f*pe + p, s*simd + k]`` (two's complement, ``weight_shape.width`` bits) at bit
        ``(p * simd + k) * weight_shape.width``."""
        nf, sf, pe, simd = self.neuron_fold, self.synapse_fold, self._pe, self._simd
        width = self._weight_shape.width
        mask = (1 << width) - 1
        blocks = self._weights.reshape(nf, pe, sf, simd).transpose(0, 2, 1, 3).reshape(nf * sf, pe * simd)
        words = []
        for block in blocks:
            word = 0
            for index, value in enumerate(block.tolist()):
                word |= (value & mask) << (index * width)
            words.append(word)
        return words

    def lut_features(self) -> tuple[float, ...]:
        pe, simd = self._pe, self._simd
        depth, width = self.neuron_fold * self.synapse_fold, self.weight_word_width
        return (
            1.0,
            float(pe * simd * (self._in_shape.width + self._weight_shape.width)),
            float(pe * self._acc_shape.width),
            float(rom_luts(depth, width)),
            float(bram_mux(depth, width)),
        )


class IntMatrixVector(IntMatrixVectorParameters, MatrixVectorUnit):
    """Folded integer matrix-vector unit: ``o = W @ x`` for every streamed vector ``x``.

    ``W`` (``rows x cols``) sits in on-chip memory as ``NF * SF`` words of ``pe * simd``
    weights (``NF = rows / pe``, ``SF = cols / simd``; word ``f * SF + s`` holds
    ``W[f*pe + p, s*simd + k]`` at element ``[p][k]``). One input vector is ``SF`` consecutive
    words; for it the unit emits ``NF`` words of ``pe`` accumulators (channels
    ``f*pe .. f*pe+pe-1``). As in FINN's MVAU, fold 0 consumes the input words and also stores
    them in an ``SF``-word input buffer that folds 1 .. NF-1 replay; each cycle multiplies one
    input word by one weight word (``pe * simd`` multipliers), so a vector takes
    ``NF * SF`` cycles and vectors follow each other with no bubble.

    Pipeline: memory read; the operands registered; products on DSP blocks' own input and
    output registers (:func:`~.multiplier.registered_product`); an adder tree per PE with a register every
    :data:`TREE_LEVELS_PER_STAGE` levels; the accumulators, which write the output register on a
    vector's last word. The whole pipeline advances unless a finished sum meets a full,
    stalled output register. Widths come from bounds: products from the weight and input
    ranges, sums of ``n`` products from ``n`` times that intersected with the accumulator range
    :func:`int_matvec_bounds`.

    Parameters
    ----------
    weights : int array, rows x cols
        Its values set the weight shape ``shape_for(min, max)``, at most 18 bits.
    pe : int
        Output channels per cycle; divides ``rows``.
    simd : int
        Input elements per cycle; divides ``cols``.
    in_shape : shape-castable
        Integer element shape of the input, at most 18 bits (e.g. ``signed(9)`` for pixels
        shifted by -128).
    masked : bool
        Take :func:`~.layouts.window_word` input (the mask is ignored: padding words carry zero
        data, which adds zero) instead of :func:`~.layouts.channel_word`.
    weights_file : str or None
        ``None``: the weight memory is inline (Amaranth ``Memory`` with ``init``). A path: it is a
        :class:`~.rom.Rom` loading the ``$readmemh`` files based on it, which must hold
        ``rom_files(path, weight_words(), weight_word_width)`` (one per block RAM deep; see
        :mod:`.rom` for how paths resolve).
        Widths come from ``weights``: a weight edited in the file must stay within their range
        and each row's :func:`int_matvec_bounds`, or sums may wrap.
    external_modules : bool
        Make the input buffer a :class:`~.ram.Ram` instance of the Verilog module and each
        product an instance of :data:`~.multiplier.MULTIPLIER_MODULE`, for Verilog output;
        ``False`` (default): inline, for Amaranth's simulator. Same cycles either way.

    Members
    -------
    i : In(stream.Signature(channel_word(in_shape, simd) or window_word(in_shape, simd)))
    o : Out(stream.Signature(channel_word(acc_shape, pe)))
    """

    def __init__(self, *, weights_file: str | None = None, external_modules: bool = False, **params) -> None:
        super().__init__(**params)
        self._build_ports(weights_file=weights_file, external_modules=external_modules)

    def elaborate(self, platform):
        m = Module()
        nf, sf, pe, simd = self.neuron_fold, self.synapse_fold, self._pe, self._simd
        x_layout = channel_word(self._in_shape, simd)
        w_layout = data.ArrayLayout(channel_word(self._weight_shape, simd), pe)

        advance = Signal()
        m.submodules.weights = w_port = Rom(
            width=w_layout.size, depth=nf * sf, init=self.weight_words(), init_file=self._weights_file
        )

        # issue: step (f, s) of the current vector
        s = Signal(range(sf))
        f = Signal(range(nf))
        w_addr = Signal(range(nf * sf))
        fold0 = f == 0
        issue = advance & (~fold0 | self.i.valid)
        in_bits = Value.cast(self.i.payload.data if self._masked else self.i.payload)
        m.d.comb += [self.i.ready.eq(advance & fold0), w_port.addr.eq(w_addr), w_port.en.eq(advance)]
        with m.If(issue):
            m.d.sync += [s.eq(Mux(s == sf - 1, 0, s + 1)), w_addr.eq(Mux(w_addr == nf * sf - 1, 0, w_addr + 1))]
            with m.If(s == sf - 1):
                m.d.sync += f.eq(Mux(f == nf - 1, 0, f + 1))

        # stage 1: operands (the input word, or its replay from the buffer; the weight word)
        valid1, first1, last1, fold0_1 = Signal(), Signal(), Signal(), Signal()
        x1 = Signal(len(in_bits))
        with m.If(advance):
            m.d.sync += [valid1.eq(issue), first1.eq(s == 0), last1.eq(s == sf - 1), fold0_1.eq(fold0)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += x1.eq(in_bits)
        if nf > 1:
            width = len(in_bits)
            m.submodules.buffer = buffer = Ram(width=width, depth=sf, external_modules=self._external_modules)
            m.d.comb += [
                buffer.w_addr.eq(s),
                buffer.w_data.eq(in_bits),
                buffer.w_en.eq(self.i.valid & self.i.ready),
                buffer.r_addr[0].eq(s),
                buffer.r_en[0].eq(advance),
            ]
            x = x_layout(Mux(fold0_1, x1, buffer.r_data[0]))
        else:
            x = x_layout(x1)
        w = w_layout(w_port.data)
        tags = [valid1, first1, last1]
        # the weight memory's read stages after the first
        for stage in range(w_port.latency - 1):
            x = x_layout(delayed(m, Value.cast(x), enable=advance, name=f"x_w{stage}"))
            tags = [
                delayed(m, t, enable=advance, name=f"{n}_w{stage}")
                for t, n in zip(tags, ("valid", "first", "last"), strict=True)
            ]

        # stage 2: the operands registered (a block RAM's clock-to-output takes most of a cycle)
        x2, w2 = Signal(x_layout), Signal(w_layout)
        with m.If(advance):
            m.d.sync += [x2.eq(x), w2.eq(w)]
        tags = [
            delayed(m, t, enable=advance, name=f"{n}2") for t, n in zip(tags, ("valid", "first", "last"), strict=True)
        ]

        # the products' stages (:func:`registered_product`), on DSP blocks' own registers
        x_bounds = bounds(self._in_shape)
        w_bounds = (int(self._weights.min()), int(self._weights.max()))
        p_bounds = _intersect(product_range(x_bounds, w_bounds), self._acc_bounds)
        terms = []
        for p in range(pe):
            row = []
            for k in range(simd):
                product = registered_product(
                    m,
                    x2[k],
                    w2[p][k],
                    latency=MUL_LATENCY,
                    enable=advance,
                    external_modules=self._external_modules,
                    name=f"mul_{p}_{k}",
                )
                row.append(hdl_fit(product, *p_bounds))
            terms.append(row)
        tags = [
            delayed(m, t, MUL_LATENCY, enable=advance, name=f"{n}_mul")
            for t, n in zip(tags, ("valid", "first", "last"), strict=True)
        ]

        # adder trees: a register every TREE_LEVELS_PER_STAGE levels and after the last one
        level, count = 0, 1
        while count < simd:
            level += 1
            count *= 2
            sum_bounds = _intersect((count * p_bounds[0], count * p_bounds[1]), self._acc_bounds)
            registered = level % TREE_LEVELS_PER_STAGE == 0 or count >= simd
            for p in range(pe):
                row = terms[p]
                pairs = [hdl_fit(row[j] + row[j + 1], *sum_bounds) for j in range(0, len(row) - 1, 2)]
                if len(row) % 2:
                    pairs.append(row[-1])
                if registered:
                    regs = []
                    for j, value in enumerate(pairs):
                        reg = Signal(shape_for(*sum_bounds), name=f"sum{level}_{p}_{j}")
                        with m.If(advance):
                            m.d.sync += reg.eq(value)
                        regs.append(reg)
                    pairs = regs
                terms[p] = pairs
            if registered:
                tags = [delayed(m, t, enable=advance, name=f"tag{level}_{j}") for j, t in enumerate(tags)]
        sums = [row[0] for row in terms]
        valid_a, first_a, last_a = tags

        # accumulators and the output register
        m.d.comb += advance.eq(~(valid_a & last_a & self.o.valid & ~self.o.ready))
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        for p in range(pe):
            acc = Signal(self._acc_shape, name=f"acc{p}")
            total = hdl_fit(Mux(first_a, 0, acc) + sums[p], *self._acc_bounds)
            with m.If(advance & valid_a):
                m.d.sync += acc.eq(total)
                with m.If(last_a):
                    m.d.sync += self.o.payload[p].eq(total)
        with m.If(advance & valid_a & last_a):
            m.d.sync += self.o.valid.eq(1)
        return m


def _intersect(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return max(a[0], b[0]), min(a[1], b[1])


def argmax(logits) -> tuple[np.ndarray, np.ndarray]:
    """Numpy model of :class:`Argmax`: per row of ``(..., classes)`` logits, the first index of
    the maximum (``np.argmax``'s tie rule) and that maximum."""
    logits = np.asarray(logits)
    index = np.argmax(logits, axis=-1)
    value = np.take_along_axis(logits, index[..., None], axis=-1)[..., 0]
    return index.astype(np.int64), value


class ArgmaxParameters(Parameters):
    """The parameters of an :class:`Argmax` and the figures derived from them."""

    lut_kind = "argmax"

    def __init__(self, *, shape, count: int, classes: int) -> None:
        self._shape = check_shape("shape", shape)
        self._classes = check_int("classes", classes)
        self._count = check_divides("count", check_int("count", count), "classes", self._classes)
        self._index_shape = shape_for(0, self._classes - 1)

    @property
    def shape(self) -> Shape:
        return self._shape

    @property
    def count(self) -> int:
        return self._count

    @property
    def classes(self) -> int:
        return self._classes

    @property
    def index_shape(self) -> Shape:
        return self._index_shape

    @property
    def words_per_frame(self) -> int:
        return self._classes // self._count

    @property
    def tree_levels(self) -> int:
        """Registered levels of the comparison tree of a word: ``ceil(log2(count))``."""
        return (self._count - 1).bit_length()

    @property
    def latency(self) -> int:
        """Cycles from the transfer of a frame's last word to the result's ``valid``: the input
        register, the tree levels, the comparisons with the running best, the running best and
        the index sum."""
        return self.tree_levels + 4

    @property
    def initiation_interval(self) -> int:
        """Cycles per result at full rate: the words of a frame."""
        return self.words_per_frame

    def lut_features(self) -> tuple[float, ...]:
        return (1.0, float(self._count * self._shape.width))

    def figures(self, words: int) -> Figures:
        """The figures of one frame of ``classes / count`` words (whatever ``words`` says)."""
        n = self.words_per_frame
        return Figures(n, n - 1 + self.latency, self.latency, self.luts)


class Argmax(ArgmaxParameters, wiring.Component):
    """The class of a stream of logits: index and value of the first maximum per frame.

    A frame is ``classes / count`` words of ``count`` logits (classes ascending). Each word's
    own first maximum is found by a comparison tree (a later element wins only when strictly
    greater), then compared with the frame's running best (a later word wins only when strictly
    greater), so ties go to the lowest index as in :func:`numpy.argmax`. Every step is one
    register stage (the input, each tree level, the comparisons with the running best, the running
    best, the index ``word * count + local`` as one sum), so no path holds more than one
    comparison, and the running best's update none (it picks a comparison made a stage ahead);
    the stages advance together
    while the output register can take a result. One word per cycle; the result is valid
    :attr:`latency` cycles after the frame's last word.

    Parameters
    ----------
    shape : shape-castable
        Integer element shape of the logits.
    count : int
        Logits per word; divides ``classes``.
    classes : int
        Logits per frame.

    Members
    -------
    i : In(stream.Signature(channel_word(shape, count)))
    o : Out(stream.Signature(StructLayout({"index": unsigned(bits for classes - 1), "value": shape})))
    """

    def __init__(self, **params) -> None:
        super().__init__(**params)
        wiring.Component.__init__(
            self,
            {
                "i": In(stream.Signature(channel_word(self._shape, self._count))),
                "o": Out(stream.Signature(data.StructLayout({"index": self._index_shape, "value": self._shape}))),
            },
        )

    def elaborate(self, platform):
        m = Module()
        words, count = self.words_per_frame, self._count
        base_shape = shape_for(0, (words - 1) * count)
        local_shape = shape_for(0, count - 1)
        advance = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(advance)

        def register(value, name):
            reg = Signal(Value.cast(value).shape(), name=name)
            with m.If(advance):
                m.d.sync += reg.eq(value)
            return reg

        # input register: the word, whether it opens / closes its frame, and its first class
        word = Signal(range(words))
        base = Signal(base_shape)
        take = self.i.valid & self.i.ready
        with m.If(take):
            last_word = word == words - 1
            m.d.sync += [word.eq(Mux(last_word, 0, word + 1)), base.eq(Mux(last_word, 0, base + count))]
        valid = register(take, "valid0")
        first, last = register(word == 0, "first0"), register(word == words - 1, "last0")
        base_r = register(base, "base0")
        candidates = [(Const(k, local_shape), register(self.i.payload[k], f"logit{k}")) for k in range(count)]

        # the comparison tree, one level a stage: a later element wins only when strictly greater
        level = 0
        while len(candidates) > 1:
            level += 1
            merged = []
            for j in range(0, len(candidates), 2):
                (ia, va), (ib, vb) = candidates[j], candidates[min(j + 1, len(candidates) - 1)]
                later = hdl_greater(vb, va)
                index, value = Mux(later, ib, ia), Mux(later, vb, va)
                merged.append((register(index, f"index{level}_{j}"), register(value, f"value{level}_{j}")))
            candidates = merged
            valid, first = register(valid, f"valid{level}"), register(first, f"first{level}")
            last = register(last, f"last{level}")
            base_r = register(base_r, f"base{level}")
        local_index, local_value = candidates[0]

        # the running best: a later word wins only when strictly greater. A word is compared a
        # stage ahead with both values the best may hold when it arrives there: the best now, and
        # the word ahead of it, which replaces the best on this edge if it wins. The update then
        # picks one of two registered comparisons instead of comparing with its own output.
        best_base, best_local, best_value = Signal(base_shape), Signal(local_shape), Signal(self._shape)
        above_best, above_ahead, ahead_won = Signal(), Signal(), Signal()
        ahead_value = register(local_value, "ahead_value")
        ahead_local, ahead_base = register(local_index, "ahead_local"), register(base_r, "ahead_base")
        ahead_valid, ahead_first = register(valid, "ahead_valid"), register(first, "ahead_first")
        ahead_last = register(last, "ahead_last")
        wins = ahead_valid & (ahead_first | Mux(ahead_won, above_ahead, above_best))
        done = Signal()
        with m.If(advance):
            m.d.sync += [
                above_best.eq(hdl_greater(local_value, best_value)),
                above_ahead.eq(hdl_greater(local_value, ahead_value)),
                ahead_won.eq(wins),
                done.eq(ahead_valid & ahead_last),
            ]
            with m.If(wins):
                m.d.sync += [best_base.eq(ahead_base), best_local.eq(ahead_local), best_value.eq(ahead_value)]

        # the result: the class is the sum of the word's first class and the local index
        with m.If(advance):
            m.d.sync += self.o.valid.eq(done)
            with m.If(done):
                m.d.sync += [
                    self.o.payload.index.eq((best_base + best_local)[: self._index_shape.width]),
                    self.o.payload.value.eq(best_value),
                ]
        return m
