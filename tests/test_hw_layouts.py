"""hw.layouts, hw.payload and hw._checks: the stream conventions and parameter errors."""

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned

from instabnn_hw.hw._checks import check_choice, check_divides, check_int, check_int_array, check_shape
from instabnn_hw.hw.layouts import channel_word, conv_weight_matrix, tensor_to_words, window_word, words_to_tensor
from instabnn_hw.hw.payload import pack, unpack


def test_tensor_words_are_raster_order_with_channels_ascending():
    tensor = np.arange(4 * 2 * 3).reshape(4, 2, 3)  # C x H x W
    words = tensor_to_words(tensor, 2)
    assert words.shape == (2 * 3 * 2, 2)
    assert words[0].tolist() == tensor[0:2, 0, 0].tolist() and words[1].tolist() == tensor[2:4, 0, 0].tolist()
    assert words[2].tolist() == tensor[0:2, 0, 1].tolist()
    assert np.array_equal(words_to_tensor(words, 4, 2, 3), tensor)
    with pytest.raises(ValueError, match=r"simd \(3\) must divide the channel count \(4\)"):
        tensor_to_words(tensor, 3)


def test_conv_weight_matrix_orders_columns_ky_kx_c():
    weight = np.arange(2 * 3 * 2 * 2).reshape(2, 3, 2, 2)  # Cout x Cin x K x K
    matrix = conv_weight_matrix(weight)
    assert matrix.shape == (2, 12)
    assert matrix[1, :3].tolist() == weight[1, :, 0, 0].tolist()
    assert matrix[1, 3:6].tolist() == weight[1, :, 0, 1].tolist()
    assert matrix[0, 6:9].tolist() == weight[0, :, 1, 0].tolist()


def test_payload_round_trip_puts_the_first_field_in_the_low_bits():
    layout = window_word(signed(4), 3)
    bits = pack(layout, {"data": [-1, 2, -8], "mask": 1})
    assert bits & 0xF == 0xF and (bits >> 12) == 1
    assert unpack(layout, bits) == {"data": [-1, 2, -8], "mask": 1}
    assert unpack(channel_word(unsigned(1), 4), pack(channel_word(unsigned(1), 4), [1, 0, 0, 1])) == [1, 0, 0, 1]
    assert unpack(signed(6), pack(signed(6), -32)) == -32
    with pytest.raises(ValueError, match="does not fit"):
        pack(signed(4), 8)


def test_checks_name_the_parameter_and_value():
    assert check_int("pe", 4) == 4
    with pytest.raises(TypeError, match=r"pe must be an integer, not True"):
        check_int("pe", True)
    with pytest.raises(ValueError, match=r"simd must be in \[1, 8\], not 9"):
        check_int("simd", 9, high=8)
    with pytest.raises(ValueError, match=r"simd must divide cols \(10\), not 3"):
        check_divides("simd", 3, "cols", 10)
    with pytest.raises(ValueError, match=r"mode must be one of \('th', 'th\+'\), not 'x'"):
        check_choice("mode", "x", ("th", "th+"))
    with pytest.raises(ValueError, match=r"shape must be 1 to 64 bits wide"):
        check_shape("shape", unsigned(65))
    with pytest.raises(TypeError, match=r"weights must be an integer array, not an array of float64"):
        check_int_array("weights", [0.5])
    with pytest.raises(ValueError, match=r"weights must have shape \(2,\), not \(3,\)"):
        check_int_array("weights", [1, 2, 3], shape=(2,))
    with pytest.raises(ValueError, match=r"weights must be <= 1, but holds 2"):
        check_int_array("weights", [0, 2], low=0, high=1)
    assert not check_int_array("weights", [0, 1]).flags.writeable
