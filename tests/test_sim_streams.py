# amaranth: UnusedElaboratable=no
"""sim.streams and sim.cocotb_streams: the driver holds its words, the monitor sees each transfer once and
catches protocol violations, and the scoreboard really fails on a wrong, missing or extra payload."""

import random
from types import SimpleNamespace

import pytest
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import Out

from instabnn_hw.hw.plumbing import Fifo, Fork
from instabnn_hw.sim.cocotb_streams import Driver, Monitor, ReadyDriver, Scoreboard
from instabnn_hw.sim.streams import StreamBundle, StreamCase, run_stream_cases, stream_ports


class _Handle:
    """Stands for a simulator signal: what the stream components read and write is ``value``."""

    def __init__(self, value: int = 0) -> None:
        self.value = value


def _signals() -> SimpleNamespace:
    return SimpleNamespace(name="s", valid=_Handle(), ready=_Handle(), payload=_Handle())


def test_bundle_exposes_every_stream_of_every_case():
    bundle = StreamBundle({"a": Fifo(shape=unsigned(4), depth=2), "b": Fork(shape=unsigned(4))})
    assert sorted(bundle.signature.members) == ["a_i", "a_o", "b_i", "b_o_0", "b_o_1"]
    assert sorted(stream_ports(Fork(shape=unsigned(4)))) == ["i", "o.0", "o.1"]
    with pytest.raises(ValueError, match=r"case names must be identifiers without '__', not 'a__b'"):
        StreamBundle({"a__b": Fifo(shape=unsigned(4), depth=2)})


def test_scoreboard_names_a_wrong_word_and_reports_missing_and_extra_words():
    board = Scoreboard("o", [1, 2, 3])
    board.receive(1, 0)
    board.receive(7, 4)
    assert board.mismatches == [{"stream": "o", "index": 1, "expected": "2", "got": "7", "cycle": 4}]
    assert not board.complete and (board.missing, board.extra) == (1, 0)
    assert board.problems() == ["o[1]: expected 2, got 7", "o: received 2 of 3"]
    with pytest.raises(AssertionError, match=r"^1 mismatches; o\[1\]: expected 2, got 7; o: received 2 of 3$"):
        board.check()

    board = Scoreboard("o", [5])
    board.receive(5, 0)
    board.receive(6, 1)
    assert board.complete and not board.mismatches and board.extra == 1
    assert board.problems() == ["o: 1 payloads beyond the expected 1"]

    board = Scoreboard("o", [10, 11])
    for cycle, word in enumerate([10, 11]):
        board.receive(word, cycle)
    assert board.complete and board.problems() == []
    board.check()


def test_scoreboard_lists_only_the_first_mismatches():
    board = Scoreboard("o", list(range(10)))
    for cycle in range(10):
        board.receive(cycle + 1, cycle)
    assert len(board.mismatches) == 10
    assert board.problems(first=2) == ["o[0]: expected 0, got 1", "o[1]: expected 1, got 2"]


def _monitor_cycles(monitor, signals, cycles):
    for cycle, (valid, ready, payload) in enumerate(cycles):
        signals.valid.value, signals.ready.value, signals.payload.value = valid, ready, payload
        monitor.sample(cycle)


def test_monitor_sees_each_transfer_once_and_reports_protocol_violations():
    signals = _signals()
    seen = []
    monitor = Monitor(signals, on_transfer=lambda word, cycle: seen.append((word, cycle)))
    cycles = [
        (1, 0, 5),  # offered, not taken
        (1, 1, 5),  # taken
        (0, 1, 0),
        (1, 1, 6),  # taken at once
        (1, 0, 7),
        (0, 0, 7),  # valid fell before the transfer
        (1, 0, 8),
        (1, 0, 9),  # the payload changed before the transfer
        (1, 1, 9),
    ]
    _monitor_cycles(monitor, signals, cycles)
    assert monitor.words == [5, 6, 9] and monitor.cycles == [1, 3, 8] and seen == [(5, 1), (6, 3), (9, 8)]
    assert monitor.violations == [
        "s: valid fell in cycle 5 before the transfer of 7",
        "s: the payload changed from 8 to 9 in cycle 7 before ready",
    ]
    assert monitor.violation_count == 2


