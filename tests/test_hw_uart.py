# amaranth: UnusedElaboratable=no
"""UART transmitter and receiver in Amaranth's simulator, against the line-level models."""

import random

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module, Value
from amaranth.sim import Simulator

from instabnn_hw.hw.uart import UART_ERRORS, UartRx, UartTx, divisor_for, uart_decode, uart_frame_bits, uart_waveform


class Loopback(Elaboratable):
    """``UartTx`` driving ``UartRx``."""

    def __init__(self, divisor):
        self.tx = UartTx(divisor=divisor)
        self.rx = UartRx(divisor=divisor)

    def elaborate(self, platform):
        m = Module()
        m.submodules.tx, m.submodules.rx = self.tx, self.rx
        m.d.comb += self.rx.rx.eq(self.tx.tx)
        return m


def run(dut, cycles, step):
    """Call ``step(ctx, cycle)`` in every cycle (before the clock edge) for ``cycles`` cycles."""

    async def testbench(ctx):
        for cycle in range(cycles):
            step(ctx, cycle)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()


class StreamSink:
    """Takes an output stream with random ``ready`` and checks the stream rules: once ``valid``
    is up, ``valid`` and the payload hold until the transfer."""

    def __init__(self, stream, ready_probability, rng):
        self.stream, self.p, self.rng = stream, ready_probability, rng
        self.received, self.cycles, self.held = [], [], None

    def step(self, ctx, cycle):
        ready = self.rng.random() < self.p
        ctx.set(self.stream.ready, ready)
        valid, payload = ctx.get(self.stream.valid), ctx.get(Value.cast(self.stream.payload))
        if self.held is not None:
            assert valid and payload == self.held, f"cycle {cycle}: valid/payload changed before the transfer"
        self.held = None
        if valid and ready:
            self.received.append(payload)
            self.cycles.append(cycle)
        elif valid:
            self.held = payload


class StreamSource:
    """Offers payloads on an input stream with random gaps, holding each until taken."""

    def __init__(self, stream, payloads, valid_probability, rng):
        self.stream, self.pending, self.p, self.rng = stream, list(payloads), valid_probability, rng
        self.offered, self.cycles = False, []

    def step(self, ctx, cycle):
        if not self.offered and self.pending and self.rng.random() < self.p:
            ctx.set(Value.cast(self.stream.payload), self.pending[0])
            self.offered = True
        ctx.set(self.stream.valid, self.offered)
        if self.offered and ctx.get(self.stream.ready):
            self.pending.pop(0)
            self.offered = False
            self.cycles.append(cycle)


