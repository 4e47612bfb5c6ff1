# amaranth: UnusedElaboratable=no
"""hw.block_ram_outputs: which flip-flops move into a DP16KD's output register, on small netlists
written out by hand and on Yosys's own."""

import copy
import json

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from instabnn_hw.hw.block_ram_outputs import absorb_output_registers, absorb_output_registers_in_file
from instabnn_hw.hw.synthesis import synthesize

CLOCK, ENABLE, OTHER = 2, 3, 4  # net numbers of the clock, a flip-flop enable and another net


def flip_flop(data: int, q: int, *, ce=ENABLE, cemux="CE", lsr="0", regset="RESET", clock=CLOCK) -> dict:
    return {
        "type": "TRELLIS_FF",
        "parameters": {"CEMUX": cemux, "CLKMUX": "CLK", "GSR": "DISABLED", "LSRMUX": "LSR", "REGSET": regset},
        "port_directions": {"CLK": "input", "CE": "input", "LSR": "input", "DI": "input", "Q": "output"},
        "connections": {"CLK": [clock], "CE": [ce], "LSR": [lsr], "DI": [data], "Q": [q]},
    }


def netlist(width: int = 18, *, reader=flip_flop, rstb="0") -> dict:
    """A DP16KD reading two bits (port B; in the 36-bit mode one on DOA, one on DOB), each into
    a flip-flop from ``reader(data, q)``, whose outputs are the module's."""
    outputs = ("DOB0", "DOB1") if width == 18 else ("DOA0", "DOB0")
    block = {
        "type": "DP16KD",
        "parameters": {
            "DATA_WIDTH_A": format(width, "032b"),
            "DATA_WIDTH_B": format(width, "032b"),
            "CLKAMUX": "CLKA",
            "CLKBMUX": "CLKB",
            "REGMODE_A": "NOREG",
            "REGMODE_B": "NOREG",
        },
        "port_directions": {name: "output" for name in outputs}
        | {name: "input" for name in ("CLKA", "CLKB", "CEB", "OCEA", "OCEB", "RSTA", "RSTB")},
        "connections": {"CLKA": [CLOCK], "CLKB": [CLOCK], "CEB": [OTHER], "OCEA": ["0"], "OCEB": ["1"]}
        | {"RSTA": ["0"], "RSTB": [rstb], outputs[0]: [10], outputs[1]: [11]},
    }
    return {
        "modules": {
            "top": {
                "ports": {"q": {"direction": "output", "bits": [20, 21]}},
                "cells": {"ram": block, "ff0": reader(10, 20), "ff1": reader(11, 21)},
                "netnames": {"q": {"bits": [20, 21]}},
            }
        }
    }


@pytest.mark.parametrize("width", [18, 36])
def test_registers_on_the_read_data_become_the_output_register(width):
    design = netlist(width)
    assert absorb_output_registers(design) == (1, 1)
    cells = design["modules"]["top"]["cells"]
    assert list(cells) == ["ram"]  # the flip-flops are gone
    block = cells["ram"]
    # the 36-bit mode reads both halves through port B under both output register modes
    assert block["parameters"]["REGMODE_B"] == "OUTREG"
    assert block["parameters"]["REGMODE_A"] == ("OUTREG" if width == 36 else "NOREG")
    assert block["connections"]["OCEB"] == [ENABLE] and block["connections"]["OCEA"] == ["0"]
    outputs = ("DOB0", "DOB1") if width == 18 else ("DOA0", "DOB0")
    assert [block["connections"][name] for name in outputs] == [[20], [21]]  # the flip-flops' outputs


def test_an_always_enabled_register_leaves_the_output_enable_high():
    design = netlist(reader=lambda d, q: flip_flop(d, q, cemux="1 ", ce="1"))
    assert absorb_output_registers(design) == (1, 1)
    assert design["modules"]["top"]["cells"]["ram"]["connections"]["OCEB"] == ["1"]


def test_an_inverted_enable_gets_an_inverter_on_a_new_net():
    design = netlist(reader=lambda d, q: flip_flop(d, q, cemux="INV"))
    assert absorb_output_registers(design) == (1, 1)
    cells = design["modules"]["top"]["cells"]
    (inverter,) = [cell for cell in cells.values() if cell["type"] == "LUT4"]
    net = inverter["connections"]["Z"][0]
    assert net == 22 and inverter["connections"]["A"] == [ENABLE]  # one past the largest net
    assert inverter["parameters"]["INIT"] == "01" * 8  # Z = not A
    assert cells["ram"]["connections"]["OCEB"] == [net]


