"""In-simulator half of :mod:`instabnn_hw.sim.design`: the cocotb testbench of a generated design.

Reads its specification from ``$INSTABNN_DESIGN_SPEC`` and writes what it saw to
``$INSTABNN_DESIGN_RECORD`` (both JSON; :func:`instabnn_hw.sim.design.simulate_design` writes
the one and reads the other). One coroutine drives ``instabnn_top`` one clock cycle at a time:
at the falling edge it drives the pixel stream ``i`` and the ``ready`` of ``o`` and ``logits``;
in the read-only phase it samples every ``valid & ready``, so each transfer counts once, in order.

The run:

1. reset; then, unless ``junk`` is empty, those pixel words (more than a frame) with random valid
   gaps and random back-pressure, and a reset asserted in the middle of a frame, with outputs in
   flight: nothing from before it may come out after it;
2. the images, one pixel word per transfer: the first ``full_rate_images`` with ``valid`` and
   ``ready`` always high (the measured cycles per frame and latency), the rest with random valid
   gaps (``valid_probability``) and random back-pressure (``ready_probability``);
3. the scoreboard compares every ``o`` and ``logits`` word in order with the expected ones and
   records what came, when; the run ends when everything came and ``DRAIN_CYCLES`` more passed
   (nothing extra may come), when the image ``stop_after_image`` came, when no stream moved for
   ``idle_limit`` cycles, or after ``max_cycles``.

``taps`` name internal streams (``<name>__valid``, ``__ready``, ``__payload``: each IR node's
output in the generated Verilog); every transfer on them after the mid-frame reset is recorded.
Cycles count from the end of the last reset.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

__all__ = ["design"]

#: Cycles of full readiness after the last expected output in which nothing more may arrive.
DRAIN_CYCLES = 64


def _read(handle) -> int:
    value = handle.value
    return value.to_unsigned() if hasattr(value, "to_unsigned") else int(value)


class _Port:
    def __init__(self, dut, name: str) -> None:
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.driven = None

    def drive(self, signal: str, value: int) -> None:
        """Writes ``valid`` (inputs) or ``ready`` (outputs) only when it changes."""
        if value != self.driven:
            getattr(self, signal).value = value
            self.driven = value


class _Tap:
    def __init__(self, dut, spec: dict) -> None:
        self.name = spec["name"]
        self.limit = spec.get("limit")
        self.valid = getattr(dut, f"{spec['signal']}__valid")
        self.ready = getattr(dut, f"{spec['signal']}__ready")
        self.payload = getattr(dut, f"{spec['signal']}__payload")
        self.words: list[str] = []


async def _reset(dut, i: _Port, cycles: int) -> None:
    i.drive("valid", 0)
    dut.rst.value = 1
    await ClockCycles(dut.clk, cycles)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


async def _junk_then_reset(dut, spec: dict, rng: random.Random, i: _Port, o: _Port, logits: _Port) -> dict:
    """Pixel words with random flow, then a reset in the middle of a frame; returns what moved."""
    words = [int(w, 16) for w in spec["junk"]]
    sent = outputs = idle = 0
    offered = False
    while sent < len(words) and idle < spec["idle_limit"]:
        await FallingEdge(dut.clk)
        if not offered and rng.random() < spec["valid_probability"]:
            i.payload.value = words[sent]
            offered = True
        i.drive("valid", int(offered))
        o_ready = int(rng.random() < spec["ready_probability"])
        l_ready = int(rng.random() < spec["ready_probability"])
        o.drive("ready", o_ready)
        logits.drive("ready", l_ready)
        await ReadOnly()
        idle += 1
        if offered and _read(i.ready):
            offered, sent, idle = False, sent + 1, 0
        for port, ready in ((o, o_ready), (logits, l_ready)):
            if ready and _read(port.valid):
                outputs, idle = outputs + 1, 0
    await FallingEdge(dut.clk)
    await _reset(dut, i, spec["reset_cycles"])
    return {"words": sent, "outputs": outputs}


@cocotb.test()
async def design(dut) -> None:
    """Stream the images through the design, check every output in order, record the cycles."""
    spec = json.loads(open(os.environ["INSTABNN_DESIGN_SPEC"]).read())
    record_path = os.environ["INSTABNN_DESIGN_RECORD"]
    progress = open(spec["progress"], "w") if spec.get("progress") else None
    rng = random.Random(spec["seed"])
    i, o, logits = _Port(dut, "i"), _Port(dut, "o"), _Port(dut, "logits")
    missing = []
    taps = []
    for tap in spec.get("taps", []):
        try:
            taps.append(_Tap(dut, tap))
        except AttributeError:
            missing.append(tap["name"])

    images = spec["images"]
    full = spec["full_rate_images"]
    per_image = spec["words_per_image"]
    per_logits = spec["logits_words_per_image"]
    words = [int(w, 16) for w in spec["stimulus"]]
    expected_o = [int(w, 16) for w in spec["expected_o"]]
    expected_logits = [int(w, 16) for w in spec["expected_logits"]]
    stop_after = spec.get("stop_after_image")

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    i.drive("valid", 0)
    o.drive("ready", 0)
    logits.drive("ready", 0)
    await _reset(dut, i, spec["reset_cycles"])
    pre_reset = None
    if spec["junk"]:
        pre_reset = await _junk_then_reset(dut, spec, rng, i, o, logits)

    first_accept: list[int] = []
    o_seen: list[list] = []  # [cycle, hex]
    logits_seen: list[list] = []
    bad_images: set[int] = set()
    extra = {"o": 0, "logits": 0}
    sent = cycle = idle = drained = 0
    offered = False
    stop = "done"
    while True:
        await FallingEdge(dut.clk)
        if not offered and sent < len(words) and (sent // per_image < full or rng.random() < spec["valid_probability"]):
            i.payload.value = words[sent]
            offered = True
        i.drive("valid", int(offered))
        done = len(o_seen) >= images and len(logits_seen) >= images * per_logits
        o_ready = int(done or len(o_seen) < full or rng.random() < spec["ready_probability"])
        l_ready = int(done or len(logits_seen) < full * per_logits or rng.random() < spec["ready_probability"])
        o.drive("ready", o_ready)
        logits.drive("ready", l_ready)
        await ReadOnly()
        idle += 1
        if offered and _read(i.ready):
            if sent % per_image == 0:
                first_accept.append(cycle)
            offered, sent, idle = False, sent + 1, 0
        if o_ready and _read(o.valid):
            got, idle = _read(o.payload), 0
            k = len(o_seen)
            if k >= images:
                extra["o"] += 1
            else:
                if got != expected_o[k]:
                    bad_images.add(k)
                o_seen.append([cycle, format(got, "x")])
                if progress is not None:
                    progress.write(f"{k + 1} {cycle}\n")
                    progress.flush()
        if l_ready and _read(logits.valid):
            got, idle = _read(logits.payload), 0
            k = len(logits_seen)
            if k >= images * per_logits:
                extra["logits"] += 1
            else:
                if got != expected_logits[k]:
                    bad_images.add(k // per_logits)
                logits_seen.append([cycle, format(got, "x")])
        for tap in taps:
            if (tap.limit is None or len(tap.words) < tap.limit) and _read(tap.valid) and _read(tap.ready):
                tap.words.append(format(_read(tap.payload), "x"))
        cycle += 1
        if stop_after is not None and len(o_seen) > stop_after:
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

    if progress is not None:
        progress.close()
    record = {
        "stop": stop,
        "cycles": cycle,
        "pre_reset": pre_reset,
        "first_accept": first_accept,
        "o": o_seen,
        "logits": logits_seen,
        "extra": extra,
        "bad_images": sorted(bad_images),
        "taps": {tap.name: tap.words for tap in taps},
        "missing_taps": missing,
    }
    with open(record_path, "w") as f:
        json.dump(record, f)
    complete = stop in ("done", "stop_after_image")
    assert complete and not bad_images and not any(extra.values()), (
        f"stopped: {stop}; images with mismatches: {sorted(bad_images)[:10]}; extra outputs: {extra}"
    )
