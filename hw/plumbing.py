"""Stream plumbing: register slice, FIFO, fork and residual join-add (re-packing streams: :mod:`.reshape`).

Every block here moves whole payloads and obeys the four transfer rules of
:mod:`amaranth.lib.stream`: a transfer happens when ``valid & ready``; once ``valid`` is up it
and the payload hold until the transfer; ``valid`` never depends on ``ready``; ``ready`` may
depend on ``valid``.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Module, Mux, Shape, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ._checks import check_int, check_payload, check_shape
from .delay import delayed
from .figures import Figures, Parameters, bram_mux
from .fixed import bounds, shape_for
from .options import ExternalModules
from .ram import Ram
from .tiles import read_latency, tile_luts

__all__ = [
    "Fifo",
    "FifoParameters",
    "Fork",
    "ForkParameters",
    "JoinAdd",
    "JoinAddParameters",
    "RegisterSlice",
    "RegisterSliceParameters",
    "join_add",
]


class RegisterSliceParameters(Parameters):
    """The parameters of a :class:`RegisterSlice` and the figures derived from them."""

    lut_kind = "slice"

    #: One payload per cycle, whatever ``ready`` does.
    initiation_interval = 1

    #: Cycles from an input transfer to its ``valid`` on the output.
    latency = 1

    #: Widest payload: a fully parallel layer's output word (which the planner sizes, if never builds).
    MAX_BITS = 1 << 20

    def __init__(self, *, shape) -> None:
        self._shape = check_payload("shape", shape, max_width=self.MAX_BITS)

    @property
    def shape(self):
        """Payload shape."""
        return self._shape

    def lut_features(self) -> tuple[float, ...]:
        return (1.0, float(Shape.cast(self._shape).width))

    def figures(self, words: int) -> Figures:
        return Figures(words, self.latency, self.latency, self.luts)


class RegisterSlice(RegisterSliceParameters, wiring.Component):
    """A stream boundary that no combinational path crosses: registered ``valid``, payload and ``ready``.

    The output register holds the current payload; a second (skid) register parks the one
    payload that arrives in the cycle the output stalls, so ``i.ready`` is a register (the skid
    is empty) and ``o.ready`` reaches only the registers' enables: a chain of components cut by
    slices has no path longer than one component. One payload per cycle under any back-pressure;
    a payload is on ``o`` the cycle after its input transfer.

    Parameters
    ----------
    shape : shape-castable
        Payload shape.

    Members
    -------
    i : In(stream.Signature(shape))
    o : Out(stream.Signature(shape))
    """

    def __init__(self, **params) -> None:
        super().__init__(**params)
        wiring.Component.__init__(
            self, {"i": In(stream.Signature(self._shape)), "o": Out(stream.Signature(self._shape))}
        )

    def elaborate(self, platform):
        m = Module()
        skid = Signal(self._shape)
        parked = Signal()
        m.d.comb += self.i.ready.eq(~parked)
        with m.If(~self.o.valid | self.o.ready):
            # the output register takes the parked payload first, else the arriving one
            m.d.sync += [self.o.valid.eq(parked | self.i.valid), parked.eq(0)]
            m.d.sync += self.o.payload.eq(Mux(parked, skid, self.i.payload))
        with m.Elif(self.i.valid & ~parked):
            m.d.sync += [skid.eq(self.i.payload), parked.eq(1)]
        return m


class FifoParameters(Parameters):
    """The parameters of a :class:`Fifo` and the figures derived from them."""

    lut_kind = "fifo"

    #: A full FIFO accepts and emits one payload per cycle.
    initiation_interval = 1

    #: Most payloads in the memory that synthesis keeps in LUT RAM; a deeper memory is block RAM,
    #: whose read data (5.8 ns from the clock on ECP5 without its output register) gets a register.
    LUT_RAM_WORDS = 16

    #: Widest payload: a fully parallel matrix-vector unit's output word (sized by the planner).
    MAX_BITS = RegisterSliceParameters.MAX_BITS

    def __init__(self, *, shape, depth: int) -> None:
        self._shape = check_payload("shape", shape, max_width=self.MAX_BITS)
        self._depth = check_int("depth", depth)

    @property
    def shape(self):
        """Payload shape."""
        return self._shape

    @property
    def depth(self) -> int:
        """Payloads it holds."""
        return self._depth

    @property
    def memory_words(self) -> int:
        """Payloads in the memory: ``depth - 1`` (the output register holds one)."""
        return self._depth - 1

    @property
    def registered_read(self) -> bool:
        """Whether the memory's read data passes a register before the output register: when the
        memory is block RAM (more than :attr:`LUT_RAM_WORDS` words)."""
        return self.memory_words > self.LUT_RAM_WORDS

    @property
    def read_latency(self) -> int:
        """Enabled edges of the memory's read: 3 when it is block RAM tiled in depth
        (:func:`~.tiles.read_latency`), else 1."""
        if not self.registered_read:
            return 1
        return read_latency(self.memory_words, Shape.cast(self._shape).width)

    @property
    def latency(self) -> int:
        """Cycles from an input transfer into an empty queue to its ``valid`` on the output: 1 with
        ``depth = 1`` (the output register alone), 2 (memory, output register), with a
        :attr:`registered_read` one more per edge of the :attr:`read_latency`."""
        if self._depth == 1:
            return 1
        return 1 + self.read_latency + self.registered_read

    @property
    def memory_bits(self) -> int:
        """``depth`` payloads."""
        return self._depth * Shape.cast(self._shape).width

    @property
    def luts(self) -> int:
        """LUT4 equivalents by the LUT model, and the tiles' pick of a block RAM memory."""
        tiles = tile_luts(self.memory_words, Shape.cast(self._shape).width) if self.registered_read else 0
        return super().luts + tiles

    def lut_features(self) -> tuple[float, ...]:
        bits = Shape.cast(self._shape).width
        # up to 16 words a FIFO is LUT RAM (not LUT4s); deeper, block RAM with an output register
        return (
            1.0,
            float(bits if self._depth > self.LUT_RAM_WORDS else 0),
            float(max(1, self._depth).bit_length()),
            float(bram_mux(self._depth, bits)),
        )

    def figures(self, words: int) -> Figures:
        return Figures(words, self.latency, self.latency, self.luts, self.memory_bits)


