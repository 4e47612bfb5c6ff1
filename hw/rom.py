"""Read-only weight memories, inline or initialised from ``$readmemh`` files beside the Verilog.

Big weight memories are cheaper to convert, and easier to inspect and patch, as memory init
files than as Amaranth's inline ``init``: the compiler writes :func:`rom_files` of the words,
adds :func:`rom_verilog` (the module :data:`ROM_MODULE`) to the Verilog sources, and builds
each MVU with ``weights_file=`` the files' base path. A :class:`Rom` then elaborates to
instances of that module; without a file to :class:`amaranth.lib.memory.Memory` instances, which
Amaranth's simulator runs. Both read the same way: ``data`` takes ``mem[addr]`` at the
:attr:`Rom.latency`-th clock edge where ``en`` is high and holds otherwise.

A weight word is wide and its reader (an MVU's operand register) one place while the block RAMs
that hold it spread over their columns of the chip, so a ROM registers its read data where it
comes out of the block (a block's clock-to-output fills most of a cycle) and leaves the reader a
cycle to carry it (:func:`rom_latency`). A ROM deeper than one block RAM is cut in depth into
tiles (:mod:`.tiles`), each from its own file: tile ``k`` of ``path`` is the file
:func:`tile_path` names.

Where ``$readmemh`` looks for a relative path: Verilator and Icarus open it at run time relative
to the simulator's working directory (cocotb's ``test_dir``); Yosys relative to its working
directory, then to the directory of the Verilog file that names it. An absolute path works
everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from amaranth.hdl import ClockSignal, Instance, Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ._checks import check_int
from .delay import delayed
from .tiles import memory_tiles, read_latency, select_tile

__all__ = [
    "ROM_MODULE",
    "Rom",
    "check_init_file",
    "rom_files",
    "rom_hex",
    "rom_latency",
    "rom_verilog",
    "tile_path",
]

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
    return "".join(format(word, f"0{digits}x") + "\n" for word in _check_words(words, width))


def _check_words(words: Sequence[int], width: int) -> tuple[int, ...]:
    """``words`` as Python integers, each checked to be an integer in ``[0, 2**width)``
    (``TypeError`` / ``ValueError`` naming the first that is not)."""
    checked = []
    for index, word in enumerate(words):
        if isinstance(word, (bool, np.bool_)) or not isinstance(word, (int, np.integer)):
            raise TypeError(f"words[{index}] must be an integer, not {word!r}")
        if not 0 <= int(word) < 1 << width:
            raise ValueError(f"words[{index}] must be in [0, 2**{width}), not {int(word)!r}")
        checked.append(int(word))
    return tuple(checked)


def tile_path(path: str, tile: int, tiles: int) -> str:
    """The init file of tile ``tile`` of ``tiles`` of a ROM whose files are based on ``path``:
    ``path`` itself for one tile, else ``"<stem>@<tile><suffix>"`` (``mem/fc.hex`` ->
    ``mem/fc@0.hex``; ``@`` is not among the characters a node's file name keeps)."""
    if tiles == 1:
        return path
    head, dot, suffix = path.rpartition(".")
    if not dot or "/" in suffix:
        return f"{path}@{tile}"
    return f"{head}@{tile}.{suffix}"


def rom_files(path: str, words: Sequence[int], width: int) -> dict[str, str]:
    """``{file: text}``: the ``$readmemh`` files of a ROM of ``words`` based on ``path``, one per
    tile of :func:`~.tiles.memory_tiles` (what a :class:`Rom` with ``init_file=path`` reads)."""
    tiles, tile_depth = memory_tiles(len(words), width)
    return {
        tile_path(path, k, tiles): rom_hex(words[k * tile_depth : (k + 1) * tile_depth], width) for k in range(tiles)
    }


def check_init_file(name: str, value: object) -> str | None:
    """``value`` if it is ``None`` or a non-empty path that can sit in a Verilog string literal."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be None or a path string, not {value!r}")
    if not value or any(c in value for c in _FORBIDDEN):
        raise ValueError(f"{name} must be a non-empty path without quotes, backslashes or newlines, not {value!r}")
    return value


def rom_latency(depth: int, width: int) -> int:
    """Enabled edges from an address to its word on a ``depth x width`` :class:`Rom`'s ``data``:
    2 (the block's read and the register beside it), or a tiled memory's
    :func:`~.tiles.read_latency`."""
    return max(2, read_latency(depth, width))


def address_bits(depth: int) -> int:
    """Width of the address: ``max(1, ceil(log2(depth)))`` (the Verilog module's ``ABITS``)."""
    return max(1, (depth - 1).bit_length())


class Rom(wiring.Component):
    """Read-only memory of ``depth`` words of ``width`` bits with one synchronous read port.

    ``data`` takes word ``addr`` :attr:`latency` clock edges where ``en`` is high after ``addr``
    was presented, and holds otherwise: a pipeline whose every stage advances on ``en``
    (``en`` is 1 unless driven). One block deep, that is ``Memory(...).read_port()``; deeper,
    tiles (see the module notes).

    Parameters
    ----------
    width : int
        Bits per word.
    depth : int
        Words.
    init : sequence of int
        The ``depth`` words in address order, each in ``[0, 2**width)``. Inline memories use
        them; with ``init_file`` they are what the files hold (:meth:`memory_files`).
    init_file : str or None
        ``None``: inline :class:`~amaranth.lib.memory.Memory` instances. A path: instances of
        :data:`ROM_MODULE` loading the ``$readmemh`` files :func:`rom_files` names (see the
        module notes on paths).

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
        self._init = _check_words(init, self._width)
        self._init_file = check_init_file("init_file", init_file)
        self._tiles, self._tile_depth = memory_tiles(self._depth, self._width)
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

    @property
    def tiles(self) -> int:
        """Blocks in depth the memory is cut into (:func:`~.tiles.memory_tiles`)."""
        return self._tiles

    @property
    def latency(self) -> int:
        """Enabled edges from ``addr`` to its word on ``data`` (:func:`rom_latency`)."""
        return rom_latency(self._depth, self._width)

    def memory_files(self) -> dict[str, str]:
        """``{file: text}`` the ``init_file`` instances read (:func:`rom_files`); empty when inline."""
        return {} if self._init_file is None else rom_files(self._init_file, self._init, self._width)

    @property
    def bits(self) -> int:
        return self._width * self._depth

    def elaborate(self, platform):
        m = Module()
        if self._tiles == 1:
            read = Signal(self._width, name="memory_read")
            self._block(m, "memory", self._init, self._init_file, self.addr, read)
            m.d.comb += self.data.eq(delayed(m, read, enable=self.en, name="memory_data", reset_less=True))
            return m
        low = (self._tile_depth - 1).bit_length()
        reads = []
        for k in range(self._tiles):
            words = self._init[k * self._tile_depth : (k + 1) * self._tile_depth]
            read = Signal(self._width, name=f"tile{k}_read")
            path = None if self._init_file is None else tile_path(self._init_file, k, self._tiles)
            self._block(m, f"tile{k}", words, path, self.addr[: address_bits(len(words))], read)
            reads.append(read)
        m.d.comb += self.data.eq(select_tile(m, reads, self.addr[low:], enable=self.en, name="tile"))
        return m

    def _block(self, m: Module, name: str, words: Sequence[int], path: str | None, addr, data) -> None:
        """One memory of ``words`` read synchronously: inline, or an instance loading ``path``."""
        if path is None:
            m.submodules[name] = memory = Memory(shape=unsigned(self._width), depth=len(words), init=words)
            port = memory.read_port()
            m.d.comb += [port.addr.eq(addr), port.en.eq(self.en), data.eq(port.data)]
        else:
            m.submodules[name] = Instance(
                ROM_MODULE,
                p_WIDTH=self._width,
                p_DEPTH=len(words),
                p_INIT_FILE=path,
                p_ABITS=address_bits(len(words)),
                i_clk=ClockSignal(),
                i_en=self.en,
                i_addr=addr,
                o_data=data,
            )
