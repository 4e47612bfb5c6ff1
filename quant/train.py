"""Two-step training (ReActNet's recipe) and evaluation.

Step 1 trains binary activations with real-valued weights; step 2 starts from step 1's
weights and binarises them. Both use Adam with a learning rate decaying linearly to zero;
step 1 applies weight decay to the binary convolutions' latent weights only, step 2 none.
The loss is cross-entropy, or, given a teacher checkpoint, ReActNet's distributional loss
``-sum softmax(teacher) * log_softmax(student)`` alone.

Training state is saved after every epoch (``<out>.state.pt``), so an interrupted run
continues where it stopped with ``resume=True``. Under ``torchrun`` (``WORLD_SIZE > 1``)
each process trains on its shard of every epoch through DistributedDataParallel (gloo),
and only rank 0 writes files and prints.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from brevitas.core.scaling import ParameterFromRuntimeStatsScaling
from torch import nn
from tqdm import tqdm

from ..errors import MAX_SEED, OptionError, check_number
from ..files import UnsafePathError, atomic_write, check_output_file
from ..strict_json import read_json
from .checkpoint import (
    CheckpointError,
    atomic_torch_save,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    state_dict_problem,
    tensors_only_load,
)
from .config import ConfigError, ModelConfig
from .data import TensorImageDataset, dataset_info, load_dataset
from .layers import BinaryConv2d, BinaryLinear
from .models import model_from_config

__all__ = ["TrainOptions", "train", "evaluate", "predict", "check_dataset"]


@dataclass(frozen=True)
class TrainOptions:
    """How to train; recorded in the checkpoint's metadata.

    Attributes
    ----------
    dataset : str
        A dataset name of :mod:`instabnn_hw.quant.data`.
    out : str
        Path of the final checkpoint; the metadata goes beside it with the suffix ``.json``.
    epochs1, epochs2 : int
        Epochs of step 1 (real weights) and step 2 (binary weights).
    batch_size : int
        Images per step, over all processes.
    lr : float
        Peak learning rate of both steps.
    weight_decay : float
        Step 1 weight decay on the latent weights of the binary layers.
    seed : int
        Seeds the weights, the data order and everything random.
    data_dir : str or None
        Dataset folder (see :func:`~instabnn_hw.quant.data.load_dataset`).
    teacher : str or None
        Checkpoint of a teacher for distillation.
    limit : int or None
        Use only the first ``limit`` training images (tests, quick runs).
    test_limit : int or None
        Evaluate on only the first ``test_limit`` test images.
    resume : bool
        Continue from ``<out>.state.pt`` when it exists.
    command : str
        The command line, for the record.
    """

    dataset: str
    out: str
    epochs1: int = 4
    epochs2: int = 4
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-5
    seed: int = 0
    data_dir: str | None = None
    teacher: str | None = None
    limit: int | None = None
    test_limit: int | None = None
    resume: bool = False
    command: str = ""

    def __post_init__(self) -> None:
        check_number("epochs1", self.epochs1, integer=True, low=0)
        check_number("epochs2", self.epochs2, integer=True, low=0)
        if self.epochs1 + self.epochs2 == 0:
            raise OptionError("epochs1", "are both 0: nothing to train", others=("epochs2",))
        check_number("batch_size", self.batch_size, integer=True, low=1)
        check_number("lr", self.lr, low=0, low_open=True)
        check_number("weight_decay", self.weight_decay, low=0)
        check_number("seed", self.seed, integer=True, low=0, high=MAX_SEED)
        check_number("limit", self.limit, integer=True, low=1, optional=True)
        check_number("test_limit", self.test_limit, integer=True, low=1, optional=True)


@dataclass(frozen=True)
class _Distributed:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed() -> _Distributed:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return _Distributed()
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return _Distributed(dist.get_rank(), dist.get_world_size())


def _batches(
    dataset, batch_size: int, *, order: torch.Tensor | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of (pixels, labels); in-memory datasets are indexed directly, which is fast."""
    indices = torch.arange(len(dataset)) if order is None else order
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        if isinstance(dataset, TensorImageDataset):
            yield dataset.images[chunk].float(), dataset.labels[chunk]
        else:
            items = [dataset[int(i)] for i in chunk]
            yield torch.stack([image for image, _ in items]), torch.tensor([label for _, label in items])


