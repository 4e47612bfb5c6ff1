"""The model zoo: structure of the big models, INSTA placement, gradients, configs."""

import dataclasses
import json
import re
import time

import pytest
import torch

from instabnn_hw.quant import config as config_module
from instabnn_hw.quant.config import MODELS, ConfigError, ModelConfig
from instabnn_hw.quant.layers import BinaryConv2d, InstaPReLU, RPReLU, Threshold
from instabnn_hw.quant.models import BinaryBlock, build_model, model_from_config
from instabnn_hw.quant.summary import summarize


def _binary_convs(model):
    return [m for m in model.modules() if isinstance(m, BinaryConv2d)]


def _forward_backward(model, batch=1):
    c = model.config
    pixels = torch.randint(0, 256, (batch, c.in_channels, c.input_size, c.input_size)).float()
    logits = model(pixels)
    logits.sum().backward()
    return logits


def test_resnet18_has_the_resnet18_binary_convolutions():
    model = build_model("resnet18", insta="th")
    convs = [tuple(m.weight.shape) for m in _binary_convs(model)]
    expected = []
    for c_in, c_out in ((64, 64), (64, 128), (128, 256), (256, 512)):
        expected += [(c_out, c_in, 3, 3)] + [(c_out, c_out, 3, 3)] * 3
    assert convs == expected
    assert sum(m.weight.numel() for m in _binary_convs(model)) == 10_985_472
    logits = _forward_backward(model)
    assert logits.shape == (1, 1000)
    assert all(p.grad is not None for p in model.parameters())


def test_mobilenetv1_has_reactnet_a_shapes():
    model = build_model("mobilenetv1", insta="th")
    plan = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2)]
    plan += [(512, 512, 1)] * 5 + [(512, 1024, 2), (1024, 1024, 1)]
    expected = []
    for c_in, c_out, stride in plan:
        expected += [((c_in, c_in, 3, 3), stride), ((c_out, c_in, 1, 1), 1)]
    assert [(tuple(m.weight.shape), m.stride[0]) for m in _binary_convs(model)] == expected
    summary = summarize(model)
    assert summary.binary_ops == 4_816_896_000  # ReActNet-A: 4.82e9 binary operations
    logits = _forward_backward(model)
    assert logits.shape == (1, 1000)
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ["resnet-tiny", "cnv"])
def test_untrained_th_model_equals_rsign_model_exactly(name):
    # INSTA parameters start at zero and draw no random numbers: same seed, same weights.
    torch.manual_seed(0)
    th = build_model(name, insta="th", stats=("m1", "m2", "m3"))
    torch.manual_seed(0)
    rsign = build_model(name, insta="rsign")
    for key, value in rsign.state_dict().items():
        assert torch.equal(value, th.state_dict()[key]), key
    for model in (th, rsign):
        for module in model.modules():
            if isinstance(module, Threshold) and module.mode != "none":
                module.alpha.data = torch.linspace(-0.3, 0.3, module.channels)
        model.eval()
    c = th.config
    pixels = torch.randint(0, 256, (8, c.in_channels, c.input_size, c.input_size)).float()
    with torch.no_grad():
        assert torch.equal(th(pixels), rsign(pixels))


def _insta_parameters(model):
    for module in model.modules():
        if isinstance(module, Threshold) and module.instance_aware or isinstance(module, InstaPReLU):
            yield from module.named_parameters()


@pytest.mark.parametrize("insta, prelu", [("th", "rprelu"), ("th+", "rprelu"), ("rsign", "insta"), ("th+", "insta")])
def test_gradients_reach_every_insta_parameter(insta, prelu):
    torch.manual_seed(1)
    model = build_model("resnet-tiny", insta=insta, prelu=prelu, stats=("m1", "m3"), width=8)
    params = list(_insta_parameters(model))
    assert params
    # Zero-initialised branches block the gradient of their first layer: start them elsewhere.
    for _, p in params:
        p.data.normal_(0, 0.05)
    model.train()
    _forward_backward(model, batch=2)
    for name, p in params:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_insta_stages_select_where_insta_modules_go():
    model = build_model("resnet-tiny", insta="th", prelu="insta", insta_stages=(3,))
    blocks = [m for m in model.modules() if isinstance(m, BinaryBlock)]
    for block in blocks:
        assert block.sign.threshold.mode == ("th" if block.stage == 3 else "rsign")
        assert isinstance(block.act, InstaPReLU) == (block.stage == 3)
    assert {b.stage for b in blocks} == {1, 2, 3}
    plain = build_model("resnet-tiny", insta="th")
    assert all(
        isinstance(b.act, RPReLU) and not isinstance(b.act, InstaPReLU)
        for b in plain.modules()
        if isinstance(b, BinaryBlock)
    )