def test_a_monitor_records_up_to_its_limit_and_counts_the_rest():
    signals = _signals()
    monitor = Monitor(signals, limit=1)
    _monitor_cycles(monitor, signals, [(1, 1, 3), (1, 1, 4), (0, 1, 0), (1, 1, 5)])
    assert monitor.words == [3] and monitor.full and (monitor.extra, monitor.transfers) == (2, 3)
    with pytest.raises(ValueError, match="limit must be at least 0, not -1"):
        Monitor(signals, limit=-1)


def test_driver_holds_valid_and_payload_until_the_transfer():
    signals = _signals()
    driver = Driver(signals, [10, 11, 12], rng=random.Random(3), valid_probability=0.5, gapless=1)
    offered = []
    for cycle in range(40):
        driver.drive()
        offered.append((signals.valid.value, signals.payload.value))
        signals.ready.value = int(cycle % 3 == 2)
        driver.sample(cycle)
    assert offered[:3] == [(1, 10)] * 3  # the first word without a gap, held until the ready in cycle 2
    assert driver.sent == 3 and driver.cycles[0] == 2 and all(c % 3 == 2 for c in driver.cycles)
    assert offered[-1][0] == 0  # nothing left to offer
    held = [payload for valid, payload in offered if valid]
    assert held == sorted(held) and set(held) == {10, 11, 12}
    with pytest.raises(ValueError, match=r"valid_probability must be in \[0, 1\], not 1.5"):
        Driver(signals, [], rng=random.Random(), valid_probability=1.5)
    with pytest.raises(ValueError, match="gapless must be at least 0, not -1"):
        Driver(signals, [], rng=random.Random(), valid_probability=0.5, gapless=-1)


def test_the_same_seed_gives_the_same_flow_control():
    def flow(seed):
        rng = random.Random(seed)
        signals = _signals()
        driver = Driver(signals, list(range(20)), rng=rng, valid_probability=0.5)
        ready = ReadyDriver(_signals(), rng=rng, ready_probability=0.5)
        valid = []
        for cycle in range(60):
            driver.drive()
            ready.drive()
            valid.append(signals.valid.value)
            signals.ready.value = 1
            driver.sample(cycle)
        return valid

    assert flow(4) == flow(4) != flow(5)


def test_an_always_ready_output_draws_nothing():
    rng = random.Random(1)
    state = rng.getstate()
    signals = _signals()
    ReadyDriver(signals, rng=rng, ready_probability=0.1).drive(always=True)
    assert signals.ready.value == 1 and rng.getstate() == state
    with pytest.raises(ValueError, match=r"ready_probability must be in \[0, 1\], not -0.5"):
        ReadyDriver(signals, rng=rng, ready_probability=-0.5)


@pytest.mark.cocotb
def test_scoreboard_reports_wrong_missing_and_extra_payloads(tmp_path):
    cases = {
        "wrong": StreamCase(Fifo(shape=signed(8), depth=2), {"i": [1, -2, 3, 4]}, {"o": [1, -2, 5, 4]}),
        "short": StreamCase(Fork(shape=unsigned(8)), {"i": [1, 2]}, {"o.0": [1, 2, 3], "o.1": [1]}),
    }
    with pytest.raises(AssertionError) as failure:
        run_stream_cases(cases, build_dir=tmp_path, seed=3)
    message = str(failure.value)
    assert "1 mismatches" in message and "wrong_o[2]: expected 5, got 3" in message
    assert "short_o_0: received 2 of 3" in message
    assert "short_o_1: 1 payloads beyond the expected 1" in message


class _Counter(wiring.Component):
    """A counter on ``o`` that breaks the stream protocol: it drops ``valid`` every other cycle
    (``retract``) or changes the payload every cycle, taken or not."""

    o: Out(stream.Signature(unsigned(8)))

    def __init__(self, *, retract: bool) -> None:
        self._retract = retract
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        count = Signal(8)
        m.d.sync += count.eq(count + 1)
        m.d.comb += [self.o.payload.eq(count), self.o.valid.eq(count[0] if self._retract else 1)]
        return m


@pytest.mark.cocotb
def test_outputs_that_break_the_stream_protocol_are_reported(tmp_path):
    cases = {
        "drops": StreamCase(_Counter(retract=True), {}, {"o": list(range(1, 80, 2))}),
        "changes": StreamCase(_Counter(retract=False), {}, {"o": list(range(40))}),
    }
    with pytest.raises(AssertionError) as failure:
        run_stream_cases(cases, build_dir=tmp_path, seed=3)
    message = str(failure.value)
    assert "drops_o: valid fell in cycle" in message
    assert "changes_o: the payload changed from" in message
