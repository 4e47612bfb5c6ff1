"""Per-channel constant tables: the constants of the channels a word carries, looked up by channel group."""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Const, Module, Value, unsigned
from amaranth.lib import data
from amaranth.lib.memory import Memory

from .delay import delayed
from .fixed import shape_for

__all__ = ["channel_table"]


def channel_table(
    m: Module, name: str, columns: dict, *, simd: int, group: Value, enable, registered: bool = False
) -> dict:
    """Per-channel constants looked up by channel group: ``{column: ([lane values], (low, high))}``.

    ``columns`` maps names to int vectors of length ``channels``. With one group the lane values
    are plain ints (constants); otherwise they are fields of a ROM word (one per group, a
    synchronous read port at address ``group``, enabled by ``enable``), valid one enabled edge
    after ``group`` was presented, and held while ``enable`` is low; ``registered``: the word
    passes one more enabled register (a block RAM's clock-to-output then meets only a
    flip-flop), valid two enabled edges after ``group``.
    """
    columns = {key: np.asarray(values, dtype=object) for key, values in columns.items()}
    ranges = {key: (int(min(values)), int(max(values))) for key, values in columns.items()}
    groups = len(next(iter(columns.values()))) // simd
    if groups == 1:
        return {key: ([int(v) for v in values], ranges[key]) for key, values in columns.items()}
    layout = data.StructLayout(
        {key: data.ArrayLayout(shape_for(*ranges[key]), simd) for key in columns},
    )
    init = [
        Const.cast(
            layout.const({key: [int(v) for v in values[g * simd : (g + 1) * simd]] for key, values in columns.items()})
        ).value
        for g in range(groups)
    ]
    rom = Memory(shape=unsigned(layout.size), depth=groups, init=init)
    m.submodules[name] = rom
    port = rom.read_port()
    m.d.comb += [port.addr.eq(group), port.en.eq(enable)]
    read = delayed(m, port.data, enable=enable, name=f"{name}_word", reset_less=True) if registered else port.data
    word = layout(read)
    return {key: ([word[key][k] for k in range(simd)], ranges[key]) for key in columns}
