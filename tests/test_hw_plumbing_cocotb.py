"""hw.plumbing bit-exact under cocotb + Verilator / Icarus, with random gaps and back-pressure."""

import numpy as np
import pytest
from amaranth.hdl import signed

from instabnn_hw.hw.layouts import tensor_to_words
from instabnn_hw.hw.plumbing import Fifo, Fork, JoinAdd, join_add
from instabnn_hw.hw.reshape import Repeat, WidthConverter, regroup, repeat_channels
from instabnn_hw.sim.streams import StreamCase, run_stream_cases, stimulus_seed

pytestmark = pytest.mark.cocotb


def plumbing_cases(seed: int) -> dict[str, StreamCase]:
    rng = np.random.default_rng(seed)
    words = rng.integers(-128, 128, size=(300, 4))
    a, b = rng.integers(-128, 128, size=(2, 200, 3))
    a[:2], b[:2] = [[-128] * 3, [127] * 3], [[-128] * 3, [127] * 3]  # worst cases first
    elements = rng.integers(-8, 8, size=240)
    tensor = rng.integers(-8, 8, size=(6, 3, 5))
    tensor[:, 0, 0] = -8
    # the memory as an instance of the RAM module (the compiler's Verilog): LUT RAM (2, 6), block
    # RAM with its read register (40), three block RAMs deep, tiled (5000)
    external_fifos = {
        f"fifo_{depth}": StreamCase(
            Fifo(shape=signed(8), depth=depth, external_modules=True),
            {"i": words[:, column].tolist()},
            {"o": words[:, column].tolist()},
        )
        for column, depth in enumerate((2, 6, 40, 5000))
    }
    return {
        "fifo": StreamCase(Fifo(shape=signed(8), depth=3), {"i": words[:, 0].tolist()}, {"o": words[:, 0].tolist()}),
        **external_fifos,
        "fork": StreamCase(
            Fork(shape=signed(8)),
            {"i": words[:, 1].tolist()},
            {"o.0": words[:, 1].tolist(), "o.1": words[:, 1].tolist()},
        ),
        "join": StreamCase(
            JoinAdd(shape=signed(8), count=3, shifts=(2, 0)),
            {"i.0": a.tolist(), "i.1": b.tolist()},
            {"o": join_add(a, b, shifts=(2, 0)).tolist()},
        ),
        "narrow": StreamCase(
            WidthConverter(shape=signed(4), in_count=6, out_count=2),
            {"i": regroup(elements, 6).tolist()},
            {"o": regroup(elements, 2).tolist()},
        ),
        "widen": StreamCase(
            WidthConverter(shape=signed(4), in_count=1, out_count=8),
            {"i": regroup(elements, 1).tolist()},
            {"o": regroup(elements, 8).tolist()},
        ),
        "repeat": StreamCase(
            Repeat(shape=signed(4), count=2, words=3, times=2),
            {"i": tensor_to_words(tensor, 2).tolist()},
            {"o": tensor_to_words(repeat_channels(tensor, 2), 2).tolist()},
        ),
        "repeat1": StreamCase(
            Repeat(shape=signed(4), count=6, words=1, times=3),
            {"i": tensor_to_words(tensor, 6).tolist()},
            {"o": tensor_to_words(repeat_channels(tensor, 3), 6).tolist()},
        ),
    }


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_plumbing_bit_exact(simulator, tmp_path_factory):
    seed = stimulus_seed()
    build_dir = tmp_path_factory.mktemp(f"plumbing-{simulator}")
    record = run_stream_cases(plumbing_cases(seed), build_dir=build_dir, simulator=simulator, seed=seed)
    assert len(record["transfers"]["join_o"]) == 200
    assert len(record["transfers"]["repeat_o"]) == 15 * 3 * 2
