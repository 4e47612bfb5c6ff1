# amaranth: UnusedElaboratable=no
"""hw.window in Amaranth's simulator: windows of several frames match the numpy model, at full rate."""

import numpy as np
import pytest
import torch
from amaranth.hdl import signed, unsigned

from instabnn_hw.hw.figures import Figures, lut_estimate
from instabnn_hw.hw.fixed import bounds
from instabnn_hw.hw.layouts import tensor_to_words
from instabnn_hw.hw.simulate import simulate_streams
from instabnn_hw.hw.window import SlidingWindow, SlidingWindowParameters, output_size, sliding_windows

FLOW = [(1.0, 1.0), (0.5, 0.7), (0.9, 0.3)]

# name: (shape, channels, simd, height, width, kernel, stride, padding)
CONFIGS = {
    "k3s1p1-binary": (unsigned(1), 4, 2, 5, 7, 3, 1, 1),
    "k3s1p0-cnv-int8": (signed(8), 2, 1, 5, 7, 3, 1, 0),
    "k1s1-binary-full-simd": (unsigned(1), 3, 3, 4, 5, 1, 1, 0),
    "k2s2-pool-int8": (signed(8), 4, 4, 5, 7, 2, 2, 0),
    "k3s2p1-binary-simd1": (unsigned(1), 2, 1, 6, 7, 3, 2, 1),
    "k7s2p3-stem": (signed(8), 3, 3, 11, 13, 7, 2, 3),
    "k1s2-shortcut-u4": (unsigned(4), 2, 2, 5, 6, 1, 2, 0),
    "k3s1p2-max-padding-int3": (signed(3), 2, 1, 4, 5, 3, 1, 2),
    # one word per output row: the row count it needs changes every cycle
    "k1s1-column-one-word": (signed(4), 2, 2, 5, 1, 1, 1, 0),
    # two words per output row: the next row's address, computed from its slot, must settle in one cycle
    "k1s1-column-two-words": (signed(4), 2, 1, 5, 1, 1, 1, 0),
}


def make(config, **changes) -> SlidingWindow:
    shape, channels, simd, height, width, kernel, stride, padding = config
    params = dict(
        shape=shape,
        channels=channels,
        simd=simd,
        height=height,
        width=width,
        kernel=kernel,
        stride=stride,
        padding=padding,
    )
    return SlidingWindow(**{**params, **changes})


def frames_and_windows(dut: SlidingWindow, frames: list[np.ndarray]) -> tuple[list, list]:
    """Input words and expected window words of ``frames`` streamed back to back."""
    words, expected = [], []
    for frame in frames:
        words += tensor_to_words(frame, dut.simd).tolist()
        data, mask = sliding_windows(frame, kernel=dut.kernel, stride=dut.stride, padding=dut.padding, simd=dut.simd)
        expected += [{"data": d, "mask": m} for d, m in zip(data.tolist(), mask.tolist(), strict=True)]
    return words, expected


def random_frames(dut: SlidingWindow, count: int, seed: int) -> list[np.ndarray]:
    low, high = bounds(dut.shape)
    rng = np.random.default_rng(seed)
    return [rng.integers(low, high + 1, size=(dut.channels, dut.height, dut.width)) for _ in range(count)]


@pytest.mark.parametrize("valid, ready", FLOW)
@pytest.mark.parametrize("name", CONFIGS)
def test_three_frames_match_model(name, valid, ready):
    dut = make(CONFIGS[name])
    words, expected = frames_and_windows(dut, random_frames(dut, 3, seed=len(name)))
    run = simulate_streams(
        dut, {"i": words}, {"o": len(expected)}, valid_probability=valid, ready_probability=ready, seed=3
    )
    assert run.outputs["o"] == expected


@pytest.mark.parametrize("name", CONFIGS)
def test_full_rate_without_bubbles_across_frames(name):
    """The bottleneck side never waits, over three frames, frame boundaries included."""
    shape, channels, simd, height, width, kernel, stride, padding = CONFIGS[name]
    size = {} if name == "k7s2p3-stem" else {"height": 12, "width": 14}
    dut = make(CONFIGS[name], **size)
    words, expected = frames_and_windows(dut, random_frames(dut, 3, seed=1))
    run = simulate_streams(dut, {"i": words}, {"o": len(expected)})
    assert run.outputs["o"] == expected
    if dut.output_words >= dut.input_words:  # the reader is the bottleneck: one window word every cycle
        assert run.interval("o") == 1 == dut.initiation_interval
    if dut.output_words <= dut.input_words:  # the writer is: one input word every cycle
        assert run.interval("i") == 1
    # what three frames cost beyond 3 * cycles_per_frame: filling the first window rows, and the
    # last output row after the last input
    fill = min(dut.height, kernel - padding) * dut.width * dut.groups
    drain = dut.out_width * kernel**2 * dut.groups
    assert run.total_cycles <= 3 * dut.cycles_per_frame + fill + drain
    assert run.total_cycles <= 1.06 * 3 * dut.cycles_per_frame + dut.row_latency