def test_registers_that_disagree_on_their_enable_stay():
    design = netlist(reader=lambda d, q: flip_flop(d, q, ce=ENABLE if d == 10 else OTHER))
    assert absorb_output_registers(copy.deepcopy(design)) == (0, 1)


@pytest.mark.parametrize(
    "reader",
    [
        pytest.param(lambda d, q: flip_flop(d, q, lsr=OTHER), id="reset"),
        pytest.param(lambda d, q: flip_flop(d, q, regset="SET"), id="starts-at-one"),
        pytest.param(lambda d, q: flip_flop(d, q, clock=OTHER), id="other-clock"),
        pytest.param(
            lambda d, q: {
                "type": "LUT4",
                "parameters": {"INIT": "01" * 8},
                "port_directions": {"A": "input", "Z": "output"},
                "connections": {"A": [d], "Z": [q]},
            },
            id="logic",
        ),
    ],
)
def test_anything_but_a_plain_register_leaves_the_block_as_it_is(reader):
    design = netlist(reader=reader)
    before = copy.deepcopy(design)
    assert absorb_output_registers(design) == (0, 1)
    assert design == before


@pytest.mark.parametrize("port", ["WEA", "WEB"])
def test_a_block_that_is_written_gets_its_output_register_too(port):
    design = netlist()
    design["modules"]["top"]["cells"]["ram"]["connections"][port] = [OTHER]
    assert absorb_output_registers(design) == (1, 1)
    cells = design["modules"]["top"]["cells"]
    assert set(cells) == {"ram"} and cells["ram"]["parameters"]["REGMODE_B"] == "OUTREG"


def test_read_data_used_twice_or_a_read_reset_leave_the_block_as_it_is():
    design = netlist()
    design["modules"]["top"]["ports"]["raw"] = {"direction": "output", "bits": [10]}
    before = copy.deepcopy(design)
    assert absorb_output_registers(design) == (0, 1) and design == before
    design = netlist(rstb=OTHER)
    assert absorb_output_registers(design) == (0, 1)


class RegisteredRead(wiring.Component):
    """A 512 x 18 memory read into a register beside it (no reset, an enable), or with a reset;
    a ROM, or written through a second port."""

    addr: In(9)
    en: In(1)
    take: In(1)
    q: Out(18)

    def __init__(self, *, reset_less: bool, written: bool = False):
        self.reset_less = reset_less
        self.written = written
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.memory = memory = Memory(shape=18, depth=512, init=[(k * 997) % 2**18 for k in range(512)])
        if self.written:
            write = memory.write_port()
            m.d.comb += [write.addr.eq(~self.addr), write.data.eq(self.addr), write.en.eq(self.take)]
        read = memory.read_port()
        m.d.comb += [read.addr.eq(self.addr), read.en.eq(self.en)]
        data = Signal(18, reset_less=self.reset_less)
        with m.If(self.take):
            m.d.sync += data.eq(read.data)
        m.d.comb += self.q.eq(data)
        return m


@pytest.mark.parametrize(("reset_less", "written"), [(True, False), (False, False), (True, True)])
def test_yosys_netlists_of_a_registered_read(tmp_path, reset_less, written):
    dut = RegisteredRead(reset_less=reset_less, written=written)
    result = synthesize(dut, name="read", workdir=tmp_path, place=False)
    assert result["bram"] == 1
    path = tmp_path / "read.json"
    moved = reset_less
    assert absorb_output_registers_in_file(path) == (int(moved), 1)
    cells = json.loads(path.read_text())["modules"]["read"]["cells"].values()
    (block,) = [cell for cell in cells if cell["type"] == "DP16KD"]
    flip_flops = sum(cell["type"] == "TRELLIS_FF" for cell in cells)
    assert result["ff"] == 18
    if moved:  # the data flip-flops moved into the block
        assert flip_flops == 0
        assert "OUTREG" in (block["parameters"]["REGMODE_A"], block["parameters"]["REGMODE_B"])
    else:
        assert flip_flops == result["ff"]
        assert block["parameters"]["REGMODE_A"] == block["parameters"]["REGMODE_B"] == "NOREG"


@pytest.mark.slow
def test_a_block_with_its_output_register_places_and_routes(tmp_path):
    dut = RegisteredRead(reset_less=True)
    result = synthesize(dut, name="read", workdir=tmp_path, wrap=True, frequency_mhz=150)
    assert result["block_ram_output_registers"] == 1
    assert result["fmax_mhz"] > 150  # the block's 0.97 ns clock-to-output, not its 5.8 ns
