"""Delay lines: a value carried through enabled registers, to meet what a pipeline computes beside it."""

from __future__ import annotations

from amaranth.hdl import Module, Signal, Value

from ._checks import check_int

__all__ = ["delayed"]


def delayed(
    m: Module,
    value,
    stages: int = 1,
    *,
    enable=1,
    domain: str = "sync",
    name: str,
    shape=None,
    reset_less: bool = False,
):
    """``value`` delayed by ``stages`` edges of ``domain`` where ``enable`` is high.

    Parameters
    ----------
    m : Module
        The module the registers go in.
    value : Amaranth value or int
        What to delay; an ``int`` (a constant) is returned as it is.
    stages : int
        Registers in the line, >= 0.
    enable : Amaranth value or int
        The registers' common enable (a stalled pipeline holds the whole line).
    domain : str
        Clock domain.
    name : str
        The register's name, or with ``stages > 1`` each one's prefix (``name1``, ``name2``, ...).
    shape : shape-castable, optional
        The registers' shape (default: ``value``'s).
    reset_less : bool
        Registers without reset (payloads); tags such as ``valid`` keep theirs.
    """
    check_int("stages", stages, low=0)
    if isinstance(value, int):
        return value
    value = Value.cast(value)
    for k in range(stages):
        reg = Signal(
            shape if shape is not None else value.shape(),
            name=name if stages == 1 else f"{name}{k + 1}",
            reset_less=reset_less,
        )
        with m.If(enable):
            m.d[domain] += reg.eq(value)
        value = reg
    return value
