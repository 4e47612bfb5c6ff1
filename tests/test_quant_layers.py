"""The maths of each layer in quant/layers.py, checked against direct formulas."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from instabnn_hw.quant.layers import (
    BinaryActivation,
    BinaryConv2d,
    BinaryLinear,
    FixedPointActivation,
    InstaPReLU,
    IntConv2d,
    IntLinear,
    PixelInput,
    RPReLU,
    SignThreshold,
    Threshold,
    binary_sign,
    moments,
)
from instabnn_hw.quant.options import STATISTICS


def test_sign_of_zero_is_plus_one_and_values_are_binary():
    x = torch.tensor([-2.0, -1e-7, 0.0, 1e-7, 3.0])
    assert binary_sign(x).tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "grad, expected",
    [("ste", lambda x: (x.abs() <= 1).float()), ("approx", lambda x: (2 - 2 * x.abs()) * (x.abs() <= 1))],
)
def test_binary_activation_surrogate_gradients(grad, expected):
    x = torch.linspace(-1.5, 1.5, 31, requires_grad=True)
    BinaryActivation(grad=grad)(x).sum().backward()
    torch.testing.assert_close(x.grad, expected(x.detach()), rtol=0, atol=1e-6)


def test_invalid_gradient_is_rejected():
    with pytest.raises(ValueError, match="grad must be one of"):
        BinaryActivation(grad="tanh")


@pytest.mark.parametrize("stat", STATISTICS)
def test_moments_match_numpy(stat):
    x = torch.randn(3, 4, 5, 6, dtype=torch.float64)
    a = x.numpy().reshape(3, 4, -1)
    mu = a.mean(-1)
    expected = {
        "m1": mu,
        "m2": (a**2).mean(-1),
        "m3": (a**3).mean(-1),
        "var": ((a - mu[..., None]) ** 2).mean(-1),
        "skew": ((a - mu[..., None]) ** 3).mean(-1),
    }[stat]
    np.testing.assert_allclose(moments(x, (stat,))[:, 0].numpy(), expected, rtol=1e-10, atol=1e-12)


def test_thresholds_compute_their_formulas():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(Threshold(3, mode="none")(x), torch.zeros(1, 3, 1, 1))

    rsign = Threshold(3, mode="rsign")
    rsign.alpha.data = torch.tensor([0.5, -1.0, 2.0])
    assert torch.equal(rsign(x).flatten(), rsign.alpha.data)

    th = Threshold(3, mode="th", stats=("m1", "m3"))
    th.alpha.data = torch.tensor([0.5, -1.0, 2.0])
    th.beta.data = torch.randn(3, 2)
    s = moments(x, ("m1", "m3"))
    expected = th.alpha.data + th.beta.data[:, 0] * s[:, 0] + th.beta.data[:, 1] * s[:, 1]
    torch.testing.assert_close(th(x).view(2, 3), expected)

    plus = Threshold(3, mode="th+", stats=("m2",), reduction=1)
    torch.nn.init.normal_(plus.mlp.fc2.weight)
    hidden = torch.relu(plus.mlp.fc1(moments(x, ("m2",)).flatten(1)))
    torch.testing.assert_close(plus(x).view(2, 3), plus.alpha + plus.mlp.fc2(hidden))


@pytest.mark.parametrize("mode", ["th", "th+"])
def test_untrained_insta_threshold_equals_rsign_exactly(mode):
    torch.manual_seed(1)
    x = torch.randn(4, 8, 5, 5) * 3
    insta = Threshold(8, mode=mode, stats=("m1", "m2", "m3"))
    insta.alpha.data.normal_()
    rsign = Threshold(8, mode="rsign")
    rsign.alpha.data = insta.alpha.data.clone()
    assert torch.equal(insta(x), rsign(x).expand(4, 8, 1, 1))


def test_sign_threshold_is_greater_or_equal_including_ties():
    unit = SignThreshold(2, mode="rsign")
    unit.threshold.alpha.data = torch.tensor([0.25, -0.5])
    x = torch.tensor([0.25, 0.2, -0.5, -0.75]).view(1, 2, 2, 1)
    out = unit(x).view(-1).tolist()
    assert out == [1.0, -1.0, 1.0, -1.0]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"channels": 0, "mode": "th"},
        {"channels": 4, "mode": "sign"},
        {"channels": 4, "mode": "th", "stats": ()},
        {"channels": 4, "mode": "th", "stats": ("m4",)},
        {"channels": 4, "mode": "th+", "reduction": 0},
    ],
)
def test_threshold_rejects_bad_parameters(kwargs):
    channels = kwargs.pop("channels")
    with pytest.raises(ValueError):
        Threshold(channels, **kwargs)


def test_binary_conv_weights_are_plus_minus_one_and_padding_contributes_zero():
    torch.manual_seed(2)
    conv = BinaryConv2d(3, 4, 3, padding=1)
    w = conv.quant_weight().value
    assert torch.equal(w.abs(), torch.ones_like(w))
    a = binary_sign(torch.randn(1, 3, 5, 5))
    y = conv(a)
    # Corner pixel: only the 2x2 valid positions of each kernel count (K_valid = 3 * 4).
    bits_a = a[0, :, :2, :2] > 0
    bits_w = w[:, :, 1:, 1:] > 0
    popcount = (bits_a == bits_w).flatten(1).sum(1)
    assert torch.equal(y[0, :, 0, 0], (2 * popcount - 12).float())


def test_binary_weights_off_uses_latent_weights():
    conv = BinaryConv2d(2, 2, 1, binary_weights=False)
    x = torch.randn(1, 2, 3, 3)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight))


def test_per_channel_weight_scale_is_mean_absolute_value():
    torch.manual_seed(3)
    fc = BinaryLinear(6, 3, weight_scale=True)
    fc.weight.data = torch.randn(3, 6) * 0.3
    q = fc.quant_weight()
    expected_scale = fc.weight.abs().mean(dim=1)
    torch.testing.assert_close(q.scale.flatten(), expected_scale)
    torch.testing.assert_close(q.value, torch.sign(fc.weight) * expected_scale[:, None])
    # The scale must not shrink the latent weights (no in-place clamp).
    before = fc.weight.detach().clone()
    fc(torch.randn(2, 6))
    assert torch.equal(fc.weight.detach(), before)


def _is_power_of_two(value: float) -> bool:
    return value > 0 and math.log2(value) == round(math.log2(value))


def test_fixed_point_activation_is_on_a_power_of_two_grid():
    torch.manual_seed(4)
    quant = FixedPointActivation(bits=6)
    for _ in range(3):
        quant(torch.randn(8, 4, 3, 3) * 2)  # collect statistics in training mode
    quant.eval()
    x = torch.randn(16, 4, 3, 3) * 4
    y = quant(x)
    scale = quant.scale()
    assert _is_power_of_two(scale)
    integers = y / scale
    assert torch.equal(integers, integers.round())
    assert integers.min() >= -(2**5) and integers.max() <= 2**5 - 1


@pytest.mark.parametrize("bits", [1, 17, 8.0])
def test_fixed_point_activation_rejects_bad_bits(bits):
    with pytest.raises(ValueError, match="bits"):
        FixedPointActivation(bits=bits)


def test_pixel_input_is_exact_8_bit_fixed_point():
    pixels = torch.arange(256, dtype=torch.float32).view(1, 1, 16, 16)
    x = PixelInput()(pixels)
    assert torch.equal(x * 128, pixels - 128)


def test_int_layers_have_8_bit_power_of_two_weights():
    torch.manual_seed(5)
    for layer in (IntConv2d(3, 4, 3), IntLinear(10, 5)):
        q = layer.quant_weight()
        assert all(_is_power_of_two(s) for s in q.scale.flatten().tolist())
        integers = q.value / q.scale
        assert torch.equal(integers, integers.round()) and integers.abs().max() <= 127


def test_rprelu_formula():
    act = RPReLU(2)
    act.gamma.data = torch.tensor([0.5, -0.5])
    act.beta.data = torch.tensor([0.1, 0.2])
    act.zeta.data = torch.tensor([1.0, -1.0])
    x = torch.tensor([1.0, 0.0, 1.0, -1.0]).view(1, 2, 2, 1)
    u = x - act.gamma.view(1, 2, 1, 1)
    expected = torch.where(u >= 0, u, act.beta.view(1, 2, 1, 1) * u) + act.zeta.view(1, 2, 1, 1)
    assert torch.equal(act(x), expected)


def test_insta_prelu_starts_as_rprelu_and_becomes_instance_aware():
    torch.manual_seed(6)
    insta = InstaPReLU(4, stats_channels=3, stats=("m1", "m2"), instance_slope=True)
    plain = RPReLU(4)
    y = torch.randn(2, 4, 3, 3)
    stats = moments(torch.randn(2, 3, 3, 3), ("m1", "m2"))
    assert torch.equal(insta(y, stats), plain(y))
    torch.nn.init.normal_(insta.mlp.fc2.weight)
    same_input = y[:1].expand(2, -1, -1, -1)
    out = insta(same_input, stats)
    assert not torch.equal(out[0], out[1]), "two images with different statistics must get different activations"
    with pytest.raises(ValueError, match="statistics"):
        insta(y)
