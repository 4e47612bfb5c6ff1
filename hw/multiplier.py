"""Multiplications on DSP blocks with the blocks' own registers, and a register after them.

ECP5's ``MULT18X18D`` takes 3.9 ns without its registers and 0.74 ns with them (Project Trellis,
speed grade 6), and Yosys maps ``*`` to the former, with the operand and product flip-flops in
the fabric around it, and splits a product wider than one block over several such blocks, whose
partial products carry chains then add in the same cycle: a wide product alone caps a design
near 50 MHz. :func:`registered_product` builds ``a * b`` in :data:`MUL_LATENCY` enabled clock
edges or more: the operands registered, each block's product registered, then the sum of the
blocks' partial products (or the one block's product) registered in the fabric, which also takes
the route out of a block the placer put far away into a cycle of its own. More than two partial
products are added as a tree of pairs, each level registered (:func:`product_latency`), so no
cycle holds more than one carry chain. Two forms, the same cycles:

* inline (for Amaranth's simulator): Amaranth registers around ``*``, as many as the latency;
* ``external_modules`` (for Verilog output): one instance of :data:`MULTIPLIER_MODULE` per pair
  of operand pieces (:func:`operand_pieces`: each operand cut into pieces one block input
  holds), whose source :func:`multiplier_verilog` the compiler writes beside the design.
  Synthesis for ECP5 (``-DINSTABNN_ECP5``) makes each a ``MULT18X18D`` with its input and output
  registers; every other reader (Verilator, Icarus, Yosys for iCE40) gets the same registers
  in plain Verilog.

A product by a constant stays inline where Yosys makes it shifts (0, +-1, a power of two:
:func:`~.dsp.constant_product_blocks`) or where the constant does not fit one block input (Yosys
splits it, unregistered); a constant operand is never registered, so Yosys still sees it.
:func:`registered_product_blocks` counts the blocks of either form; the components' figures read it.
"""

from __future__ import annotations

from amaranth.hdl import ClockSignal, Const, Instance, Module, Shape, Signal, Value

from ._checks import check_int
from .dsp import constant_product_blocks
from .fixed import shape_for

__all__ = [
    "BLOCK_LATENCY",
    "DSP_BITS",
    "MULTIPLIER_MODULE",
    "MUL_LATENCY",
    "fits_dsp",
    "multiplier_verilog",
    "operand_pieces",
    "product_latency",
    "registered_product",
    "registered_product_blocks",
]

#: Name of the Verilog module of :func:`multiplier_verilog`.
MULTIPLIER_MODULE = "instabnn_mul"

#: Enabled clock edges of :data:`MULTIPLIER_MODULE` from its operands to its product: the
#: operand registers, then the product's.
BLOCK_LATENCY = 2

#: Enabled clock edges of :func:`registered_product` from its operands to the product when at most
#: two partial products are added: the block's two, then the register of the sum.
MUL_LATENCY = BLOCK_LATENCY + 1

#: Operand bits of one ECP5 ``MULT18X18D``.
DSP_BITS = 18


def fits_dsp(a_shape: Shape, b_shape: Shape) -> bool:
    """Whether ``a * b`` of these shapes is one ``MULT18X18D`` (each operand at most 18 bits as signed)."""
    return _fits_input(a_shape) and _fits_input(b_shape)


def _fits_input(shape) -> bool:
    shape = Shape.cast(shape)
    return shape.width + (not shape.signed) <= DSP_BITS


def operand_pieces(shape) -> list[tuple[int, Shape]]:
    """``(offset, shape)`` of the pieces of an operand of ``shape`` that each fit one block input:
    17-bit unsigned pieces from the bottom, then the rest with the operand's signedness (at most
    18 bits signed, 17 unsigned). One piece, the operand itself, where it fits."""
    shape = Shape.cast(shape)
    top = DSP_BITS - (not shape.signed)
    pieces, offset = [], 0
    while shape.width - offset > top:
        pieces.append((offset, Shape(DSP_BITS - 1, signed=False)))
        offset += DSP_BITS - 1
    pieces.append((offset, Shape(shape.width - offset, signed=shape.signed)))
    return pieces


