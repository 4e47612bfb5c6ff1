"""Static per-channel thresholds: multi-bit channel words to binary activations.

Batch norm followed by sign (and ReActNet's RSign) fold into one integer threshold per
channel: the bit is ``x >= T_c``, or ``x <= T_c`` for a channel whose batch-norm scale is
negative (``flip_c``). Bit 1 means +1.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Module, Mux, Shape, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ._checks import check_int_array, check_shape
from .delay import delayed
from .figures import ChannelParameters, Figures, rom_luts
from .fixed import bounds, clamp, shape_for
from .layouts import channel_word
from .tables import channel_table

__all__ = ["StaticThreshold", "ThresholdParameters", "effective_thresholds", "threshold"]


def threshold(x, thresholds, flip=None) -> np.ndarray:
    """Numpy model of :class:`StaticThreshold`: ``x >= T_c`` (``x <= T_c`` where ``flip_c``) as 0/1 int64.

    ``x`` is a ``(..., C)`` integer array; ``thresholds`` and ``flip`` are vectors of length C.
    """
    x = np.asarray(x)
    thresholds = np.asarray(thresholds)
    bits = x >= thresholds
    if flip is not None:
        bits = np.where(np.asarray(flip, dtype=bool), x <= thresholds, bits)
    return bits.astype(np.int64)


def effective_thresholds(thresholds, flip, shape) -> np.ndarray:
    """The thresholds ``T'`` the hardware stores: bit = ``(x >= T'_c) XOR flip_c`` for every ``x`` of ``shape``.

    ``T' = clamp(T, low, high + 1)``, or ``clamp(T + 1, low, high + 1)`` where ``flip`` (since
    ``x <= T`` is ``not x >= T + 1``); ``low, high`` are the bounds of ``shape``, so ``T'`` fits
    ``shape_for(low, high + 1)``, whatever range the given thresholds have. Python ints.
    """
    low, high = bounds(Shape.cast(shape))
    values = np.asarray(thresholds).astype(object)
    if flip is not None:
        values = values + np.asarray(flip).astype(object)
    return clamp(values, low, high + 1)


class ThresholdParameters(ChannelParameters):
    """The parameters of a :class:`StaticThreshold` and the figures derived from them."""

    lut_kind = "threshold"

    #: One word per cycle.
    initiation_interval = 1

    #: Cycles from an input transfer to the output word's ``valid`` (no back-pressure).
    latency = 3

    def __init__(self, *, shape, channels: int, simd: int, thresholds, flip=None) -> None:
        self._shape = check_shape("shape", shape)
        self._check_channels(channels, simd)
        self._thresholds = check_int_array("thresholds", thresholds, shape=(self._channels,))
        self._flip = None if flip is None else check_int_array("flip", flip, shape=(self._channels,), low=0, high=1)

    @property
    def shape(self) -> Shape:
        return self._shape

    @property
    def thresholds(self) -> np.ndarray:
        return self._thresholds

    @property
    def flip(self) -> np.ndarray | None:
        return self._flip

    @property
    def compare_shape(self) -> Shape:
        """Shape of a stored threshold (and of the comparison)."""
        low, high = bounds(self._shape)
        return shape_for(low, high + 1)

    def _columns(self) -> dict:
        columns = {"t": effective_thresholds(self._thresholds, self._flip, self._shape)}
        if self._flip is not None and self._flip.any():
            columns["flip"] = self._flip
        return columns

    @property
    def memory_bits(self) -> int:
        """Bits of the threshold ROM (0 with a single channel group: constants)."""
        groups = self.groups
        if groups == 1:
            return 0
        return self._channels * (self.compare_shape.width + ("flip" in self._columns()))

    def lut_features(self) -> tuple[float, ...]:
        groups = self.groups
        rom = rom_luts(groups, self.memory_bits // max(1, groups))
        return (1.0, float(self._simd * self.compare_shape.width), float(rom))

    def figures(self, words: int) -> Figures:
        return Figures(words, self.latency, self.latency, self.luts, self.memory_bits)


class StaticThreshold(ThresholdParameters, wiring.Component):
    """Per-channel integer thresholds on a stream of channel words.

    Word ``n`` carries channels ``g*simd .. g*simd+simd-1`` with ``g = n mod (channels/simd)``
    (see :mod:`.layouts`); each element becomes one bit, ``x >= T_c`` (``x <= T_c`` where
    ``flip_c``). Thresholds outside the range of ``shape`` (always-on and always-off channels)
    are fine: the stored thresholds are :func:`effective_thresholds`, one comparison each of
    width ``shape_for(low, high + 1)``. With more than one channel group the thresholds sit in
    a ROM of ``channels/simd`` words (synchronous read, then registered: a block RAM's
    clock-to-output and a comparison would not share a cycle), otherwise they are constants.
    One word per cycle; three register stages (table read, its register, comparison),
    registered output.

    Parameters
    ----------
    shape : shape-castable
        Integer element shape of the input (e.g. an MVU's accumulator shape).
    channels : int
        Channels per pixel.
    simd : int
        Elements per word; divides ``channels`` (e.g. the producing MVU's ``pe``).
    thresholds : int vector of length ``channels``
        Any int64 values.
    flip : 0/1 vector of length ``channels``, optional
        Channels compared with ``<=`` (a negative batch-norm scale).

    Members
    -------
    i : In(stream.Signature(channel_word(shape, simd)))
    o : Out(stream.Signature(channel_word(unsigned(1), simd)))
    """

    def __init__(self, **params) -> None:
        super().__init__(**params)
        wiring.Component.__init__(
            self,
            {
                "i": In(stream.Signature(channel_word(self._shape, self._simd))),
                "o": Out(stream.Signature(channel_word(unsigned(1), self._simd))),
            },
        )

    def elaborate(self, platform):
        m = Module()
        groups = self.groups
        advance = Signal()
        m.d.comb += [advance.eq(~self.o.valid | self.o.ready), self.i.ready.eq(advance)]
        group = Signal(range(groups))
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += group.eq(Mux(group == groups - 1, 0, group + 1))
        # stages 1 and 2: the input word beside its channels' thresholds, read and registered
        word = delayed(m, self.i.payload, 2, enable=advance, name="x", reset_less=True)
        x = channel_word(self._shape, self._simd)(word)
        valid = delayed(m, self.i.valid, 2, enable=advance, name="valid")
        table = channel_table(
            m, "thresholds", self._columns(), simd=self._simd, group=group, enable=advance, registered=True
        )
        # stage 3: compare, registered output
        with m.If(advance):
            m.d.sync += self.o.valid.eq(valid)
            for k in range(self._simd):
                bit = x[k] >= table["t"][0][k]
                if "flip" in table:
                    bit = bit ^ table["flip"][0][k]
                m.d.sync += self.o.payload[k].eq(bit)
        return m
