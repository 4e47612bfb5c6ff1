# amaranth: UnusedElaboratable=no
"""hw.multiplier: the registered product in Amaranth's simulator, its Verilog module under Icarus,
and the blocks it takes."""

import random
import subprocess

import pytest
from amaranth.back import verilog
from amaranth.hdl import Const, Module, Shape, Signal, signed, unsigned
from amaranth.sim import Simulator

from instabnn_hw.hw.dsp import constant_product_blocks
from instabnn_hw.hw.fixed import bounds, shape_for
from instabnn_hw.hw.multiplier import (
    BLOCK_LATENCY,
    MUL_LATENCY,
    MULTIPLIER_MODULE,
    multiplier_verilog,
    operand_pieces,
    product_latency,
    registered_product,
    registered_product_blocks,
)

OPERANDS = [
    (signed(8), signed(8)),
    (unsigned(17), signed(18)),
    (unsigned(5), unsigned(9)),
    (signed(30), signed(4)),
    (signed(30), signed(20)),  # four partial products: two levels
    (unsigned(40), signed(33)),  # six: three levels
]


@pytest.mark.parametrize("extra", [0, 2, "least"])
@pytest.mark.parametrize(("a_shape", "b_shape"), OPERANDS)
def test_the_product_arrives_after_its_latency_in_enabled_edges(a_shape, b_shape, extra):
    """At the operands' own latency, a longer one, and the least any product may take (its sum's
    last levels in one cycle)."""
    m = Module()
    a, b, enable = Signal(a_shape), Signal(b_shape), Signal()
    latency = MUL_LATENCY if extra == "least" else product_latency(a_shape, b_shape) + extra
    product = registered_product(m, a, b, latency=None if extra == 0 else latency, enable=enable)
    rng = random.Random(3)

    async def testbench(ctx):
        presented = []  # operands of each enabled edge, oldest first
        for _ in range(400):
            x, y = rng.randint(*bounds(a_shape)), rng.randint(*bounds(b_shape))
            # the extremes often: the full range of the product must come through
            x = rng.choice([x, *bounds(a_shape)])
            y = rng.choice([y, *bounds(b_shape)])
            go = rng.random() < 0.6
            ctx.set(a, x)
            ctx.set(b, y)
            ctx.set(enable, go)
            if len(presented) >= latency:
                assert ctx.get(product) == presented[-latency]
            await ctx.tick()
            if go:
                presented.append(x * y)

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()


@pytest.mark.parametrize("constant", [-3, 0, 4, 5, 70001])
def test_a_constant_operand_is_not_registered(constant):
    m = Module()
    x = Signal(signed(10))
    registered_product(m, x, Const(constant, signed(20)), name="mul")
    text = verilog.convert(m, ports=[x], emit_src=False)
    assert "mul_b" not in text and "mul_a" in text


@pytest.mark.parametrize(
    ("a", "b", "instances"),
    [
        (signed(8), signed(8), 1),
        (unsigned(17), signed(18), 1),
        (unsigned(18), signed(8), 2),  # 19 bits as a signed operand: two pieces
        (signed(19), signed(2), 2),
        (signed(36), unsigned(30), 6),  # 17 + 17 + 2 signed bits, times 17 + 13
        (signed(12), 5, 1),
        (unsigned(12), -3, 1),
        (signed(40), 5, 3),
        (signed(12), 4, 0),  # a shift
        (signed(12), -1, 0),
        (signed(12), 0, 0),
        (signed(12), 1 << 20, 0),
        (signed(12), 300001, 0),  # the constant needs 20 bits: Yosys splits it
    ],
)
def test_a_product_takes_one_instance_per_pair_of_pieces(a, b, instances):
    m = Module()
    x = Signal(a)
    y = Const(b, signed(24)) if isinstance(b, int) else Signal(b)
    registered_product(m, x, y, external_modules=True)
    ports = [x] if isinstance(b, int) else [x, y]
    assert verilog.convert(m, ports=ports, emit_src=False).count(f"{MULTIPLIER_MODULE} ") == instances
    if instances:
        assert registered_product_blocks(a, b) == registered_product_blocks(b, a) == instances
    else:
        assert registered_product_blocks(a, b) == constant_product_blocks(a, b)


