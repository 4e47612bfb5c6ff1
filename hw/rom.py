"""Read-only weight memories, inline or initialised from a ``$readmemh`` file beside the Verilog.

Big weight memories are cheaper to convert, and easier to inspect and patch, as memory init
files than as Amaranth's inline ``init``: the compiler writes ``rom_hex(words, width)`` to a
file, adds :func:`rom_verilog` (the module :data:`ROM_MODULE`) to the Verilog sources, and builds
each MVU with ``weights_file=`` that file's path. A :class:`Rom` then elaborates to an
``Instance`` of that module; without a file it is an :class:`amaranth.lib.memory.Memory`, which
Amaranth's simulator runs. Both read the same way: ``data`` takes ``mem[addr]`` at the clock
edge where ``en`` is high and holds otherwise (a synchronous read port with enable).

Where ``$readmemh`` looks for a relative path: Verilator and Icarus open it at run time relative
to the simulator's working directory (cocotb's ``test_dir``); Yosys relative to its working
directory, then to the directory of the Verilog file that names it. An absolute path works
everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from amaranth.hdl import ClockSignal, Instance, Module, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ._checks import check_int

__all__ = ["ROM_MODULE", "Rom", "check_init_file", "rom_hex", "rom_verilog"]

#: Name of the Verilog module of :func:`rom_verilog`.
ROM_MODULE = "instabnn_rom"

#: Characters a memory init path may not hold (it becomes a Verilog string literal).
_FORBIDDEN = ('"', "\\", "\n", "\r", "\0")


def rom_verilog() -> str:
    """Verilog-2005 source of :data:`ROM_MODULE`: ``DEPTH`` words of ``WIDTH`` bits from ``INIT_FILE``.

    ``ABITS`` defaults to ``max(1, $clog2(DEPTH))``; the read is synchronous with an enable, so
    Yosys infers block RAM (``DP16KD`` on ECP5) for a large enough memory.
    """
    return f"""\
// Read-only memory initialised from a $readmemh file (instabnn_hw.hw.rom).
module {ROM_MODULE} #(
    parameter WIDTH = 1,
    parameter DEPTH = 1,
    parameter INIT_FILE = "",
    parameter ABITS = (DEPTH > 1) ? $clog2(DEPTH) : 1
) (
    input clk,
    input en,
    input [ABITS-1:0] addr,
    output reg [WIDTH-1:0] data
);
    reg [WIDTH-1:0] mem [0:DEPTH-1];
    generate
        if (INIT_FILE != "") begin : load
            initial $readmemh(INIT_FILE, mem);
        end
    endgenerate
    always @(posedge clk)
        if (en)
            data <= mem[addr];
endmodule
"""


def rom_hex(words: Sequence[int], width: int) -> str:
    """The ``$readmemh`` text of ``words``: one per line, ``ceil(width / 4)`` lower-case hex digits.

    No address markers; a trailing newline. Raises ``ValueError`` for a word outside
    ``[0, 2**width)``.
    """
    width = check_int("width", width)
    digits = -(-width // 4)
    lines = []
    for index, word in enumerate(words):
        if isinstance(word, (bool, np.bool_)) or not isinstance(word, (int, np.integer)):
            raise TypeError(f"words[{index}] must be an integer, not {word!r}")
        if not 0 <= int(word) < 1 << width:
            raise ValueError(f"words[{index}] must be in [0, 2**{width}), not {int(word)!r}")
        lines.append(format(int(word), f"0{digits}x"))
    return "".join(line + "\n" for line in lines)


def check_init_file(name: str, value: object) -> str | None:
    """``value`` if it is ``None`` or a non-empty path that can sit in a Verilog string literal."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be None or a path string, not {value!r}")
    if not value or any(c in value for c in _FORBIDDEN):
        raise ValueError(f"{name} must be a non-empty path without quotes, backslashes or newlines, not {value!r}")
    return value


def address_bits(depth: int) -> int:
    """Width of the address: ``max(1, ceil(log2(depth)))`` (the Verilog module's ``ABITS``)."""
    return max(1, (depth - 1).bit_length())


class Rom(wiring.Component):
    """Read-only memory of ``depth`` words of ``width`` bits with one synchronous read port.

    ``data`` takes word ``addr`` at a clock edge where ``en`` is high and holds otherwise, like
    ``Memory(...).read_port()`` (``en`` is 1 unless driven).

    Parameters
    ----------
    width : int
        Bits per word.
    depth : int
        Words.
    init : sequence of int
        The ``depth`` words in address order, each in ``[0, 2**width)``. Inline memories use
        them; with ``init_file`` they are what that file must hold (:meth:`init_hex`).
    init_file : str or None
        ``None``: an inline :class:`~amaranth.lib.memory.Memory`. A path: an ``Instance`` of
        :data:`ROM_MODULE` loading this ``$readmemh`` file (see the module notes on paths).

    Members
    -------
    addr : In(max(1, ceil(log2(depth))))
    en : In(1, init=1)
    data : Out(width)
    """

    def __init__(self, *, width: int, depth: int, init: Sequence[int], init_file: str | None = None) -> None:
        self._width = check_int("width", width)
        self._depth = check_int("depth", depth)
        if isinstance(init, (str, bytes)) or not isinstance(init, (Sequence, np.ndarray)):
            raise TypeError(f"init must be a sequence of integers, not {init!r}")
        if len(init) != self._depth:
            raise ValueError(f"init must hold depth ({self._depth}) words, not {len(init)}")
        self._init_hex = rom_hex(init, self._width)  # validates every word
        self._init = tuple(int(word) for word in init)
        self._init_file = check_init_file("init_file", init_file)
        super().__init__(
            {
                "addr": In(address_bits(self._depth)),
                "en": In(1, init=1),
                "data": Out(self._width),
            }
        )

    @property
    def width(self) -> int:
        return self._width

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def init(self) -> tuple[int, ...]:
        return self._init

    @property
    def init_file(self) -> str | None:
        return self._init_file

    def init_hex(self) -> str:
        """``rom_hex(init, width)``: the text the init file must hold."""
        return self._init_hex

    @property
    def bits(self) -> int:
        return self._width * self._depth

    def elaborate(self, platform):
        m = Module()
        if self._init_file is None:
            m.submodules.memory = memory = Memory(shape=unsigned(self._width), depth=self._depth, init=self._init)
            port = memory.read_port()
            m.d.comb += [port.addr.eq(self.addr), port.en.eq(self.en), self.data.eq(port.data)]
        else:
            m.submodules.rom = Instance(
                ROM_MODULE,
                p_WIDTH=self._width,
                p_DEPTH=self._depth,
                p_INIT_FILE=self._init_file,
                p_ABITS=address_bits(self._depth),
                i_clk=ClockSignal(),
                i_en=self.en,
                i_addr=self.addr,
                o_data=self.data,
            )
        return m