class Fifo(FifoParameters, ExternalModules, wiring.Component):
    """First-in first-out queue of ``depth`` payloads (memory-backed, registered output).

    Up to :attr:`LUT_RAM_WORDS` words of memory, the behaviour of
    :class:`amaranth.lib.fifo.SyncFIFOBuffered`, cycle for cycle (same ``depth``, latency and
    level): ``depth - 1`` payloads in a :class:`~.ram.Ram` with a synchronous read port, plus the
    output register; a payload taken by an empty queue is valid on ``o`` two cycles after its
    transfer. A deeper memory is block RAM, tiled in depth (:mod:`.tiles`), and its read data
    goes through one more register (:attr:`registered_read`) so that no path starts at a block
    RAM's slow read output and continues into the consumer: the memory's read stages and the
    output register form a pipeline that stalls as a whole while the output is held, one cycle
    more latency per stage, up to as many payloads more held. A full queue accepts and emits one
    payload per cycle; ``depth = 1`` is the output register alone (a payload every other cycle).

    Parameters
    ----------
    shape : shape-castable
        Payload shape, e.g. a :class:`~amaranth.lib.data.ArrayLayout` of channels.
    depth : int
        Number of payloads it holds, >= 1. The residual bypass FIFOs take theirs from the
        compiler's cycle model.
    external_modules : bool
        Make the memory a :class:`~.ram.Ram` instance of the Verilog module, for Verilog
        output; ``False`` (default): inline, for Amaranth's simulator.

    Members
    -------
    i : In(stream.Signature(shape))
    o : Out(stream.Signature(shape))
    """

    def __init__(self, *, external_modules: bool = False, **params) -> None:
        super().__init__(**params)
        self._set_external_modules(external_modules)
        wiring.Component.__init__(
            self, {"i": In(stream.Signature(self._shape)), "o": Out(stream.Signature(self._shape))}
        )

    def elaborate(self, platform):
        m = Module()
        width = Shape.cast(self._shape).width
        w_data, r_data = Value.cast(self.i.payload), Value.cast(self.o.payload)
        do_write = self.i.valid & self.i.ready
        if self._depth == 1:  # the output register alone
            m.d.comb += self.i.ready.eq(~self.o.valid)
            with m.If(do_write):
                m.d.sync += [r_data.eq(w_data), self.o.valid.eq(1)]
            with m.If(self.o.valid & self.o.ready):
                m.d.sync += self.o.valid.eq(0)
            return m
        inner = self.memory_words
        level = Signal(range(inner + 1))  # payloads in the memory
        produce, consume = Signal(range(inner)), Signal(range(inner))
        m.submodules.storage = ram = Ram(
            width=width, depth=inner, external_modules=self._external_modules, tiled=self.registered_read
        )
        advance = ~self.o.valid | self.o.ready  # the output register can take a payload
        m.d.comb += [
            self.i.ready.eq(level != inner),
            ram.w_addr.eq(produce),
            ram.w_data.eq(w_data),
            ram.w_en.eq(do_write),
            ram.r_addr[0].eq(consume),
        ]
        do_read = (level != 0) & advance
        if self.registered_read:
            # the memory's read stages and the output register advance together
            fetched = delayed(m, do_read, ram.latency, enable=advance, name="fetched")
            with m.If(advance):
                m.d.sync += [r_data.eq(ram.r_data[0]), self.o.valid.eq(fetched)]
            m.d.comb += ram.r_en[0].eq(advance)
        else:  # the memory's read register is the output register
            m.d.comb += [r_data.eq(ram.r_data[0]), ram.r_en[0].eq(do_read)]
            with m.If(do_read):
                m.d.sync += self.o.valid.eq(1)
            with m.Elif(self.o.ready):
                m.d.sync += self.o.valid.eq(0)
        with m.If(do_write):
            m.d.sync += produce.eq(_increment(produce, inner))
        with m.If(do_read):
            m.d.sync += consume.eq(_increment(consume, inner))
        with m.If(do_write & ~do_read):
            m.d.sync += level.eq(level + 1)
        with m.If(do_read & ~do_write):
            m.d.sync += level.eq(level - 1)
        return m


