"""In-simulator half of :mod:`instabnn_hw.sim.streams`: drivers, monitors and an in-order scoreboard.

Reads the stream specification from ``$INSTABNN_STREAMS`` and writes what it saw to
``$INSTABNN_RECORD``. One coroutine handles every stream, one clock cycle at a time: at the
falling edge it drives inputs (raising ``valid`` after a random gap and holding it, with the
payload, until the transfer) and each output's ``ready`` at random; in the read-only phase it
samples ``valid & ready``, so every transfer is counted exactly once, in order.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

__all__ = ["streams"]

#: Cycles of full readiness after the last expected output in which nothing more may arrive.
DRAIN_CYCLES = 64


def _read(handle) -> int:
    value = handle.value
    return value.to_unsigned() if hasattr(value, "to_unsigned") else int(value)


class _Driver:
    def __init__(self, dut, spec: dict) -> None:
        self.name = spec["name"]
        self.payload = getattr(dut, f"{self.name}__payload")
        self.valid = getattr(dut, f"{self.name}__valid")
        self.ready = getattr(dut, f"{self.name}__ready")
        self.words = [int(word, 16) for word in spec["words"]]
        self.sent = 0
        self.offered = False
        self.cycles: list[int] = []


class _Monitor:
    def __init__(self, dut, spec: dict) -> None:
        self.name = spec["name"]
        self.payload = getattr(dut, f"{self.name}__payload")
        self.valid = getattr(dut, f"{self.name}__valid")
        self.ready = getattr(dut, f"{self.name}__ready")
        self.expected = [int(word, 16) for word in spec["words"]]
        self.received = 0
        self.extra = 0
        self.cycles: list[int] = []


@cocotb.test()
async def streams(dut) -> None:
    """Stream every input, check every output in order, and record the transfer cycles."""
    spec = json.loads(open(os.environ["INSTABNN_STREAMS"]).read())
    rng = random.Random(spec["seed"])
    drivers = [_Driver(dut, s) for s in spec["streams"] if s["direction"] == "in"]
    monitors = [_Monitor(dut, s) for s in spec["streams"] if s["direction"] == "out"]
    mismatches: list[dict] = []

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    for driver in drivers:
        driver.valid.value = 0
    for monitor in monitors:
        monitor.ready.value = 0
    await ClockCycles(dut.clk, 3)
    await FallingEdge(dut.clk)
    dut.rst.value = 0

    cycle = drained = 0
    while drained < DRAIN_CYCLES and cycle < spec["max_cycles"]:
        await FallingEdge(dut.clk)
        complete = all(m.received >= len(m.expected) for m in monitors)
        drained += complete
        for driver in drivers:
            if not driver.offered and driver.sent < len(driver.words) and rng.random() < spec["valid_probability"]:
                driver.payload.value = driver.words[driver.sent]
                driver.offered = True
            driver.valid.value = int(driver.offered)
        for monitor in monitors:
            monitor.ready.value = int(complete or rng.random() < spec["ready_probability"])
        await ReadOnly()
        for driver in drivers:
            if driver.offered and _read(driver.ready):
                driver.offered = False
                driver.sent += 1
                driver.cycles.append(cycle)
        for monitor in monitors:
            if _read(monitor.valid) and _read(monitor.ready):
                got = _read(monitor.payload)
                if monitor.received >= len(monitor.expected):
                    monitor.extra += 1
                elif got != monitor.expected[monitor.received]:
                    mismatches.append(
                        {
                            "stream": monitor.name,
                            "index": monitor.received,
                            "expected": format(monitor.expected[monitor.received], "x"),
                            "got": format(got, "x"),
                        }
                    )
                monitor.received += 1
                monitor.cycles.append(cycle)
        cycle += 1

    stalled = [
        f"{m.name}: received {m.received} of {len(m.expected)}" for m in monitors if m.received < len(m.expected)
    ]
    stalled += [f"{m.name}: {m.extra} payloads beyond the expected {len(m.expected)}" for m in monitors if m.extra]
    stalled += [f"{d.name}: consumed {d.sent} of {len(d.words)}" for d in drivers if d.sent < len(d.words)]
    record = {
        "mismatches": mismatches,
        "stalled": stalled,
        "cycles": cycle,
        "transfers": {s.name: s.cycles for s in [*drivers, *monitors]},
    }
    with open(os.environ["INSTABNN_RECORD"], "w") as f:
        json.dump(record, f)
    assert not mismatches and not stalled, f"{len(mismatches)} mismatches; {stalled}"
