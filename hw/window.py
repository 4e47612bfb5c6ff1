"""Sliding-window generation: a line-buffered ``K x K`` window stream from a tensor stream.

:class:`SlidingWindow` turns the channel words of a ``C x H x W`` tensor (raster order, see
:mod:`.layouts`) into the window stream of a convolution or pooling layer: for each output pixel
(raster order) the ``K*K*C/simd`` window words in (``ky``, ``kx``, channel word) order, each
with a ``mask`` bit that is 0 for a zero-padding position. :func:`sliding_windows` is the numpy
model of the operation.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import EnableInserter, Module, Mux, Shape, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ._checks import check_divides, check_int, check_int_array, check_shape
from .figures import Figures, FrameParameters, bram_mux
from .layouts import channel_word, window_word
from .options import ExternalModules
from .ram import Ram

__all__ = ["SlidingWindow", "SlidingWindowParameters", "check_window_geometry", "output_size", "sliding_windows"]


def output_size(size: int, *, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output rows (or columns) of a window over ``size`` input rows: ``(size + 2p - K) // s + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


def check_window_geometry(*, height: int, width: int, kernel: int, stride: int, padding: int) -> tuple[int, int, int]:
    """Validated ``(kernel, stride, padding)`` for a ``height x width`` input.

    ``kernel >= 1``, ``stride >= 1``, ``padding`` in ``[0, kernel - 1]`` (so every window holds
    at least one input pixel), and the padded input at least one kernel tall and wide.
    """
    kernel = check_int("kernel", kernel)
    stride = check_int("stride", stride)
    padding = check_int("padding", padding, low=0, high=kernel - 1)
    for name, size in (("height", height), ("width", width)):
        if kernel > size + 2 * padding:
            raise ValueError(f"kernel ({kernel}) must be <= {name} + 2*padding ({size + 2 * padding})")
    return kernel, stride, padding


def sliding_windows(
    tensor, *, kernel: int, stride: int = 1, padding: int = 0, simd: int
) -> tuple[np.ndarray, np.ndarray]:
    """Numpy model of :class:`SlidingWindow`: the window stream of a ``C x H x W`` tensor.

    Parameters
    ----------
    tensor : array of int, shape (C, H, W)
    kernel, stride, padding : int
        Window geometry (validated as by :func:`check_window_geometry`).
    simd : int
        Channels per word; must divide C.

    Returns
    -------
    words : int64 array, shape (out_h * out_w * K * K * C / simd, simd)
        For each output pixel in raster order, its window's words in (``ky``, ``kx``, channel
        word) order: ``tensor[g*simd:(g+1)*simd, oy*s - p + ky, ox*s - p + kx]``, or zeros where
        that position lies in the padding.
    mask : int64 array, shape (out_h * out_w * K * K * C / simd,)
        1 for a word of the input, 0 for a padding word.
    """
    tensor = check_int_array("tensor", tensor)
    if tensor.ndim != 3:
        raise ValueError(f"tensor must be C x H x W, not of shape {tensor.shape}")
    channels, height, width = tensor.shape
    kernel, stride, padding = check_window_geometry(
        height=height, width=width, kernel=kernel, stride=stride, padding=padding
    )
    simd = check_int("simd", simd)
    check_divides("simd", simd, "channels", channels)
    out_h, out_w = (output_size(n, kernel=kernel, stride=stride, padding=padding) for n in (height, width))
    pad = ((padding, padding), (padding, padding))
    image = np.pad(np.moveaxis(tensor, 0, -1), (*pad, (0, 0)))  # (H + 2p, W + 2p, C)
    inside = np.pad(np.ones((height, width), dtype=np.int64), pad)
    # views (rows, cols, [C,] K, K), then every stride-th window
    windows = np.lib.stride_tricks.sliding_window_view(image, (kernel, kernel), axis=(0, 1))
    windows = windows[: (out_h - 1) * stride + 1 : stride, : (out_w - 1) * stride + 1 : stride]
    masks = np.lib.stride_tricks.sliding_window_view(inside, (kernel, kernel))
    masks = masks[: (out_h - 1) * stride + 1 : stride, : (out_w - 1) * stride + 1 : stride]
    words = windows.transpose(0, 1, 3, 4, 2).reshape(-1, simd)  # (oy, ox, ky, kx, c)
    mask = np.repeat(masks.reshape(-1), channels // simd)
    return words, mask


def _wrap_add(value: Value, increment: int, modulus: int) -> Value:
    """``(value + increment) % modulus`` for ``0 <= value, increment < modulus``."""
    total = value + increment
    return Mux(total >= modulus, total - modulus, total)


class SlidingWindowParameters(FrameParameters):
    """The parameters of a :class:`SlidingWindow` and the figures derived from them."""

    lut_kind = "window"

    #: One output word per cycle whenever the rows it needs are buffered.
    initiation_interval = 1

    #: Cycles from the input word that completes the last row an output row needs to that row's
    #: first word on the output (the read port's register, the read data's two registers, then
    #: the output register).
    row_latency = 4

    def __init__(
        self,
        *,
        shape,
        channels: int,
        simd: int,
        height: int,
        width: int,
        kernel: int,
        stride: int = 1,
        padding: int = 0,
    ) -> None:
        self._shape = check_shape("shape", shape, max_width=32)
        self._check_frame(channels, simd, height, width)
        self._kernel, self._stride, self._padding = check_window_geometry(
            height=self._height, width=self._width, kernel=kernel, stride=stride, padding=padding
        )
        geometry = {"kernel": self._kernel, "stride": self._stride, "padding": self._padding}
        self._out_height = output_size(self._height, **geometry)
        self._out_width = output_size(self._width, **geometry)
        last_top = (self._out_height - 1) * self._stride - self._padding  # first row of the last output row
        last_held = self._height - max(0, last_top)
        first_needed = min(self._height, self._kernel - self._padding)
        # a 1 x 1 window at stride 1 reads each row as the next one is written, and a release
        # reaches the writer a cycle late: one more slot keeps it from waiting
        lockstep = self._kernel == self._stride == 1
        self._rows = max(self._kernel + self._stride + lockstep, last_held + first_needed)

    @property
    def shape(self):
        """Element shape."""
        return self._shape

    @property
    def kernel(self):
        """Window size K."""
        return self._kernel

    @property
    def stride(self):
        """Window step s."""
        return self._stride

    @property
    def padding(self):
        """Zero padding p."""
        return self._padding

    @property
    def out_height(self):
        """Output rows, ``(H + 2p - K) // s + 1``."""
        return self._out_height

    @property
    def out_width(self):
        """Output columns, ``(W + 2p - K) // s + 1``."""
        return self._out_width

    @property
    def rows(self):
        """Row slots in the line buffer."""
        return self._rows

    @property
    def input_words(self) -> int:
        """Input words per frame, ``H * W * C / simd``."""
        return self.frame_words

    @property
    def output_words(self) -> int:
        """Output words per frame, ``out_h * out_w * K * K * C / simd``."""
        return self._out_height * self._out_width * self._kernel**2 * self.groups

    @property
    def cycles_per_frame(self) -> int:
        """Design cycles per frame at full rate: ``max(output_words, input_words)``."""
        return max(self.output_words, self.input_words)

    @property
    def memory_bits(self) -> int:
        """Bits of the line buffer: ``rows * W * C * element width``."""
        return self._rows * self._width * self._channels * self._shape.width

    @property
    def latency(self) -> int:
        """Cycles from the first input word of a frame to its first output word (idle, full
        rate): the input rows the first output row needs, then :attr:`row_latency` less one."""
        first_needed = min(self._height, self._kernel - self._padding)
        return first_needed * self._width * self.groups + self.row_latency - 1

    def lut_features(self) -> tuple[float, ...]:
        depth = self._rows * self._width * self.groups
        width = self._simd * self._shape.width
        return (1.0, float(width), float(max(1, depth - 1).bit_length()), float(bram_mux(depth, width)))

    def figures(self, words: int) -> Figures:
        """The figures of one frame (its own :attr:`cycles_per_frame`, whatever ``words`` says)."""
        return Figures(self.cycles_per_frame, self.latency, self.row_latency, self.luts, self.memory_bits)


