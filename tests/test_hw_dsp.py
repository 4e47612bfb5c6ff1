"""The MULT18X18D count of products and components against Yosys's ``synth_ecp5``."""

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned
from test_hw_insta import prelu_params, unit_params

from instabnn_hw.hw.affine import Requantise, RPReLU, rprelu_bounds
from instabnn_hw.hw.dsp import constant_product_blocks, product_blocks
from instabnn_hw.hw.fixed import bounds
from instabnn_hw.hw.insta_prelu import InstaPReLU
from instabnn_hw.hw.int_mvu import IntMatrixVector
from instabnn_hw.hw.moments import MomentsThreshold
from instabnn_hw.hw.synthesis import synthesize
from instabnn_hw.hw.verilog_modules import module_sources


def _shape(width, is_signed):
    return signed(width) if is_signed else unsigned(width)


# (a width, a signed, b width, b signed, blocks), as synth_ecp5 of Yosys 0.70 maps a registered product
VARIABLE_PRODUCTS = [
    (1, 0, 8, 0, 1),
    (2, 1, 2, 1, 1),
    (17, 0, 17, 1, 1),  # the unsigned operand widened to 18 signed bits
    (18, 0, 19, 1, 1),  # 19 x 19: the 19th bits as a one-bit slice, in logic
    (19, 0, 8, 1, 2),
    (20, 1, 8, 1, 2),
    (20, 0, 20, 0, 4),
    (37, 1, 8, 1, 2),
    (38, 0, 8, 0, 3),
    (37, 0, 37, 1, 6),
    (38, 1, 20, 1, 6),
    (55, 0, 18, 1, 4),
    (55, 1, 18, 1, 3),
]

# (x width, x signed, constant, blocks)
CONSTANT_PRODUCTS = [
    (8, 1, 0, 0),
    (8, 1, -1, 0),
    (8, 1, -4, 0),
    (8, 1, 131072, 0),  # powers of two are shifts
    (8, 1, 3 << 18, 1),  # trailing zeros too
    (8, 1, 5, 1),
    (8, 1, -131073, 1),
    (8, 1, 262143, 1),
    (8, 1, (1 << 20) + 1, 2),
    (18, 0, 5, 1),
    (20, 1, 5, 2),
    (18, 0, -5, 2),  # unsigned times negative: the constant's two's complement at the product's width
    (17, 0, -3, 2),
]


@pytest.mark.parametrize(("aw", "asg", "bw", "bsg", "blocks"), VARIABLE_PRODUCTS)
def test_variable_products_take_the_blocks_yosys_gives_them(aw, asg, bw, bsg, blocks):
    a, b = _shape(aw, asg), _shape(bw, bsg)
    assert product_blocks(a, b) == product_blocks(b, a) == blocks


@pytest.mark.parametrize(("xw", "xsg", "constant", "blocks"), CONSTANT_PRODUCTS)
def test_constant_products_take_the_blocks_yosys_gives_them(xw, xsg, constant, blocks):
    assert constant_product_blocks(_shape(xw, xsg), constant) == blocks


def _rprelu(rng, **options):
    in_shape, gamma = signed(12), rng.integers(-100, 100, size=4)
    slope, zeta = np.array([3, -5, 8, 70001]), rng.integers(-50, 50, size=4)
    r = rprelu_bounds(
        bounds(in_shape), (int(gamma.min()), int(gamma.max())), (-5, 70001), (-50, 50), slope_shift=6, out_shift=4
    )
    return RPReLU(
        in_shape=in_shape,
        channels=4,
        simd=4,
        gamma=gamma,
        slope=slope,
        zeta=zeta,
        slope_shift=6,
        out_shift=4,
        low=r["y"][0],
        high=r["y"][1],
        **options,
    )


COMPONENTS = {
    # inline: the input is wider than a DSP block
    "requantise_constants": lambda rng, **o: Requantise(
        in_shape=signed(20),
        channels=6,
        simd=6,
        mult=[5, 4, -3, 300001, 1, 0],
        bias=rng.integers(-9, 9, size=6),
        shift=8,
        **o,
    ),
    # on the multiplier instance, except the shifts and the constant wider than a block
    "requantise_small_constants": lambda rng, **o: Requantise(
        in_shape=unsigned(12),
        channels=6,
        simd=6,
        mult=[5, 4, -3, 300001, 1, 0],
        bias=rng.integers(-9, 9, size=6),
        shift=8,
        **o,
    ),
    "requantise_table": lambda rng, **o: Requantise(
        in_shape=unsigned(16), channels=4, simd=2, mult=[7, -300001, 9, 11], bias=[0, 1, 2, 3], shift=4, **o
    ),
    "rprelu": _rprelu,
    "moments_th": lambda rng, **o: MomentsThreshold(
        **unit_params(rng, stats=("m1", "var", "skew"), in_shape=signed(10)), **o
    ),
    "moments_th_plus": lambda rng, **o: MomentsThreshold(
        **unit_params(rng, mode="th+", stats=("m2", "var"), parallel=2, height=4, width=4), **o
    ),
    "insta_prelu": lambda rng, **o: InstaPReLU(**prelu_params(rng, instance_slope=True), **o),
    "int_mvu": lambda rng, **o: IntMatrixVector(
        weights=rng.integers(-128, 128, size=(4, 6)), pe=2, simd=3, in_shape=unsigned(8), **o
    ),
}


@pytest.mark.parametrize("kind", COMPONENTS)
def test_a_component_s_multipliers_are_its_synthesised_blocks(kind, tmp_path):
    """In the form an ECP5 build reads: the shared Verilog modules, the multiplier on its DSP block."""
    component = COMPONENTS[kind](np.random.default_rng(5), external_modules=True)
    assert component.multipliers > 0
    result = synthesize(component, name="dut", workdir=tmp_path, place=False, sources=module_sources())
    assert result["dsp"] == component.multipliers
