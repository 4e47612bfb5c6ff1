"""How closely the integer reference follows the Brevitas model it was lowered from.

Exact where the maths is exact (static thresholds): the binary activations and the classes
equal the model's. Where lowering rounds (INSTA thresholds, batch norm + add + RPReLU in
fixed point) the agreement is measured: of every binary activation, of the top-1 class, and
the accuracy of both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from instabnn_hw.quant.layers import SignThreshold

from . import ir, reference

__all__ = ["Fidelity", "measure_fidelity"]


@dataclass(frozen=True)
class Fidelity:
    """Agreement of the reference with the model on ``images`` images.

    Attributes
    ----------
    images : int
    activations : int
        Binary activations compared (every element of every sign layer of every image).
    activation_agreement : float
        Fraction of them equal.
    top1_agreement : float
        Fraction of images whose class is equal.
    model_accuracy, reference_accuracy : float or None
        Accuracy of each against the labels, when given.
    worst_layer : str
        The sign layer with the most disagreements ("" when none).
    """

    images: int
    activations: int
    activation_agreement: float
    top1_agreement: float
    model_accuracy: float | None
    reference_accuracy: float | None
    worst_layer: str


@torch.no_grad()
def measure_fidelity(model: nn.Module, graph: ir.Graph, pixels, labels=None, *, batch: int = 250) -> Fidelity:
    """Runs the model (eval mode) and the reference on ``pixels`` (N x C x H x W, 0..255) and compares."""
    pixels = np.asarray(pixels)
    signs = {name: module for name, module in model.named_modules() if isinstance(module, SignThreshold)}
    missing = [name for name in signs if name not in graph.types]
    if missing:
        raise ValueError(f"the graph has no node for the sign layers {missing}; was it lowered from this model?")
    captured: dict[str, list[np.ndarray]] = {name: [] for name in signs}

    def hook(name):
        def store(module, inputs, output):
            captured[name].append((output > 0).to(torch.int64).reshape(output.shape[0], -1).numpy())

        return store

    handles = [module.register_forward_hook(hook(name)) for name, module in signs.items()]
    differences = {name: 0 for name in signs}
    total = 0
    model_classes, reference_classes = [], []
    try:
        for start in range(0, len(pixels), batch):
            chunk = pixels[start : start + batch]
            for values in captured.values():
                values.clear()
            model_classes.append(model(torch.from_numpy(chunk).float()).argmax(dim=1).numpy())
            trace = reference.run(graph, chunk, keep=True)
            reference_classes.append(trace.classes)
            for name in signs:
                theirs = np.concatenate(captured[name])
                ours = trace.tensors[name].reshape(len(chunk), -1)
                differences[name] += int((theirs != ours).sum())
                total += ours.size
    finally:
        for handle in handles:
            handle.remove()
    model_classes, reference_classes = np.concatenate(model_classes), np.concatenate(reference_classes)
    worst = max(differences, key=differences.get) if any(differences.values()) else ""

    def accuracy(classes):
        return None if labels is None else float((classes == np.asarray(labels)).mean())

    return Fidelity(
        images=len(pixels),
        activations=total,
        activation_agreement=1 - sum(differences.values()) / max(1, total),
        top1_agreement=float((model_classes == reference_classes).mean()),
        model_accuracy=accuracy(model_classes),
        reference_accuracy=accuracy(reference_classes),
        worst_layer=worst,
    )
