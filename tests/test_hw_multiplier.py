"""hw.multiplier: the registered product in Amaranth's simulator, its Verilog module under Icarus,
and the blocks it takes."""

import random
import subprocess

import pytest
from amaranth.back import verilog
from amaranth.hdl import Const, Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from instabnn_hw.hw.dsp import constant_product_blocks, product_blocks
from instabnn_hw.hw.fixed import bounds
from instabnn_hw.hw.multiplier import (
    MUL_LATENCY,
    MULTIPLIER_MODULE,
    fits_dsp,
    multiplier_verilog,
    registered_product,
    registered_product_blocks,
)

OPERANDS = [(signed(8), signed(8)), (unsigned(17), signed(18)), (unsigned(5), unsigned(9)), (signed(30), signed(4))]


@pytest.mark.parametrize(("a_shape", "b_shape"), OPERANDS)
def test_the_product_arrives_after_its_latency_in_enabled_edges(a_shape, b_shape):
    m = Module()
    a, b, enable = Signal(a_shape), Signal(b_shape), Signal()
    product = registered_product(m, a, b, enable=enable)
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
            if len(presented) >= MUL_LATENCY:
                assert ctx.get(product) == presented[-MUL_LATENCY]
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
    ("a", "b", "on_instance"),
    [
        (signed(8), signed(8), True),
        (unsigned(17), signed(18), True),
        (unsigned(18), signed(8), False),  # 19 bits as a signed operand
        (signed(19), signed(2), False),
        (signed(12), 5, True),
        (unsigned(12), -3, True),
        (signed(12), 4, False),  # a shift
        (signed(12), -1, False),
        (signed(12), 0, False),
        (signed(12), 1 << 20, False),
        (signed(12), 300001, False),  # the constant needs 20 bits
    ],
)
def test_the_instance_is_taken_where_a_block_holds_the_product(a, b, on_instance):
    m = Module()
    x = Signal(a)
    y = Const(b, signed(24)) if isinstance(b, int) else Signal(b)
    registered_product(m, x, y, external_modules=True)
    ports = [x] if isinstance(b, int) else [x, y]
    assert (MULTIPLIER_MODULE in verilog.convert(m, ports=ports, emit_src=False)) == on_instance
    if on_instance:
        assert registered_product_blocks(a, b) == registered_product_blocks(b, a) == 1
    elif isinstance(b, int):
        assert registered_product_blocks(a, b) == constant_product_blocks(a, b)
    else:
        assert not fits_dsp(a, b) and registered_product_blocks(a, b) == product_blocks(a, b)


def test_two_constants_take_no_block():
    assert registered_product_blocks(5, 7) == 0


MODULE_CASES = [(18, 1, 18, 1), (17, 0, 18, 1), (8, 0, 5, 0), (3, 1, 11, 0), (1, 0, 1, 1)]


def _testbench(cases, rng):
    """Verilog driving one instance per case with random operands, printing each product after two edges."""
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
        if len(history) >= MUL_LATENCY:
            for k, (aw, _, bw, _) in enumerate(cases):
                lines.append(f'        $display("%0d %0d", {k}, p{k});')
                expected.append(f"{k} {history[-MUL_LATENCY][k] % (1 << (aw + bw))}")
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