class SlidingWindow(SlidingWindowParameters, ExternalModules, wiring.Component):
    """Line-buffered ``K x K`` sliding-window generator with stride and zero padding.

    The input rows go, in sequence, into a circular buffer of :attr:`rows` row slots (one
    :class:`~.ram.Ram` of ``rows * W * C/simd`` words, one write and one synchronous read
    port); slots rotate across frame boundaries, so the next frame streams in while the last
    windows of the current one are read. Rows are tracked by absolute (modular)
    counts: the writer may write row ``n`` while ``n - released < rows``, and the reader emits
    output row ``oy`` once every input row it needs (up to ``min(H, oy*s - p + K) - 1``) is
    complete. The reader releases each row the moment it has issued its last read of it (rows
    that no window uses, e.g. the last one with stride 2, are released in advance), which keeps
    the writer going during the last pixel of a row. Padding positions are not read: they leave
    with ``mask = 0`` and all-zero data.

    Throughput: one output word per cycle whenever the rows it needs are present, so a frame
    takes :attr:`cycles_per_frame` cycles at full rate, and :attr:`rows` is chosen so that
    neither side waits for buffer space, within a frame or across frame boundaries:
    ``rows = max(K + s, L + min(H, K - p))``, where ``L = H - max(0, (out_h - 1)*s - p)`` rows
    are held while the last output row of a frame is read and ``min(H, K - p)`` rows of the next
    frame are needed before its first output row (``K + s`` alone would stall the reader
    between frames, e.g. for ``K = 3, s = 1, p = 0``); ``K + s + 1`` for ``K = s = 1``, whose
    reader keeps pace with the writer, since ``i.ready`` is a register that learns of a release
    a cycle late. Latency: the first word of an output row
    leaves 4 cycles after the input word that completes the last row it needs: the read data is
    registered twice before it leaves (a block RAM's clock-to-output takes most of a cycle, and
    the first register becomes the block's own output register in a build), and the
    last row an output row needs is kept as an absolute row count, compared with the rows
    written a cycle ahead, so deciding to read is a register. The read address is a register
    too: the address of each step's next word (one on, a window row below, the next pixel's,
    the next output row's) is computed ahead from registers, and the step only picks it.

    Parameters
    ----------
    shape : shape
        Element shape, 1 to 32 bits: ``unsigned(1)`` for binary tensors, ``signed(n)`` or
        ``unsigned(n)`` for multi-bit ones.
    channels : int
        Channels C of the tensor.
    simd : int
        Channels per word; must divide ``channels``.
    height, width : int
        Input size H x W.
    kernel : int
        Window size K.
    stride : int
        Window step s.
    padding : int
        Zero padding p on every side, 0 to K - 1.
    external_modules : bool
        Make the line buffer a :class:`~.ram.Ram` instance of the Verilog module, for Verilog
        output; ``False`` (default): inline, for Amaranth's simulator.

    Members
    -------
    i : In(stream.Signature(channel_word(shape, simd)))
        The tensor, ``H*W*C/simd`` words per frame, frames back to back.
    o : Out(stream.Signature(window_word(shape, simd)))
        The windows, ``out_h*out_w*K*K*C/simd`` words per frame.
    """

    def __init__(self, *, external_modules: bool = False, **params) -> None:
        super().__init__(**params)
        self._set_external_modules(external_modules)
        wiring.Component.__init__(
            self,
            {
                "i": In(stream.Signature(channel_word(self._shape, self._simd))),
                "o": Out(stream.Signature(window_word(self._shape, self._simd))),
            },
        )

    def elaborate(self, platform):
        m = Module()
        K, s, p = self._kernel, self._stride, self._padding
        H, W, G = self._height, self._width, self.groups
        R = self._rows
        row_words = W * G
        depth = R * row_words
        # Absolute row counts wrap modulo 2**bits; every difference compared is within +-(R + H + K + s).
        bits = (4 * (R + H + K + s)).bit_length()

        def ahead(a, b):  # signed (a - b) of two wrapping row counts
            return (a - b)[:bits].as_signed()

        def ahead_less_one(a, b):  # signed (a - b - 1) in one addition: ~b is -b - 1
            return (a + ~b)[:bits].as_signed()

        word_bits = Shape.cast(channel_word(self._shape, self._simd)).width
        m.submodules.buffer = buffer = Ram(width=word_bits, depth=depth, external_modules=self._external_modules)

        # Writer: input words go to consecutive addresses; row n lives in slot n mod R.
        written = Signal(bits)  # input rows completed
        # the last row the writer may write: R - 1 past the first one the reader still needs
        last_writable = Signal(bits, init=R - 1)
        w_addr = Signal(range(depth))
        w_col = Signal(range(row_words))
        # i.ready is a register: whether the row being written has a free slot, decided a cycle
        # ahead from the rows written and released (a release shows a cycle late: never early);
        # one subtraction each way, whether or not a row finishes on this edge
        room = Signal(init=1)
        row_done = self.i.valid & self.i.ready & (w_col == row_words - 1)
        finishing = ahead_less_one(last_writable, written) >= 0
        m.d.sync += room.eq(Mux(row_done, finishing, ahead(last_writable, written) >= 0))
        m.d.comb += [
            self.i.ready.eq(room),
            buffer.w_addr.eq(w_addr),
            buffer.w_data.eq(Value.cast(self.i.payload)),
            buffer.w_en.eq(self.i.valid & self.i.ready),
        ]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += w_addr.eq(Mux(w_addr == depth - 1, 0, w_addr + 1))
            with m.If(w_col == row_words - 1):
                m.d.sync += [w_col.eq(0), written.eq(written + 1)]
            with m.Else():
                m.d.sync += w_col.eq(w_col + 1)

        # Reader: nested loops oy, ox, ky, kx, g, with positions kept incrementally.
        frame = Signal(bits)  # absolute number of input row 0 of the frame being read
        oy = Signal(range(self._out_height))
        ox = Signal(range(self._out_width))
        ky = Signal(range(K))
        kx = Signal(range(K))
        g = Signal(range(G))
        top = Signal(range(-p, H), init=-p)  # oy*s - p: input row of ky = 0
        row = Signal(range(-p, H + p), init=-p)  # top + ky
        x0 = Signal(range(-p, W + p), init=-p)  # ox*s - p: input column of kx = 0
        x = Signal(range(-p, W + p), init=-p)  # x0 + kx
        x0_word = Signal(range(-p * G, (W + p) * G), init=-p * G)  # x0 * G
        first_base = (-p % R) * row_words
        top_base = Signal(range(depth), init=first_base)  # address of the slot of row `top`
        row_base = Signal(range(depth), init=first_base)  # address of the slot of row `row`
        # row_base + x * G + g, modulo the address's width: the read address wherever the word
        # lies inside the image. Its next value, and whether the next row and column lie inside,
        # are picked by each step below; the read address register takes it, or zero outside.
        address = Signal(range(depth), init=(first_base - p * G) % 2 ** Shape.cast(range(depth)).width)
        row_in, x_in = Signal(init=p == 0, name="row_inside"), Signal(init=p == 0, name="x_inside")
        # The steps advance on `issue` alone (an enable): what each step picks is computed from
        # registers whether or not it is taken, so `o.ready`, which comes from the next component,
        # reaches the loop's registers through their enables only.
        steps = Module()
        address_next, row_in_next, x_in_next = Signal.like(address), Signal(), Signal()
        steps.d.comb += [address_next.eq(address), row_in_next.eq(row_in), x_in_next.eq(x_in)]
        steps.d.sync += [address.eq(address_next), row_in.eq(row_in_next), x_in.eq(x_in_next)]
        r_addr = Signal(range(depth), init=address.init if p == 0 else 0)
        steps.d.sync += r_addr.eq(Mux(row_in_next & x_in_next, address_next, 0))
        inside = row_in & x_in

        # The last input row the current output row needs, frame + min(top + K - 1, H - 1), kept
        # as an absolute count with the rows left below the frame's last, so that the next output
        # row's is needed + min(s, slack): no sum of top, K and frame on the way.
        first_last = min(K - 1 - p, H - 1)
        needed = Signal(bits, init=first_last)
        slack = Signal(range(H), init=H - 1 - first_last)
        step_rows = Mux(slack < s, slack, s)

        # whether the rows the current output row needs are written, a register computed from
        # the next row counts: the comparison's carry chain does not reach the loop counters
        rows_ready = Signal()
        advance = ~self.o.valid | self.o.ready
        issue = advance & rows_ready

        # The output: the read port's data register; the read data in a plain register (a block
        # RAM's output register once built: its clock-to-output is most of a cycle, and the
        # block may sit far from the logic), then zeroed where padding and registered with the
        # mask beside it.
        read, read_mask = Signal(), Signal()
        data, data_valid, data_mask = Signal(word_bits, reset_less=True), Signal(), Signal()
        m.d.comb += [buffer.r_en[0].eq(advance), buffer.r_addr[0].eq(r_addr)]
        with m.If(advance):
            m.d.sync += [read.eq(rows_ready), read_mask.eq(inside)]
            m.d.sync += [data.eq(buffer.r_data[0]), data_valid.eq(read), data_mask.eq(read_mask)]
            m.d.sync += [self.o.valid.eq(data_valid), self.o.payload.mask.eq(data_mask)]
            m.d.sync += self.o.payload.data.eq(Mux(data_mask, data, 0))

        last_g, last_kx, last_ky = g == G - 1, kx == K - 1, ky == K - 1
        last_ox, last_oy = ox == self._out_width - 1, oy == self._out_height - 1
        next_start = top + s  # first input row of the next output row
        row_end = last_g & last_kx & last_ky & last_ox

        def ahead_of_use(value, words_apart: int, *, name: str, init: int = 0, depth: int = 1) -> Signal:
            """``value``, registered where the registers it is computed from last changed at
            least ``depth + 1`` issued words before it is used (they have then settled a cycle
            ahead); ``depth`` 2 for a value computed from values themselves ahead of use."""
            held = Signal(value.shape(), name=name, init=init)
            if words_apart > depth:
                m.d.sync += held.eq(value)
            else:
                m.d.comb += held.eq(value)
            return held

        # The row count the next output row needs, ready before its row ends, so that deciding
        # to read compares registers only.
        first_after = H + first_last if self._out_height == 1 else first_last + min(H - 1 - first_last, s)
        after = Mux(last_oy, frame + H + first_last, needed + step_rows)
        needed_after = ahead_of_use(after, G * K * K * self._out_width, name="needed_after", init=first_after)
        ending = issue & row_end

        def written_by(count):  # whether `written` plus this cycle's finished row passes `count`
            return Mux(row_done, ahead(written, count) >= 0, ahead_less_one(written, count) >= 0)

        with m.If(ending):
            m.d.sync += needed.eq(needed_after)
        m.d.sync += rows_ready.eq(Mux(ending, written_by(needed_after), written_by(needed)))

        # The slots and addresses each step goes to, computed ahead from registers, so that a
        # step only picks (and the one addition left, the next word's, is not shared with
        # another behind a multiplexer): a window row below (steps K * G words apart), the next
        # pixel's (K * K * G apart), the next output row's or the next frame's first (a whole
        # output row apart).
        frame_step = (H - p - ((self._out_height - 1) * s - p)) % R  # slots from row `top` to the next -p
        below = _wrap_add(row_base, row_words, depth)
        row_below = ahead_of_use(below, K * G, name="row_below")
        row_below_address = ahead_of_use(below + x0_word, K * G, name="row_below_address")
        pixel_address = ahead_of_use(top_base + x0_word + s * G, K * K * G, name="pixel_address")
        row_words_apart = G * K * K * self._out_width
        next_top_base, frame_top_base = (
            ahead_of_use(_wrap_add(top_base, slots * row_words, depth), row_words_apart, name=f"{name}_top_base")
            for slots, name in ((s, "next"), (frame_step, "frame"))
        )
        next_top_address, frame_top_address = (
            ahead_of_use(base - p * G, row_words_apart, name=f"{base.name[: -len('_base')]}_address", depth=2)
            for base in (next_top_base, frame_top_base)
        )

        def within(value, step, size, words_apart, name):  # whether value + step lies in [0, size), ahead
            return ahead_of_use((value >= -step) & (value < size - step), words_apart, name=name)

        next_x_in = within(x, 1, W, G, "next_x_inside")
        row_below_in = within(row, 1, H, K * G, "row_below_inside")
        first_x_in = within(x0, 0, W, K * G, "first_x_inside")
        pixel_x_in = within(x0, s, W, K * K * G, "pixel_x_inside")
        top_in = within(top, 0, H, K * K * G, "top_inside")
        next_top_in = within(top, s, H, row_words_apart, "next_top_inside")

        with steps.If(~last_g):
            steps.d.sync += g.eq(g + 1)
            steps.d.comb += address_next.eq(address + 1)
        with steps.Elif(~last_kx):
            steps.d.sync += [g.eq(0), kx.eq(kx + 1), x.eq(x + 1)]
            steps.d.comb += [address_next.eq(address + 1), x_in_next.eq(next_x_in)]
        with steps.Elif(~last_ky):
            steps.d.sync += [g.eq(0), kx.eq(0), ky.eq(ky + 1), row.eq(row + 1), x.eq(x0), row_base.eq(row_below)]
            steps.d.comb += [address_next.eq(row_below_address), row_in_next.eq(row_below_in)]
            steps.d.comb += x_in_next.eq(first_x_in)
        with steps.Elif(~last_ox):
            steps.d.sync += [g.eq(0), kx.eq(0), ky.eq(0), ox.eq(ox + 1), row.eq(top), row_base.eq(top_base)]
            steps.d.sync += [x0.eq(x0 + s), x.eq(x0 + s), x0_word.eq(x0_word + s * G)]
            steps.d.comb += [address_next.eq(pixel_address), row_in_next.eq(top_in)]
            steps.d.comb += x_in_next.eq(pixel_x_in)
        with steps.Else():
            new_top, new_base = Signal.like(top), Signal.like(top_base)
            with steps.If(~last_oy):
                steps.d.comb += [new_top.eq(top + s), new_base.eq(next_top_base), address_next.eq(next_top_address)]
                steps.d.sync += [oy.eq(oy + 1), slack.eq(slack - step_rows)]
                steps.d.comb += row_in_next.eq(next_top_in)
            with steps.Else():
                # next frame: its row 0 is absolute row frame + H
                steps.d.comb += [new_top.eq(-p), new_base.eq(frame_top_base), address_next.eq(frame_top_address)]
                steps.d.sync += [oy.eq(0), frame.eq(frame + H)]
                steps.d.comb += row_in_next.eq(p == 0)
                steps.d.sync += slack.eq(H - 1 - first_last)
            steps.d.sync += [g.eq(0), kx.eq(0), ky.eq(0), ox.eq(0), top.eq(new_top), row.eq(new_top)]
            steps.d.sync += [top_base.eq(new_base), row_base.eq(new_base), x0.eq(-p), x.eq(-p), x0_word.eq(-p * G)]
            steps.d.comb += x_in_next.eq(p == 0)
        # Release each row once its last read is issued (at the last pixel of an output row).
        with steps.If(last_g & last_kx & last_ox):
            with steps.If(last_ky & last_oy):
                steps.d.sync += last_writable.eq(frame + (H + R - 1))
            with steps.Elif(last_ky):
                steps.d.sync += last_writable.eq(frame + Mux(next_start < 0, R - 1, top + (s + R - 1)))
            with steps.Elif(row_in & (ky < s)):  # row = top + ky is inside and below the next top
                steps.d.sync += last_writable.eq(frame + row + R)
        m.submodules.steps = EnableInserter(issue)(steps)
        return m
