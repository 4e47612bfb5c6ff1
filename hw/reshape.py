"""Re-packing streams: SIMD width conversion and channel repeat.

Like :mod:`.plumbing`, every block here moves whole payloads and obeys the four transfer rules
of :mod:`amaranth.lib.stream`; each has a numpy model of what it does to the element sequence
(:func:`regroup`, :func:`repeat_channels`).
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Module, Mux, Shape, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ._checks import check_int, check_payload
from .figures import Figures, Parameters

__all__ = [
    "Repeat",
    "RepeatParameters",
    "WidthConverter",
    "WidthConverterParameters",
    "regroup",
    "repeat_channels",
]


def regroup(words: np.ndarray, count: int) -> np.ndarray:
    """Numpy model of :class:`WidthConverter`: the element sequence re-cut into ``count``-wide words."""
    flat = np.asarray(words).reshape(-1)
    if flat.size % count:
        raise ValueError(f"{flat.size} elements do not fill words of {count}")
    return flat.reshape(-1, count)


class WidthConverterParameters(Parameters):
    """The parameters of a :class:`WidthConverter` and the figures derived from them."""

    lut_kind = "convert"

    def __init__(self, *, shape, in_count: int, out_count: int) -> None:
        self._shape = check_payload("shape", shape, max_width=64)
        self._in_count = check_int("in_count", in_count)
        self._out_count = check_int("out_count", out_count)
        if max(in_count, out_count) % min(in_count, out_count):
            raise ValueError(f"in_count ({in_count}) and out_count ({out_count}) must divide one another")

    @property
    def shape(self):
        """Element shape."""
        return self._shape

    @property
    def in_count(self) -> int:
        """Elements per input word."""
        return self._in_count

    @property
    def out_count(self) -> int:
        """Elements per output word."""
        return self._out_count

    @property
    def initiation_interval(self) -> int:
        """Cycles per output word at full rate (a widened word needs several input words)."""
        return max(1, self._out_count // self._in_count)

    @property
    def latency(self) -> int:
        """Cycles from the first input word to the first output word: 1 when narrowing (the
        held word), the ``out_count / in_count`` input words of one output word when widening."""
        return self.initiation_interval

    def lut_features(self) -> tuple[float, ...]:
        bits = Shape.cast(self._shape).width
        a, b = self._in_count, self._out_count
        # narrowing: a (pieces)-way multiplexer per output bit; widening: a write enable per piece
        if a >= b:
            return (1.0, float(b * bits * (a // b - 1)), 0.0)
        return (1.0, 0.0, float(b // a))

    def figures(self, words: int) -> Figures:
        """``words`` input words make ``words * in_count / out_count`` output words; the busier side sets the cycles."""
        cycles = words * self._in_count // min(self._in_count, self._out_count)
        return Figures(cycles, self.latency, 1, self.luts)


class WidthConverter(WidthConverterParameters, wiring.Component):
    """Re-cuts a stream of element words into words of another width (SIMD packing).

    Elements keep their order (element 0 of word 0 first). One of the two counts must divide
    the other. Narrowing emits one output word per cycle; widening takes one input word per
    cycle; the output is registered either way.

    Parameters
    ----------
    shape : shape-castable
        Element shape.
    in_count, out_count : int
        Elements per input and per output word.

    Members
    -------
    i : In(stream.Signature(data.ArrayLayout(shape, in_count)))
    o : Out(stream.Signature(data.ArrayLayout(shape, out_count)))
    """

    def __init__(self, **params) -> None:
        super().__init__(**params)
        wiring.Component.__init__(
            self,
            {
                "i": In(stream.Signature(data.ArrayLayout(self._shape, self._in_count))),
                "o": Out(stream.Signature(data.ArrayLayout(self._shape, self._out_count))),
            },
        )

    def elaborate(self, platform):
        m = Module()
        elem_width = Shape.cast(self._shape).width
        i_bits, o_bits = Value.cast(self.i.payload), Value.cast(self.o.payload)
        if self._in_count >= self._out_count:
            pieces = self._in_count // self._out_count
            piece_bits = elem_width * self._out_count
            held = Signal(len(i_bits))
            left = Signal(range(pieces + 1))  # pieces of ``held`` not yet emitted
            index = Signal(range(pieces))
            last = (left == 1) & self.o.ready
            m.d.comb += [
                self.o.valid.eq(left != 0),
                o_bits.eq(held.word_select(index, piece_bits)),
                self.i.ready.eq((left == 0) | last),
            ]
            with m.If(self.i.valid & self.i.ready):
                m.d.sync += [held.eq(i_bits), left.eq(pieces), index.eq(0)]
            with m.Elif(self.o.valid & self.o.ready):
                m.d.sync += [left.eq(left - 1), index.eq(index + 1)]
        else:
            pieces = self._out_count // self._in_count
            piece_bits = elem_width * self._in_count
            gathered = Signal(range(pieces + 1))
            m.d.comb += [
                self.o.valid.eq(gathered == pieces),
                self.i.ready.eq((gathered != pieces) | self.o.ready),
            ]
            with m.If(self.i.valid & self.i.ready):
                slot = Signal(range(pieces))
                m.d.comb += slot.eq(Mux(gathered == pieces, 0, gathered))
                m.d.sync += o_bits.word_select(slot, piece_bits).eq(i_bits)
                m.d.sync += gathered.eq(slot + 1)
            with m.Elif(self.o.valid & self.o.ready):
                m.d.sync += gathered.eq(0)
        return m


def repeat_channels(tensor: np.ndarray, times: int) -> np.ndarray:
    """Numpy model of :class:`Repeat`: ``C x H x W`` to ``(times*C) x H x W``, the tensor concatenated
    with itself along the channels ``times`` times (``np.concatenate([tensor] * times)``)."""
    times = check_int("times", times)
    tensor = np.asarray(tensor)
    if tensor.ndim < 1:
        raise ValueError(f"tensor must have a channel axis, not shape {tensor.shape}")
    return np.concatenate([tensor] * times, axis=0)


class RepeatParameters(Parameters):
    """The parameters of a :class:`Repeat` and the figures derived from them."""

    lut_kind = "repeat"

    #: Cycles per OUTPUT word at full rate; the input is taken ``words`` of every ``words * times`` cycles.
    initiation_interval = 1

    #: Cycles from an input word's transfer to its copy's ``valid`` on the output (registered).
    latency = 1

    def __init__(self, *, shape, count: int, words: int, times: int) -> None:
        self._shape = check_payload("shape", shape, max_width=64)
        self._count = check_int("count", count)
        self._words = check_int("words", words)
        self._times = check_int("times", times)

    @property
    def shape(self):
        """Element shape."""
        return self._shape

    @property
    def count(self) -> int:
        """Elements per word."""
        return self._count

    @property
    def words(self) -> int:
        """Words per pixel."""
        return self._words

    @property
    def times(self) -> int:
        """Copies of each pixel."""
        return self._times

    @property
    def cycles_per_pixel(self) -> int:
        """``words * times``: output words, and cycles at full rate, per pixel."""
        return self._words * self._times

    @property
    def buffer_bits(self) -> int:
        """The replay buffer: ``words`` words (none when ``times = 1``)."""
        return self._words * Shape.cast(data.ArrayLayout(self._shape, self._count)).width if self._times > 1 else 0

    def lut_features(self) -> tuple[float, ...]:
        return (1.0, float(self._count * Shape.cast(self._shape).width))

    def figures(self, words: int) -> Figures:
        """``words`` input words of a frame leave ``times`` times, one output word per cycle."""
        return Figures(words * self._times, self.latency, self.latency, self.luts, self.buffer_bits)


class Repeat(RepeatParameters, wiring.Component):
    """Repeats each pixel's channel words ``times`` times: the channel concatenation ``concat(x, x)``.

    A pixel is ``words`` consecutive channel words (``C = words * count`` channels). The first
    copy goes out as its words arrive (through the output register) while they are stored in a
    ``words``-entry buffer (LUT RAM with an asynchronous read, or a register when ``words = 1``);
    the buffer then replays them ``times - 1`` times. So output pixel channels are ``c``, then
    the same ``C`` again, as :func:`repeat_channels` and :func:`~.layouts.tensor_to_words`
    order them. The next pixel's first word is taken in the cycle after the last replayed word
    is registered, so a ready consumer gets one word every cycle with no bubble between pixels.

    Parameters
    ----------
    shape : shape-castable
        Element shape (at most 64 bits).
    count : int
        Elements per word.
    words : int
        Words per pixel.
    times : int
        Copies of each pixel, >= 1 (2 for ReActNet-A's channel-doubling shortcut).

    Members
    -------
    i : In(stream.Signature(data.ArrayLayout(shape, count)))
    o : Out(stream.Signature(data.ArrayLayout(shape, count)))
    """

    def __init__(self, **params) -> None:
        super().__init__(**params)
        layout = data.ArrayLayout(self._shape, self._count)
        wiring.Component.__init__(self, {"i": In(stream.Signature(layout)), "o": Out(stream.Signature(layout))})

    def elaborate(self, platform):
        m = Module()
        i_bits, o_bits = Value.cast(self.i.payload), Value.cast(self.o.payload)
        words, times = self._words, self._times
        index = Signal(range(words))  # word of the pixel that goes out next
        copy = Signal(range(times))  # 0: the arriving copy, 1 ..: replays
        advance = ~self.o.valid | self.o.ready  # the output register can take a word
        first = copy == 0
        step = advance & (~first | self.i.valid)
        m.d.comb += self.i.ready.eq(advance & first)
        if times > 1:
            if words > 1:
                m.submodules.buffer = buffer = Memory(
                    shape=unsigned(len(i_bits)), depth=words, init=[], attrs={"ram_style": "distributed"}
                )
                write, read = buffer.write_port(), buffer.read_port(domain="comb")
                m.d.comb += [write.addr.eq(index), write.data.eq(i_bits), write.en.eq(self.i.valid & self.i.ready)]
                m.d.comb += read.addr.eq(index)
                replay = read.data
            else:
                replay = Signal(len(i_bits))
                with m.If(self.i.valid & self.i.ready):
                    m.d.sync += replay.eq(i_bits)
            word = Mux(first, i_bits, replay)
        else:
            word = i_bits
        with m.If(step):
            m.d.sync += [o_bits.eq(word), self.o.valid.eq(1)]
            m.d.sync += index.eq(Mux(index == words - 1, 0, index + 1))
            with m.If(index == words - 1):
                m.d.sync += copy.eq(Mux(copy == times - 1, 0, copy + 1))
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m
