"""hw.xnor_mvu bit-exact under cocotb + Verilator / Icarus, with random gaps and back-pressure.

Every other case instantiates the shared popcount modules (``external_modules``, as the
compiler's Verilog does), the others hold the popcount logic inline.
"""

import numpy as np
import pytest

from instabnn_hw.hw.xnor_mvu import XnorMatrixVector, vectors_from_words, words_from_vectors, xnor_matvec
from instabnn_hw.sim.streams import StreamCase, run_stream_cases, stimulus_seed

pytestmark = pytest.mark.cocotb

# name: (rows, cols, pe, simd, masked, vectors)
CASES = {
    "odd": (6, 27, 3, 9, True, 12),
    "full_width": (6, 27, 3, 27, True, 12),
    "pe1": (8, 64, 1, 16, True, 6),
    "fc": (10, 40, 2, 8, False, 10),
    "nf1": (4, 24, 4, 8, True, 15),
    "wide": (4, 288, 2, 32, True, 5),
}


def xnor_cases(seed: int) -> tuple[dict[str, StreamCase], dict[str, int]]:
    rng = np.random.default_rng(seed)
    cases, counts = {}, {}
    for index, (name, (rows, cols, pe, simd, masked, count)) in enumerate(CASES.items()):
        weights = rng.integers(0, 2, size=(rows, cols))
        weights[0] = 1  # row 0 meets the all-ones / all-zeros vectors below: dot = +cols / -cols
        dut = XnorMatrixVector(weights=weights, pe=pe, simd=simd, masked=masked, external_modules=index % 2 == 0)
        vectors = rng.integers(0, 2, size=(count, cols))
        vectors[0], vectors[1] = 1, 0
        words = words_from_vectors(vectors, simd=simd)
        if masked:
            word_mask = rng.integers(0, 2, size=len(words))
            word_mask[: 2 * dut.synapse_fold] = 1
            word_mask[2 * dut.synapse_fold : 3 * dut.synapse_fold] = 0  # an all-padding window
            words = words * word_mask[:, None]
            expected = xnor_matvec(weights, *vectors_from_words(words, cols=cols, mask=word_mask))
            payloads = [{"data": w, "mask": int(k)} for w, k in zip(words.tolist(), word_mask, strict=True)]
        else:
            expected = xnor_matvec(weights, vectors)
            payloads = words.tolist()
        assert expected[0, 0] == cols and expected[1, 0] == -cols
        cases[name] = StreamCase(dut, {"i": payloads}, {"o": expected.reshape(-1, pe).tolist()})
        counts[f"{name}_o"] = expected.size // pe
    return cases, counts


def check(simulator, tmp_path_factory):
    seed = stimulus_seed()
    cases, counts = xnor_cases(seed)
    build_dir = tmp_path_factory.mktemp(f"xnor-mvu-{simulator}")
    record = run_stream_cases(cases, build_dir=build_dir, simulator=simulator, seed=seed)
    for stream, count in counts.items():
        assert len(record["transfers"][stream]) == count


def test_xnor_mvu_bit_exact_verilator(tmp_path_factory):
    check("verilator", tmp_path_factory)


@pytest.mark.slow
def test_xnor_mvu_bit_exact_icarus(tmp_path_factory):
    check("icarus", tmp_path_factory)