@pytest.mark.parametrize("shape", [signed(18), unsigned(17), signed(19), unsigned(18), signed(52), unsigned(35)])
def test_the_pieces_cover_the_operand_and_each_fits_a_block_input(shape):
    pieces = operand_pieces(shape)
    assert [offset for offset, _ in pieces] == [17 * k for k in range(len(pieces))]
    assert sum(piece.width for _, piece in pieces) == shape.width
    assert all(piece.width + (not piece.signed) <= 18 for _, piece in pieces)
    assert [piece.signed for _, piece in pieces] == [False] * (len(pieces) - 1) + [shape.signed]


def test_two_constants_take_no_block():
    assert registered_product_blocks(5, 7) == 0


@pytest.mark.parametrize(
    ("a", "b", "latency"),
    [
        (signed(18), signed(18), MUL_LATENCY),
        (signed(19), signed(18), MUL_LATENCY),  # two partial products: one adder
        (signed(19), signed(19), MUL_LATENCY + 1),  # four: two levels of adders
        (signed(36), signed(18), MUL_LATENCY + 1),  # three
        (signed(36), signed(36), MUL_LATENCY + 3),  # nine: four levels
        (unsigned(35), 5, MUL_LATENCY + 1),  # a 35-bit unsigned operand is three pieces, a constant one
    ],
)
def test_each_level_of_the_partial_products_sum_takes_a_cycle(a, b, latency):
    assert product_latency(a, b) == product_latency(b, a) == latency


def test_a_latency_below_a_blocks_registers_and_one_sum_is_refused():
    with pytest.raises(ValueError, match="latency"):
        registered_product(Module(), Signal(8), Signal(8), latency=MUL_LATENCY - 1)


MODULE_CASES = [(18, 1, 18, 1), (17, 0, 18, 1), (8, 0, 5, 0), (3, 1, 11, 0), (1, 0, 1, 1)]


def _testbench(cases, rng):
    """Verilog driving one instance per case with random operands, printing each product after its edges."""
    lines = ["`timescale 1ns/1ps", "module tb;", "    reg clk = 0; reg ce = 0;"]
    expected = []
    for k, (aw, asg, bw, bsg) in enumerate(cases):
        lines += [
            f"    reg [{aw - 1}:0] a{k}; reg [{bw - 1}:0] b{k}; wire [{aw + bw - 1}:0] p{k};",
            f"    {MULTIPLIER_MODULE} #(.A_WIDTH({aw}), .B_WIDTH({bw}), .A_SIGNED({asg}), .B_SIGNED({bsg}))"
            f" m{k} (.clk(clk), .ce(ce), .a(a{k}), .b(b{k}), .p(p{k}));",
        ]
    lines.append("    initial begin")
    history = []
    for step in range(60):
        go = step < 2 or rng.random() < 0.7
        values = []
        for k, (aw, asg, bw, bsg) in enumerate(cases):
            x = rng.randint(*bounds(signed(aw) if asg else unsigned(aw)))
            y = rng.randint(*bounds(signed(bw) if bsg else unsigned(bw)))
            values.append(x * y)
            lines.append(f"        a{k} = {aw}'d{x % (1 << aw)}; b{k} = {bw}'d{y % (1 << bw)};")
        lines += [f"        ce = {int(go)};", "        #1 clk = 1; #1 clk = 0;"]
        if go:
            history.append(values)
        if len(history) >= BLOCK_LATENCY:
            for k, (aw, _, bw, _) in enumerate(cases):
                lines.append(f'        $display("%0d %0d", {k}, p{k});')
                expected.append(f"{k} {history[-BLOCK_LATENCY][k] % (1 << (aw + bw))}")
    lines += ["        $finish;", "    end", "endmodule"]
    return "\n".join(lines) + "\n", expected