def _increment(counter: Signal, modulus: int):
    """``(counter + 1) % modulus`` for ``0 <= counter < modulus``."""
    return counter + 1 if modulus == 1 << len(counter) else Mux(counter == modulus - 1, 0, counter + 1)


class ForkParameters(Parameters):
    """The parameters of a :class:`Fork` and the figures derived from them."""

    lut_kind = "fork"

    initiation_interval = 1

    #: Combinational: a payload is on both outputs in the cycle it is on the input.
    latency = 0

    def __init__(self, *, shape) -> None:
        self._shape = check_payload("shape", shape)

    @property
    def shape(self):
        """Payload shape."""
        return self._shape

    def lut_features(self) -> tuple[float, ...]:
        return (1.0, float(Shape.cast(self._shape).width))

    def figures(self, words: int) -> Figures:
        return Figures(words, self.latency, self.latency, self.luts)


class Fork(ForkParameters, wiring.Component):
    """Copies each input payload to two outputs that may take it in different cycles.

    The input transfer completes once both outputs have taken the payload, so a slow branch
    back-pressures the source and a fast one is not duplicated.

    Parameters
    ----------
    shape : shape-castable
        Payload shape.

    Members
    -------
    i : In(stream.Signature(shape))
    o : Out(stream.Signature(shape)).array(2)
    """

    def __init__(self, **params) -> None:
        super().__init__(**params)
        wiring.Component.__init__(
            self, {"i": In(stream.Signature(self._shape)), "o": Out(stream.Signature(self._shape)).array(2)}
        )

    def elaborate(self, platform):
        m = Module()
        taken = Signal(2)  # which outputs already took the current payload
        m.d.comb += self.i.ready.eq((taken[0] | self.o[0].ready) & (taken[1] | self.o[1].ready))
        for index, output in enumerate(self.o):
            m.d.comb += [output.payload.eq(self.i.payload), output.valid.eq(self.i.valid & ~taken[index])]
            with m.If(self.i.valid & self.i.ready):
                m.d.sync += taken[index].eq(0)
            with m.Elif(output.valid & output.ready):
                m.d.sync += taken[index].eq(1)
        return m


