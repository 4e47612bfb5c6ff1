"""hw.tiles: the depth tiling of block RAM memories follows the block RAM cost model."""

import pytest
from amaranth.hdl import unsigned

from instabnn_hw.hw.figures import bram_tiles, lut_estimate
from instabnn_hw.hw.plumbing import Fifo
from instabnn_hw.hw.tiles import memory_tiles, read_latency, tile_luts


@pytest.mark.parametrize(
    "depth, width, tiles",
    [
        (9, 12, (1, 9)),  # in logic
        (512, 64, (1, 512)),  # one block deep, two wide
        (5120, 4, (1, 5120)),  # 8192 x 2 blocks, two wide: no depth split
        (1100, 36, (3, 512)),  # three 512 x 36 blocks in depth, the last holding 76 words
        (65536, 4, (4, 16384)),  # CNV's widest classifier: four 16384 x 1 blocks per tile
    ],
)
def test_memory_tiles_follow_the_block_ram_tiling(depth, width, tiles):
    assert memory_tiles(depth, width) == tiles
    assert read_latency(depth, width) == (1 if tiles[0] == 1 else 3)
    count, tile_depth = tiles
    assert (count - 1) * tile_depth < depth <= count * tile_depth

    assert bram_tiles(depth, width) == count


def test_tile_luts_count_the_pick_of_the_tiles_and_the_readers_add_them():
    assert tile_luts(6272, 32) == 32 * 12 and tile_luts(512, 64) == 0 and tile_luts(9, 12) == 0
    fifo = Fifo.parameters(shape=unsigned(32), depth=6273)
    assert fifo.luts == lut_estimate("fifo", fifo.lut_features()) + tile_luts(6272, 32)
    shallow = Fifo.parameters(shape=unsigned(32), depth=17)
    assert shallow.luts == lut_estimate("fifo", shallow.lut_features())
