"""Whole streams of channel words packed and unpacked at once, as single payloads are."""

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from instabnn_hw.hw.payload import pack, pack_words, unpack, unpack_words


@pytest.mark.parametrize(
    "elem",
    [unsigned(1), signed(8), unsigned(8), signed(20), signed(33), unsigned(70)],
)
@pytest.mark.parametrize("length", [1, 3, 8])
def test_packing_words_agrees_with_amaranth(elem, length):
    layout = data.ArrayLayout(elem, length)
    low, high = (-(1 << (elem.width - 1)), (1 << (elem.width - 1)) - 1) if elem.signed else (0, (1 << elem.width) - 1)
    rng = np.random.default_rng(length * 100 + elem.width)
    rows = [[int(v) for v in rng.integers(max(low, -(2**62)), min(high, 2**62), size=length)] for _ in range(20)]
    rows += [[low] * length, [high] * length]
    packed = pack_words(layout, np.array(rows, dtype=object))
    assert packed == [pack(layout, row) for row in rows]
    assert unpack_words(layout, packed).tolist() == [unpack(layout, p) for p in packed]
    if elem.width <= 62:  # the vectorised path, taken for int64 rows of words up to 63 bits
        assert pack_words(layout, np.array(rows, dtype=np.int64)) == packed
