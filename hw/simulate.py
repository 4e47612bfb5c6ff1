"""Drive a streaming component in Amaranth's simulator, with random gaps and back-pressure.

:func:`simulate_streams` is the one testbench every unit test uses: it offers each input
stream's payloads in order, raising ``valid`` on a random subset of cycles (and holding it,
with the payload, until the transfer, as the stream rules demand), drives each output's
``ready`` at random, and records every transfer with its cycle. It then keeps ``ready`` high
for a while to catch a component that produces more than it should.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from amaranth.hdl import Value
from amaranth.sim import Simulator

from .payload import pack, unpack

__all__ = ["StreamRun", "simulate_streams"]


@dataclass(frozen=True)
class StreamRun:
    """What :func:`simulate_streams` saw.

    Attributes
    ----------
    outputs : dict of str to list
        Payloads received on each output stream, in order, as Python values.
    cycles : dict of str to list of int
        For every stream (inputs and outputs), the cycle of each transfer.
    total_cycles : int
        Cycles simulated until the last expected output, excluding the drain check.
    """

    outputs: dict[str, list]
    cycles: dict[str, list[int]]
    total_cycles: int

    def interval(self, port: str, *, skip: int = 0) -> float:
        """Mean cycles between transfers on ``port`` after the first ``skip`` of them."""
        cycles = self.cycles[port][skip:]
        if len(cycles) < 2:
            raise ValueError(f"{port} has fewer than two transfers after skipping {skip}")
        return (cycles[-1] - cycles[0]) / (len(cycles) - 1)


def _stream(dut, port: str):
    stream = dut
    for name in port.split("."):
        stream = stream[int(name)] if name.isdigit() else getattr(stream, name)
    return stream


def simulate_streams(
    dut,
    inputs: Mapping[str, Sequence],
    outputs: Mapping[str, int],
    *,
    seed: int = 0,
    valid_probability: float = 1.0,
    ready_probability: float = 1.0,
    max_cycles: int = 200_000,
    drain_cycles: int = 64,
    vcd: str | None = None,
) -> StreamRun:
    """Stream ``inputs`` into ``dut`` and collect the expected number of ``outputs``.

    Parameters
    ----------
    dut : amaranth.lib.wiring.Component
        The component; its streams are found by attribute path (``"i"``, ``"o"``, ``"a.i"``,
        ``"o.1"`` for an element of an array of streams).
    inputs : mapping of str to sequence
        Payload values (see :mod:`.payload`) for each input stream.
    outputs : mapping of str to int
        How many transfers to expect on each output stream.
    seed : int
        Seed of the random gaps and back-pressure.
    valid_probability, ready_probability : float
        Chance per cycle that an idle input raises ``valid`` / that an output is ready.
    max_cycles : int
        Give up (``AssertionError``) when the outputs are still incomplete after this many.
    drain_cycles : int
        Cycles of full readiness after the last expected output in which nothing may arrive.
    vcd : str, optional
        Write a waveform to this file.

    Raises
    ------
    AssertionError
        On a timeout, on an output beyond the expected count, or when an input was not consumed.
    """
    rng = random.Random(seed)
    streams_in = {port: _stream(dut, port) for port in inputs}
    streams_out = {port: _stream(dut, port) for port in outputs}
    pending = {port: deque(pack(s.payload.shape(), v) for v in inputs[port]) for port, s in streams_in.items()}
    received: dict[str, list] = {port: [] for port in outputs}
    cycles: dict[str, list[int]] = {port: [] for port in [*inputs, *outputs]}
    total = {"cycles": 0}

    async def testbench(ctx):
        offered = {port: False for port in streams_in}
        cycle = 0
        extra = 0
        while True:
            complete = all(len(received[p]) >= n for p, n in outputs.items())
            if complete:
                if extra == 0:
                    total["cycles"] = cycle
                if extra >= drain_cycles:
                    break
                extra += 1
            if cycle >= max_cycles:
                got = ", ".join(f"{p}: {len(received[p])} of {n}" for p, n in outputs.items())
                raise AssertionError(f"timeout after {cycle} cycles; received {got}")
            for port, stream in streams_in.items():
                if not offered[port] and pending[port] and rng.random() < valid_probability:
                    ctx.set(Value.cast(stream.payload), pending[port][0])
                    offered[port] = True
                ctx.set(stream.valid, offered[port])
            for stream in streams_out.values():
                ctx.set(stream.ready, complete or rng.random() < ready_probability)
            for port, stream in streams_in.items():
                if offered[port] and ctx.get(stream.ready):
                    pending[port].popleft()
                    offered[port] = False
                    cycles[port].append(cycle)
            for port, stream in streams_out.items():
                if ctx.get(stream.valid) and ctx.get(stream.ready):
                    if len(received[port]) >= outputs[port]:
                        raise AssertionError(f"{port} produced more than the {outputs[port]} expected transfers")
                    bits = ctx.get(Value.cast(stream.payload))
                    received[port].append(unpack(stream.payload.shape(), bits))
                    cycles[port].append(cycle)
            await ctx.tick()
            cycle += 1
        left = {port: len(queue) for port, queue in pending.items() if queue}
        if left:
            raise AssertionError(f"inputs not consumed: {left}")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return StreamRun(outputs=received, cycles=cycles, total_cycles=total["cycles"])
