"""Cocotb stream components of the testbenches: driver, ready driver, monitor, scoreboard and reset.

A stream ``<name>`` of the simulated top is its three signals ``<name>__valid``, ``<name>__ready``
and ``<name>__payload`` (:class:`StreamSignals`). A testbench calls the components once per clock
cycle, in two phases:

* at the falling edge, :meth:`Driver.drive` offers input words and :meth:`ReadyDriver.drive`
  sets each output's ``ready``;
* in the read-only phase, :meth:`Driver.sample` and :meth:`Monitor.sample` see which transfers
  (``valid & ready`` high together) happened in that cycle, so each counts exactly once, in order.

One loop per testbench calls them rather than a coroutine per component as in cocotb's examples:
two triggers a cycle for the whole testbench instead of two per component (a coroutine each made
a design simulation about 1.5 times as slow), and the random draws of all components come in a
fixed order, so a seed gives the same flow control every time. A :class:`Monitor` hands every
transfer to a callback such as :meth:`Scoreboard.receive`, which compares it in order with the
expected words.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge

__all__ = [
    "DRAIN_CYCLES",
    "Driver",
    "Monitor",
    "ReadyDriver",
    "Scoreboard",
    "StreamSignals",
    "VIOLATIONS_KEPT",
    "read",
    "reset",
    "start_clock",
]

#: Cycles of full readiness after the last expected output in which nothing more may arrive.
DRAIN_CYCLES = 64

#: Protocol violations a monitor keeps the description of (it counts them all).
VIOLATIONS_KEPT = 10


def read(handle) -> int:
    """The value of a signal as an unsigned integer."""
    value = handle.value
    return value.to_unsigned() if hasattr(value, "to_unsigned") else int(value)


def start_clock(dut, *, period_ns: int = 10) -> None:
    """Starts the clock ``dut.clk``."""
    cocotb.start_soon(Clock(dut.clk, period_ns, unit="ns").start())


async def reset(dut, cycles: int) -> None:
    """Holds ``dut.rst`` high for ``cycles`` rising edges of ``dut.clk``; releases it at the next falling edge."""
    dut.rst.value = 1
    await ClockCycles(dut.clk, cycles)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


class StreamSignals:
    """The ``valid``, ``ready`` and ``payload`` signals of the stream ``signal`` of ``dut``.

    Parameters
    ----------
    dut
        The cocotb handle of the simulated top.
    signal : str
        The prefix of the signals: ``<signal>__valid`` and so on.
    name : str, optional
        What reports call the stream; default ``signal``.

    Raises
    ------
    AttributeError
        When ``dut`` has no such signals.
    """

    def __init__(self, dut, signal: str, *, name: str | None = None) -> None:
        self._name = signal if name is None else name
        self.valid = getattr(dut, f"{signal}__valid")
        self.ready = getattr(dut, f"{signal}__ready")
        self.payload = getattr(dut, f"{signal}__payload")

    @property
    def name(self) -> str:
        return self._name


class Driver:
    """Sends ``words`` on an input stream: raises ``valid`` after a random gap and holds it, with the
    payload, until the transfer.

    Parameters
    ----------
    signals : StreamSignals
    words : sequence of int
        The payloads, packed.
    rng : random.Random
        Of the gaps (one draw per cycle without a word on offer).
    valid_probability : float
        Chance in each such cycle that the next word is offered.
    gapless : int
        The first ``gapless`` words are offered without a gap.
    """

    def __init__(
        self,
        signals: StreamSignals,
        words: Sequence[int],
        *,
        rng: random.Random,
        valid_probability: float,
        gapless: int = 0,
    ) -> None:
        if not 0 <= valid_probability <= 1:
            raise ValueError(f"valid_probability must be in [0, 1], not {valid_probability!r}")
        if gapless < 0:
            raise ValueError(f"gapless must be at least 0, not {gapless}")
        self._signals = signals
        self._words = list(words)
        self._rng = rng
        self._valid_probability = valid_probability
        self._gapless = gapless
        self._offered = False
        self._valid = None
        self._sent = 0
        self._cycles: list[int] = []

    @property
    def name(self) -> str:
        return self._signals.name

    @property
    def valid_probability(self) -> float:
        return self._valid_probability

    @property
    def gapless(self) -> int:
        return self._gapless

    @property
    def words(self) -> list[int]:
        return self._words

    @property
    def sent(self) -> int:
        """How many words were transferred."""
        return self._sent

    @property
    def cycles(self) -> list[int]:
        """The cycle of each transfer."""
        return self._cycles

    def _drive_valid(self, value: int) -> None:
        if value != self._valid:  # writing an unchanged value costs a simulator call for nothing
            self._signals.valid.value = value
            self._valid = value

    def idle(self) -> None:
        """Lowers ``valid`` (before a reset); the word on offer, if any, stays next."""
        self._offered = False
        self._drive_valid(0)

    def drive(self) -> None:
        """At the falling edge: offers the next word (after its gap), or holds the one on offer."""
        if (
            not self._offered
            and self._sent < len(self._words)
            and (self._sent < self._gapless or self._rng.random() < self._valid_probability)
        ):
            self._signals.payload.value = self._words[self._sent]
            self._offered = True
        self._drive_valid(int(self._offered))

    def sample(self, cycle: int) -> bool:
        """In the read-only phase: whether the word on offer was transferred in ``cycle``."""
        if self._offered and read(self._signals.ready):
            self._offered = False
            self._sent += 1
            self._cycles.append(cycle)
            return True
        return False


class ReadyDriver:
    """Random back-pressure on an output stream: ``ready`` high with ``ready_probability`` each cycle.

    Parameters
    ----------
    signals : StreamSignals
    rng : random.Random
        One draw per cycle that is not ``always`` ready.
    ready_probability : float
    """

    def __init__(self, signals: StreamSignals, *, rng: random.Random, ready_probability: float) -> None:
        if not 0 <= ready_probability <= 1:
            raise ValueError(f"ready_probability must be in [0, 1], not {ready_probability!r}")
        self._signals = signals
        self._rng = rng
        self._ready_probability = ready_probability
        self._ready = None

    @property
    def name(self) -> str:
        return self._signals.name

    @property
    def ready_probability(self) -> float:
        return self._ready_probability

    def _drive_ready(self, value: int) -> None:
        if value != self._ready:
            self._signals.ready.value = value
            self._ready = value

    def idle(self) -> None:
        """Lowers ``ready``."""
        self._drive_ready(0)

    def drive(self, *, always: bool = False) -> None:
        """At the falling edge: ``ready`` for this cycle, high without a draw when ``always``."""
        self._drive_ready(int(always or self._rng.random() < self._ready_probability))


class Monitor:
    """Records the transfers of a stream, in order, with their cycles, and checks its protocol.

    A source that raised ``valid`` must hold it, and the payload, until the transfer; a monitor
    reports each break of that rule (:attr:`violations`).

    Parameters
    ----------
    signals : StreamSignals
    limit : int, optional
        Record at most this many words; the transfers beyond are only counted (:attr:`extra`).
    on_transfer : callable, optional
        Called with the payload and the cycle of each recorded transfer.
    """

    def __init__(
        self,
        signals: StreamSignals,
        *,
        limit: int | None = None,
        on_transfer: Callable[[int, int], None] | None = None,
    ) -> None:
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be at least 0, not {limit}")
        self._signals = signals
        self._limit = limit
        self._on_transfer = on_transfer
        self._words: list[int] = []
        self._cycles: list[int] = []
        self._extra = 0
        self._held: int | None = None  # the payload offered and not yet taken
        self._violations: list[str] = []
        self._violation_count = 0

    @property
    def name(self) -> str:
        return self._signals.name

    @property
    def limit(self) -> int | None:
        return self._limit

    @property
    def words(self) -> list[int]:
        """The recorded payloads."""
        return self._words

    @property
    def cycles(self) -> list[int]:
        """The cycle of each recorded payload."""
        return self._cycles

    @property
    def count(self) -> int:
        """How many payloads were recorded."""
        return len(self._words)

    @property
    def extra(self) -> int:
        """Transfers beyond :attr:`limit`."""
        return self._extra

    @property
    def transfers(self) -> int:
        """Every transfer seen."""
        return len(self._words) + self._extra

    @property
    def full(self) -> bool:
        """Whether :attr:`limit` words were recorded."""
        return self._limit is not None and len(self._words) >= self._limit

    @property
    def violations(self) -> list[str]:
        """The first :data:`VIOLATIONS_KEPT` protocol violations, described."""
        return self._violations

    @property
    def violation_count(self) -> int:
        return self._violation_count

    def _violation(self, text: str) -> None:
        self._violation_count += 1
        if len(self._violations) < VIOLATIONS_KEPT:
            self._violations.append(f"{self.name}: {text}")

    def sample(self, cycle: int) -> bool:
        """In the read-only phase: whether a payload was transferred in ``cycle`` (recorded or counted)."""
        signals = self._signals
        if not read(signals.valid):
            if self._held is not None:
                self._violation(f"valid fell in cycle {cycle} before the transfer of {self._held:x}")
                self._held = None
            return False
        payload = read(signals.payload)
        if self._held is not None and payload != self._held:
            self._violation(f"the payload changed from {self._held:x} to {payload:x} in cycle {cycle} before ready")
        if not read(signals.ready):
            self._held = payload
            return False
        self._held = None
        if self.full:
            self._extra += 1
            return True
        self._words.append(payload)
        self._cycles.append(cycle)
        if self._on_transfer is not None:
            self._on_transfer(payload, cycle)
        return True


class Scoreboard:
    """Compares the words of a stream, in order, with the expected ones.

    Parameters
    ----------
    name : str
        Of the stream, in reports.
    expected : sequence of int
        The payloads, packed, in order.
    """

    def __init__(self, name: str, expected: Sequence[int]) -> None:
        self._name = name
        self._expected = list(expected)
        self._received = 0
        self._mismatches: list[dict] = []

    @property
    def name(self) -> str:
        return self._name

    @property
    def expected(self) -> list[int]:
        return self._expected

    @property
    def received(self) -> int:
        return self._received

    @property
    def complete(self) -> bool:
        """Whether every expected word came (or more)."""
        return self._received >= len(self._expected)

    @property
    def missing(self) -> int:
        """Expected words that did not come."""
        return max(0, len(self._expected) - self._received)

    @property
    def extra(self) -> int:
        """Words beyond the expected ones."""
        return max(0, self._received - len(self._expected))

    @property
    def mismatches(self) -> list[dict]:
        """Each wrong word: ``stream``, ``index``, ``expected`` and ``got`` (hexadecimal) and ``cycle``."""
        return self._mismatches

    def receive(self, word: int, cycle: int) -> None:
        """Takes the next word, which came in ``cycle``."""
        index = self._received
        if index < len(self._expected) and word != self._expected[index]:
            self._mismatches.append(
                {
                    "stream": self._name,
                    "index": index,
                    "expected": format(self._expected[index], "x"),
                    "got": format(word, "x"),
                    "cycle": cycle,
                }
            )
        self._received += 1

    def lost_and_extra(self) -> list[str]:
        """What is wrong with the number of words: at most one line for missing, one for extra words."""
        lines = []
        if self.missing:
            lines.append(f"{self._name}: received {self._received} of {len(self._expected)}")
        if self.extra:
            lines.append(f"{self._name}: {self.extra} payloads beyond the expected {len(self._expected)}")
        return lines

    def problems(self, *, first: int = 5) -> list[str]:
        """The first ``first`` mismatches, then :meth:`lost_and_extra`; empty when the stream was right."""
        lines = [f"{m['stream']}[{m['index']}]: expected {m['expected']}, got {m['got']}" for m in self._mismatches]
        return lines[:first] + self.lost_and_extra()

    def check(self) -> None:
        """Raises ``AssertionError`` with :meth:`problems` unless the stream was right."""
        problems = self.problems()
        if problems:
            raise AssertionError(f"{len(self._mismatches)} mismatches; " + "; ".join(problems))