def test_frame_bits_and_waveform_model():
    assert uart_frame_bits(b"\x01\x80") == [0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    assert uart_frame_bits([0xA5]) == [0, 1, 0, 1, 0, 0, 1, 0, 1, 1]
    assert uart_frame_bits(b"") == []
    assert uart_waveform(b"\x00", 3).tolist() == [0] * 27 + [1] * 3


@pytest.mark.parametrize("divisor", [2, 3, 4, 7, 16])
def test_decode_inverts_the_waveform_with_gaps_and_glitches(divisor):
    rng = np.random.default_rng(divisor)
    data = bytes(rng.integers(0, 256, size=12).tolist())
    parts = [np.ones(5, dtype=np.uint8)]
    for k in range(len(data)):
        parts.append(uart_waveform(data[k : k + 1], divisor))
        parts.append(np.ones(int(rng.integers(0, 3 * divisor)), dtype=np.uint8))
    assert uart_decode(np.concatenate(parts), divisor) == data
    # a low pulse shorter than half a bit is a glitch, not a start bit
    if divisor >= 4:
        glitch = np.array([1] * 3 + [0] * (divisor // 2 - 1) + [1] * 3 * divisor, dtype=np.uint8)
        assert uart_decode(np.concatenate([glitch, uart_waveform(b"\x42", divisor)]), divisor) == b"\x42"
    # a frame cut off by the end of the levels is not decoded
    assert uart_decode(uart_waveform(b"\x42\x43", divisor)[:-divisor], divisor) == b"\x42"


@pytest.mark.parametrize("divisor", [2, 3, 4, 5, 6, 7])
def test_loopback_full_rate_bit_timing(divisor):
    """Bytes offered back to back leave as uart_frame_bits, each bit ``divisor`` cycles, one
    frame per initiation interval, and come back out of the receiver after its latency."""
    rng = random.Random(divisor)
    data = bytes(rng.randrange(256) for _ in range(12))
    dut = Loopback(divisor)
    source = StreamSource(dut.tx.i, data, 1.0, rng)
    sink = StreamSink(dut.rx.o, 1.0, rng)
    levels = []

    def step(ctx, cycle):
        source.step(ctx, cycle)
        sink.step(ctx, cycle)
        levels.append(ctx.get(dut.tx.tx))

    frame = 10 * divisor
    run(dut, len(data) * frame + dut.rx.latency + 4, step)
    assert bytes(sink.received) == data
    first = source.cycles[0]
    assert levels[: first + 1] == [1] * (first + 1)  # idle high out of reset
    expected = uart_waveform(data, divisor).tolist()
    assert levels[first + 1 : first + 1 + len(expected)] == expected
    assert all(level == 1 for level in levels[first + 1 + len(expected) :])
    assert np.diff(source.cycles).tolist() == [dut.tx.initiation_interval] * (len(data) - 1)
    assert dut.tx.initiation_interval == dut.rx.initiation_interval == frame
    # start bit on tx one cycle after the transfer; byte on rx.o ``latency`` cycles after that
    assert sink.cycles[0] == first + dut.tx.latency + dut.rx.latency
    assert np.diff(sink.cycles).tolist() == [frame] * (len(data) - 1)
    assert uart_decode(levels, divisor) == data


@pytest.mark.parametrize(("valid_probability", "ready_probability"), [(1.0, 1.0), (0.5, 0.7), (0.9, 0.3), (0.1, 0.5)])
@pytest.mark.parametrize("divisor", [2, 5])
def test_loopback_random_flow_control(divisor, valid_probability, ready_probability):
    """Random gaps on the transmitter's input and random back-pressure on the receiver's output:
    every byte arrives once, in order, and the receiver's output obeys the stream rules."""
    rng = random.Random(int(100 * valid_probability + 10 * ready_probability + divisor))
    data = bytes(rng.randrange(256) for _ in range(10))
    dut = Loopback(divisor)
    source = StreamSource(dut.tx.i, data, valid_probability, rng)
    sink = StreamSink(dut.rx.o, ready_probability, rng)
    levels = []
    state = {}

    def step(ctx, cycle):
        source.step(ctx, cycle)
        sink.step(ctx, cycle)
        levels.append(ctx.get(dut.tx.tx))
        errors = ctx.get(dut.rx.errors)
        state["flags"] = (errors.overrun, errors.framing)

    run(dut, int(len(data) * 10 * divisor / valid_probability) + 40 * divisor, step)
    assert bytes(sink.received) == data
    assert uart_decode(levels, divisor) == data
    assert state["flags"] == (0, 0)


def drive_rx(divisor, levels, *, ready=True):
    """Drive a receiver's ``rx`` with per-cycle ``levels`` (then idle); returns its output
    transfers, the cycle of each, and the final flags."""
    dut = UartRx(divisor=divisor)
    sink = StreamSink(dut.o, 1.0 if ready else 0.0, random.Random(0))
    flags = []

    def step(ctx, cycle):
        ctx.set(dut.rx, int(levels[cycle]) if cycle < len(levels) else 1)
        sink.step(ctx, cycle)
        errors = ctx.get(dut.errors)
        flags.append((errors.overrun, errors.framing, ctx.get(dut.o.valid), ctx.get(dut.o.payload)))

    run(dut, len(levels) + dut.latency + 2, step)
    return sink, flags


@pytest.mark.parametrize("divisor", [2, 3, 4, 7])
def test_rx_drops_a_frame_with_a_bad_stop_bit(divisor):
    bad = [0, *((0x5A >> k) & 1 for k in range(8)), 0]  # stop bit low
    levels = np.concatenate(
        [
            np.ones(3, dtype=np.uint8),
            uart_waveform(b"\x81", divisor),
            np.repeat(np.asarray(bad, dtype=np.uint8), divisor),
            np.ones(2 * divisor, dtype=np.uint8),  # the line returns high, then good frames follow
            uart_waveform(b"\x3c\xff", divisor),
        ]
    )
    assert uart_decode(levels, divisor) == b"\x81\x3c\xff"
    sink, flags = drive_rx(divisor, levels)
    assert bytes(sink.received) == b"\x81\x3c\xff"
    overrun, framing, _, _ = zip(*flags, strict=True)
    assert not any(overrun)
    set_at = framing.index(1)  # set by the bad frame's stop bit, and sticky
    assert all(framing[set_at:]) and set_at == 3 + 10 * divisor + UartRx(divisor=divisor).latency


@pytest.mark.parametrize("divisor", [4, 7])
def test_rx_ignores_a_short_glitch(divisor):
    levels = [1] * 5 + [0] * (divisor // 2 - 1) + [1] * (3 * divisor) + uart_waveform(b"\x99", divisor).tolist()
    sink, flags = drive_rx(divisor, levels)
    assert bytes(sink.received) == b"\x99"
    assert flags[-1][:2] == (0, 0)


@pytest.mark.parametrize("divisor", [2, 5])
def test_rx_overrun_keeps_the_held_byte(divisor):
    """A consumer that is never ready: the first byte stays on ``o`` untouched, the next are
    dropped and ``errors.overrun`` is set (and stays set)."""
    levels = np.concatenate([np.ones(4, dtype=np.uint8), uart_waveform(b"\xa7\x00\xff\x12", divisor)])
    sink, flags = drive_rx(divisor, levels, ready=False)
    assert sink.received == []
    overrun, framing, valid, payload = (np.asarray(column) for column in zip(*flags, strict=True))
    first = int(np.argmax(valid))
    assert valid[first:].all() and (payload[first:] == 0xA7).all()
    assert overrun[-1] == 1 and not overrun[: first + 10 * divisor - 2].any()
    assert not framing.any()


def test_rx_takes_a_new_byte_in_the_cycle_the_held_one_leaves():
    """The byte completing while the held one is being taken replaces it: no overrun."""
    divisor = 3
    dut = UartRx(divisor=divisor)
    levels = np.concatenate([np.ones(2, dtype=np.uint8), uart_waveform(b"\x10\x20", divisor)])
    first_valid = 2 + dut.latency  # the first byte's o.valid
    second_valid = first_valid + 10 * divisor
    got = []

    def step(ctx, cycle):
        ctx.set(dut.rx, int(levels[cycle]) if cycle < len(levels) else 1)
        ready = cycle >= second_valid - 1  # take the first byte in the very cycle the second completes
        ctx.set(dut.o.ready, ready)
        if ctx.get(dut.o.valid) and ready:
            got.append((cycle, ctx.get(dut.o.payload)))
        assert ctx.get(dut.errors).overrun == 0

    run(dut, second_valid + 3, step)
    assert got == [(second_valid - 1, 0x10), (second_valid, 0x20)]


def test_divisor_for():
    assert divisor_for(25e6, 115200) == 217
    assert divisor_for(12e6, 115200) == 104
    assert divisor_for(12e6, 9600) == 1250
    assert divisor_for(100_000_000, 1_000_000) == 100
    assert divisor_for(3e6, 1_000_000) == 3
    assert divisor_for(2.039e6, 1_000_000) == 2  # 1.95 % off: accepted
    with pytest.raises(ValueError, match=r"1e\+06 Hz.*400000 baud.*500000 baud.*25\.00 %"):
        divisor_for(1e6, 400_000)
    with pytest.raises(ValueError, match=r"2\.6e\+06 Hz.*1000000 baud.*866667 baud.*error of 13\.33 %"):
        divisor_for(2.6e6, 1_000_000)
    with pytest.raises(ValueError, match=r"too slow for 1000000 baud: divisor 1"):
        divisor_for(1e6, 1_000_000)
    with pytest.raises(ValueError, match=r"clock_hz must be > 0, not 0"):
        divisor_for(0, 9600)
    with pytest.raises(TypeError, match=r"clock_hz must be a number, not '12e6'"):
        divisor_for("12e6", 9600)
    with pytest.raises(ValueError, match=r"baud must be >= 1, not 0"):
        divisor_for(12e6, 0)
    with pytest.raises(TypeError, match=r"baud must be an integer, not 9600\.0"):
        divisor_for(12e6, 9600.0)


def test_bad_parameters():
    for cls in (UartTx, UartRx):
        with pytest.raises(ValueError, match=r"divisor must be >= 2, not 1"):
            cls(divisor=1)
        with pytest.raises(TypeError, match=r"divisor must be an integer, not 2\.5"):
            cls(divisor=2.5)
        with pytest.raises(TypeError):
            cls(4)  # keyword-only
    assert UartRx(divisor=2).errors.shape() == UART_ERRORS  # one port, both sticky flags
    with pytest.raises(ValueError, match=r"divisor must be >= 2, not 0"):
        uart_waveform(b"x", 0)
    with pytest.raises(ValueError, match=r"levels must be 0 or 1"):
        uart_decode([1, 2, 1], 2)
