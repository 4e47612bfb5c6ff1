"""Interval arithmetic on Python ints: the bounds of every intermediate value of a datapath.

An interval is a ``(low, high)`` pair of ints, both included. The INSTA units size each
register from the bounds of their input shape and of their constants with these, so that no
value can overflow its register.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Shape

from .fixed import shape_for

__all__ = [
    "array_bounds",
    "hull",
    "iadd",
    "imul",
    "iscale",
    "ishift",
    "isquare",
    "prefix_bounds",
    "shape_of",
]


def iadd(*intervals):
    """Bounds of the sum of values from each of ``intervals``."""
    return sum(i[0] for i in intervals), sum(i[1] for i in intervals)


def imul(a, b):
    """Bounds of a product of a value of ``a`` and one of ``b``."""
    products = [a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]]
    return min(products), max(products)


def iscale(k: int, a):
    """Bounds of ``k`` times a value of ``a``."""
    return (k * a[0], k * a[1]) if k >= 0 else (k * a[1], k * a[0])


def isquare(a):
    """Bounds of the square of a value of ``a`` (0 when ``a`` holds 0)."""
    low = 0 if a[0] <= 0 <= a[1] else min(a[0] ** 2, a[1] ** 2)
    return low, max(a[0] ** 2, a[1] ** 2)


def ishift(a, shift: int):
    """Bounds of a value of ``a`` shifted right (floor) by ``shift``."""
    return a[0] >> shift, a[1] >> shift


def hull(*intervals):
    """The smallest interval holding every one of ``intervals``."""
    return min(i[0] for i in intervals), max(i[1] for i in intervals)


def prefix_bounds(term_lows, term_highs, start=(0, 0)):
    """Bounds of every partial sum ``start + sum of any prefix of the terms``."""
    return start[0] + sum(min(0, t) for t in term_lows), start[1] + sum(max(0, t) for t in term_highs)


def array_bounds(array) -> tuple[int, int]:
    """``(min, max)`` of an integer array as Python ints; ``(0, 0)`` when it is empty."""
    array = np.asarray(array)
    return (int(array.min()), int(array.max())) if array.size else (0, 0)


def shape_of(*intervals) -> Shape:
    """Narrowest shape of the hull of ``intervals`` (0 included, so constants of 0 get a bit)."""
    return shape_for(*hull((0, 0), *intervals))
