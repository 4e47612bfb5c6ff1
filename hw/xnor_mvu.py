"""Binary (XNOR-popcount) matrix-vector unit, folded like FINN's MVAU.

Binary values use bit 1 = +1, bit 0 = -1. Over the ``K`` valid positions of a vector the dot
product of activations ``a`` and weights ``w`` is::

    dot = sum(+1 if a == w else -1) = 2 * popcount(XNOR(a, w) AND valid) - K_valid

A zero-padding position (mask 0) contributes 0, as in PyTorch.

:func:`xnor_matvec` is THE model of the operation (bit-packed numpy, fast enough for the
reference executor on ResNet-18 layers); :class:`XnorMatrixVector` implements it bit for bit.
:func:`vectors_from_words` and :func:`words_from_vectors` convert between a stream of SIMD
words (with the per-word mask of a window stream) and the vectors of the model.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, Module, Mux, ResetSignal, Signal, Value, unsigned
from amaranth.lib import data
from amaranth.lib.memory import Memory

from ._checks import check_choice, check_divides, check_int, check_int_array
from .delay import delayed
from .figures import bram_mux, rom_luts
from .fixed import shape_for
from .layouts import channel_word
from .mvu import MatrixVectorParameters, MatrixVectorUnit
from .plumbing import Fifo, FifoParameters
from .popcount import PopCount, popcount_instance, popcount_levels
from .rom import Rom

__all__ = ["XnorMatrixVector", "XnorMatrixVectorParameters", "vectors_from_words", "words_from_vectors", "xnor_matvec"]

#: Memory styles Yosys knows (``ram_style`` attribute) for the input buffer.
BUFFER_STYLES = ("block", "distributed", "logic")

# ones in each byte value, for numpy without np.bitwise_count
_BYTE_POPCOUNT = np.array([bin(k).count("1") for k in range(256)], dtype=np.uint8)
# largest (vectors x rows x bytes) block the model XORs at once
_BLOCK_BYTES = 1 << 24


def _bits_array(name: str, value, *, ndim: int) -> np.ndarray:
    array = check_int_array(name, value, low=0, high=1)
    if array.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array of 0/1, not one of shape {array.shape}")
    return array


def _popcount_bytes(packed: np.ndarray) -> np.ndarray:
    """Ones per row of a ``(..., nbytes)`` uint8 array, as int64."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(packed).sum(axis=-1, dtype=np.int64)
    return _BYTE_POPCOUNT[packed].sum(axis=-1, dtype=np.int64)