def _product_form(a, b, *, width: int | None = None) -> tuple[int, bool]:
    """MULT18X18D blocks of :func:`registered_product` of operands ``a`` and ``b`` (shapes, or ints
    for constants) in ECP5 output, and whether the product takes multiplier instances."""
    if isinstance(a, int):
        a, b = b, a
    if isinstance(a, int):
        return 0, False
    if isinstance(b, int):
        if _fits_input(shape_for(b, b)) and constant_product_blocks(a, b) > 0:
            return len(operand_pieces(a)), True
        return constant_product_blocks(a, b, width=width), False
    return len(operand_pieces(a)) * len(operand_pieces(b)), True


def _piece_count(operand) -> int:
    """Block-sized pieces of an operand (a shape, or an int for a constant): :func:`operand_pieces`."""
    if isinstance(operand, int):
        return len(operand_pieces(shape_for(operand, operand)))
    return len(operand_pieces(operand))


def _sum_levels(partials: int) -> int:
    """Levels of the tree of pairs that adds ``partials`` partial products."""
    return (partials - 1).bit_length()


def product_latency(a, b) -> int:
    """Enabled clock edges :func:`registered_product` takes at the least for operands ``a`` and
    ``b`` (shapes, or ints for constants): :data:`BLOCK_LATENCY`, then one registered level per
    level of the partial products' sum, one at the least. :data:`MUL_LATENCY` for at most two
    partial products (one operand piece each, or two on one side). Amaranth values count by
    their shapes, a ``Const`` as its int."""
    a, b = (_operand(v) if isinstance(v, Value) else v for v in (a, b))
    if isinstance(a, int) and isinstance(b, int):
        return MUL_LATENCY
    return BLOCK_LATENCY + max(1, _sum_levels(_piece_count(a) * _piece_count(b)))


def registered_product_blocks(a, b, *, width: int | None = None) -> int:
    """MULT18X18D blocks of :func:`registered_product` in ECP5 output (``external_modules``).

    ``a`` and ``b`` are operand shapes, or ints for constant operands; ``width`` is the count
    of low product bits kept (``None``: all). One block per pair of operand pieces on the
    instances, else as Yosys maps the product (:mod:`.dsp`).
    """
    return _product_form(a, b, width=width)[0]


def _operand(value: Value):
    """An operand as :func:`registered_product_blocks` takes it: an int if constant, else its shape."""
    return value.value if isinstance(value, Const) else value.shape()


def registered_product(
    m: Module,
    a,
    b,
    *,
    latency: int | None = None,
    enable=1,
    domain: str = "sync",
    external_modules: bool = False,
    name: str = "mul",
) -> Signal:
    """``a * b`` (``a`` and ``b`` Amaranth values) ``latency`` enabled edges after they were presented.

    ``latency`` defaults to :func:`product_latency` of the operands; a longer one delays the
    product, a shorter one (at least :data:`MUL_LATENCY`) adds the sum's last levels in one
    cycle. The returned signal has the full product's shape. Every register advances on an edge
    of ``domain`` where ``enable`` is high; with ``external_modules`` the operand and block
    product registers are the blocks' own (see the module notes).
    """
    a, b = Value.cast(a), Value.cast(b)
    if latency is None:
        latency = product_latency(a, b)
    check_int("latency", latency, low=MUL_LATENCY)
    shape = (a * b).shape()
    if external_modules and domain == "sync" and _product_form(_operand(a), _operand(b))[1]:
        partials = []
        for i, (a_offset, a_shape) in enumerate(_pieces(a)):
            for j, (b_offset, b_shape) in enumerate(_pieces(b)):
                p = Signal(a_shape.width + b_shape.width, name=f"{name}_p{i}_{j}")
                m.submodules[f"{name}_{i}_{j}"] = Instance(
                    MULTIPLIER_MODULE,
                    p_A_WIDTH=a_shape.width,
                    p_B_WIDTH=b_shape.width,
                    p_A_SIGNED=int(a_shape.signed),
                    p_B_SIGNED=int(b_shape.signed),
                    i_clk=ClockSignal(domain),
                    i_ce=enable,
                    i_a=a[a_offset : a_offset + a_shape.width],
                    i_b=b[b_offset : b_offset + b_shape.width],
                    o_p=p,
                )
                partial = p.as_signed() if (a_shape.signed or b_shape.signed) else p
                partials.append(partial << (a_offset + b_offset))
    else:
        operands = []
        for label, value in (("a", a), ("b", b)):
            if isinstance(value, Const):
                operands.append(value)
                continue
            reg = Signal(value.shape(), name=f"{name}_{label}", reset_less=True)
            with m.If(enable):
                m.d[domain] += reg.eq(value)
            operands.append(reg)
        block = Signal(shape, name=f"{name}_p", reset_less=True)
        with m.If(enable):
            m.d[domain] += block.eq(operands[0] * operands[1])
        partials = [block]
    # the partial products added in pairs, a register after each level but the ones past the
    # latency's stages, which the last stage adds at once
    stages = latency - BLOCK_LATENCY
    for level in range(stages):
        if len(partials) > 1 and level < stages - 1:
            pairs = [partials[k : k + 2] for k in range(0, len(partials), 2)]
            partials = [pair[0] + pair[1] if len(pair) == 2 else pair[0] for pair in pairs]
        elif len(partials) > 1:
            partials = [sum(partials[1:], partials[0])]
        # no reset, as the DSP block's registers: a product is only read where a valid bit says so
        registered = []
        for k, partial in enumerate(partials):
            last = level == stages - 1
            reg = Signal(shape, name=f"{name}_product" if last else f"{name}_s{level}_{k}", reset_less=True)
            with m.If(enable):
                m.d[domain] += reg.eq(partial)
            registered.append(reg)
        partials = registered
    return partials[0]


