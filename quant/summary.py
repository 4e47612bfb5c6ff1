"""Model size and operation counts, measured by running one image through the model."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .layers import BinaryConv2d, BinaryLinear

__all__ = ["ModelSummary", "summarize"]


@dataclass(frozen=True)
class ModelSummary:
    """What one forward pass of one image costs.

    Attributes
    ----------
    input_shape : tuple of int
        ``(C, H, W)``.
    parameters : int
        Trainable parameters.
    binary_weights : int
        Weights of the binary layers.
    binary_ops : int
        Multiply-accumulates with binary activations and binary weights (XNOR-popcount).
    other_ops : int
        Every other multiply-accumulate of a convolution or linear layer: the stem, the
        shortcut convolutions, the classifier, a binary-weight layer fed multi-bit pixels,
        and the INSTA branches.
    """

    input_shape: tuple[int, int, int]
    parameters: int
    binary_weights: int
    binary_ops: int
    other_ops: int


def _macs(module: nn.Module, output: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        return output[0].numel() * per_output
    return output[0].numel() * module.in_features


@torch.no_grad()
def summarize(model: nn.Module) -> ModelSummary:
    """Counts parameters and operations of ``model`` (which carries a ``config``) on one image."""
    config = model.config
    shape = (config.in_channels, config.input_size, config.input_size)
    counts = {"binary": 0, "other": 0}

    def hook(module, inputs, output):
        is_binary = isinstance(module, (BinaryConv2d, BinaryLinear)) and bool(
            torch.isin(inputs[0], torch.tensor([-1.0, 0.0, 1.0])).all()
        )
        counts["binary" if is_binary else "other"] += _macs(module, output)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        model(torch.full((1, *shape), 100.0))  # a pixel value whose input is not +-1 or 0
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return ModelSummary(
        input_shape=shape,
        parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        binary_weights=sum(m.weight.numel() for m in model.modules() if isinstance(m, (BinaryConv2d, BinaryLinear))),
        binary_ops=counts["binary"],
        other_ops=counts["other"],
    )
