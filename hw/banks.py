"""Building blocks of the frame-buffered INSTA units: memories, double-buffer bank masks, counters.

:class:`~.moments.MomentsThreshold`, :class:`~.insta_prelu.InstaPReLU` and their shared
:class:`~.se_mlp.SeMlp` keep a frame's data (or its parameters) in two banks of one memory,
one written while the other is read, and build their memories and bank flags with these.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Shape, Signal, Value
from amaranth.lib.memory import Memory

from .ram import Ram

__all__ = ["bank_bits", "constant_memory", "counter", "ram_ports"]


def counter(n: int, name: str | None = None) -> Signal:
    """A counter of ``0 .. n - 1`` (at least one bit, so that a count of 1 still has a signal)."""
    return Signal(range(max(n, 2)), name=name)


def bank_bits(bank: Value, condition: Value) -> Value:
    """Two-bit mask selecting ``bank`` (0 or 1) where ``condition`` holds, else 0.

    Control signals are built as such expressions rather than as conditional ``comb``
    assignments (and multi-lane words as one ``Cat`` rather than lane by lane): those become
    ``always @*`` blocks, which Icarus (SystemVerilog mode) leaves at X until one of their
    inputs changes.
    """
    return Cat(condition & ~bank, condition & bank)


def constant_memory(depth: int, shape, init) -> Memory:
    """An inline constant memory of ``depth`` words (at least one) of ``shape``."""
    return Memory(shape=shape, depth=max(depth, 1), init=init)


def ram_ports(
    m: Module,
    name: str,
    shape,
    depth: int,
    *,
    external_modules: bool,
    read_ports=("sync",),
    granular: bool = False,
    tiled: bool = False,
):
    """A :class:`~.ram.Ram` of ``depth`` words of ``shape`` (a layout), as submodule ``name``: its ports.

    ``granular``: one write-enable lane per element of the ``ArrayLayout`` ``shape`` (the
    ``Memory`` granularity 1). ``external_modules``: the component's. ``tiled``: the Ram's
    (its reads then take :func:`~.tiles.read_latency` enabled edges).
    """
    width = Shape.cast(shape).width
    granularity = Shape.cast(shape.elem_shape).width if granular else None
    ram = Ram(
        width=width,
        depth=depth,
        read_ports=read_ports,
        granularity=granularity,
        external_modules=external_modules,
        tiled=tiled,
    )
    m.submodules[name] = ram
    return ram.ports(shape)