@torch.no_grad()
def predict(
    model: nn.Module, dataset, *, batch_size: int = 256, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``(predicted classes, labels)`` of ``model`` in eval mode over ``dataset``."""
    was_training = model.training
    model.eval()
    predictions, labels = [], []
    total = math.ceil(len(dataset) / batch_size)
    for pixels, label in tqdm(
        _batches(dataset, batch_size), total=total, desc="eval", disable=not progress, **_bar_style()
    ):
        predictions.append(model(pixels).argmax(dim=1))
        labels.append(label)
    model.train(was_training)
    return torch.cat(predictions).numpy(), torch.cat(labels).numpy()


def evaluate(model: nn.Module, dataset, *, batch_size: int = 256, progress: bool = False) -> float:
    """Top-1 accuracy of ``model`` on ``dataset``."""
    predicted, labels = predict(model, dataset, batch_size=batch_size, progress=progress)
    return float((predicted == labels).mean())


def _bar_style() -> dict:
    # In a log (CI), a bar redrawn every 0.1 s would flood it: redraw rarely there.
    return {"file": sys.stderr, "mininterval": 0.1 if sys.stderr.isatty() else 30.0, "dynamic_ncols": True}


def _optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    binary = [m.weight for m in model.modules() if isinstance(m, (BinaryConv2d, BinaryLinear))]
    binary_ids = {id(p) for p in binary}
    others = [p for p in model.parameters() if id(p) not in binary_ids]
    return torch.optim.Adam(
        [{"params": binary, "weight_decay": weight_decay}, {"params": others, "weight_decay": 0.0}], lr=lr
    )


def _loss(logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None) -> torch.Tensor:
    if teacher_logits is None:
        return F.cross_entropy(logits, labels)
    return -(teacher_logits.softmax(dim=1) * logits.log_softmax(dim=1)).sum(dim=1).mean()


def _load_teacher(path: str, config: ModelConfig) -> nn.Module:
    teacher = load_checkpoint(path)
    if teacher.config.num_classes != config.num_classes or teacher.config.in_channels != config.in_channels:
        raise CheckpointError(
            f"teacher {path} has {teacher.config.num_classes} classes and {teacher.config.in_channels} input channels; "
            f"the student needs {config.num_classes} and {config.in_channels}"
        )
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _state_path(out: str) -> Path:
    return Path(f"{out}.state.pt")


def _record_path(out: str) -> Path:
    return Path(out).with_suffix(".json")


def _check_outputs(out: str) -> None:
    """Refuses, before any training, an ``out`` that cannot be written or that would replace a
    file train did not write (the checkpoint and its JSON record beside it)."""
    label = f"--out {shlex.quote(str(out))}"
    try:
        path = check_output_file(out, label=label)
    except UnsafePathError as exc:
        raise ConfigError(str(exc)) from None
    record = _record_path(out)
    if record.resolve() == path:
        raise ConfigError(f"{label} ends in .json, the name of its record; give a name such as model.pt")
    if path.exists():
        try:
            read_checkpoint(path)
        except CheckpointError:
            raise ConfigError(f"{label} exists and is not a checkpoint; give a new name") from None
    if record.is_symlink() or record.is_dir():
        raise ConfigError(f"{label}: its record {record} is a folder or a link; give another name")
    if record.exists():
        try:
            meta = read_json(record)
        except (OSError, ValueError):
            meta = None
        if not (isinstance(meta, dict) and "command" in meta and "config" in meta):
            raise ConfigError(f"{label}: {record} exists and is not a record of instabnn-hw train; give another name")


def check_dataset(config: ModelConfig, dataset: str) -> None:
    """Raises ConfigError unless ``dataset``'s images and classes fit ``config``."""
    info = dataset_info(dataset)
    if info.in_channels != config.in_channels or info.num_classes != config.num_classes:
        raise ConfigError(
            f"{dataset} has {info.in_channels} channels and {info.num_classes} classes but the model expects "
            f"{config.in_channels} and {config.num_classes}; "
            f"pass --in-channels {info.in_channels} --num-classes {info.num_classes}"
        )
    if dataset != "imagenet" and config.input_size < info.native_size:
        raise ConfigError(
            f"{dataset} images are {info.native_size}x{info.native_size} "
            f"but the model takes {config.input_size}x{config.input_size}; "
            f"use --input-size {info.native_size} or more (images are zero-padded, never cropped)"
        )


def train(config: ModelConfig, options: TrainOptions, *, progress: bool = True) -> dict:
    """Trains ``config`` with the two-step recipe and writes the checkpoint; returns its metadata.

    Raises
    ------
    ConfigError, DataError, CheckpointError
        For invalid options, missing data or an unusable teacher / resume state.
    """
    check_dataset(config, options.dataset)
    model_from_config(config)  # validates the config before any data is read
    _check_outputs(options.out)
    ddp = _init_distributed()
    torch.manual_seed(options.seed)
    train_set = load_dataset(
        options.dataset, "train", data_dir=options.data_dir, input_size=config.input_size, limit=options.limit
    )
    test_set = load_dataset(
        options.dataset, "test", data_dir=options.data_dir, input_size=config.input_size, limit=options.test_limit
    )
    teacher = _load_teacher(options.teacher, config) if options.teacher else None
    say = print if ddp.main else (lambda *a, **k: None)

    state = _resume_state(options, config) if options.resume else None
    history = state["history"] if state else []
    started = time.monotonic()
    model = None
    for step, epochs in ((1, options.epochs1), (2, options.epochs2)):
        step_config = dataclasses.replace(config, binary_weights=step == 2)
        if (state and state["step"] > step) or epochs == 0:
            continue  # a step without epochs hands on the previous step's model (or none)
        previous = model
        torch.manual_seed(options.seed + step)
        model = model_from_config(step_config)
        if state and state["step"] == step:
            model.load_state_dict(state["model"])
            _restore_scale_statistics(model, state.get("scale_statistics", {}))
        elif previous is not None:
            # Step 2 starts from step 1's latent weights and everything else it learned.
            model.load_state_dict(previous.state_dict())
        optimizer = _optimizer(model, options.lr, options.weight_decay if step == 1 else 0.0)
        steps_per_epoch = math.ceil(len(train_set) / options.batch_size)
        total_steps = epochs * steps_per_epoch
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i, total=total_steps: max(0.0, 1.0 - i / total))
        first_epoch = 0
        if state and state["step"] == step:
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            first_epoch = state["epoch"]
        trained = nn.parallel.DistributedDataParallel(model) if ddp.world > 1 else model
        for epoch in range(first_epoch, epochs):
            generator = torch.Generator().manual_seed(options.seed * 1000 + step * 100 + epoch)
            shard = torch.randperm(len(train_set), generator=generator)
            local_batch = max(1, options.batch_size // ddp.world)
            if ddp.world > 1:
                # Every process takes its slice of each full global batch, so all step in lockstep.
                usable = len(shard) - len(shard) % options.batch_size
                rows = shard[:usable].view(-1, options.batch_size)
                shard = rows[:, ddp.rank * local_batch : (ddp.rank + 1) * local_batch].reshape(-1)
            trained.train()
            seen = correct = 0
            loss_sum = 0.0
            bar = tqdm(
                _batches(train_set, local_batch, order=shard),
                total=math.ceil(len(shard) / local_batch),
                desc=f"step {step} epoch {epoch + 1}/{epochs}",
                disable=not (progress and ddp.main),
                **_bar_style(),
            )
            for pixels, labels in bar:
                logits = trained(pixels)
                teacher_logits = teacher(pixels) if teacher is not None else None
                loss = _loss(logits, labels, teacher_logits)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                seen += len(labels)
                correct += int((logits.argmax(dim=1) == labels).sum())
                loss_sum += loss.item() * len(labels)
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", refresh=False)
            accuracy = evaluate(model, test_set)
            record = {
                "step": step,
                "epoch": epoch + 1,
                "train_loss": loss_sum / max(seen, 1),
                "train_accuracy": correct / max(seen, 1),
                "test_accuracy": accuracy,
            }
            history.append(record)
            say(
                f"step {step} epoch {epoch + 1}/{epochs}: loss {record['train_loss']:.4f}, "
                f"train accuracy {record['train_accuracy']:.4f}, test accuracy {accuracy:.4f}",
                flush=True,
            )
            if ddp.main:
                atomic_torch_save(
                    {
                        "options": json.dumps(dataclasses.asdict(options), sort_keys=True),
                        "config": config.to_json(),
                        "step": step,
                        "epoch": epoch + 1,
                        "model": model.state_dict(),
                        "scale_statistics": _scale_statistics(model),
                        "optimizer": optimizer.state_dict(),
                        "schedule": schedule.state_dict(),
                        "history": history,
                    },
                    _state_path(options.out),
                )
        state = None

    final_model = model if model.config.binary_weights else _binarised(model, config)
    accuracy = evaluate(final_model, test_set)
    meta = {
        "command": options.command,
        "seed": options.seed,
        "dataset": options.dataset,
        "epochs1": options.epochs1,
        "epochs2": options.epochs2,
        "batch_size": options.batch_size,
        "lr": options.lr,
        "train_images": len(train_set),
        "test_images": len(test_set),
        "test_accuracy": accuracy,
        "teacher": options.teacher,
        "processes": ddp.world,
        "train_seconds": round(time.monotonic() - started, 1),
        "history": history,
        "config": json.loads(config.to_json()),
    }
    if ddp.main:
        save_checkpoint(options.out, final_model, meta=meta)
        atomic_write(_record_path(options.out), json.dumps(meta, indent=2, sort_keys=True) + "\n")
        _state_path(options.out).unlink(missing_ok=True)
        say(f"wrote {options.out} (test accuracy {accuracy:.4f})")
    if ddp.world > 1:
        dist.barrier()
    return meta


def _binarised(model: nn.Module, config: ModelConfig) -> nn.Module:
    """A step-1-only run still yields a hardware model: the same weights, binarised."""
    final = model_from_config(dataclasses.replace(config, binary_weights=True))
    final.load_state_dict(model.state_dict())
    return final


def _scale_statistics(model: nn.Module) -> dict:
    """What a state dict leaves out of Brevitas's activation scales that learn from statistics.

    Such a scale averages its input's statistics over its first 300 training steps before it
    becomes a learned parameter. The state dict holds the average in place of the parameter
    and not the step counter, and loading it ends the collection, so without these a run
    interrupted within those steps would not resume where it stopped.
    """
    return {
        name: {"counter": m.counter, "buffer": m.buffer.clone(), "value": m.value.detach().clone()}
        for name, m in model.named_modules()
        if isinstance(m, ParameterFromRuntimeStatsScaling)
    }


@torch.no_grad()
def _restore_scale_statistics(model: nn.Module, saved: dict) -> None:
    modules = dict(model.named_modules())
    for name, stats in saved.items():
        modules[name].counter = stats["counter"]
        modules[name].buffer.copy_(stats["buffer"])
        modules[name].value.copy_(stats["value"])


#: What ``train`` saves after every epoch, by entry and type (see the ``atomic_torch_save`` there).
_STATE_ENTRIES = {
    "options": str,
    "config": str,
    "step": int,
    "epoch": int,
    "model": dict,
    "scale_statistics": dict,
    "optimizer": dict,
    "schedule": dict,
    "history": list,
}


def _resume_state(options: TrainOptions, config: ModelConfig) -> dict | None:
    """The training state saved beside ``options.out``, checked against ``options`` and ``config``.

    Returns
    -------
    dict or None
        None when there is no state file.

    Raises
    ------
    CheckpointError
        If the file is not a training state of this project (a checkpoint in its place, a
        damaged or edited file), or it was saved for other options or another model.
    """
    path = _state_path(options.out)
    if not path.exists():
        return None
    try:
        state = tensors_only_load(path)
    except Exception as exc:
        raise CheckpointError(f"cannot resume from {path} ({type(exc).__name__}); delete it to start afresh") from None
    if not isinstance(state, dict):
        raise _not_a_training_state(path, f"it holds a {type(state).__name__}")
    for key, kind in _STATE_ENTRIES.items():
        value = state.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise _not_a_training_state(
                path, f"it has no {key!r} entry" if key not in state else f"its {key!r} is a {type(value).__name__}"
            )
    if state["step"] not in (1, 2) or state["epoch"] < 0:
        raise _not_a_training_state(path, f"it stopped at step {state['step']}, epoch {state['epoch']}")
    try:
        saved = json.loads(state["options"])
        saved_config = ModelConfig.from_dict(json.loads(state["config"]))
    except (ValueError, RecursionError) as exc:  # ConfigError is a ValueError
        detail = " ".join(str(exc).split())
        raise CheckpointError(f"cannot resume from {path}: it holds damaged options or config ({detail})") from None
    if not isinstance(saved, dict):
        raise _not_a_training_state(path, "its options are not a JSON object")
    for key in ("dataset", "epochs1", "epochs2", "batch_size", "seed", "limit"):
        if saved.get(key) != getattr(options, key):
            theirs, mine = saved.get(key), getattr(options, key)
            raise CheckpointError(f"cannot resume from {path}: it was trained with {key}={theirs!r}, not {mine!r}")
    for field in dataclasses.fields(ModelConfig):
        if getattr(saved_config, field.name) != getattr(config, field.name):
            mine, theirs = getattr(config, field.name), getattr(saved_config, field.name)
            raise CheckpointError(
                f"cannot resume from {path}: it was trained with {field.name}={theirs!r}, not {mine!r}"
            )
    problem = state_dict_problem(state["model"], entry="model state")
    if problem:
        raise CheckpointError(f"cannot resume from {path}: it {problem}; delete it to start afresh")
    for name, statistics in state["scale_statistics"].items():
        if not (
            isinstance(statistics, dict)
            and isinstance(statistics.get("counter"), int)
            and all(isinstance(statistics.get(key), torch.Tensor) for key in ("buffer", "value"))
        ):
            raise _not_a_training_state(path, f"its scale statistics of {name!r} are damaged")
    return state


def _not_a_training_state(path: Path, reason: str) -> CheckpointError:
    return CheckpointError(
        f"cannot resume from {path}: it is not a training state of instabnn-hw train ({reason}); "
        "delete it to start afresh"
    )
