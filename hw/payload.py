"""Stream payloads as plain Python values and as raw bits, for testbenches and the simulator.

A payload of an :mod:`amaranth.lib.data` layout is written as nested dicts (struct fields) and
lists (array elements) of ints; a plain shape's payload is an int. :func:`pack` turns such a
value into the raw bits on the wire (first field in the low bits, as Amaranth lays it out) and
:func:`unpack` turns bits back, so the same expected values serve Amaranth's simulator and
cocotb. :func:`pack_words` and :func:`unpack_words` do the same for many channel words at once
(rows of a numpy array), which is what a whole image's stream needs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from amaranth.hdl import Const, Shape, ShapeCastable
from amaranth.lib import data

__all__ = ["pack", "pack_words", "unpack", "unpack_words"]


def pack(shape, value) -> int:
    """The raw bits (a non-negative int) of ``value`` as a payload of ``shape``."""
    if isinstance(shape, ShapeCastable):
        return Const.cast(shape.const(value)).value
    shape = Shape.cast(shape)
    value = int(value)
    low = -(1 << (shape.width - 1)) if shape.signed else 0
    if not low <= value < low + (1 << shape.width):
        raise ValueError(f"{value} does not fit in {shape}")
    return value & ((1 << shape.width) - 1)


def _to_python(value):
    if isinstance(value, data.Const):
        layout = data.Layout.cast(value.shape())
        if isinstance(layout, data.ArrayLayout):
            return [_to_python(value[index]) for index in range(layout.length)]
        return {name: _to_python(value[name]) for name, _ in layout}
    return int(value)


def unpack(shape, bits: int):
    """The Python value of the raw payload ``bits`` of ``shape`` (the inverse of :func:`pack`)."""
    if isinstance(shape, ShapeCastable):
        return _to_python(shape.from_bits(bits))
    shape = Shape.cast(shape)
    bits &= (1 << shape.width) - 1  # a simulator may hand over a signed value as a negative int
    if shape.signed and bits >> (shape.width - 1):
        return bits - (1 << shape.width)
    return bits


def pack_words(layout, words: np.ndarray) -> list[int]:
    """Rows of ``words`` (``(n, length)`` ints) packed as payloads of the ArrayLayout ``layout``."""
    width = Shape.cast(layout.elem_shape).width
    mask = (1 << width) - 1
    words = np.asarray(words).reshape(-1, layout.length)
    if width * layout.length <= 63 and words.dtype != object:
        words = words.astype(np.int64)
        packed = np.zeros(len(words), dtype=np.int64)
        for k in range(layout.length):
            packed |= (words[:, k] & mask) << (k * width)
        return [int(v) for v in packed]
    result = []
    for row in words.tolist():
        value = 0
        for k, element in enumerate(row):
            value |= (int(element) & mask) << (k * width)
        result.append(value)
    return result


def unpack_words(layout, payloads: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`pack_words`: ``(n, length)`` int64 (object for elements over 62 bits)."""
    shape = Shape.cast(layout.elem_shape)
    width, mask = shape.width, (1 << shape.width) - 1
    rows = []
    for payload in payloads:
        row = []
        for k in range(layout.length):
            value = (payload >> (k * width)) & mask
            if shape.signed and value >> (width - 1):
                value -= 1 << width
            row.append(value)
        rows.append(row)
    dtype = np.int64 if width <= 62 else object
    return np.array(rows, dtype=dtype).reshape(len(rows), layout.length)
