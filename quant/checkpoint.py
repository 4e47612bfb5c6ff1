"""Checkpoints: a model's state dict plus its JSON config, loadable with ``weights_only=True``.

A checkpoint is a ``dict`` holding only strings and tensors, so every load uses
``torch.load(..., weights_only=True)``, which never unpickles code:

- ``format``: ``"instabnn-hw/1"``;
- ``config``: the :class:`~instabnn_hw.quant.config.ModelConfig` as JSON;
- ``state_dict``: the model's parameters and buffers;
- ``meta``: JSON with how it was made (command, seed, epochs, accuracy).

Reading one checks every entry (:func:`read_checkpoint`), so a damaged or edited file gives
one :class:`CheckpointError` line naming what is wrong. Files are written to a temporary
name beside the target and renamed, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from ..files import atomic_write
from ..strict_json import json_kind, short_repr
from .config import ConfigError, ModelConfig
from .models import model_from_config

__all__ = [
    "CHECKPOINT_FORMAT",
    "SHIPPED_DIR",
    "shipped_checkpoints",
    "CheckpointError",
    "atomic_torch_save",
    "tensors_only_load",
    "save_checkpoint",
    "read_checkpoint",
    "state_dict_problem",
    "load_checkpoint",
]

CHECKPOINT_FORMAT = "instabnn-hw/1"
#: Checkpoints that ship with the project, named ``<model>-<insta>-<dataset>.pt``.
SHIPPED_DIR = Path(__file__).resolve().parent / "checkpoints"


class CheckpointError(UserError, ValueError):
    """A missing, corrupt or mismatched checkpoint; the message says which and what to do."""


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` of ``obj`` to ``path`` whole or not at all (:func:`instabnn_hw.files.atomic_write`)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, buffer.getvalue())


def tensors_only_load(path: str | os.PathLike):
    """``torch.load`` of ``path`` that unpickles tensors and plain containers only, never code.

    Torch's warning about a pickle protocol it does not save with is silenced: such a file is
    read or refused by the same rules, and the caller's one-line error says which.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        return torch.load(path, map_location="cpu", weights_only=True)


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

    ``torch.load`` runs with ``weights_only=True``, so a crafted file cannot run code; every
    entry is then checked, so an edited or damaged one gives one line saying which.

    Raises
    ------
    CheckpointError
        If the file is missing or not a checkpoint of this project; if its config is not a
        valid model config (wrong or missing fields, a model too big for this machine); if
        its state dict is not a dict of finite tensors; or if its metadata is not a JSON object.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; pass the path of a .pt file written by `instabnn-hw train`")
    try:
        data = tensors_only_load(path)
    except Exception as exc:  # torch raises many types for a damaged file
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(exc).__name__}); re-create it with `instabnn-hw train`"
        ) from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        if not isinstance(data, dict):
            found = f"it holds a {type(data).__name__}"
        else:
            found = f"its format is {short_repr(data['format'])}" if "format" in data else "it has no format"
        raise CheckpointError(f"{path} is not an instabnn-hw checkpoint (format {CHECKPOINT_FORMAT} expected, {found})")
    try:
        config = ModelConfig.from_dict(_json_entry(data, "config"))
    except (_EntryError, ConfigError) as exc:
        raise CheckpointError(f"{path} has a damaged config: {exc}") from None
    if "state_dict" not in data:
        raise CheckpointError(f"{path} has no state_dict entry; re-create it with `instabnn-hw train`")
    state_dict = data["state_dict"]
    problem = state_dict_problem(state_dict)
    if problem:
        raise CheckpointError(f"{path} {problem}; the checkpoint is damaged (re-train it)")
    try:
        meta = _json_entry(data, "meta") if "meta" in data else {}
        if not isinstance(meta, dict):
            raise _EntryError(f"meta must be a JSON object, not a JSON {json_kind(meta)}")
    except _EntryError as exc:
        raise CheckpointError(f"{path} has damaged metadata: {exc}") from None
    return config, state_dict, meta


class _EntryError(Exception):
    """An entry of a checkpoint that is missing or not what its format says."""


def _json_entry(data: dict, key: str):
    """The value of the JSON text ``data[key]``."""
    if key not in data:
        raise _EntryError(f"there is no {key} entry")
    text = data[key]
    if not isinstance(text, str):
        raise _EntryError(f"{key} must be JSON text, not a {type(text).__name__}")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep to parse
        raise _EntryError(f"{key} is not JSON ({' '.join(str(exc).split())})") from None


def state_dict_problem(state_dict, *, entry: str = "state_dict") -> str | None:
    """What is wrong with ``state_dict`` if it is not a dict of names to dense, finite tensors.

    Parameters
    ----------
    state_dict : object
        What a file holds in place of a model's state dict.
    entry : str
        The name of that entry in the file, for the message.

    Returns
    -------
    str or None
        None if it is a state dict; else what the file holds, as a phrase to follow its
        path: ``"holds non-finite values in stem.conv.weight"``.
    """
    if not isinstance(state_dict, dict):
        return f"holds a {type(state_dict).__name__} as its {entry}, not a dict of tensors"
    for name, tensor in state_dict.items():
        if not isinstance(name, str):
            return f"holds the key {short_repr(name)} in its {entry}, which is not a tensor name"
        if not isinstance(tensor, torch.Tensor) or tensor.layout != torch.strided or tensor.is_quantized:
            kind = type(tensor).__name__ if not isinstance(tensor, torch.Tensor) else f"{tensor.layout} tensor"
            return f"holds a {kind} as {_tensor_name(name)} in its {entry}, not a dense tensor"
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            return f"holds non-finite values in {_tensor_name(name)}"
    return None


def _tensor_name(name: str) -> str:
    """``name`` as it is when it is a short printable one, as a model's names are; else its repr, cut short."""
    return name if name.isprintable() and len(name) <= 100 else short_repr(name)


def load_checkpoint(path: str | os.PathLike) -> nn.Module:
    """The model stored at ``path``, in eval mode, with ``model.meta`` holding its metadata.

    Raises
    ------
    CheckpointError
        If the file is missing or damaged (see :func:`read_checkpoint`), or its weights do
        not match its config.
    """
    config, state_dict, meta = read_checkpoint(path)
    try:
        model = model_from_config(config)
    except ConfigError as exc:
        raise CheckpointError(f"{path} holds an invalid model config: {exc}") from None
    try:
        model.load_state_dict(state_dict)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
        # torch lists every mismatching key over many lines; the first few name the problem.
        detail = " ".join(str(exc).split())
        detail = detail if len(detail) <= 300 else detail[:300] + " ..."
        raise CheckpointError(f"{path} does not match its model config: {detail}") from None
    model.meta = meta
    return model.eval()


def shipped_checkpoints() -> list[Path]:
    """The checkpoints in :data:`SHIPPED_DIR`, sorted by name."""
    return sorted(SHIPPED_DIR.glob("*.pt"))
