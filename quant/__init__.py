"""INSTA-BNN training with Brevitas: layers, model zoo, datasets, two-step training.

The trained model defines what the hardware computes, so it is hardware-shaped: every tensor
the hardware carries is binary or power-of-two fixed point (see :mod:`.layers`). The names
below load their modules (and torch) on first use, so that importing the package is free.
"""

import importlib

_EXPORTS = {
    "CheckpointError": "checkpoint",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "DataError": "data",
    "load_dataset": "data",
    "MODELS": "config",
    "ConfigError": "config",
    "ModelConfig": "config",
    "build_model": "models",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
