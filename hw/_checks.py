"""Validation of component parameters: one place for the wording of every error.

Each check returns the value it accepted (converted where that helps, e.g. a read-only int64
array), and raises ``TypeError`` for a wrong type or ``ValueError`` for a wrong value, naming the
parameter and the value it was given.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from amaranth.hdl import Shape, ShapeCastable

__all__ = [
    "check_choice",
    "check_divides",
    "check_flag",
    "check_int",
    "check_int_array",
    "check_payload",
    "check_shape",
]


def check_int(name: str, value: object, *, low: int | None = 1, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]`` (``None``: unbounded); ``bool`` is refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else (f"<= {high}" if low is None else f"in [{low}, {high}]")
        raise ValueError(f"{name} must be {bounds}, not {value!r}")
    return value


def check_flag(name: str, value: object) -> bool:
    """``value`` as a bool; anything but a ``bool`` is refused."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, not {value!r}")
    return bool(value)


def check_divides(name: str, value: int, of_name: str, of_value: int) -> int:
    """``value`` if it divides ``of_value``."""
    if of_value % value:
        raise ValueError(f"{name} must divide {of_name} ({of_value}), not {value!r}")
    return value


def check_choice(name: str, value: object, choices: Sequence[object]) -> object:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)!r}, not {value!r}")
    return value


def check_shape(name: str, value: object, *, max_width: int = 64) -> Shape:
    """``value`` cast to an Amaranth :class:`~amaranth.hdl.Shape` of width 1 to ``max_width``."""
    if isinstance(value, ShapeCastable):
        value = value.as_shape()
    try:
        shape = Shape.cast(value)
    except TypeError:
        raise TypeError(f"{name} must be an Amaranth shape such as signed(8), not {value!r}") from None
    if not 1 <= shape.width <= max_width:
        raise ValueError(f"{name} must be 1 to {max_width} bits wide, not {value!r}")
    return shape


def check_payload(name: str, value: object, *, max_width: int = 4096) -> ShapeCastable | Shape:
    """``value`` if it can be a stream payload: a layout (kept as it is) or a plain shape."""
    check_shape(name, value, max_width=max_width)
    return value if isinstance(value, ShapeCastable) else Shape.cast(value)


def check_int_array(
    name: str,
    value: object,
    *,
    shape: tuple[int, ...] | None = None,
    low: int | None = None,
    high: int | None = None,
) -> np.ndarray:
    """``value`` as a read-only int64 array of ``shape`` with every element in ``[low, high]``."""
    array = np.asarray(value)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise TypeError(f"{name} must be an integer array, not an array of {array.dtype}")
    array = array.astype(np.int64)
    if shape is not None and array.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, not {array.shape}")
    if array.size and low is not None and array.min() < low:
        raise ValueError(f"{name} must be >= {low}, but holds {array.min()}")
    if array.size and high is not None and array.max() > high:
        raise ValueError(f"{name} must be <= {high}, but holds {array.max()}")
    array.flags.writeable = False
    return array