def test_cnv_topology():
    model = build_model("cnv", insta="rsign")
    shapes = [tuple(m.weight.shape) for m in _binary_convs(model)]
    assert shapes == [
        (64, 3, 3, 3),
        (64, 64, 3, 3),
        (128, 64, 3, 3),
        (128, 128, 3, 3),
        (256, 128, 3, 3),
        (256, 256, 3, 3),
    ]
    assert all(m.padding == (0, 0) for m in _binary_convs(model))
    fcs = [tuple(layer.layer.weight.shape) for layer in model.classifier] + [tuple(model.fc.weight.shape)]
    assert fcs == [(512, 256), (512, 512), (10, 512)]
    # Batch norm in training needs two images: the last convolution's output is 1x1.
    assert _forward_backward(model, batch=2).shape == (2, 10)


def test_resnet_tiny_sizes():
    for size in (8, 28, 32):
        model = build_model("resnet-tiny", input_size=size, in_channels=1)
        assert model(torch.zeros(2, 1, size, size)).shape == (2, 10)


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("vgg", {}, "unknown model"),
        ("resnet-tiny", {"insta": "th++"}, "unknown insta"),
        ("resnet-tiny", {"prelu": "relu"}, "unknown prelu"),
        ("cnv", {"prelu": "insta"}, "has no PReLU"),
        ("resnet-tiny", {"stats": ("m4",)}, "stats must be"),
        ("resnet-tiny", {"input_size": 30}, "divisible by 4"),
        ("resnet18", {"input_size": 100}, "divisible by 32"),
        ("cnv", {"input_size": 28}, "at least 32"),
        ("resnet-tiny", {"width": 0}, "width must be a positive integer"),
        ("resnet-tiny", {"insta_stages": (4,)}, "insta stages must be in 1..3"),
        ("resnet-tiny", {"insta": "rsign", "insta_stages": (1,)}, "use them with"),
    ],
)
def test_invalid_configurations_raise_config_error(name, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        build_model(name, **kwargs)


def test_config_round_trips_through_json():
    import json

    model = build_model("resnet-tiny", insta="th+", prelu="insta", stats=("var", "skew"), insta_stages=(2, 3), width=12)
    config = ModelConfig.from_dict(json.loads(model.config.to_json()))
    assert config == model.config
    rebuilt = model_from_config(config)
    assert [k for k in rebuilt.state_dict()] == [k for k in model.state_dict()]
    with pytest.raises(ConfigError, match="unknown model config keys"):
        ModelConfig.from_dict({**dataclasses.asdict(config), "colour": "red"})


def test_defaults_follow_the_zoo_table():
    for name, defaults in MODELS.items():
        config = build_model(name, insta="rsign").config
        assert (config.input_size, config.in_channels, config.num_classes, config.width) == (
            defaults.input_size,
            defaults.in_channels,
            defaults.num_classes,
            defaults.width,
        )


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("resnet-tiny", {"act_bits": "8"}, "act_bits must be an integer, not '8'"),
        ("resnet-tiny", {"width": 16.0}, "width must be an integer, not 16.0"),
        ("resnet-tiny", {"width": True}, "width must be an integer, not True"),
        ("resnet-tiny", {"binary_weights": 1}, "binary_weights must be true or false, not 1"),
        ("resnet-tiny", {"insta": None}, "insta must be a string, not None"),
        ("resnet-tiny", {"insta_stages": (True,)}, "insta stages must be a list of stage numbers"),
        ("resnet-tiny", {"in_channels": 0}, "in_channels must be a positive integer, not 0"),
        ("resnet-tiny", {"num_classes": -1}, "num_classes must be a positive integer, not -1"),
        ("resnet-tiny", {"input_size": 0}, "input_size must be a positive integer, not 0"),
        ("resnet-tiny", {"reduction": 0}, "reduction must be a positive integer, not 0"),
        (["resnet-tiny"], {}, "unknown model ['resnet-tiny']"),
    ],
)
def test_fields_of_the_wrong_type_or_nonsense_values_raise_config_error(name, kwargs, message):
    with pytest.raises(ConfigError) as caught:
        build_model(name, **kwargs)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "data, message",
    [
        ([1, 2], "a model config is a JSON object of its fields, not a JSON array"),
        (None, "not a JSON null"),
        ({"name": "cnv"}, "the model config lacks the keys ['insta', 'prelu'"),
    ],
)
def test_config_from_anything_but_all_its_fields_raises_config_error(data, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        ModelConfig.from_dict(data)


def test_config_from_dict_checks_the_values_too():
    fields = json.loads(build_model("resnet-tiny", insta="rsign", width=4).config.to_json())
    with pytest.raises(ConfigError, match="width 1000000 needs about"):
        ModelConfig.from_dict({**fields, "width": 10**6})
    assert ModelConfig.from_dict(fields).width == 4


@pytest.mark.parametrize(
    "name, kwargs, culprit, what, choice",
    [
        ("resnet18", {"width": 100_000}, "width 100000", "its weights", "width"),
        ("resnet18", {"input_size": 100_000}, "input_size 100000", "the activations of one image", "input_size"),
        ("mobilenetv1", {"width": 10**6}, "width 1000000", "its weights", "width"),
        ("resnet-tiny", {"num_classes": 10**10}, "num_classes 10000000000", "its weights", "num_classes"),
        ("cnv", {"input_size": 100_000}, "input_size 100000", "its weights", "input_size"),  # its FC grows with it
        (
            "resnet-tiny",
            {"width": 10**5, "in_channels": 10**5},
            "width 100000 and in_channels 100000",
            "its weights",
            "width or in_channels",
        ),
    ],
)
def test_sizes_a_machine_cannot_hold_are_refused_before_any_allocation(
    monkeypatch, name, kwargs, culprit, what, choice
):
    monkeypatch.setattr(config_module, "physical_memory", lambda: 256 * 2**30)  # the same on every machine
    started = time.perf_counter()
    with pytest.raises(ConfigError) as caught:
        build_model(name, insta="rsign", **kwargs)
    assert time.perf_counter() - started < 1.0
    message = str(caught.value)
    assert message.startswith(f"{name} with {culprit} needs about ")
    assert message.endswith(f"of memory for {what}; this machine has 256.0 GiB: choose a smaller {choice}")
    assert "\n" not in message


def test_a_width_no_machine_can_hold_is_refused_on_this_one():
    expected = (
        r"^resnet18 with width 1000000 needs about 19.4 PiB of memory for its weights; "
        r"this machine has [\d.]+ [KMGTP]iB: choose a smaller width$"
    )
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=expected):
        build_model("resnet18", width=10**6)
    assert time.perf_counter() - started < 1.0