def join_add(a: np.ndarray, b: np.ndarray, *, shifts: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Numpy model of :class:`JoinAdd`: ``(a << shifts[0]) + (b << shifts[1])``."""
    return (np.asarray(a, dtype=np.int64) << shifts[0]) + (np.asarray(b, dtype=np.int64) << shifts[1])


class JoinAddParameters(Parameters):
    """The parameters of a :class:`JoinAdd` and the figures derived from them."""

    lut_kind = "join_add"

    initiation_interval = 1

    #: Cycles from the transfer of both input words to the sum's ``valid`` (registered output).
    latency = 1

    def __init__(self, *, shape, count: int, shifts: tuple[int, int] = (0, 0)) -> None:
        self._shape = check_shape("shape", shape)
        self._count = check_int("count", count)
        if not isinstance(shifts, (tuple, list)) or len(shifts) != 2:
            raise TypeError(f"shifts must be a pair of integers, not {shifts!r}")
        self._shifts = tuple(check_int(f"shifts[{k}]", s, low=0, high=32) for k, s in enumerate(shifts))
        low, high = bounds(self._shape)
        self._out_shape = shape_for(sum(low << s for s in self._shifts), sum(high << s for s in self._shifts))

    @property
    def shape(self) -> Shape:
        """Element shape of both inputs."""
        return self._shape

    @property
    def count(self) -> int:
        """Elements per word."""
        return self._count

    @property
    def shifts(self) -> tuple[int, int]:
        """Left shift of each input."""
        return self._shifts

    @property
    def out_shape(self) -> Shape:
        """Element shape of the sum."""
        return self._out_shape

    def lut_features(self) -> tuple[float, ...]:
        return (1.0, float(self._out_shape.width * self._count))

    def figures(self, words: int) -> Figures:
        return Figures(words, self.latency, self.latency, self.luts)


class JoinAdd(JoinAddParameters, wiring.Component):
    """Element-wise sum of two streams of channel words: the residual join.

    ``o = (i[0] << shifts[0]) + (i[1] << shifts[1])``; the shifts align two power-of-two scales
    exactly. The output element shape is derived from the input bounds, so the sum cannot
    overflow. One output word per cycle once both inputs have one; the output is registered.

    Parameters
    ----------
    shape : shape-castable
        Integer element shape of both inputs (the compiler widens the narrower branch).
    count : int
        Elements per word.
    shifts : pair of int
        Left shift of each input, 0 to 32.

    Members
    -------
    i : In(stream.Signature(data.ArrayLayout(shape, count))).array(2)
    o : Out(stream.Signature(data.ArrayLayout(out_shape, count)))
    """

    def __init__(self, **params) -> None:
        super().__init__(**params)
        wiring.Component.__init__(
            self,
            {
                "i": In(stream.Signature(data.ArrayLayout(self._shape, self._count))).array(2),
                "o": Out(stream.Signature(data.ArrayLayout(self._out_shape, self._count))),
            },
        )

    def elaborate(self, platform):
        m = Module()
        a, b = self.i[0], self.i[1]
        accept = a.valid & b.valid & (~self.o.valid | self.o.ready)
        m.d.comb += [a.ready.eq(accept), b.ready.eq(accept)]
        with m.If(accept):
            m.d.sync += self.o.valid.eq(1)
            for k in range(self._count):
                m.d.sync += self.o.payload[k].eq((a.payload[k] << self._shifts[0]) + (b.payload[k] << self._shifts[1]))
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m