def _pieces(value: Value) -> list[tuple[int, Shape]]:
    """:func:`operand_pieces` of a variable; a constant is one piece (it fits one block input)."""
    if isinstance(value, Const):
        return [(0, shape_for(value.value, value.value))]
    return operand_pieces(value.shape())


def multiplier_verilog() -> str:
    """Verilog-2005 source of :data:`MULTIPLIER_MODULE`.

    Parameters ``A_WIDTH``, ``B_WIDTH`` (1 to 18, an unsigned operand at most 17) and
    ``A_SIGNED``, ``B_SIGNED``; ports ``clk``, ``ce``, ``a``, ``b`` and ``p`` (``A_WIDTH + B_WIDTH``
    bits, signed when either operand is). ``p`` is ``a * b`` :data:`BLOCK_LATENCY` ``ce`` edges after
    ``a`` and ``b``.
    """
    inputs = " ".join(f".A{k}(a18[{k}]), .B{k}(b18[{k}]), .C{k}(1'b0)," for k in range(18))
    outputs = ", ".join(f".P{k}(p36[{k}])" for k in range(36))
    registers = ", ".join(
        f'.REG_{r}_CLK("CLK0"), .REG_{r}_CE("CE0"), .REG_{r}_RST("RST0")' for r in ("INPUTA", "INPUTB", "OUTPUT")
    )
    return f"""// a * b with registered operands and product (instabnn_hw.hw.multiplier)
module {MULTIPLIER_MODULE} #(
    parameter A_WIDTH = 18,
    parameter B_WIDTH = 18,
    parameter A_SIGNED = 1,
    parameter B_SIGNED = 1
) (
    input clk,
    input ce,
    input [A_WIDTH-1:0] a,
    input [B_WIDTH-1:0] b,
    output [A_WIDTH+B_WIDTH-1:0] p
);
    // the operands as 18-bit two's complement: sign- or zero-extended
    wire signed [17:0] a_signed = $signed(a);
    wire signed [17:0] b_signed = $signed(b);
    wire [17:0] a_unsigned = a;
    wire [17:0] b_unsigned = b;
    wire [17:0] a18 = A_SIGNED ? a_signed : a_unsigned;
    wire [17:0] b18 = B_SIGNED ? b_signed : b_unsigned;
`ifdef INSTABNN_ECP5
    // the unused clock, enable and reset inputs stay unconnected: nextpnr routes a constant on
    // them from a LUT through the fabric, one wire per block, into the crowded DSP rows
    wire [35:0] p36;
    MULT18X18D #({registers}) dsp (
        {inputs}
        .SIGNEDA(1'b1), .SIGNEDB(1'b1), .SOURCEA(1'b0), .SOURCEB(1'b0),
        .CLK0(clk), .CE0(ce), .RST0(1'b0),
        {outputs}
    );
    assign p = p36[A_WIDTH+B_WIDTH-1:0];
`else
    reg signed [17:0] a_reg = 0;
    reg signed [17:0] b_reg = 0;
    reg signed [35:0] p_reg = 0;
    always @(posedge clk)
        if (ce) begin
            a_reg <= a18;
            b_reg <= b18;
            p_reg <= a_reg * b_reg;
        end
    assign p = p_reg[A_WIDTH+B_WIDTH-1:0];
`endif
endmodule
"""
