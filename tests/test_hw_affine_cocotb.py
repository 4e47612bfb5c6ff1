"""hw.affine bit-exact under cocotb + Verilator (Icarus: slow), with random gaps and back-pressure."""

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned

from instabnn_hw.hw.affine import Requantise, RPReLU, requantise, rprelu
from instabnn_hw.hw.fixed import bounds
from instabnn_hw.hw.multiplier import MULTIPLIER_MODULE
from instabnn_hw.sim.streams import StreamCase, run_stream_cases, stimulus_seed

pytestmark = pytest.mark.cocotb


def words_of(x, simd):
    return np.asarray(x).reshape(-1, simd).tolist()


def inputs_for(rng, shape, pixels, channels):
    low, high = bounds(shape)
    x = rng.integers(low, high + 1, size=(pixels, channels)).astype(object)
    x[0], x[1], x[2] = low, high, [low, high] * (channels // 2) + [low] * (channels % 2)  # extremes first
    return x


def requantise_case(
    rng, *, in_shape, channels, simd, mult_range, bias_range, shift, low=None, high=None, external_modules=False
):
    mult = rng.integers(*mult_range, size=channels)
    mult[0], mult[-1] = mult_range[0], mult_range[1] - 1
    bias = rng.integers(*bias_range, size=channels)
    dut = Requantise(
        in_shape=in_shape,
        channels=channels,
        simd=simd,
        mult=mult,
        bias=bias,
        shift=shift,
        low=low,
        high=high,
        external_modules=external_modules,
    )
    x = inputs_for(rng, in_shape, 60, channels)
    y = requantise(x, mult.astype(object), bias.astype(object), shift=shift, low=dut.low, high=dut.high)
    return StreamCase(dut, {"i": words_of(x, simd)}, {"o": words_of(y, simd)})


def rprelu_case(
    rng, *, in_shape, channels, simd, gamma_range, slope_range, zeta_range, external_modules=False, **kwargs
):
    gamma, slope, zeta = (rng.integers(*r, size=channels) for r in (gamma_range, slope_range, zeta_range))
    slope[0] = slope_range[0]
    dut = RPReLU(
        in_shape=in_shape,
        channels=channels,
        simd=simd,
        gamma=gamma,
        slope=slope,
        zeta=zeta,
        external_modules=external_modules,
        **kwargs,
    )
    x = inputs_for(rng, in_shape, 60, channels)
    y = rprelu(x, gamma.astype(object), slope.astype(object), zeta.astype(object), **kwargs)
    return StreamCase(dut, {"i": words_of(x, simd)}, {"o": words_of(y, simd)})


def affine_cases(seed: int) -> dict[str, StreamCase]:
    rng = np.random.default_rng(seed)
    return {
        "rq_6_3": requantise_case(
            rng, in_shape=signed(8), channels=6, simd=3, mult_range=(-60, 60), bias_range=(-2000, 2000), shift=4
        ),
        "rq_5_1": requantise_case(
            rng,
            in_shape=unsigned(8),
            channels=5,
            simd=1,
            mult_range=(-3, 5),
            bias_range=(-100, 100),
            shift=0,
            low=-50,
            high=200,
        ),
        # the products on the multiplier module: per-lane constants (simd = channels) and a table
        "rq_module_constants": requantise_case(
            rng,
            in_shape=unsigned(9),
            channels=4,
            simd=4,
            mult_range=(-300, 300),
            bias_range=(-99, 99),
            shift=3,
            external_modules=True,
        ),
        "rq_module_table": requantise_case(
            rng,
            in_shape=signed(17),
            channels=6,
            simd=2,
            mult_range=(-(1 << 17), 1 << 17),
            bias_range=(-99, 99),
            shift=9,
            external_modules=True,
        ),
        "pr_module": rprelu_case(
            rng,
            in_shape=signed(9),
            channels=6,
            simd=3,
            gamma_range=(-20, 20),
            slope_range=(-100, 100),
            zeta_range=(-100, 100),
            slope_shift=5,
            out_shift=3,
            low=-1000,
            high=1000,
            external_modules=True,
        ),
        "rq_8_8": requantise_case(
            rng, in_shape=signed(12), channels=8, simd=8, mult_range=(-9, 9), bias_range=(-500, 500), shift=7, low=-20
        ),
        "rq_wide": requantise_case(
            rng,
            in_shape=signed(32),
            channels=6,
            simd=3,
            mult_range=(-(1 << 40), 1 << 40),
            bias_range=(-(1 << 62), 1 << 62),
            shift=3,
        ),
        "pr_6_3": rprelu_case(
            rng,
            in_shape=signed(8),
            channels=6,
            simd=3,
            gamma_range=(-20, 20),
            slope_range=(-8, 8),
            zeta_range=(-100, 100),
            slope_shift=3,
            out_shift=2,
            low=-100,
            high=100,
        ),
        "pr_5_1": rprelu_case(
            rng,
            in_shape=unsigned(6),
            channels=5,
            simd=1,
            gamma_range=(-10, 70),
            slope_range=(-16, 16),
            zeta_range=(-400, 400),
            slope_shift=4,
            out_shift=5,
            low=-8,
            high=7,
        ),
        "pr_8_8": rprelu_case(
            rng,
            in_shape=signed(10),
            channels=8,
            simd=8,
            gamma_range=(-300, 300),
            slope_range=(-3, 3),
            zeta_range=(-50, 50),
            slope_shift=0,
            out_shift=0,
            low=-4000,
            high=4000,
        ),
        "pr_wide": rprelu_case(
            rng,
            in_shape=signed(32),
            channels=6,
            simd=3,
            gamma_range=(-(1 << 50), 1 << 50),
            slope_range=(-(1 << 22), 1 << 22),
            zeta_range=(-(1 << 62), 1 << 62),
            slope_shift=20,
            out_shift=10,
            low=-(1 << 70),
            high=1 << 70,
        ),
    }


@pytest.mark.parametrize("simulator", ["verilator", pytest.param("icarus", marks=pytest.mark.slow)])
def test_affine_bit_exact(simulator, tmp_path_factory):
    seed = stimulus_seed()
    build_dir = tmp_path_factory.mktemp(f"affine-{simulator}")
    cases = affine_cases(seed)
    record = run_stream_cases(cases, build_dir=build_dir, simulator=simulator, seed=seed)
    # every block the figures count is an instance of the module (each of these products fits one)
    on_module = sum(c.component.multipliers for name, c in cases.items() if "module" in name)
    assert on_module >= 2 + 3 and (build_dir / "bundle.v").read_text().count(f"{MULTIPLIER_MODULE} ") == on_module
    assert len(record["transfers"]["rq_5_1_o"]) == 60 * 5
    assert len(record["transfers"]["pr_wide_o"]) == 60 * 2
