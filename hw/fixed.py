"""Integer and fixed-point rules shared by the hardware and every numpy model.

Everything multi-bit in instabnn-hw is a two's complement integer whose scale (a power of two)
is known at compile time. This module states, once, the few operations that lose information:

* :func:`round_shift`, *the* rounding rule: divide by ``2**shift`` and round half up
  (towards +infinity), i.e. ``floor((x + 2**(shift-1)) / 2**shift)``; ``shift = 0`` is exact.
* :func:`ceil_shift`: ``ceil(x / 2**shift)``, used where an integer threshold must be exact
  (``x >= t/2**s`` holds for an integer ``x`` exactly when ``x >= ceil_shift(t, s)``).
* :func:`clamp`: saturation to ``[low, high]``.

Each has a numpy form (on int64 or Python-int object arrays) and an Amaranth form
(``hdl_*``), and the tests check one against the other. Widths come from bounds with
:func:`shape_for`, so no accumulator can overflow by construction.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, Const, Mux, Shape, Value, signed, unsigned

__all__ = [
    "bounds",
    "ceil_shift",
    "clamp",
    "hdl_ceil_shift",
    "hdl_clamp",
    "hdl_fit",
    "hdl_greater",
    "hdl_round_shift",
    "int_array",
    "product_range",
    "round_shift",
    "shape_for",
]

#: Largest magnitude numpy models keep in int64; wider values use Python ints (object arrays).
_INT64_BITS = 62


def shape_for(low: int, high: int) -> Shape:
    """The narrowest shape holding every integer in ``[low, high]`` (signed when ``low < 0``)."""
    low, high = int(low), int(high)
    if low > high:
        raise ValueError(f"empty range [{low}, {high}]")
    if low >= 0:
        return unsigned(max(1, high.bit_length()))
    width = max((-low - 1).bit_length(), high.bit_length() if high > 0 else 0) + 1
    return signed(width)


def bounds(shape: Shape) -> tuple[int, int]:
    """The smallest and largest integer ``shape`` holds."""
    shape = Shape.cast(shape)
    if shape.signed:
        return -(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1
    return 0, (1 << shape.width) - 1


def product_range(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    """The range of ``p * q`` for ``p`` in ``a`` and ``q`` in ``b`` (Python ints: no overflow)."""
    corners = [int(p) * int(q) for p in a for q in b]
    return min(corners), max(corners)


def int_array(values, low: int, high: int) -> np.ndarray:
    """``values`` as int64 when ``[low, high]`` fits in it comfortably, else as Python ints."""
    fits = max(abs(int(low)), abs(int(high))).bit_length() <= _INT64_BITS
    array = np.asarray(values)
    if fits:
        return array.astype(np.int64)
    return np.vectorize(int, otypes=[object])(array) if array.size else array.astype(object)


def _shift_right(x, shift: int):
    # floor division by 2**shift for int64 and object arrays alike
    return x >> shift if shift else x


def round_shift(x, shift: int):
    """``floor((x + 2**(shift-1)) / 2**shift)``: divide by ``2**shift``, round half up."""
    if shift < 0:
        raise ValueError(f"shift must be >= 0, not {shift!r}")
    return x if shift == 0 else _shift_right(x + (1 << (shift - 1)), shift)


def ceil_shift(x, shift: int):
    """``ceil(x / 2**shift)``."""
    if shift < 0:
        raise ValueError(f"shift must be >= 0, not {shift!r}")
    return x if shift == 0 else -_shift_right(-x, shift)


def clamp(x, low: int, high: int):
    """``x`` saturated to ``[low, high]``."""
    return np.minimum(np.maximum(x, low), high)


def hdl_round_shift(x: Value, shift: int) -> Value:
    """Amaranth form of :func:`round_shift` (``x`` signed or unsigned)."""
    if shift < 0:
        raise ValueError(f"shift must be >= 0, not {shift!r}")
    return x if shift == 0 else (x + (1 << (shift - 1))) >> shift


def hdl_ceil_shift(x: Value, shift: int) -> Value:
    """Amaranth form of :func:`ceil_shift`: ``(x + 2**shift - 1) >> shift``."""
    if shift < 0:
        raise ValueError(f"shift must be >= 0, not {shift!r}")
    return x if shift == 0 else (x + ((1 << shift) - 1)) >> shift


def hdl_clamp(x: Value, low: int, high: int) -> Value:
    """Amaranth form of :func:`clamp`; the result has the shape of ``[low, high]``."""
    result = Mux(x < low, low, Mux(x > high, high, x))[: shape_for(low, high).width]
    return result.as_signed() if low < 0 else result


def hdl_greater(a: Value, b: Value) -> Value:
    """``a > b`` for two values of one shape; signed values compared as unsigned ones with their
    sign bits flipped (the same order), so the result is the carry out of one subtraction, with
    no overflow logic after it."""
    a, b = Value.cast(a), Value.cast(b)
    shape = a.shape()
    if b.shape() != shape:
        raise ValueError(f"both operands must have one shape, not {shape!r} and {b.shape()!r}")
    if not shape.signed:
        return a > b
    top = 1 << (shape.width - 1)
    return (a.as_unsigned() ^ top) > (b.as_unsigned() ^ top)


def hdl_fit(value: Value, low: int, high: int) -> Value:
    """``value``, whose true value lies in ``[low, high]``, cut (or sign-extended) to ``shape_for(low, high)``.

    Amaranth widens every sum and product; this trims an intermediate back to the width its
    bounds need, which keeps wide datapaths small without any risk of overflow.
    """
    shape = shape_for(low, high)
    value = Value.cast(value)
    if len(value) < shape.width:
        sign = value[-1] if value.shape().signed else Const(0, 1)
        value = Cat(value, sign.replicate(shape.width - len(value)))
    value = value[: shape.width]
    return value.as_signed() if shape.signed else value
