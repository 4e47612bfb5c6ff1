"""A UART byte link (8N1): transmitter, receiver, and their line-level models.

The line is idle high; a frame is one start bit (0), eight data bits, least significant
first, and one stop bit (1): ten bit periods of ``divisor`` clock cycles each. Both ends run
from the design clock; :func:`divisor_for` picks the divisor for a clock and a baud rate.

Models (for tests and host scripts):

* :func:`uart_frame_bits` -- the line level of each bit period for some bytes;
* :func:`uart_waveform` -- the same, one level per clock cycle (what :class:`UartTx` drives);
* :func:`uart_decode` -- bytes out of per-cycle line levels, sampled exactly as
  :class:`UartRx` samples them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from amaranth.hdl import Cat, Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from ._checks import check_int

__all__ = ["UART_ERRORS", "UartRx", "UartTx", "divisor_for", "uart_decode", "uart_frame_bits", "uart_waveform"]

#: Bit periods per frame: start, eight data bits, stop.
FRAME_BITS = 10

#: Largest relative baud-rate error :func:`divisor_for` accepts (each end may be off by this much
#: and the mid-bit sample of the stop bit still lands inside it).
MAX_BAUD_ERROR = 0.02

#: The layout of :class:`UartRx`'s sticky ``errors``: ``overrun`` (a good byte dropped because the
#: previous one was still held) and ``framing`` (a frame dropped because its stop bit was low).
UART_ERRORS = data.StructLayout({"overrun": 1, "framing": 1})


def _check_divisor(divisor: object) -> int:
    return check_int("divisor", divisor, low=2)


def divisor_for(clock_hz: float, baud: int) -> int:
    """Clock cycles per bit, ``round(clock_hz / baud)``, for :class:`UartTx` / :class:`UartRx`.

    Raises
    ------
    ValueError
        When the rate actually produced, ``clock_hz / divisor``, is more than 2 % away from
        ``baud`` (e.g. too slow a clock), or the divisor would be below 2.
    """
    if isinstance(clock_hz, bool) or not isinstance(clock_hz, (int, float, np.integer, np.floating)):
        raise TypeError(f"clock_hz must be a number, not {clock_hz!r}")
    if not clock_hz > 0:
        raise ValueError(f"clock_hz must be > 0, not {clock_hz!r}")
    baud = check_int("baud", baud)
    divisor = max(1, round(clock_hz / baud))
    error = abs(clock_hz / divisor / baud - 1)
    if error > MAX_BAUD_ERROR:
        raise ValueError(
            f"a {clock_hz:g} Hz clock cannot make {baud} baud: the nearest divisor, {divisor}, "
            f"gives {clock_hz / divisor:.0f} baud, an error of {100 * error:.2f} % (at most 2 %)"
        )
    if divisor < 2:
        raise ValueError(f"a {clock_hz:g} Hz clock is too slow for {baud} baud: divisor {divisor} (at least 2)")
    return divisor


def uart_frame_bits(data: bytes | Iterable[int]) -> list[int]:
    """Line levels, one per bit period, of ``data`` sent back to back as 8N1 frames:
    ``[0, b0, b1, ..., b7, 1]`` per byte (``b0`` its least significant bit)."""
    levels = []
    for byte in bytes(data):
        levels += [0, *((byte >> k) & 1 for k in range(8)), 1]
    return levels


def uart_waveform(data: bytes | Iterable[int], divisor: int) -> np.ndarray:
    """Per-clock-cycle line levels of ``data`` (:func:`uart_frame_bits`, each level held
    ``divisor`` cycles): what :class:`UartTx` drives from the cycle after it takes the first byte
    when the bytes are offered back to back. A uint8 array of ``10 * divisor * len(data)``."""
    divisor = _check_divisor(divisor)
    return np.repeat(np.asarray(uart_frame_bits(data), dtype=np.uint8), divisor)


def uart_decode(levels: Sequence[int] | np.ndarray, divisor: int) -> bytes:
    """The bytes in per-cycle line levels, sampled as :class:`UartRx` samples its synchronised input.

    A frame starts at a falling edge (a 0 after a 1; the line before ``levels[0]`` counts as
    idle high) at cycle ``t``; the start bit is confirmed low at ``t + divisor // 2``, data bit
    ``k`` is sampled at ``t + divisor // 2 + (k + 1) * divisor`` and the stop bit at
    ``t + divisor // 2 + 9 * divisor``. A start bit that is high again at its mid-point is a
    glitch and ignored; a frame whose stop bit is 0 is dropped (a framing error), as is a frame
    cut off by the end of ``levels``. After the stop-bit sample the search for the next falling
    edge resumes.
    """
    divisor = _check_divisor(divisor)
    line = np.asarray(levels).astype(np.int64).reshape(-1)
    if line.size and not np.isin(line, (0, 1)).all():
        raise ValueError("levels must be 0 or 1")
    out = bytearray()
    previous = 1
    t = 0
    while t < line.size:
        level = int(line[t])
        if previous == 1 and level == 0:  # falling edge: a start bit begins at t
            mid = t + divisor // 2
            samples = mid + divisor * np.arange(FRAME_BITS)
            if samples[-1] >= line.size:
                break
            bits = line[samples]
            if bits[0] != 0:  # a glitch: back to idle after the start-bit sample
                previous, t = int(bits[0]), mid + 1
                continue
            if bits[-1] == 1:
                out.append(int(sum(int(b) << k for k, b in enumerate(bits[1:9]))))
            previous, t = int(bits[-1]), samples[-1] + 1
            continue
        previous = level
        t += 1
    return bytes(out)


class _UartTiming:
    """The line timing both ends share: ``divisor`` clock cycles per bit, 10 bits per byte."""

    _divisor: int

    @property
    def divisor(self) -> int:
        return self._divisor

    @property
    def initiation_interval(self) -> int:
        """Cycles per byte at the full line rate (bytes back to back): ``10 * divisor``."""
        return FRAME_BITS * self._divisor


class UartTx(_UartTiming, wiring.Component):
    """UART transmitter: each byte taken on ``i`` goes out on ``tx`` as an 8N1 frame.

    A byte is taken when the transmitter is idle, or in the last cycle of the previous frame's
    stop bit, so bytes offered back to back leave as a continuous stream of frames (one every
    ``10 * divisor`` cycles, no idle cycle between them). ``tx`` is registered; it shows the
    start bit from the cycle after the transfer and is high (idle) out of reset.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, >= 2 (:func:`divisor_for`).

    Members
    -------
    i : In(stream.Signature(unsigned(8)))
    tx : Out(1, init=1)
    """

    def __init__(self, *, divisor: int) -> None:
        self._divisor = _check_divisor(divisor)
        super().__init__({"i": In(stream.Signature(unsigned(8))), "tx": Out(1, init=1)})

    #: Cycles from a byte's transfer to its start bit on ``tx`` (registered output).
    latency = 1

    def elaborate(self, platform):
        m = Module()
        # the frame still to send, least significant bit on the line: stop, data, start
        shift = Signal(FRAME_BITS, init=(1 << FRAME_BITS) - 1)
        left = Signal(range(FRAME_BITS + 1))  # bit periods still to send, including the one on the line
        timer = Signal(range(self._divisor))  # cycles left in this bit period after this one
        period_end = timer == 0
        m.d.comb += [self.tx.eq(shift[0]), self.i.ready.eq((left == 0) | ((left == 1) & period_end))]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [
                shift.eq(Cat(0, self.i.payload, 1)),
                left.eq(FRAME_BITS),
                timer.eq(self._divisor - 1),
            ]
        with m.Elif(left != 0):
            with m.If(period_end):
                m.d.sync += [shift.eq(Cat(shift[1:], 1)), left.eq(left - 1), timer.eq(self._divisor - 1)]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m


class UartRx(_UartTiming, wiring.Component):
    """UART receiver: 8N1 frames on ``rx`` become bytes on ``o``.

    ``rx`` passes a two-flip-flop synchroniser (:class:`~amaranth.lib.cdc.FFSynchronizer`). In
    idle, a falling edge of the synchronised line starts a frame; the start bit is confirmed low
    ``divisor // 2`` cycles later (else the edge was a glitch and the receiver returns to idle),
    then each data bit and the stop bit are sampled one bit period apart, i.e. near the middle of
    each bit. A frame whose stop bit is low is dropped and sets ``errors.framing``. A good byte is
    put in the output register at the stop-bit sample; if the previous byte is still held there
    (``o.valid`` and not ``o.ready``) the new byte is dropped instead and ``errors.overrun`` is
    set, so the held byte is never changed. Both flags (:data:`UART_ERRORS`) are sticky until
    reset. A line can not be back-pressured: the consumer must take each byte within about one
    frame.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, >= 2 (:func:`divisor_for`).

    Members
    -------
    rx : In(1, init=1)
    o : Out(stream.Signature(unsigned(8)))
    errors : Out(UART_ERRORS)
    """

    def __init__(self, *, divisor: int) -> None:
        self._divisor = _check_divisor(divisor)
        super().__init__(
            {
                "rx": In(1, init=1),
                "o": Out(stream.Signature(unsigned(8))),
                "errors": Out(UART_ERRORS),
            }
        )

    @property
    def latency(self) -> int:
        """Cycles from the falling edge of a start bit on ``rx`` to the byte's ``o.valid``:
        2 (synchroniser) + ``divisor // 2`` + ``9 * divisor`` + 1 (output register)."""
        return 3 + self._divisor // 2 + 9 * self._divisor

    def elaborate(self, platform):
        m = Module()
        divisor = self._divisor
        line = Signal(init=1)  # the synchronised rx
        # resettable, so a warm reset (not only configuration) leaves the line idle high, as out of reset
        m.submodules.rx_sync = FFSynchronizer(self.rx, line, init=1, reset_less=False, stages=2)
        previous = Signal(init=1)
        m.d.sync += previous.eq(line)

        timer = Signal(range(divisor))  # cycles to the next sample
        bits = Signal(range(8))
        shift = Signal(8)
        sample = timer == 0
        with m.If(timer != 0):
            m.d.sync += timer.eq(timer - 1)

        deliver = Signal()
        with m.FSM():
            with m.State("idle"):
                with m.If(previous & ~line):
                    m.d.sync += timer.eq(divisor // 2 - 1)
                    m.next = "start"
            with m.State("start"):
                with m.If(sample):
                    with m.If(line):
                        m.next = "idle"  # a glitch, not a start bit
                    with m.Else():
                        m.d.sync += [timer.eq(divisor - 1), bits.eq(0)]
                        m.next = "data"
            with m.State("data"):
                with m.If(sample):
                    m.d.sync += [shift.eq(Cat(shift[1:], line)), bits.eq(bits + 1), timer.eq(divisor - 1)]
                    with m.If(bits == 7):
                        m.next = "stop"
            with m.State("stop"):
                with m.If(sample):
                    with m.If(line):
                        m.d.comb += deliver.eq(1)
                    with m.Else():
                        m.d.sync += self.errors.framing.eq(1)
                    m.next = "idle"

        room = ~self.o.valid | self.o.ready
        with m.If(deliver & room):
            m.d.sync += [self.o.payload.eq(shift), self.o.valid.eq(1)]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(deliver & ~room):
            m.d.sync += self.errors.overrun.eq(1)
        return m
