"""Pooling: window maximum and sum, and the global sum over a whole frame.

:class:`MaxPool` and :class:`SumPool` reduce a window stream (the output of
:class:`~.window.SlidingWindow`: per output pixel ``K*K*C/simd`` words in (``ky``, ``kx``,
channel word) order, each with a padding ``mask``) to one pixel of channel words;
:class:`GlobalSumPool` reduces a whole tensor stream to one pixel per frame. Average pooling is a
sum here: its ``1/(K*K)`` (or ``1/(H*W)``) is folded into the next layer's scale, which keeps it
exact. The numpy functions :func:`max_pool`, :func:`sum_pool` and :func:`global_sum_pool` are the
models of the components.

The ``C/simd`` channel groups of a pixel arrive interleaved (group 0, 1, ... of the first window
position, then of the next), so every component keeps one accumulator word per group in a delay
line of ``C/simd`` words (a plain shift register without reset: shift-register LUTs on an FPGA):
each input word combines with the accumulator at the head and goes to the tail.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Module, Mux, Shape, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ._checks import check_divides, check_int, check_int_array, check_shape
from .figures import ChannelParameters, Figures
from .fixed import bounds, hdl_greater, shape_for
from .layouts import channel_word, window_word

__all__ = [
    "GlobalSumPool",
    "GlobalSumPoolParameters",
    "MaxPool",
    "MaxPoolParameters",
    "SumPool",
    "SumPoolParameters",
    "global_sum_pool",
    "max_pool",
    "sum_pool",
]


def _window_groups(words, mask, *, kernel: int, channels: int, simd: int) -> tuple[np.ndarray, np.ndarray]:
    """Window stream as ``(pixels, K*K, C/simd, simd)`` words and ``(pixels, K*K, C/simd)`` mask."""
    kernel = check_int("kernel", kernel)
    channels = check_int("channels", channels)
    simd = check_int("simd", simd)
    check_divides("simd", simd, "channels", channels)
    words = check_int_array("words", words)
    if words.ndim != 2 or words.shape[1] != simd:
        raise ValueError(f"words must have shape (n, {simd}), not {words.shape}")
    per_pixel = kernel * kernel * (channels // simd)
    if words.shape[0] % per_pixel:
        raise ValueError(f"words must hold whole windows of {per_pixel} words, not {words.shape[0]}")
    mask = check_int_array("mask", mask, shape=(words.shape[0],), low=0, high=1)
    shape = (-1, kernel * kernel, channels // simd)
    return words.reshape(*shape, simd), mask.reshape(shape)


def max_pool(words, mask, *, kernel: int, channels: int, simd: int) -> np.ndarray:
    """Numpy model of :class:`MaxPool`: the per-channel maximum over each window's valid positions.

    Parameters
    ----------
    words : array of int, shape (n, simd)
        A window stream (see :func:`~.window.sliding_windows`), ``K*K*C/simd`` words per pixel.
    mask : array of 0/1, shape (n,)
        0 marks a padding word; it is excluded, like PyTorch's ``-inf`` padding.
    kernel, channels, simd : int

    Returns
    -------
    int64 array, shape (n / (K*K), simd)
        ``C/simd`` channel words per pixel. For binary (0/1) data this is the OR of the bits.

    Raises
    ------
    ValueError
        When a window has no valid position (a :class:`~.window.SlidingWindow` never makes one;
        the hardware would give the element shape's minimum).
    """
    words, mask = _window_groups(words, mask, kernel=kernel, channels=channels, simd=simd)
    valid = mask.astype(bool)
    if not valid.any(axis=1).all():
        raise ValueError("every window needs at least one valid position (mask = 1)")
    lowest = np.iinfo(np.int64).min
    return np.where(valid[..., None], words, lowest).max(axis=1).reshape(-1, words.shape[-1])


def sum_pool(words, mask, *, kernel: int, channels: int, simd: int) -> np.ndarray:
    """Numpy model of :class:`SumPool`: the per-channel sum over each window, padding counting 0.

    Same parameters as :func:`max_pool`; returns the ``(n / (K*K), simd)`` int64 sums (binary
    data sums its 0/1 bits).
    """
    words, mask = _window_groups(words, mask, kernel=kernel, channels=channels, simd=simd)
    return np.where(mask[..., None].astype(bool), words, 0).sum(axis=1).reshape(-1, words.shape[-1])


def global_sum_pool(tensor) -> np.ndarray:
    """Numpy model of :class:`GlobalSumPool`: ``C x H x W`` tensor to its ``(C,)`` int64 channel sums.

    The component emits these as ``C/simd`` channel words, i.e. ``global_sum_pool(t).reshape(-1, simd)``.
    """
    tensor = check_int_array("tensor", tensor)
    if tensor.ndim != 3:
        raise ValueError(f"tensor must be C x H x W, not of shape {tensor.shape}")
    return tensor.sum(axis=(1, 2))


class _ReduceParameters(ChannelParameters):
    """The parameters shared by the reductions of ``positions`` consecutive groups of ``C/simd``
    words to one group, and the figures derived from them.

    A subclass checks the input with :meth:`_check_input`, then its own parameters, and gives
    the rest here.
    """

    lut_kind = "pool"

    #: One input word per cycle (the output comes at ``1 / positions`` of that rate).
    initiation_interval = 1

    def _check_input(self, shape, channels, simd) -> None:
        self._shape = check_shape("shape", shape, max_width=32)
        self._check_channels(channels, simd)

    def _set_reduction(self, *, positions: int, out_shape, windowed: bool) -> None:
        self._positions = positions
        self._out_shape = out_shape
        self._windowed = windowed

    @property
    def shape(self):
        """Input element shape."""
        return self._shape

    @property
    def out_shape(self) -> Shape:
        """Output element shape."""
        return self._out_shape

    @property
    def input_words(self) -> int:
        """Input words (= cycles at full rate) per output pixel of ``C/simd`` words."""
        return self._positions * self.groups

    @property
    def latency(self) -> int:
        """Cycles from the first input word of an output pixel to its first output word: the
        last position's first group arrives ``(positions - 1) * C/simd`` words later, then the
        input register and the registered output."""
        return (self._positions - 1) * self.groups + 2

    def lut_features(self) -> tuple[float, ...]:
        lanes = self._simd * self._out_shape.width
        binary = self._shape.width == 1
        return (1.0, float(lanes if binary else 0), float(0 if binary else lanes))

    def figures(self, words: int) -> Figures:
        return Figures(words, self.latency, self.latency, self.luts)


class _Reduce(_ReduceParameters, wiring.Component):
    """Per-channel reduction of ``positions`` consecutive groups of ``C/simd`` words to one group.

    Subclasses give the input layout, the accumulator (= output) element shape and the operator.
    Two register stages: the input word (padding already replaced by the operator's neutral
    value), then the combination with the group's running value into the output register; both
    advance while the output register can take a word (``i.ready``).

    It has no ``__init__`` of its own, so a subclass's parameters class reaches
    :class:`_ReduceParameters` with ``super().__init__``; the subclass then calls
    :meth:`_build_ports`.
    """

    def _build_ports(self) -> None:
        """The ports, once the parameters class has set the shapes."""
        in_layout = window_word(self._shape, self._simd) if self._windowed else channel_word(self._shape, self._simd)
        wiring.Component.__init__(
            self,
            {
                "i": In(stream.Signature(in_layout)),
                "o": Out(stream.Signature(channel_word(self._out_shape, self._simd))),
            },
        )

    def _combine(self, first, acc, value):
        """The running value after ``value``: ``value`` itself on the window's ``first`` position."""
        raise NotImplementedError

    def _neutral(self) -> int:
        raise NotImplementedError

    def elaborate(self, platform):
        m = Module()
        groups = self.groups
        layout = data.ArrayLayout(self._out_shape, self._simd)
        delay = [Signal(layout, reset_less=True, name=f"acc{k}") for k in range(groups)]
        position = Signal(range(self._positions))
        group = Signal(range(groups))
        advance = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(advance)
        take = self.i.valid & self.i.ready

        # stage 1: the input word, padding as the neutral value, and where it stands in the window
        if self._windowed:
            values, valid = self.i.payload.data, self.i.payload.mask
        else:
            values, valid = self.i.payload, 1
        word, word_valid = Signal(layout), Signal()
        first, last = Signal(), Signal()
        with m.If(advance):
            m.d.sync += [word_valid.eq(take), first.eq(position == 0), last.eq(position == self._positions - 1)]
            m.d.sync += [word[k].eq(Mux(valid, values[k], self._neutral())) for k in range(self._simd)]
        with m.If(take):
            with m.If(group == groups - 1):
                m.d.sync += [group.eq(0), position.eq(Mux(position == self._positions - 1, 0, position + 1))]
            with m.Else():
                m.d.sync += group.eq(group + 1)

        # stage 2: combined with the group's running value; the last position's goes out
        head, combined = delay[0], Signal(layout)
        for k in range(self._simd):
            m.d.comb += combined[k].eq(self._combine(first, head[k], word[k]))
        with m.If(advance):
            m.d.sync += self.o.valid.eq(word_valid & last)
            with m.If(word_valid):
                m.d.sync += [delay[k].eq(delay[k + 1]) for k in range(groups - 1)]
                m.d.sync += delay[-1].eq(combined)
                with m.If(last):
                    m.d.sync += self.o.payload.eq(combined)
        return m


class MaxPoolParameters(_ReduceParameters):
    """The parameters of a :class:`MaxPool` and the figures derived from them."""

    def __init__(self, *, shape, channels: int, simd: int, kernel: int) -> None:
        self._check_input(shape, channels, simd)
        self._kernel = check_int("kernel", kernel)
        self._set_reduction(positions=self._kernel**2, out_shape=self._shape, windowed=True)

    @property
    def kernel(self) -> int:
        """Window size K."""
        return self._kernel


class MaxPool(MaxPoolParameters, _Reduce):
    """Per-channel maximum over each window of a window stream (``K x K`` max pooling).

    Padding positions (``mask = 0``) are excluded, as with PyTorch's ``-inf`` padding; for
    binary data (``unsigned(1)``) the maximum is the OR of the bits. The ``C/simd`` words of an
    output pixel leave one per cycle, each registered one cycle after the window's last word of
    its group arrives. A window without any valid position (which
    :class:`~.window.SlidingWindow` never makes) would give the element shape's minimum.

    Parameters
    ----------
    shape : shape
        Element shape, 1 to 32 bits; also the output element shape.
    channels : int
        Channels C.
    simd : int
        Channels per word; must divide ``channels``.
    kernel : int
        Window size K: ``K*K*C/simd`` input words per output pixel.

    Members
    -------
    i : In(stream.Signature(window_word(shape, simd)))
    o : Out(stream.Signature(channel_word(shape, simd)))
    """

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self._build_ports()

    def _neutral(self) -> int:
        return bounds(self._shape)[0]

    def _combine(self, first, acc, value):
        return Mux(first | hdl_greater(value, acc), value, acc)


class SumPoolParameters(_ReduceParameters):
    """The parameters of a :class:`SumPool` and the figures derived from them."""

    def __init__(self, *, shape, channels: int, simd: int, kernel: int) -> None:
        self._check_input(shape, channels, simd)
        self._kernel = check_int("kernel", kernel)
        low, high = bounds(self._shape)
        n = self._kernel**2
        self._set_reduction(positions=n, out_shape=shape_for(n * low, n * high), windowed=True)

    @property
    def kernel(self) -> int:
        """Window size K."""
        return self._kernel


class SumPool(SumPoolParameters, _Reduce):
    """Per-channel sum over each window of a window stream (``K x K`` average pooling, unscaled).

    Padding positions add 0, so the sum divided by ``K*K`` is PyTorch's ``AvgPool2d`` with
    ``count_include_pad=True``; the division is folded into the next layer's scale. The output
    element shape is ``shape_for(K*K*low, K*K*high)`` of the input bounds, so it cannot
    overflow. Binary data (``unsigned(1)``) sums its 0/1 bits.

    Parameters
    ----------
    shape : shape
        Input element shape, 1 to 32 bits.
    channels : int
        Channels C.
    simd : int
        Channels per word; must divide ``channels``.
    kernel : int
        Window size K.

    Members
    -------
    i : In(stream.Signature(window_word(shape, simd)))
    o : Out(stream.Signature(channel_word(out_shape, simd)))
    """

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self._build_ports()

    def _neutral(self) -> int:
        return 0

    def _combine(self, first, acc, value):
        return Mux(first, 0, acc) + value


class GlobalSumPoolParameters(_ReduceParameters):
    """The parameters of a :class:`GlobalSumPool` and the figures derived from them."""

    def __init__(self, *, shape, channels: int, simd: int, height: int, width: int) -> None:
        self._check_input(shape, channels, simd)
        self._height = check_int("height", height)
        self._width = check_int("width", width)
        low, high = bounds(self._shape)
        n = self._height * self._width
        self._set_reduction(positions=n, out_shape=shape_for(n * low, n * high), windowed=False)

    @property
    def height(self) -> int:
        """Frame rows H."""
        return self._height

    @property
    def width(self) -> int:
        """Frame columns W."""
        return self._width

    @property
    def cycles_per_frame(self) -> int:
        """Design cycles per frame at full rate: ``H * W * C / simd`` (one per input word)."""
        return self.input_words

    def figures(self, words: int) -> Figures:
        """The figures of one frame (its own :attr:`cycles_per_frame`, whatever ``words`` says)."""
        return Figures(self.cycles_per_frame, self.latency, self.latency, self.luts)


class GlobalSumPool(GlobalSumPoolParameters, _Reduce):
    """Per-channel sum over all ``H*W`` pixels of each frame (global average pooling, unscaled).

    The input is a tensor stream (channel words, not windows); once per frame, after its last
    word, the ``C/simd`` channel words of the sums leave, one per cycle. The output element
    shape is ``shape_for(H*W*low, H*W*high)``; ``1/(H*W)`` is folded into the next scale.

    Parameters
    ----------
    shape : shape
        Input element shape, 1 to 32 bits.
    channels : int
        Channels C.
    simd : int
        Channels per word; must divide ``channels``.
    height, width : int
        Frame size H x W.

    Members
    -------
    i : In(stream.Signature(channel_word(shape, simd)))
        ``H*W*C/simd`` words per frame.
    o : Out(stream.Signature(channel_word(out_shape, simd)))
        ``C/simd`` words per frame.
    """

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self._build_ports()

    def _neutral(self) -> int:
        return 0

    def _combine(self, first, acc, value):
        return Mux(first, 0, acc) + value
