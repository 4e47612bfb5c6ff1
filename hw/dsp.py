"""The ECP5 multiplier blocks (MULT18X18D) Yosys gives a product, from its operands' shapes.

``synth_ecp5`` maps every product onto 18 x 18 blocks by Yosys's ``mul2dsp`` rules: an operand
wider than 18 bits is cut into 18-bit slices and every slice of one operand times every slice
of the other takes a block, except a last slice of a single bit, which is done in logic.
Amaranth hands Yosys a signed product when either operand is signed, widening the unsigned one
by a zero bit. A constant factor loses its trailing zeros to a shift; 0 and +-1 take no block;
an unsigned value times a negative constant becomes an unsigned product by that constant's
two's complement at the product's kept width. The figures of every component count their
products with these two functions, so the estimate is the synthesised MULT18X18D count
(``tests/test_hw_dsp.py`` checks them against Yosys).
"""

from __future__ import annotations

from amaranth.hdl import Shape

__all__ = ["DSP_WIDTH", "product_blocks", "constant_product_blocks"]

#: Operand width of one MULT18X18D.
DSP_WIDTH = 18


def _slices(width: int) -> int:
    full, rest = divmod(width, DSP_WIDTH)
    if full == 0:
        return 1
    return full + (rest >= 2)


def product_blocks(a, b) -> int:
    """Blocks for the product of two variables of shapes ``a`` and ``b``."""
    a, b = Shape.cast(a), Shape.cast(b)
    a_width = a.width + (b.signed and not a.signed)
    b_width = b.width + (a.signed and not b.signed)
    return _slices(a_width) * _slices(b_width)


def constant_product_blocks(x, constant: int, *, width: int | None = None) -> int:
    """Blocks for ``x * constant``, ``x`` of shape ``x``, of which ``width`` low bits are kept
    (``None``: all)."""
    x = Shape.cast(x)
    constant = int(constant)
    if constant == 0:
        return 0
    zeros = (constant & -constant).bit_length() - 1
    odd = constant >> zeros
    if odd in (1, -1):
        return 0
    if x.signed:
        factor_width = odd.bit_length() + 1  # a signed constant, or a positive one widened by a zero bit
    elif odd > 0:
        factor_width = odd.bit_length()
    else:
        natural = x.width + (-odd - 1).bit_length() + 1
        factor_width = (natural if width is None else min(natural, width)) - zeros
    return _slices(x.width) * _slices(factor_width)
