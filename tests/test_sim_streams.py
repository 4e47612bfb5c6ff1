# amaranth: UnusedElaboratable=no
"""sim.streams: the cocotb scoreboard really fails on a wrong, missing or extra payload."""

import pytest
from amaranth.hdl import signed, unsigned

from instabnn_hw.hw.plumbing import Fifo, Fork
from instabnn_hw.sim.streams import StreamBundle, StreamCase, run_stream_cases, stream_ports

pytestmark = pytest.mark.cocotb


def test_bundle_exposes_every_stream_of_every_case():
    bundle = StreamBundle({"a": Fifo(shape=unsigned(4), depth=2), "b": Fork(shape=unsigned(4))})
    assert sorted(bundle.signature.members) == ["a_i", "a_o", "b_i", "b_o_0", "b_o_1"]
    assert sorted(stream_ports(Fork(shape=unsigned(4)))) == ["i", "o.0", "o.1"]
    with pytest.raises(ValueError, match=r"case names must be identifiers without '__', not 'a__b'"):
        StreamBundle({"a__b": Fifo(shape=unsigned(4), depth=2)})


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
