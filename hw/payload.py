"""Stream payloads as plain Python values and as raw bits, for testbenches and the simulator.

A payload of an :mod:`amaranth.lib.data` layout is written as nested dicts (struct fields) and
lists (array elements) of ints; a plain shape's payload is an int. :func:`pack` turns such a
value into the raw bits on the wire (first field in the low bits, as Amaranth lays it out) and
:func:`unpack` turns bits back, so the same expected values serve Amaranth's simulator and
cocotb.
"""

from __future__ import annotations

from amaranth.hdl import Const, Shape, ShapeCastable
from amaranth.lib import data

__all__ = ["pack", "unpack"]


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
