"""In-simulator half of :mod:`instabnn_hw.sim.design`: the cocotb testbench of a generated design.

Reads its specification from ``$INSTABNN_DESIGN_SPEC`` and writes what it saw to
``$INSTABNN_DESIGN_RECORD`` (both JSON; :func:`instabnn_hw.sim.design.simulate_design` writes
the one and reads the other, and compares what came with the reference). The pixel stream ``i``
has a :class:`~instabnn_hw.sim.cocotb_streams.Driver`; ``o`` and ``logits`` each have a
:class:`~instabnn_hw.sim.cocotb_streams.ReadyDriver` and a
:class:`~instabnn_hw.sim.cocotb_streams.Monitor`, called once per clock cycle.

The run:

1. reset; then, unless ``junk`` is empty, those pixel words (more than a frame) with random valid
   gaps and random back-pressure, and a reset asserted in the middle of a frame, with outputs in
   flight: nothing from before it may come out after it;
2. the images, one pixel word per transfer: the first ``full_rate_images`` with ``valid`` and
   ``ready`` always high (the measured cycles per frame and latency), the rest with random valid
   gaps (``valid_probability``) and random back-pressure (``ready_probability``);
3. every ``o`` and ``logits`` word is recorded in order with its cycle, up to ``images`` classes
   and their logits; the run ends when those came and
   :data:`~instabnn_hw.sim.cocotb_streams.DRAIN_CYCLES` more passed, when the image
   ``stop_after_image`` came, when no stream moved for ``idle_limit`` cycles, or after
   ``max_cycles``.

The test fails when the run did not end with everything out (or the image ``stop_after_image``),
when more words came than ``images`` asks for, or when ``o`` or ``logits`` dropped ``valid`` or
changed its payload before the transfer; whether the words are right is for the host to say.

``taps`` name internal streams (``<name>__valid``, ``__ready``, ``__payload``: each IR node's
output in the generated Verilog); every transfer on them after the mid-frame reset is recorded.
Cycles count from the end of the last reset.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly

from .cocotb_streams import DRAIN_CYCLES, Driver, Monitor, ReadyDriver, StreamSignals, reset, start_clock

__all__ = ["design"]


async def _junk_then_reset(
    dut, spec: dict, rng: random.Random, i: StreamSignals, outputs: list[StreamSignals], readies: list[ReadyDriver]
) -> tuple[dict, list[str]]:
    """Pixel words with random flow, then a reset in the middle of a frame; returns what moved and the
    protocol violations of the outputs."""
    junk = Driver(i, [int(w, 16) for w in spec["junk"]], rng=rng, valid_probability=spec["valid_probability"])
    monitors = [Monitor(signals) for signals in outputs]
    cycle = idle = 0
    while junk.sent < len(junk.words) and idle < spec["idle_limit"]:
        await FallingEdge(dut.clk)
        junk.drive()
        for ready in readies:
            ready.drive()
        await ReadOnly()
        moved = junk.sample(cycle)
        for monitor in monitors:
            moved |= monitor.sample(cycle)
        idle = 0 if moved else idle + 1
        cycle += 1
    await FallingEdge(dut.clk)
    junk.idle()
    await reset(dut, spec["reset_cycles"])
    pre_reset = {"words": junk.sent, "outputs": sum(monitor.transfers for monitor in monitors)}
    return pre_reset, [f"before the reset: {line}" for monitor in monitors for line in monitor.violations]


class _Progress:
    """Writes ``<classes out> <cycle>`` to the host's progress file at each class."""

    def __init__(self, path: str | None) -> None:
        self._file = open(path, "w") if path else None
        self._count = 0

    def __call__(self, word: int, cycle: int) -> None:
        self._count += 1
        if self._file is not None:
            self._file.write(f"{self._count} {cycle}\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


@cocotb.test()
async def design(dut) -> None:
    """Stream the images through the design and record every output word with its cycle."""
    spec = json.loads(open(os.environ["INSTABNN_DESIGN_SPEC"]).read())
    record_path = os.environ["INSTABNN_DESIGN_RECORD"]
    progress = _Progress(spec.get("progress"))
    rng = random.Random(spec["seed"])
    images = spec["images"]
    full = spec["full_rate_images"]
    per_image = spec["words_per_image"]
    per_logits = spec["logits_words_per_image"]
    stop_after = spec.get("stop_after_image")

    i = StreamSignals(dut, "i")
    outputs = [StreamSignals(dut, "o"), StreamSignals(dut, "logits")]
    readies = [ReadyDriver(signals, rng=rng, ready_probability=spec["ready_probability"]) for signals in outputs]
    missing = []
    taps = []
    for tap in spec.get("taps", []):
        try:
            taps.append(Monitor(StreamSignals(dut, tap["signal"], name=tap["name"]), limit=tap.get("limit")))
        except AttributeError:
            missing.append(tap["name"])

    start_clock(dut)
    for ready in readies:
        ready.idle()
    i.valid.value = 0
    await reset(dut, spec["reset_cycles"])
    pre_reset, violations = None, []
    if spec["junk"]:
        pre_reset, violations = await _junk_then_reset(dut, spec, rng, i, outputs, readies)

    pixels = Driver(
        i,
        [int(w, 16) for w in spec["stimulus"]],
        rng=rng,
        valid_probability=spec["valid_probability"],
        gapless=full * per_image,
    )
    classes = Monitor(outputs[0], limit=images, on_transfer=progress)
    logits = Monitor(outputs[1], limit=images * per_logits)
    o_ready, logits_ready = readies
    cycle = idle = drained = 0
    stop = "done"
    while True:
        await FallingEdge(dut.clk)
        pixels.drive()
        done = classes.full and logits.full
        o_ready.drive(always=done or classes.count < full)
        logits_ready.drive(always=done or logits.count < full * per_logits)
        await ReadOnly()
        moved = pixels.sample(cycle)
        moved |= classes.sample(cycle)
        moved |= logits.sample(cycle)
        for tap in taps:
            if not tap.full:
                tap.sample(cycle)
        idle = 0 if moved else idle + 1
        cycle += 1
        if stop_after is not None and classes.count > stop_after:
            stop = "stop_after_image"
            break
        if done:
            drained += 1
            if drained >= DRAIN_CYCLES:
                break
        elif idle >= spec["idle_limit"]:
            stop = "idle"
            break
        elif cycle >= spec["max_cycles"]:
            stop = "max_cycles"
            break

    progress.close()
    extra = {"o": classes.extra, "logits": logits.extra}
    violations += [line for monitor in [classes, logits, *taps] for line in monitor.violations]
    record = {
        "stop": stop,
        "cycles": cycle,
        "pre_reset": pre_reset,
        "first_accept": pixels.cycles[::per_image],
        "o": [[c, format(w, "x")] for c, w in zip(classes.cycles, classes.words, strict=True)],
        "logits": [[c, format(w, "x")] for c, w in zip(logits.cycles, logits.words, strict=True)],
        "extra": extra,
        "protocol": violations,
        "taps": {tap.name: [format(w, "x") for w in tap.words] for tap in taps},
        "missing_taps": missing,
    }
    with open(record_path, "w") as f:
        json.dump(record, f)
    complete = stop in ("done", "stop_after_image")
    assert complete and not any(extra.values()) and not violations, (
        f"stopped: {stop}; extra outputs: {extra}; protocol: {violations[:5]}"
    )
