"""MVUs whose weights come from $readmemh files, under cocotb + Verilator (Icarus: slow).

The weight files are written beside the simulation; the outputs must match the numpy model of
the file's weights, and follow a bit flipped in a file without any change to the Verilog.
"""

import numpy as np
import pytest
from amaranth.hdl import signed

from instabnn_hw.hw.int_mvu import IntMatrixVector, int_matvec
from instabnn_hw.hw.rom import rom_files, rom_hex
from instabnn_hw.hw.xnor_mvu import XnorMatrixVector, vectors_from_words, words_from_vectors, xnor_matvec
from instabnn_hw.sim.streams import StreamCase, run_stream_cases, stimulus_seed

pytestmark = pytest.mark.cocotb

XNOR_FILE = "xnor_weights.hex"  # relative: resolved in the simulator's working directory
INT_FILE = "int_weights.hex"  # given as an absolute path below
TILED_FILE = "tiled_weights.hex"  # 1,100 words of 36 bits: three files, one per block RAM deep


def xnor_stimulus(rng, weights, *, simd, vectors=10):
    rows, cols = weights.shape
    x = rng.integers(0, 2, size=(vectors, cols))
    words = words_from_vectors(x, simd=simd)
    mask = rng.integers(0, 2, size=len(words))
    mask[: cols // simd] = 1
    words = words * mask[:, None]
    payloads = [{"data": w, "mask": int(k)} for w, k in zip(words.tolist(), mask, strict=True)]
    return payloads, lambda w: xnor_matvec(w, *vectors_from_words(words, cols=cols, mask=mask))


def int_stimulus(rng, weights, *, simd, vectors=10):
    x = rng.integers(-256, 256, size=(vectors, weights.shape[1]))
    return x.reshape(-1, simd).tolist(), lambda w: int_matvec(w, x)


def flip_xnor(weights, pe, simd, word, bit):
    """The weights after flipping ``bit`` of memory word ``word`` (layout of XnorMatrixVector.weight_words)."""
    sf = weights.shape[1] // simd
    (f, s), (p, k) = divmod(word, sf), divmod(bit, simd)
    flipped = weights.copy()
    flipped[f * pe + p, s * simd + k] ^= 1
    return flipped


def flip_hex(path, word, bit):
    lines = path.read_text().splitlines()
    lines[word] = format(int(lines[word], 16) ^ (1 << bit), f"0{len(lines[word])}x")
    path.write_text("".join(line + "\n" for line in lines))


def check(simulator, tmp_path_factory):
    seed = stimulus_seed()
    rng = np.random.default_rng(seed)
    build_dir = tmp_path_factory.mktemp(f"rom-{simulator}")
    run_dir = build_dir / simulator  # run_stream_cases runs the simulator here
    run_dir.mkdir()

    xnor_weights = rng.integers(0, 2, size=(6, 27))
    xnor = XnorMatrixVector(weights=xnor_weights, pe=3, simd=9, weights_file=XNOR_FILE)
    xnor_inputs, xnor_model = xnor_stimulus(rng, xnor_weights, simd=9)
    int_weights = rng.integers(-100, 101, size=(4, 12))
    int_weights[0, 0] = 127  # odd and positive: flipping its bit 0 gives 126, inside the widths' bounds
    int_mvu = IntMatrixVector(
        weights=int_weights, pe=2, simd=4, in_shape=signed(9), weights_file=str((run_dir / INT_FILE).resolve())
    )
    int_inputs, int_model = int_stimulus(rng, int_weights, simd=4)
    tiled_weights = rng.integers(0, 2, size=(8, 4950))
    tiled = XnorMatrixVector(weights=tiled_weights, pe=4, simd=9, weights_file=TILED_FILE)
    tiled_inputs, tiled_model = xnor_stimulus(rng, tiled_weights, simd=9, vectors=3)
    tiled_files = rom_files(TILED_FILE, tiled.weight_words(), tiled.weight_word_width)
    assert len(tiled_files) == 3
    for name, text in tiled_files.items():
        (run_dir / name).write_text(text)
    (run_dir / XNOR_FILE).write_text(rom_hex(xnor.weight_words(), xnor.weight_word_width))
    (run_dir / INT_FILE).write_text(rom_hex(int_mvu.weight_words(), int_mvu.weight_word_width))

    def run(xnor_expected, int_expected, tiled_expected):
        cases = {
            "xnor": StreamCase(xnor, {"i": xnor_inputs}, {"o": xnor_expected.reshape(-1, 3).tolist()}),
            "int": StreamCase(int_mvu, {"i": int_inputs}, {"o": int_expected.reshape(-1, 2).tolist()}),
            "tiled": StreamCase(tiled, {"i": tiled_inputs}, {"o": tiled_expected.reshape(-1, 4).tolist()}),
        }
        record = run_stream_cases(cases, build_dir=build_dir, simulator=simulator, seed=seed)
        assert len(record["transfers"]["xnor_o"]) == xnor_expected.size // 3
        assert len(record["transfers"]["int_o"]) == int_expected.size // 2

    run(xnor_model(xnor_weights), int_model(int_weights), tiled_model(tiled_weights))

    # one bit flipped in each file: the hardware follows the files, not the Python weights
    word, bit = 4, 13  # fold 1, step 1, PE 1, element 4
    flip_hex(run_dir / XNOR_FILE, word, bit)
    flip_hex(run_dir / INT_FILE, 0, 0)  # W[0, 0] 127 -> 126
    flip_hex(run_dir / "tiled_weights@2.hex", 0, 0)  # word 1024 of the last tile
    new_tiled = flip_xnor(tiled_weights, 4, 9, 1024, 0)
    new_xnor = flip_xnor(xnor_weights, 3, 9, word, bit)
    assert new_xnor[4, 13] != xnor_weights[4, 13]
    new_int = int_weights.copy()
    new_int[0, 0] = 126
    assert (xnor_model(new_xnor) != xnor_model(xnor_weights)).any()
    assert (int_model(new_int) != int_model(int_weights)).any()
    assert (tiled_model(new_tiled) != tiled_model(tiled_weights)).any()
    run(xnor_model(new_xnor), int_model(new_int), tiled_model(new_tiled))


def test_rom_weights_files_verilator(tmp_path_factory):
    check("verilator", tmp_path_factory)


@pytest.mark.slow
def test_rom_weights_files_icarus(tmp_path_factory):
    check("icarus", tmp_path_factory)
