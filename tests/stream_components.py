# amaranth: UnusedElaboratable=no
"""Checks shared by the tests of the stream components: figures without ports, validation, latency."""

import pytest

from instabnn_hw.hw.simulate import simulate_streams

__all__ = ["check_figures", "check_latency", "check_validation"]


def check_figures(
    component,
    parameters_class,
    params: dict,
    words: int,
    figures,
    *,
    attributes=("shape", "latency", "luts", "initiation_interval"),
) -> None:
    """``component.parameters(**params)`` gives ``figures`` for ``words`` input words without
    ports, and the built component the same figures, ``attributes`` and parameters."""
    parameters = component.parameters(**params)
    assert type(parameters) is parameters_class and not hasattr(parameters, "signature")
    assert parameters.figures(words) == figures
    built = component(**params)
    assert isinstance(built, parameters_class) and built.figures(words) == figures
    for attribute in (*attributes, *params):
        assert getattr(built, attribute) == getattr(parameters, attribute)


def check_validation(component, params: dict, error, message: str) -> None:
    """The component and its parameters class reject ``params`` with the same error."""
    for make in (component, component.parameters):
        with pytest.raises(error, match=message):
            make(**params)


def check_latency(make, inputs: dict, outputs: dict) -> None:
    """The first output word leaves ``latency`` cycles after the first input word is taken."""
    dut = make()
    run = simulate_streams(dut, inputs, outputs)
    first_in, first_out = next(iter(inputs)), next(iter(outputs))
    assert run.cycles[first_out][0] - run.cycles[first_in][0] == dut.latency
