"""Read/write memories, inline or as an instance of a Verilog module (the read/write twin of :mod:`.rom`).

Amaranth's Verilog back end spells out the initial contents of every memory bit by bit, even
for an all-zero ``init=[]``: a design with tens of megabits of frame and line buffers spends
minutes there and writes a Verilog file of as many ``initial`` rows. A :class:`Ram` built with
``external_modules=True`` is instead an ``Instance`` of the module :data:`RAM_MODULE`, whose source
:func:`ram_verilog` the compiler writes beside the design; without it, the :class:`Ram` is an
:class:`amaranth.lib.memory.Memory`, which Amaranth's simulator runs. Both behave as that
``Memory`` does (one write port, each read port one of :data:`READ_PORT_KINDS`):

* write: at a clock edge, lane ``l`` (bits ``l*granularity ..``) of word ``w_addr`` takes
  ``w_data``'s lane where ``w_en[l]`` is high;
* ``"sync"`` read: at a clock edge where ``r_en`` is high, ``r_data`` takes word ``r_addr``
  as it was before that edge's write (read-first); it holds while ``r_en`` is low. The lanes
  written at that same edge are *undefined*: the memory is ``no_rw_check`` for Yosys, so block
  RAM needs no collision logic (a register and a multiplexer per bit) between it and its
  reader. Amaranth's simulator gives their old value; the external module's simulation gives
  it inverted, so a design that used such a read fails its bit-exact checks;
* ``"transparent"`` read: the same, except that the lanes written at that edge to the same
  address are taken from ``w_data`` (write-first; ``transparent_for`` the write port);
* ``"comb"`` read: ``r_data`` is word ``r_addr`` now (asynchronous; ``r_en`` unused);
* every word and every ``"sync"`` / ``"transparent"`` ``r_data`` starts at zero.

A ``tiled`` Ram deeper than one block RAM is cut in depth into Rams of one block each, whose
read data is registered beside the blocks and once more (:mod:`.tiles`): its ``"sync"`` reads
take three enabled edges.

Addresses must be below ``depth``. The read registers have no reset, as in Amaranth's Verilog
(its simulator also clears them while the domain's reset is high). In Verilog the zero start is
an ``initial`` loop outside ``SYNTHESIS`` (Yosys defines it, so it never unrolls the loop;
Verilator and Icarus run it); synthesis infers block RAM (``DP16KD`` on ECP5) for a big enough
memory whose read ports are all synchronous, with the cells of the inline ``Memory``. Some
components read a word before its first write (a free-running or speculative read) and discard
what they read; no valid output depends on the zero start, which only keeps the Verilog equal to
Amaranth's simulator on payloads while ``valid`` is low.

Which memories are external: a component built with ``external_modules=True``
(:class:`~.window.SlidingWindow`, :class:`~.moments.MomentsThreshold`, :class:`~.insta_prelu.InstaPReLU`,
:class:`~.int_mvu.IntMatrixVector`, :class:`~.plumbing.Fifo`; the compiler sets it for Verilog
output) makes every one of its read/write memories external, whatever its size (the size
threshold is 0): an instance costs nothing to convert, and the compiler's end-to-end
simulations then cover every use. Only two small kinds stay inline: the
:class:`~.xnor_mvu.XnorMatrixVector` input buffer (``SF * (simd + 1)`` bits, at most a few
kilobits; it keeps its ``ram_style`` choice and ``no_rw_check``) and the
:class:`~.reshape.Repeat` replay buffer (LUT RAM read asynchronously, ``words`` words), as do
the constant tables (ROMs with ``init``).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

from amaranth.hdl import Cat, ClockSignal, Instance, Module, Mux, Shape, ShapeCastable, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ._checks import check_flag, check_int
from .options import ExternalModules
from .rom import address_bits
from .tiles import memory_tiles, read_latency, select_tile

__all__ = ["RAM_MODULE", "READ_PORT_KINDS", "Ram", "RamModel", "ram_verilog"]

#: Name of the Verilog module of :func:`ram_verilog`.
RAM_MODULE = "instabnn_ram"

#: The kinds of read port: synchronous read-first, synchronous write-first, asynchronous.
READ_PORT_KINDS = ("sync", "transparent", "comb")

#: Most read ports of one memory.
MAX_READ_PORTS = 8


def ram_verilog() -> str:
    """Verilog-2005 source of :data:`RAM_MODULE` (the semantics are in the module notes).

    Parameters ``WIDTH``, ``DEPTH``, ``ABITS`` (default ``max(1, $clog2(DEPTH))``),
    ``GRANULARITY`` (bits per write-enable lane, dividing ``WIDTH``), ``READS`` (read ports) and
    the masks ``COMB`` and ``TRANSPARENT`` (bit ``k``: read port ``k``'s kind). Read port ``k``
    is bits ``k*ABITS ..`` of ``r_addr``, bit ``k`` of ``r_en`` and bits ``k*WIDTH ..`` of
    ``r_data``. A transparent port reads the memory through a plain enabled register, as the
    other synchronous ports do (so it maps to block RAM), and registers beside it the lanes
    written to its address at the same edge, which replace the old ones on ``r_data``. Outside
    synthesis a read register takes the lanes written at its edge inverted (undefined in block
    RAM under ``no_rw_check``).
    """
    return f"""\
// Read/write memory: one write port with lane enables and READS read ports (instabnn_hw.hw.ram).
// Simulation starts with every word and read register at zero, as Amaranth's simulator does;
// synthesis (SYNTHESIS defined, as Yosys does) skips that loop.
module {RAM_MODULE} #(
    parameter WIDTH = 1,
    parameter DEPTH = 1,
    parameter ABITS = (DEPTH > 1) ? $clog2(DEPTH) : 1,
    parameter GRANULARITY = WIDTH,
    parameter READS = 1,
    parameter COMB = 0,
    parameter TRANSPARENT = 0
) (
    input clk,
    input [WIDTH/GRANULARITY-1:0] w_en,
    input [ABITS-1:0] w_addr,
    input [WIDTH-1:0] w_data,
    input [READS-1:0] r_en,
    input [READS*ABITS-1:0] r_addr,
    output [READS*WIDTH-1:0] r_data
);
    localparam LANES = WIDTH / GRANULARITY;
    // a read of lanes written at the same edge is never used: no collision logic for Yosys
    (* no_rw_check *) reg [WIDTH-1:0] mem [0:DEPTH-1];