def test_extreme_values_pass_unchanged():
    for shape in (signed(32), unsigned(32), signed(8)):
        dut = SlidingWindow(shape=shape, channels=2, simd=2, height=3, width=4, kernel=3, stride=1, padding=1)
        low, high = bounds(shape)
        frames = [
            np.full((2, 3, 4), low),
            np.full((2, 3, 4), high),
            np.array([low, high])[np.indices((2, 3, 4)).sum(0) % 2],
        ]
        words, expected = frames_and_windows(dut, frames)
        run = simulate_streams(dut, {"i": words}, {"o": len(expected)}, valid_probability=0.8, ready_probability=0.8)
        assert run.outputs["o"] == expected


def test_model_matches_torch_unfold():
    rng = np.random.default_rng(5)
    for channels, simd, height, width, kernel, stride, padding in [
        (4, 2, 5, 7, 3, 1, 1),
        (3, 3, 11, 13, 7, 2, 3),
        (6, 1, 6, 5, 2, 2, 0),
        (2, 2, 4, 4, 3, 3, 2),
    ]:
        tensor = rng.integers(-100, 100, size=(channels, height, width))
        words, mask = sliding_windows(tensor, kernel=kernel, stride=stride, padding=padding, simd=simd)
        unfold = torch.nn.functional.unfold
        columns = unfold(torch.tensor(tensor, dtype=torch.float64)[None], kernel, padding=padding, stride=stride)[0]
        # (C*K*K, L) with rows ordered (c, ky, kx) -> (L, ky, kx, c)
        reference = columns.reshape(channels, kernel, kernel, -1).permute(3, 1, 2, 0).reshape(-1, simd)
        ones = unfold(torch.ones(1, 1, height, width, dtype=torch.float64), kernel, padding=padding, stride=stride)
        reference_mask = ones[0].T.reshape(-1, kernel * kernel).repeat_interleave(channels // simd, dim=1).reshape(-1)
        assert words.shape == (columns.shape[1] * kernel * kernel * channels // simd, simd)
        assert words.dtype == np.int64 and mask.dtype == np.int64
        np.testing.assert_array_equal(words, reference.numpy().astype(np.int64))
        np.testing.assert_array_equal(mask, reference_mask.numpy().astype(np.int64))


def test_model_handles_resnet18_sizes():
    tensor = np.random.default_rng(0).integers(0, 2, size=(64, 56, 56))
    words, mask = sliding_windows(tensor, kernel=3, stride=1, padding=1, simd=32)
    assert words.shape == (56 * 56 * 9 * 2, 32) and mask.shape == (56 * 56 * 9 * 2,)
    assert mask.sum() == (56 * 56 * 9 - 4 * 56 * 3 + 4) * 2  # border windows lose 3 positions per side
    stem = np.zeros((3, 224, 224), dtype=np.int64)
    words, mask = sliding_windows(stem, kernel=7, stride=2, padding=3, simd=3)
    assert words.shape == (112 * 112 * 49, 3)


def test_estimates():
    dut = SlidingWindow(shape=unsigned(1), channels=64, simd=16, height=56, width=56, kernel=3, padding=1)
    assert (dut.out_height, dut.out_width, dut.groups) == (56, 56, 4)
    assert dut.rows == 4
    assert dut.memory_bits == 4 * 56 * 64
    assert dut.cycles_per_frame == 56 * 56 * 9 * 4
    stem = SlidingWindow(shape=signed(8), channels=3, simd=3, height=224, width=224, kernel=7, stride=2, padding=3)
    assert (stem.out_height, stem.rows, stem.memory_bits) == (112, 9, 9 * 224 * 3 * 8)
    assert stem.cycles_per_frame == 112 * 112 * 49
    pool = SlidingWindow(shape=signed(8), channels=8, simd=8, height=8, width=8, kernel=2, stride=2)
    assert pool.cycles_per_frame == pool.input_words == 64
    # the first rows of the next frame must fit beside the last three rows of this one
    cnv = SlidingWindow(shape=unsigned(1), channels=64, simd=64, height=30, width=30, kernel=3)
    assert cnv.rows == 6
    assert output_size(224, kernel=7, stride=2, padding=3) == 112


@pytest.mark.parametrize(
    "changes, error, message",
    [
        ({"kernel": 0}, ValueError, r"kernel must be >= 1, not 0"),
        ({"stride": 0}, ValueError, r"stride must be >= 1, not 0"),
        ({"stride": 1.5}, TypeError, r"stride must be an integer, not 1.5"),
        ({"padding": 3}, ValueError, r"padding must be in \[0, 2\], not 3"),
        ({"padding": -1}, ValueError, r"padding must be in \[0, 2\], not -1"),
        ({"kernel": 8, "padding": 1}, ValueError, r"kernel \(8\) must be <= height \+ 2\*padding \(7\)"),
        ({"height": 9, "width": 2, "kernel": 5}, ValueError, r"kernel \(5\) must be <= width \+ 2\*padding \(4\)"),
        ({"simd": 3}, ValueError, r"simd must divide channels \(4\), not 3"),
        ({"channels": 0}, ValueError, r"channels must be >= 1, not 0"),
        ({"height": 0}, ValueError, r"height must be >= 1, not 0"),
        ({"shape": signed(33)}, ValueError, r"shape must be 1 to 32 bits wide"),
        ({"shape": "int8"}, TypeError, r"shape must be an Amaranth shape"),
        ({"external_modules": 1}, TypeError, r"external_modules must be a bool, not 1"),
    ],
)
def test_invalid_parameters_are_named(changes, error, message):
    with pytest.raises(error, match=message):
        make((signed(8), 4, 2, 5, 7, 3, 1, 1), **changes)


def test_invalid_model_arguments_are_named():
    with pytest.raises(ValueError, match=r"tensor must be C x H x W, not of shape \(5, 7\)"):
        sliding_windows(np.zeros((5, 7), dtype=int), kernel=3, simd=1)
    with pytest.raises(ValueError, match=r"simd must divide channels \(3\), not 2"):
        sliding_windows(np.zeros((3, 5, 7), dtype=int), kernel=3, simd=2)
    with pytest.raises(ValueError, match=r"padding must be in \[0, 0\], not 1"):
        sliding_windows(np.zeros((1, 5, 7), dtype=int), kernel=1, padding=1, simd=1)
    with pytest.raises(TypeError, match=r"tensor must be an integer array"):
        sliding_windows(np.zeros((1, 5, 7)), kernel=1, simd=1)


def test_parameters_give_the_figures_without_ports():
    params = dict(shape=signed(8), channels=4, simd=2, height=5, width=7, kernel=3, stride=1, padding=1)
    parameters = SlidingWindow.parameters(**params)
    assert type(parameters) is SlidingWindowParameters and not hasattr(parameters, "signature")
    # 4 row slots of 7 pixels of 2 words of 2 * 8 bits: 56 words in LUT-cheap memory, 55 .bit_length() = 6;
    # 5 * 7 windows of 9 positions of 2 words; the first output row needs 2 input rows (14 pixels),
    # then the read, the read data's two registers and the output register
    luts = lut_estimate("window", (1, 16, 6, 0))
    assert parameters.rows == 4
    assert parameters.figures(70) == Figures(5 * 7 * 9 * 2, 2 * 7 * 2 + 3, 4, luts, 4 * 7 * 4 * 8)
    built = SlidingWindow(**params)
    assert isinstance(built, SlidingWindowParameters) and built.figures(70) == parameters.figures(70)
    for attribute in ("rows", "groups", "out_height", "out_width", "memory_bits", "latency", "luts", *params):
        assert getattr(built, attribute) == getattr(parameters, attribute)
    with pytest.raises(ValueError, match=r"simd must divide channels \(4\), not 3"):
        SlidingWindow.parameters(**{**params, "simd": 3})
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'external_modules'"):
        SlidingWindow.parameters(**params, external_modules=True)


@pytest.mark.parametrize("name", CONFIGS)
def test_latency_is_the_first_output_after_the_first_input(name):
    dut = make(CONFIGS[name])
    words, expected = frames_and_windows(dut, random_frames(dut, 1, seed=2))
    run = simulate_streams(dut, {"i": words}, {"o": len(expected)})
    assert run.cycles["o"][0] - run.cycles["i"][0] == dut.latency