def test_the_verilog_module_multiplies_after_two_enabled_edges(tmp_path):
    """The plain-register form every simulator and the iCE40 flow read (ECP5 takes the DSP block)."""
    (tmp_path / "mul.v").write_text(multiplier_verilog())
    bench, expected = _testbench(MODULE_CASES, random.Random(11))
    (tmp_path / "tb.v").write_text(bench)
    subprocess.run(["iverilog", "-g2005", "-o", "tb.vvp", "tb.v", "mul.v"], cwd=tmp_path, check=True)
    out = subprocess.run(["vvp", "-n", "tb.vvp"], cwd=tmp_path, check=True, capture_output=True, text=True).stdout
    printed = [line for line in out.splitlines() if line and not line.startswith(("VCD", "tb.v"))]
    assert len(expected) > 200 and printed == expected


WIDE_CASES = [(signed(30), signed(4)), (unsigned(35), signed(20)), (signed(36), unsigned(30)), (signed(40), -70001)]


def test_products_over_several_blocks_under_icarus(tmp_path):
    """The ``external_modules`` form, pieces and their sum, equals ``a * b`` after its latency."""
    m, ports, rng = Module(), [], random.Random(5)
    enable = Signal(name="en")
    cases = []
    for k, (a_shape, b) in enumerate(WIDE_CASES):
        a = Signal(a_shape, name=f"a{k}")
        b_value = Const(b, shape_for(b, b)) if isinstance(b, int) else Signal(b, name=f"b{k}")
        product = registered_product(m, a, b_value, enable=enable, external_modules=True, name=f"mul{k}")
        out = Signal(product.shape(), name=f"p{k}")
        m.d.comb += out.eq(product)
        ports += [a, out] + ([] if isinstance(b, int) else [b_value])
        cases.append((a_shape, b, out.shape(), product_latency(a_shape, b)))
    (tmp_path / "dut.v").write_text(verilog.convert(m, name="dut", ports=[enable, *ports], emit_src=False))
    (tmp_path / "mul.v").write_text(multiplier_verilog())
    connections = ", ".join([".clk(clk)", ".rst(1'b0)", ".en(en)"] + [f".{p.name}({p.name})" for p in ports])
    lines = ["`timescale 1ns/1ps", "module tb;", "    reg clk = 0; reg en = 0;"]
    assert {case[-1] for case in cases} == {MUL_LATENCY, MUL_LATENCY + 1, MUL_LATENCY + 2}
    for k, (a_shape, b, out_shape, _) in enumerate(cases):
        lines.append(f"    reg [{a_shape.width - 1}:0] a{k}; wire [{out_shape.width - 1}:0] p{k};")
        if not isinstance(b, int):
            lines.append(f"    reg [{Shape.cast(b).width - 1}:0] b{k};")
    lines += [f"    dut dut ({connections});", "    initial begin"]
    history, expected = [], []
    for step in range(80):
        go = step < 3 or rng.random() < 0.7
        values = []
        for k, (a_shape, b, out_shape, _) in enumerate(cases):
            x = rng.choice([rng.randint(*bounds(a_shape)), *bounds(a_shape)])
            lines.append(f"        a{k} = {a_shape.width}'d{x % (1 << a_shape.width)};")
            if isinstance(b, int):
                y = b
            else:
                y = rng.choice([rng.randint(*bounds(b)), *bounds(b)])
                lines.append(f"        b{k} = {b.width}'d{y % (1 << b.width)};")
            values.append((x * y) % (1 << out_shape.width))
        lines += [f"        en = {int(go)};", "        #1 clk = 1; #1 clk = 0;"]
        if go:
            history.append(values)
        for k, (*_, latency) in enumerate(cases):
            if len(history) >= latency:
                lines.append(f'        $display("%0d %0d", {k}, p{k});')
                expected.append(f"{k} {history[-latency][k]}")
    lines += ["        $finish;", "    end", "endmodule"]
    (tmp_path / "tb.v").write_text("\n".join(lines) + "\n")
    subprocess.run(["iverilog", "-g2005", "-o", "tb.vvp", "tb.v", "dut.v", "mul.v"], cwd=tmp_path, check=True)
    out = subprocess.run(["vvp", "-n", "tb.vvp"], cwd=tmp_path, check=True, capture_output=True, text=True).stdout
    printed = [line for line in out.splitlines() if line and not line.startswith(("VCD", "tb.v"))]
    assert len(expected) > 200 and printed == expected