`ifndef SYNTHESIS
    integer i;
    initial
        for (i = 0; i < DEPTH; i = i + 1)
            mem[i] = {{WIDTH{{1'b0}}}};
`endif
    integer l;
    always @(posedge clk)
        for (l = 0; l < LANES; l = l + 1)
            if (w_en[l])
                mem[w_addr][l*GRANULARITY +: GRANULARITY] <= w_data[l*GRANULARITY +: GRANULARITY];
    genvar k;
    generate
        for (k = 0; k < READS; k = k + 1) begin : port
            wire [ABITS-1:0] addr = r_addr[k*ABITS +: ABITS];
            if ((COMB >> k) & 1) begin : comb
                assign r_data[k*WIDTH +: WIDTH] = mem[addr];
            end else begin : sync
                reg [WIDTH-1:0] data;
                integer j;
`ifdef SYNTHESIS
                always @(posedge clk)
                    if (r_en[k])
                        data <= mem[addr];
`else
                initial data = {{WIDTH{{1'b0}}}};
                // lanes written at this edge read inverted: undefined in block RAM, so a use shows
                always @(posedge clk)
                    if (r_en[k])
                        for (j = 0; j < LANES; j = j + 1)
                            data[j*GRANULARITY +: GRANULARITY] <= mem[addr][j*GRANULARITY +: GRANULARITY]
                                ^ {{GRANULARITY{{w_en[j] && w_addr == addr}}}};
`endif
                if ((TRANSPARENT >> k) & 1) begin : bypass
                    reg [WIDTH-1:0] written, hit;
`ifndef SYNTHESIS
                    initial begin
                        written = {{WIDTH{{1'b0}}}};
                        hit = {{WIDTH{{1'b0}}}};
                    end
`endif
                    always @(posedge clk)
                        if (r_en[k]) begin
                            written <= w_data;
                            for (j = 0; j < LANES; j = j + 1)
                                hit[j*GRANULARITY +: GRANULARITY] <= {{GRANULARITY{{w_en[j] && w_addr == addr}}}};
                        end
                    assign r_data[k*WIDTH +: WIDTH] = (data & ~hit) | (written & hit);
                end else begin : plain
                    assign r_data[k*WIDTH +: WIDTH] = data;
                end
            end
        end
    endgenerate
endmodule
"""


def _check_kinds(read_ports: object) -> tuple[str, ...]:
    if isinstance(read_ports, str) or not isinstance(read_ports, Sequence):
        raise TypeError(f"read_ports must be a sequence of {READ_PORT_KINDS}, not {read_ports!r}")
    if not 1 <= len(read_ports) <= MAX_READ_PORTS:
        raise ValueError(f"read_ports must hold 1 to {MAX_READ_PORTS} port kinds, not {len(read_ports)}")
    for index, kind in enumerate(read_ports):
        if kind not in READ_PORT_KINDS:
            raise ValueError(f"read_ports[{index}] must be one of {READ_PORT_KINDS!r}, not {kind!r}")
    return tuple(read_ports)


class Ram(ExternalModules, wiring.Component):
    """Read/write memory of ``depth`` words of ``width`` bits: one write port, read ports of chosen kinds.

    The semantics (those of :class:`amaranth.lib.memory.Memory`) are in the module notes.

    Parameters
    ----------
    width : int
        Bits per word.
    depth : int
        Words.
    read_ports : sequence of str
        The kind of each read port, from :data:`READ_PORT_KINDS` (at most 8 ports).
    granularity : int or None
        Bits per write-enable lane, dividing ``width``; ``None``: the whole word (one lane).
    external_modules : bool
        ``False``: an inline :class:`~amaranth.lib.memory.Memory`. ``True``: an ``Instance`` of
        :data:`RAM_MODULE` (its source, :func:`ram_verilog`, must be among the Verilog sources).
    tiled : bool
        Deeper than one block RAM, cut in depth into tiles (:mod:`.tiles`): every read port
        (``"sync"`` ones only) then reads in :attr:`latency` = 2 enabled edges, a pipeline that
        advances on its ``r_en``; each tile is a :class:`Ram` of its own.

    Members
    -------
    w_addr : In(max(1, ceil(log2(depth))))
    w_data : In(width)
    w_en : In(width // granularity)
    r_addr : In(max(1, ceil(log2(depth)))).array(len(read_ports))
    r_en : In(1, init=1).array(len(read_ports))
        Unused by ``"comb"`` ports.
    r_data : Out(width).array(len(read_ports))
    """

    def __init__(
        self,
        *,
        width: int,
        depth: int,
        read_ports: Sequence[str] = ("sync",),
        granularity: int | None = None,
        external_modules: bool = False,
        tiled: bool = False,
    ) -> None:
        self._width = check_int("width", width)
        self._depth = check_int("depth", depth)
        self._kinds = _check_kinds(read_ports)
        if check_flag("tiled", tiled) and set(self._kinds) != {"sync"}:
            raise ValueError(f"a tiled memory's read ports must all be 'sync', not {self._kinds!r}")
        self._tiles, self._tile_depth = memory_tiles(self._depth, self._width) if tiled else (1, self._depth)
        if granularity is None:
            self._granularity = self._width
        else:
            self._granularity = check_int("granularity", granularity, high=self._width)
            if self._width % self._granularity:
                raise ValueError(f"granularity must divide width ({self._width}), not {granularity!r}")
        self._set_external_modules(external_modules)
        abits, ports = address_bits(self._depth), len(self._kinds)
        super().__init__(
            {
                "w_addr": In(abits),
                "w_data": In(self._width),
                "w_en": In(self.lanes),
                "r_addr": In(abits).array(ports),
                "r_en": In(1, init=1).array(ports),
                "r_data": Out(self._width).array(ports),
            }
        )

    @property
    def width(self) -> int:
        return self._width

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def read_ports(self) -> tuple[str, ...]:
        """The kind of each read port."""
        return self._kinds

    @property
    def granularity(self) -> int:
        """Bits per write-enable lane (``width`` for a whole-word write)."""
        return self._granularity

    @property
    def lanes(self) -> int:
        """Write-enable lanes: ``width // granularity``."""
        return self._width // self._granularity

    @property
    def bits(self) -> int:
        return self._width * self._depth

    @property
    def tiles(self) -> int:
        """Tiles in depth: 1 unless ``tiled`` and deeper than one block RAM."""
        return self._tiles

    @property
    def latency(self) -> int:
        """Enabled edges from a synchronous read's address to its word on ``r_data``: 1, or when
        tiled :func:`~.tiles.read_latency`."""
        return 1 if self._tiles == 1 else read_latency(self._depth, self._width)

    def ports(self, shape=None) -> tuple[SimpleNamespace, list[SimpleNamespace]]:
        """``(write, reads)``: the members grouped as Memory ports are, ``addr``, ``data`` and ``en`` each.

        With ``shape`` (a shape-castable of ``width`` bits, e.g. an ``ArrayLayout``) ``data`` is
        a view of it, so a :class:`~amaranth.lib.memory.Memory` of that shape is replaced by a
        Ram without touching the code using its ports (``granularity`` stays in bits).
        """

        def view(value):
            if shape is None:
                return value
            if Shape.cast(shape).width != self._width:
                raise ValueError(f"shape must be {self._width} bits wide, not {shape!r}")
            return shape(value) if isinstance(shape, ShapeCastable) else value

        write = SimpleNamespace(addr=self.w_addr, data=view(self.w_data), en=self.w_en)
        reads = [
            SimpleNamespace(addr=self.r_addr[k], data=view(self.r_data[k]), en=self.r_en[k])
            for k in range(len(self._kinds))
        ]
        return write, reads

    def elaborate(self, platform):
        m = Module()
        if self._tiles > 1:
            return self._elaborate_tiles(m)
        if self._external_modules:
            mask = {kind: sum(1 << k for k, x in enumerate(self._kinds) if x == kind) for kind in READ_PORT_KINDS}
            m.submodules.ram = Instance(
                RAM_MODULE,
                p_WIDTH=self._width,
                p_DEPTH=self._depth,
                p_ABITS=address_bits(self._depth),
                p_GRANULARITY=self._granularity,
                p_READS=len(self._kinds),
                p_COMB=mask["comb"],
                p_TRANSPARENT=mask["transparent"],
                i_clk=ClockSignal(),
                i_w_en=self.w_en,
                i_w_addr=self.w_addr,
                i_w_data=self.w_data,
                i_r_en=Cat(*self.r_en),
                i_r_addr=Cat(*self.r_addr),
                o_r_data=Cat(*self.r_data),
            )
            return m
        m.submodules.memory = memory = Memory(
            shape=unsigned(self._width), depth=self._depth, init=[], attrs={"no_rw_check": 1}
        )
        granularity = None if self._granularity == self._width else self._granularity
        write = memory.write_port(granularity=granularity)
        m.d.comb += [write.addr.eq(self.w_addr), write.data.eq(self.w_data), write.en.eq(self.w_en)]
        for k, kind in enumerate(self._kinds):
            if kind == "comb":
                port = memory.read_port(domain="comb")
            else:
                port = memory.read_port(transparent_for=(write,) if kind == "transparent" else ())
                m.d.comb += port.en.eq(self.r_en[k])
            m.d.comb += [port.addr.eq(self.r_addr[k]), self.r_data[k].eq(port.data)]
        return m

    def _elaborate_tiles(self, m: Module) -> Module:
        low = (self._tile_depth - 1).bit_length()
        reads = [[] for _ in self._kinds]
        for t in range(self._tiles):
            depth = min(self._tile_depth, self._depth - t * self._tile_depth)
            m.submodules[f"tile{t}"] = tile = Ram(
                width=self._width,
                depth=depth,
                read_ports=self._kinds,
                granularity=self._granularity,
                external_modules=self._external_modules,
            )
            abits = address_bits(depth)
            here = self.w_addr[low:] == t
            m.d.comb += [
                tile.w_addr.eq(self.w_addr[:abits]),
                tile.w_data.eq(self.w_data),
                tile.w_en.eq(Mux(here, self.w_en, 0)),
            ]
            for k in range(len(self._kinds)):
                m.d.comb += [tile.r_addr[k].eq(self.r_addr[k][:abits]), tile.r_en[k].eq(self.r_en[k])]
                reads[k].append(tile.r_data[k])
        for k in range(len(self._kinds)):
            index = self.r_addr[k][low:]
            m.d.comb += self.r_data[k].eq(select_tile(m, reads[k], index, enable=self.r_en[k], name=f"r{k}_tile"))
        return m


class RamModel:
    """Python model of a :class:`Ram`, clock edge by clock edge (the tests' reference).

    :meth:`read` gives what ``r_data`` shows between two edges (a ``"comb"`` port: the word at
    its address now; a synchronous port: its register); :meth:`tick` applies one edge. A
    synchronous read of lanes written at the same edge gives their old value (Amaranth's
    simulator) or, with ``external``, the old value inverted (the external module's simulation).
    """

    def __init__(
        self, *, width: int, depth: int, read_ports: Sequence[str] = ("sync",), granularity=None, external=False
    ) -> None:
        self.width, self.depth, self.kinds = width, depth, tuple(read_ports)
        self.granularity = width if granularity is None else granularity
        self.external = external
        self.words = [0] * depth
        self.registers = [0] * len(self.kinds)

    def _lane_mask(self, en: int) -> int:
        g = self.granularity
        return sum(((1 << g) - 1) << (lane * g) for lane in range(self.width // g) if en >> lane & 1)

    def read(self, r_addr: Sequence[int]) -> list[int]:
        return [self.words[r_addr[k]] if kind == "comb" else self.registers[k] for k, kind in enumerate(self.kinds)]

    def tick(self, *, w_en: int, w_addr: int, w_data: int, r_en: Sequence[int], r_addr: Sequence[int]) -> None:
        mask = self._lane_mask(w_en)
        for k, kind in enumerate(self.kinds):
            if kind != "comb" and r_en[k]:
                word = self.words[r_addr[k]]
                if r_addr[k] == w_addr and self.external:
                    word ^= mask
                if kind == "transparent" and r_addr[k] == w_addr:
                    word = (word & ~mask) | (w_data & mask)
                self.registers[k] = word
        if mask:
            self.words[w_addr] = (self.words[w_addr] & ~mask) | (w_data & mask)
