"""Checkpoints: a model's state dict plus its JSON config, loadable with ``weights_only=True``.

A checkpoint is a ``dict`` holding only strings and tensors, so ``torch.load`` never
unpickles code:

- ``format``: ``"instabnn-hw/1"``;
- ``config``: the :class:`~instabnn_hw.quant.models.ModelConfig` as JSON;
- ``state_dict``: the model's parameters and buffers;
- ``meta``: JSON with how it was made (command, seed, epochs, accuracy).

Files are written to a temporary name beside the target and renamed, so a crash never
leaves half a checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from .models import ConfigError, ModelConfig, model_from_config

__all__ = [
    "CHECKPOINT_FORMAT",
    "SHIPPED_DIR",
    "shipped_checkpoints",
    "CheckpointError",
    "atomic_torch_save",
    "atomic_write_text",
    "save_checkpoint",
    "read_checkpoint",
    "load_checkpoint",
]

CHECKPOINT_FORMAT = "instabnn-hw/1"
#: Checkpoints that ship with the project, named ``<model>-<insta>-<dataset>.pt``.
SHIPPED_DIR = Path(__file__).resolve().parent / "checkpoints"


class CheckpointError(ValueError):
    """A missing, corrupt or mismatched checkpoint; the message says which and what to do."""


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` through a temporary file in the same folder, then an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` through a temporary file beside ``path``, then renames it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_checkpoint(path: str | os.PathLike, model: nn.Module, *, meta: dict | None = None) -> None:
    """Writes ``model`` (which must carry a ``config``) and ``meta`` to ``path``."""
    atomic_torch_save(
        {
            "format": CHECKPOINT_FORMAT,
            "config": model.config.to_json(),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "meta": json.dumps(meta or {}, sort_keys=True),
        },
        path,
    )


def read_checkpoint(path: str | os.PathLike) -> tuple[ModelConfig, dict, dict]:
    """Reads and checks a checkpoint file: ``(config, state_dict, meta)``.

    Raises
    ------
    CheckpointError
        If the file is missing, not a checkpoint of this project, or corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; pass the path of a .pt file written by `instabnn-hw train`")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(exc).__name__}); re-create it with `instabnn-hw train`"
        ) from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an instabnn-hw checkpoint (format {CHECKPOINT_FORMAT} expected)")
    try:
        config = ModelConfig.from_dict(json.loads(data["config"]))
        meta = json.loads(data.get("meta") or "{}")
        state_dict = data["state_dict"]
    except (KeyError, TypeError, json.JSONDecodeError, ConfigError) as exc:
        raise CheckpointError(f"{path} has a damaged config: {exc}") from None
    return config, state_dict, meta


def load_checkpoint(path: str | os.PathLike) -> nn.Module:
    """The model stored at ``path``, in eval mode, with ``model.meta`` holding its metadata.

    Raises
    ------
    CheckpointError
        If the file is missing or corrupt, or its weights do not match its config.
    """
    config, state_dict, meta = read_checkpoint(path)
    try:
        model = model_from_config(config)
    except ConfigError as exc:
        raise CheckpointError(f"{path} holds an invalid model config: {exc}") from None
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as exc:
        # torch lists every mismatching key over many lines; the first few name the problem.
        detail = " ".join(str(exc).split())
        detail = detail if len(detail) <= 300 else detail[:300] + " ..."
        raise CheckpointError(f"{path} does not match its model config: {detail}") from None
    model.meta = meta
    return model.eval()


def shipped_checkpoints() -> list[Path]:
    """The checkpoints in :data:`SHIPPED_DIR`, sorted by name."""
    return sorted(SHIPPED_DIR.glob("*.pt"))