def xnor_matvec(weights, vectors, mask=None) -> np.ndarray:
    """Numpy model of :class:`XnorMatrixVector`: binary dot products of every vector with every row.

    Parameters
    ----------
    weights : 0/1 int array, rows x cols
        Bit 1 is +1, bit 0 is -1.
    vectors : 0/1 int array, (n, cols) or (cols,)
        Binary activations, same encoding.
    mask : 0/1 int array of the shape of ``vectors``, optional
        1 where a position is valid, 0 for zero padding (contributes 0). ``None``: all valid.

    Returns
    -------
    numpy.ndarray of int64, (n, rows) (or (rows,) for one vector)
        ``dot[v, r] = sum over valid c of (+1 if vectors[v, c] == weights[r, c] else -1)``
        ``= 2 * popcount(XNOR(vectors[v], weights[r]) AND mask[v]) - mask[v].sum()``,
        computed on bit-packed rows (``np.packbits``, XOR, byte popcounts).
    """
    weights = _bits_array("weights", weights, ndim=2)
    vectors = np.asarray(vectors)
    single = vectors.ndim == 1
    vectors = _bits_array("vectors", vectors[None] if single else vectors, ndim=2)
    rows, cols = weights.shape
    if vectors.shape[1] != cols:
        raise ValueError(f"vectors must have {cols} columns (the weights'), not {vectors.shape[1]}")
    if mask is None:
        valid = np.ones_like(vectors, dtype=np.uint8)
    else:
        mask = np.asarray(mask)
        valid = _bits_array("mask", mask[None] if single else mask, ndim=2)
        if valid.shape != vectors.shape:
            raise ValueError(f"mask must have the shape of vectors {vectors.shape}, not {valid.shape}")
    # padding bits of packbits are 0 in `valid`, so they never count
    w = np.packbits(weights.astype(np.uint8), axis=1)
    v = np.packbits(vectors.astype(np.uint8), axis=1)
    k = np.packbits(valid.astype(np.uint8), axis=1)
    result = np.empty((vectors.shape[0], rows), dtype=np.int64)
    step = max(1, _BLOCK_BYTES // max(1, rows * w.shape[1]))
    for start in range(0, vectors.shape[0], step):
        stop = start + step
        agree = ~(v[start:stop, None, :] ^ w[None, :, :]) & k[start:stop, None, :]
        result[start:stop] = 2 * _popcount_bytes(agree)
    result -= valid.sum(axis=1, dtype=np.int64)[:, None]
    return result[0] if single else result


def vectors_from_words(words, *, cols: int, mask=None) -> tuple[np.ndarray, np.ndarray | None]:
    """A stream of binary words (and per-word mask) to the vectors of :func:`xnor_matvec`.

    Parameters
    ----------
    words : 0/1 int array, (count, simd)
        Consecutive stream words; ``cols / simd`` words make one vector (e.g. one output
        pixel's window in (ky, kx, channel word) order).
    cols : int
        Elements per vector; a multiple of ``simd`` dividing ``count * simd``.
    mask : 0/1 int array, (count,), optional
        The window stream's mask bit of each word.

    Returns
    -------
    vectors : int64 array, (count * simd / cols, cols)
    position_mask : int64 array of the same shape, or None
        Each word's mask repeated over its ``simd`` positions (``None`` when ``mask`` is).
    """
    words = _bits_array("words", words, ndim=2)
    count, simd = words.shape
    cols = check_int("cols", cols)
    if cols % simd or (count * simd) % cols:
        raise ValueError(f"cols ({cols}) must be a multiple of the word width {simd} dividing {count * simd} elements")
    vectors = words.reshape(-1, cols)
    if mask is None:
        return vectors, None
    mask = check_int_array("mask", mask, shape=(count,), low=0, high=1)
    return vectors, np.repeat(mask, simd).reshape(-1, cols)


def words_from_vectors(vectors, *, simd: int) -> np.ndarray:
    """Inverse of :func:`vectors_from_words`: ``(n, cols)`` vectors to ``(n * cols / simd, simd)`` words."""
    vectors = _bits_array("vectors", vectors, ndim=2)
    simd = check_divides("simd", check_int("simd", simd), "cols", vectors.shape[1])
    return vectors.reshape(-1, simd)


class XnorMatrixVectorParameters(MatrixVectorParameters):
    """The parameters of an :class:`XnorMatrixVector` and the figures derived from them.

    Cheap for any matrix: the weights are checked, not packed (:meth:`weight_words` packs them).
    """

    lut_kind = "xnor_mvu"

    def __init__(
        self,
        *,
        weights,
        pe: int,
        simd: int,
        masked: bool = True,
        popcount_stages: int | None = None,
        buffer_style: str = "block",
    ) -> None:
        weights = _bits_array("weights", weights, ndim=2)
        if weights.size == 0:
            raise ValueError(f"weights must not be empty, not of shape {weights.shape}")
        self._check_folding(weights, pe=pe, simd=simd, masked=masked, max_simd=4096)
        self._buffer_style = check_choice("buffer_style", buffer_style, BUFFER_STYLES)
        max_stages = 1 + popcount_levels(self._simd)
        if popcount_stages is None:
            self._popcount_stages = max_stages
        else:
            self._popcount_stages = check_int("popcount_stages", popcount_stages, low=1, high=max_stages)
        self._in_shape = unsigned(1)
        self._acc_shape = shape_for(-self.cols, self.cols)
        self._output_fifo = self._sized_output_fifo()

    def _sized_output_fifo(self) -> FifoParameters | None:
        # a slot is reserved at a vector's last word and freed when its output word leaves, at
        # least `latency + 1` cycles later; one output word per SF cycles needs that many / SF
        if self.synapse_fold >= self.pipeline_latency + 1:
            return None  # the output register alone
        shape = channel_word(self._acc_shape, self._pe)
        depth = 2
        while True:
            fifo = FifoParameters(shape=shape, depth=depth)
            needed = -(-(self.pipeline_latency + fifo.latency + 1) // self.synapse_fold)
            if needed <= depth:
                return fifo
            depth = needed

    @property
    def buffer_style(self) -> str:
        return self._buffer_style

    @property
    def popcount_sizes(self) -> set[tuple[int, int]]:
        """``{(simd, popcount_stages)}``: the size of the PEs' popcounts (their shared module's)."""
        return {(self._simd, self._popcount_stages)}

    @property
    def lanes(self) -> int:
        """XNOR lanes: ``pe * simd``."""
        return self._pe * self._simd

    @property
    def popcount_latency(self) -> int:
        return self._popcount_stages

    @property
    def pipeline_latency(self) -> int:
        """Cycles from the issue of a vector's last word to its result in the output register:
        issue, buffer read-back (when ``NF > 1``), memory read (:attr:`weight_read_latency`),
        operand register, popcount stages, accumulator and output register."""
        return (3 if self.neuron_fold > 1 else 2) + self.weight_read_latency + self._popcount_stages

    @property
    def output_fifo(self) -> FifoParameters | None:
        """The queue after the output register, or ``None``: the output slots the full rate needs
        (:attr:`output_slots`) when the output register alone is too few (``SF <=``
        :attr:`pipeline_latency`)."""
        return self._output_fifo

    @property
    def output_slots(self) -> int:
        """Output words the unit holds for a stalled consumer, so that its pipeline never stalls:
        the output register's one, or the :attr:`output_fifo`'s depth."""
        return 1 if self._output_fifo is None else self._output_fifo.depth

    @property
    def latency(self) -> int:
        """Cycles from the transfer of a vector's last input word to its first output word's
        ``valid`` (no back-pressure): :attr:`pipeline_latency`, then the :attr:`output_fifo`'s."""
        return self.pipeline_latency + (0 if self._output_fifo is None else self._output_fifo.latency)

    @property
    def luts(self) -> int:
        """LUT4 equivalents by the LUT model, and the :attr:`output_fifo`'s."""
        return super().luts + (0 if self._output_fifo is None else self._output_fifo.luts)

    @property
    def buffer_bits(self) -> int:
        """Input buffer: ``SF`` words of ``simd`` bits (plus the mask bit), none when ``NF = 1``."""
        return self.synapse_fold * (self._simd + self._masked) if self.neuron_fold > 1 else 0

    @property
    def memory_bits(self) -> int:
        """Weight memory (``rows * cols`` bits), the input buffer and the :attr:`output_fifo`."""
        fifo = 0 if self._output_fifo is None else self._output_fifo.memory_bits
        return self._weights.size + self.buffer_bits + fifo

    @property
    def weight_word_width(self) -> int:
        """Bits per weight memory word: ``pe * simd``."""
        return self._pe * self._simd

    def weight_words(self) -> list[int]:
        """The weight memory's ``NF * SF`` words in address order: word ``f * SF + s`` holds
        ``weights[f*pe + p, s*simd + k]`` at bit ``p * simd + k``."""
        nf, sf, pe, simd = self.neuron_fold, self.synapse_fold, self._pe, self._simd
        blocks = self._weights.reshape(nf, pe, sf, simd).transpose(0, 2, 1, 3).reshape(nf * sf, pe * simd)
        # bit p*simd + k of a word is element k of PE p: pack little-endian
        packed = np.packbits(blocks.astype(np.uint8), axis=1, bitorder="little")
        return [int.from_bytes(row.tobytes(), "little") for row in packed]

    def lut_features(self) -> tuple[float, ...]:
        depth, width = self.neuron_fold * self.synapse_fold, self.weight_word_width
        return (
            1.0,
            float(width),
            float(self._pe * self._acc_shape.width),
            float(rom_luts(depth, width)),
            float(bram_mux(depth, width)),
        )


class XnorMatrixVector(XnorMatrixVectorParameters, MatrixVectorUnit):
    """Folded XNOR-popcount matrix-vector unit: ``o = xnor_matvec(weights, x)`` per streamed vector.

    The weights (``rows x cols``, bit 1 = +1) sit in on-chip memory as ``NF * SF`` words of
    ``pe * simd`` bits (``NF = rows / pe``, ``SF = cols / simd``; word ``f * SF + s`` holds
    ``weights[f*pe + p, s*simd + k]`` at bit ``p * simd + k``). One input vector is ``SF``
    consecutive words; for it the unit emits ``NF`` words of ``pe`` signed dot products
    (channels ``f*pe .. f*pe+pe-1`` for ``f = 0 .. NF-1``). As in FINN's MVAU, fold 0
    consumes the input words and stores them in an ``SF``-word input buffer that folds
    ``1 .. NF-1`` replay; each cycle compares one input word with one weight word (``pe *
    simd`` XNOR lanes), so a vector takes ``NF * SF`` cycles and vectors follow each other with
    no bubble.

    Pipeline: issue; with ``NF > 1`` every word, fold 0's included, is written to the input
    buffer and read back one cycle later, so no multiplexer sits in front of the XNORs; the
    weight word is read; both are registered (a block RAM's clock-to-output takes most of a
    cycle on ECP5); per PE, XNOR and a :class:`~.popcount.PopCount`; the accumulators, which
    write the output register on a vector's last word. Only the issue waits: a vector's last
    word is issued when an output slot is free (the output register, or the places of an
    :attr:`output_fifo` behind it where ``SF`` is shorter than the pipeline), so the pipeline
    behind it never stalls and its registers need no common enable, a net that would reach
    every one of them. Latency: :attr:`latency`.

    Accumulation without a final subtraction: each accumulator starts at ``-cols`` and adds
    ``2 * popcount`` for a valid word and ``simd`` for a padding word (mask 0; its data is
    ignored), so after the ``SF`` words it holds ``2 * P - K_valid`` exactly, and every partial
    sum lies in ``[-cols, cols]``, the range of ``acc_shape``.

    Resources (``bench/xnor_synth.py``, PE 1, 64 x 9*SIMD weights, ``synth_ecp5 -nowidelut``,
    LFE5U-85F): 1.4 to 2.4 LUT4 and 2.5 to 4.0 LUT4 equivalents (LUT4 + 2 * CCU2C) per XNOR
    lane for SIMD 256 down to 32, at about 135 MHz; the weights and the input buffer are in
    block RAM. The input buffer takes ``ceil((simd + 1) / 36)`` block RAMs; ``buffer_style=
    "distributed"`` moves it to LUT RAM (about 6 logic sites per 4 bits of width and 16 words).

    Parameters
    ----------
    weights : 0/1 int array, rows x cols
        Bit 1 is +1, bit 0 is -1; rows are output channels, columns (ky, kx, c).
    pe : int
        Output channels per cycle; divides ``rows``.
    simd : int
        Input bits per cycle; divides ``cols``.
    masked : bool
        Input words are :func:`~.layouts.window_word` (a mask bit per word; a padding word
        contributes 0) instead of :func:`~.layouts.channel_word` (e.g. binary FC layers).
    popcount_stages : int, optional
        Pipeline registers of each popcount (see :class:`~.popcount.PopCount`; default: one
        per tree level).
    buffer_style : {"block", "distributed", "logic"}
        Yosys ``ram_style`` of the input buffer when ``SF > 1`` (``"block"``: block RAM, no
        LUTs; ``SF = 1`` always uses a register).
    weights_file : str or None
        ``None``: the weight memory is inline (Amaranth ``Memory`` with ``init``). A path: it is a
        :class:`~.rom.Rom` loading the ``$readmemh`` files based on it, which must hold
        ``rom_files(path, weight_words(), weight_word_width)`` (one per block RAM deep; see
        :mod:`.rom` for how paths resolve).
    external_modules : bool
        Each PE's popcount is an instance of the shared Verilog module of its size
        (:func:`~.popcount.popcount_instance`; the compiler writes :func:`~.popcount.popcount_verilog`
        of :attr:`popcount_sizes` beside the design), for Verilog output; ``False`` (default):
        inline :class:`~.popcount.PopCount` logic, for Amaranth's simulator. The logic is the same.

    Members
    -------
    i : In(stream.Signature(window_word(unsigned(1), simd) or channel_word(unsigned(1), simd)))
    o : Out(stream.Signature(channel_word(acc_shape, pe)))
    """

    def __init__(self, *, weights_file: str | None = None, external_modules: bool = False, **params) -> None:
        super().__init__(**params)
        self._build_ports(weights_file=weights_file, external_modules=external_modules)

    def elaborate(self, platform):
        m = Module()
        nf, sf, pe, simd = self.neuron_fold, self.synapse_fold, self._pe, self._simd
        buffered = nf > 1
        reset = ResetSignal()

        def delay(value, name, *, reset_less=True):
            return delayed(m, value, name=name, reset_less=reset_less)

        def counter(name, count, step):
            # 0 .. count-1, advancing on `step`; the reset and the wrap share the flip-flops' sync reset
            value = Signal(range(count), name=name, reset_less=True)
            wrap = value == count - 1
            with m.If(reset | (step & wrap)):
                m.d.sync += value.eq(0)
            with m.Elif(step):
                m.d.sync += value.eq(value + 1)
            return value, wrap

        m.submodules.weights = w_port = Rom(
            width=self.weight_word_width, depth=nf * sf, init=self.weight_words(), init_file=self._weights_file
        )

        # issue: step (f, s) of the current vector; fold 0 takes the input word. A vector's last
        # word reserves an output slot, freed when its output word leaves: the pipeline behind
        # the issue never stalls, so no enable spans it
        issue = Signal()
        s, last_word = counter("s", sf, issue)
        w_addr, last_step = counter("w_addr", nf * sf, issue)
        if nf > 1:
            fold0 = Signal(init=1)  # the fold number itself is never needed
            with m.If(issue & last_word):
                m.d.sync += fold0.eq(last_step)
        else:
            fold0 = 1
        slots = self.output_slots
        free = Signal(range(slots + 1), init=slots)
        m.d.sync += free.eq(free - (issue & last_word) + (self.o.valid & self.o.ready))
        may_issue = ~last_word | (free != 0)
        m.d.comb += [issue.eq(may_issue & (~fold0 | self.i.valid)), self.i.ready.eq(may_issue & fold0)]
        accept = self.i.valid & self.i.ready
        if self._masked:
            word_in = Cat(self.i.payload.data, self.i.payload.mask)
        else:
            word_in = Cat(Value.cast(self.i.payload), 1)  # every word valid

        # stage A: the issued step
        valid_a, last_a = delay(issue, "valid_a", reset_less=False), delay(last_word, "last_a")
        if buffered:
            # the input buffer: written on fold 0, read back one cycle later for every fold,
            # so no multiplexer sits in front of the XNORs
            style = "logic" if sf == 1 else self._buffer_style
            # a read colliding with a write is a bubble's (its data unused): no_rw_check spares
            # Yosys the bypass logic it would otherwise add to give the old data
            m.submodules.buffer = buffer = Memory(
                shape=unsigned(simd + 1), depth=sf, init=[], attrs={"ram_style": style, "no_rw_check": 1}
            )
            b_write, b_read = buffer.write_port(), buffer.read_port()
            s_a, w_addr_a = delay(s, "s_a"), delay(w_addr, "w_addr_a")
            m.d.comb += [
                b_write.addr.eq(s),
                b_write.data.eq(word_in),
                b_write.en.eq(accept),
                b_read.addr.eq(s_a),
                w_port.addr.eq(w_addr_a),
            ]
            # stage B: memory data
            valid_m, last_m = delay(valid_a, "valid_b", reset_less=False), delay(last_a, "last_b")
            word = b_read.data
        else:
            word = Signal(simd + 1, name="word_a", reset_less=True)
            with m.If(accept):
                m.d.sync += word.eq(word_in)
            m.d.comb += w_port.addr.eq(w_addr)
            valid_m, last_m = valid_a, last_a
        # the weight memory's read stages after the first
        for stage in range(w_port.latency - 1):
            valid_m = delay(valid_m, f"valid_w{stage}", reset_less=False)
            last_m, word = delay(last_m, f"last_w{stage}"), delay(word, f"word_w{stage}")
        # stage R: operands registered after the block RAMs (their clock-to-output is slow)
        valid_r, last_r = delay(valid_m, "valid_r", reset_less=False), delay(last_m, "last_r")
        word_r, w_data = delay(word, "word_r"), delay(w_port.data, "weights_r")
        w_words = data.ArrayLayout(unsigned(simd), pe)(w_data)
        activations, mask_r = word_r[:simd], word_r[simd]

        # XNOR and popcount per PE
        counts = []
        for p in range(pe):
            agree = ~(activations ^ w_words[p])
            if self._external_modules:
                count = Signal(range(simd + 1), name=f"popcount{p}_o")
                m.submodules[f"popcount{p}"] = popcount_instance(simd, self._popcount_stages, i=agree, en=1, o=count)
                counts.append(count)
                continue
            m.submodules[f"popcount{p}"] = popcount = PopCount(width=simd, stages=self._popcount_stages)
            m.d.comb += [popcount.i.eq(agree), popcount.en.eq(1)]
            counts.append(popcount.o)
        valid_c, last_c, mask_c = valid_r, last_r, mask_r
        for stage in range(self._popcount_stages):
            valid_c = delay(valid_c, f"valid_pc{stage}", reset_less=False)
            last_c, mask_c = delay(last_c, f"last_pc{stage}"), delay(mask_c, f"mask_pc{stage}")

        # accumulators (start at -cols) and the output register, whose slot the issue reserved
        finish = valid_c & last_c
        if self._output_fifo is None:
            out = self.o
        else:
            m.submodules.output_fifo = fifo = Fifo(
                shape=self._output_fifo.shape, depth=self._output_fifo.depth, external_modules=self._external_modules
            )
            m.d.comb += [
                self.o.valid.eq(fifo.o.valid),
                self.o.payload.eq(fifo.o.payload),
                fifo.o.ready.eq(self.o.ready),
            ]
            out = fifo.i
        with m.If(out.ready):
            m.d.sync += out.valid.eq(0)
        with m.If(finish):
            m.d.sync += out.valid.eq(1)
        start = -self.cols
        for p in range(pe):
            term = Cat(0, counts[p])  # 2 * popcount
            if self._masked:
                term = Mux(mask_c, term, simd)
            acc = Signal(self._acc_shape, name=f"acc{p}", init=start, reset_less=True)
            total = Signal(self._acc_shape, name=f"total{p}")
            m.d.comb += total.eq(acc + term)
            with m.If(reset | finish):
                m.d.sync += acc.eq(start)
            with m.Elif(valid_c):
                m.d.sync += acc.eq(total)
            with m.If(finish):
                m.d.sync += out.payload[p].eq(total)
        return m
