"""In-simulator half of :mod:`instabnn_hw.sim.streams`: the components' streams driven, monitored and scored.

Reads the stream specification from ``$INSTABNN_STREAMS`` and writes what it saw to
``$INSTABNN_RECORD``. Each input has a :class:`~instabnn_hw.sim.cocotb_streams.Driver` (random
valid gaps), each output a :class:`~instabnn_hw.sim.cocotb_streams.ReadyDriver` (random
back-pressure), a :class:`~instabnn_hw.sim.cocotb_streams.Monitor` and an in-order
:class:`~instabnn_hw.sim.cocotb_streams.Scoreboard`. The run ends when every output has all its
words and :data:`~instabnn_hw.sim.cocotb_streams.DRAIN_CYCLES` more passed (nothing extra may
come), or after ``max_cycles``.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly

from .cocotb_streams import DRAIN_CYCLES, Driver, Monitor, ReadyDriver, Scoreboard, StreamSignals, reset, start_clock

__all__ = ["streams"]

#: Cycles of reset at the start.
RESET_CYCLES = 3


@cocotb.test()
async def streams(dut) -> None:
    """Stream every input, check every output in order, and record the transfer cycles."""
    spec = json.loads(open(os.environ["INSTABNN_STREAMS"]).read())
    rng = random.Random(spec["seed"])
    drivers = [
        Driver(
            StreamSignals(dut, s["name"]),
            [int(word, 16) for word in s["words"]],
            rng=rng,
            valid_probability=spec["valid_probability"],
        )
        for s in spec["streams"]
        if s["direction"] == "in"
    ]
    outputs = [StreamSignals(dut, s["name"]) for s in spec["streams"] if s["direction"] == "out"]
    readies = [ReadyDriver(signals, rng=rng, ready_probability=spec["ready_probability"]) for signals in outputs]
    boards = [
        Scoreboard(s["name"], [int(word, 16) for word in s["words"]])
        for s in spec["streams"]
        if s["direction"] == "out"
    ]
    monitors = [Monitor(signals, on_transfer=board.receive) for signals, board in zip(outputs, boards, strict=True)]

    start_clock(dut)
    for component in [*drivers, *readies]:
        component.idle()
    await reset(dut, RESET_CYCLES)

    cycle = drained = 0
    while drained < DRAIN_CYCLES and cycle < spec["max_cycles"]:
        await FallingEdge(dut.clk)
        complete = all(board.complete for board in boards)
        drained += complete
        for driver in drivers:
            driver.drive()
        for ready in readies:
            ready.drive(always=complete)
        await ReadOnly()
        for driver in drivers:
            driver.sample(cycle)
        for monitor in monitors:
            monitor.sample(cycle)
        cycle += 1

    mismatches = sorted((m for board in boards for m in board.mismatches), key=lambda m: m["cycle"])
    unsent = [f"{d.name}: consumed {d.sent} of {len(d.words)}" for d in drivers if d.sent < len(d.words)]
    protocol = [line for monitor in monitors for line in monitor.violations]
    record = {
        "mismatches": mismatches,
        "stalled": [line for board in boards for line in board.lost_and_extra()] + unsent,
        "protocol": protocol,
        "cycles": cycle,
        "transfers": {s.name: s.cycles for s in [*drivers, *monitors]},
    }
    with open(os.environ["INSTABNN_RECORD"], "w") as f:
        json.dump(record, f)
    problems = [line for board in boards for line in board.problems()] + unsent + protocol
    assert not problems, f"{len(mismatches)} mismatches; " + "; ".join(problems)