def test_the_memory_bound_follows_the_machine(monkeypatch):
    monkeypatch.setattr(config_module, "physical_memory", lambda: 2**30)
    for name in MODELS:  # the defaults fit in 1 GiB, as they do on any machine that trains them
        ModelConfig(name=name, **_defaults_of(name)).validate()
    with pytest.raises(ConfigError) as caught:
        build_model("resnet18", insta="rsign", width=512)
    assert str(caught.value) == (
        "resnet18 with width 512 needs about 5.4 GiB of memory for its weights; this machine has 1.0 GiB: "
        "choose a smaller width"
    )
    monkeypatch.setattr(config_module, "physical_memory", lambda: None)  # a system that does not say
    ModelConfig(name="resnet18", **{**_defaults_of("resnet18"), "width": 512}).validate()


def _defaults_of(name):
    defaults = MODELS[name]
    return dict(
        prelu=defaults.prelu,
        input_size=defaults.input_size,
        in_channels=defaults.in_channels,
        num_classes=defaults.num_classes,
        width=defaults.width,
    )


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("resnet18", {"width": 8, "input_size": 64, "insta": "th+", "prelu": "insta", "reduction": 1}),
        ("mobilenetv1", {"width": 8, "input_size": 64, "insta": "th", "stats": ("m1", "m2", "m3")}),
        ("resnet-tiny", {"insta": "th+", "prelu": "insta", "stats": ("m1", "var"), "insta_stages": (2,)}),
        ("resnet-tiny", {"width": 4, "input_size": 8, "insta": "none"}),
        ("cnv", {"width": 8, "input_size": 40, "insta": "th+"}),
        ("cnv", {"insta": "rsign", "num_classes": 100}),
    ],
)
def test_size_estimate_is_an_upper_bound_close_to_the_models_true_size(name, kwargs):
    model = build_model(name, **kwargs)
    with torch.no_grad():
        model.eval()(torch.zeros(1, model.config.in_channels, model.config.input_size, model.config.input_size))
    true_elements = sum(tensor.numel() for tensor in model.state_dict().values())
    estimate, _ = config_module._size_estimate(model.config)
    assert true_elements <= estimate <= 1.3 * true_elements
