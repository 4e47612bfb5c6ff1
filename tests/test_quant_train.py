"""Tests for instabnn_hw.quant.train: two-step training, checkpoints, resume, distillation, torchrun.

Every run trains ``resnet-tiny`` at 8x8 with width 8 on a few dozen scikit-learn digits,
which takes about a second per run even on a loaded machine.
"""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from instabnn_hw.errors import OptionError
from instabnn_hw.quant import train as train_module
from instabnn_hw.quant.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from instabnn_hw.quant.config import ConfigError
from instabnn_hw.quant.data import load_dataset
from instabnn_hw.quant.layers import BinaryConv2d
from instabnn_hw.quant.models import build_model
from instabnn_hw.quant.train import TrainOptions, evaluate, train

TEST_LIMIT = 48


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(**overrides):
    return build_model("resnet-tiny", input_size=8, width=8, **overrides).config


def tiny_options(folder: Path, name: str, **overrides) -> TrainOptions:
    """Two step-1 epochs and one step-2 epoch of three batches each."""
    options = dict(
        dataset="digits",
        out=str(folder / f"{name}.pt"),
        epochs1=2,
        epochs2=1,
        batch_size=32,
        limit=96,
        test_limit=TEST_LIMIT,
        seed=3,
        command="pytest tiny run",
    )
    options.update(overrides)
    return TrainOptions(**options)


def state_dict_of(path) -> dict:
    return read_checkpoint(path)[1]


def assert_same_tensors(left: dict, right: dict) -> None:
    assert left.keys() == right.keys()
    different = [key for key in left if not torch.equal(left[key], right[key])]
    assert not different, f"tensors differ: {different}"


def state_path(options: TrainOptions) -> Path:
    return Path(f"{options.out}.state.pt")


def interrupt_evaluation(monkeypatch, at_call: int) -> None:
    """Makes ``train``'s ``at_call``-th evaluation raise KeyboardInterrupt, like Ctrl-C there.

    Evaluation ends every epoch before the training state is saved, so an interruption at
    call ``n`` leaves the state of epoch ``n - 1`` behind.
    """
    calls = []
    real_evaluate = train_module.evaluate

    def evaluate_or_interrupt(*args, **kwargs):
        calls.append(None)
        if len(calls) == at_call:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate", evaluate_or_interrupt)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run, ``(options, meta)``, that other runs are compared with."""
    options = tiny_options(tmp_path_factory.mktemp("reference"), "reference")
    return options, train(tiny_config(), options, progress=False)


def test_train_writes_checkpoint_metadata_and_removes_state(reference):
    options, meta = reference
    out = Path(options.out)
    assert out.is_file()
    assert not state_path(options).exists()
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar == meta == read_checkpoint(out)[2]
    assert meta["command"] == "pytest tiny run"
    assert (meta["seed"], meta["epochs1"], meta["epochs2"], meta["processes"]) == (3, 2, 1, 1)
    assert (meta["train_images"], meta["test_images"], meta["teacher"]) == (96, TEST_LIMIT, None)
    assert [(r["step"], r["epoch"]) for r in meta["history"]] == [(1, 1), (1, 2), (2, 1)]

    model = load_checkpoint(out)
    assert not model.training
    assert model.config == tiny_config()
    test_set = load_dataset("digits", "test", input_size=8, limit=TEST_LIMIT)
    assert evaluate(model, test_set) == meta["test_accuracy"]
    binary_convs = [m for m in model.modules() if isinstance(m, BinaryConv2d)]
    assert len(binary_convs) == 6
    for conv in binary_convs:
        assert torch.equal(conv.quant_weight().value.abs(), torch.ones_like(conv.weight))


def test_step_one_only_run_still_yields_binary_weights(tmp_path):
    options = tiny_options(tmp_path, "step1", epochs1=1, epochs2=0)
    meta = train(tiny_config(), options, progress=False)
    model = load_checkpoint(options.out)
    assert model.config.binary_weights
    assert [(r["step"], r["epoch"]) for r in meta["history"]] == [(1, 1)]
    conv = next(m for m in model.modules() if isinstance(m, BinaryConv2d))
    assert torch.equal(conv.quant_weight().value.abs(), torch.ones_like(conv.weight))


def test_step_two_starts_from_step_one_weights(tmp_path, monkeypatch):
    # A step-1-only run stores exactly the weights step 1 ends with.
    step1_only = tiny_options(tmp_path, "step1", epochs1=1, epochs2=0)
    train(tiny_config(), step1_only, progress=False)

    # Each step builds its optimizer right after loading the weights it starts from.
    starts = []
    real_optimizer = train_module._optimizer

    def recording_optimizer(model, lr, weight_decay):
        starts.append((model.config.binary_weights, {k: v.clone() for k, v in model.state_dict().items()}))
        return real_optimizer(model, lr, weight_decay)

    monkeypatch.setattr(train_module, "_optimizer", recording_optimizer)
    meta = train(tiny_config(), tiny_options(tmp_path, "two-step", epochs1=1, epochs2=2), progress=False)

    assert [binary for binary, _ in starts] == [False, True]
    assert_same_tensors(starts[1][1], state_dict_of(step1_only.out))
    assert [(r["step"], r["epoch"]) for r in meta["history"]] == [(1, 1), (2, 1), (2, 2)]


def test_same_seed_gives_identical_weights(tmp_path, reference):
    options, _ = reference
    again = dataclasses.replace(options, out=str(tmp_path / "again.pt"))
    other_seed = dataclasses.replace(options, out=str(tmp_path / "other.pt"), seed=4)
    train(tiny_config(), again, progress=False)
    train(tiny_config(), other_seed, progress=False)
    assert_same_tensors(state_dict_of(again.out), state_dict_of(options.out))
    with pytest.raises(AssertionError, match="tensors differ"):
        assert_same_tensors(state_dict_of(other_seed.out), state_dict_of(options.out))


@pytest.mark.parametrize(
    "interrupted_evaluation, saved_step_epoch",
    [(2, (1, 1)), (3, (1, 2))],
    ids=["within-step-1", "between-steps"],
)
def test_resume_after_interruption_matches_uninterrupted_run(
    tmp_path, monkeypatch, reference, interrupted_evaluation, saved_step_epoch
):
    reference_options, reference_meta = reference
    options = dataclasses.replace(reference_options, out=str(tmp_path / "resumed.pt"))

    interrupt_evaluation(monkeypatch, interrupted_evaluation)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(), options, progress=False)
    monkeypatch.undo()
    assert not Path(options.out).exists()
    saved = torch.load(state_path(options), weights_only=True)
    assert (saved["step"], saved["epoch"]) == saved_step_epoch

    meta = train(tiny_config(), dataclasses.replace(options, resume=True), progress=False)
    assert not state_path(options).exists()
    assert_same_tensors(state_dict_of(options.out), state_dict_of(reference_options.out))
    assert meta["history"] == reference_meta["history"]
    assert meta["test_accuracy"] == reference_meta["test_accuracy"]


@pytest.mark.parametrize("changed", [{"seed": 4}, {"epochs1": 3}, {"batch_size": 16}, {"limit": 64}])
def test_resume_with_other_options_is_refused(tmp_path, monkeypatch, changed):
    options = tiny_options(tmp_path, "run", epochs1=2, epochs2=0)
    interrupt_evaluation(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(), options, progress=False)
    monkeypatch.undo()

    key = next(iter(changed))
    with pytest.raises(CheckpointError, match=f"cannot resume .*{key}="):
        train(tiny_config(), dataclasses.replace(options, resume=True, **changed), progress=False)
    assert state_path(options).exists(), "a refused resume must keep the state for the right options"
    assert not Path(options.out).exists()


def test_resume_from_corrupt_state_is_refused(tmp_path):
    options = tiny_options(tmp_path, "run", resume=True)
    state_path(options).write_bytes(os.urandom(256))
    with pytest.raises(CheckpointError, match="cannot resume"):
        train(tiny_config(), options, progress=False)
    assert not Path(options.out).exists()


def test_distillation_uses_and_records_the_teacher(tmp_path, reference):
    teacher_options, _ = reference
    # The same run as the reference but for the teacher: identical weights would mean it was ignored.
    options = dataclasses.replace(teacher_options, out=str(tmp_path / "student.pt"), teacher=teacher_options.out)
    meta = train(tiny_config(), options, progress=False)
    assert meta["teacher"] == teacher_options.out
    assert load_checkpoint(options.out).meta["teacher"] == teacher_options.out
    with pytest.raises(AssertionError, match="tensors differ"):
        assert_same_tensors(state_dict_of(options.out), state_dict_of(teacher_options.out))


def test_teacher_with_other_classes_is_refused(tmp_path):
    teacher = build_model("resnet-tiny", input_size=8, width=8, num_classes=5)
    with torch.no_grad():
        # Brevitas puts the activation scales in the state dict only once they have seen data.
        teacher(torch.zeros(2, 1, 8, 8))
    teacher_path = tmp_path / "five-classes.pt"
    save_checkpoint(teacher_path, teacher)
    options = tiny_options(tmp_path, "student", teacher=str(teacher_path))
    with pytest.raises(CheckpointError, match="5 classes"):
        train(tiny_config(), options, progress=False)
    assert not Path(options.out).exists()


def test_invalid_options_are_refused(tmp_path):
    with pytest.raises(OptionError, match="^epochs1 and epochs2 are both 0: nothing to train$"):
        tiny_options(tmp_path, "none", epochs1=0, epochs2=0)
    with pytest.raises(OptionError, match="^epochs2 must be >= 0, not -1$"):
        tiny_options(tmp_path, "negative", epochs2=-1)
    for name, value in (("lr", float("inf")), ("weight_decay", float("nan")), ("seed", 2**64), ("batch_size", 0)):
        with pytest.raises(OptionError, match=f"^{name} must be"):
            tiny_options(tmp_path, name, **{name: value})
    with pytest.raises(ConfigError, match="--num-classes 10"):
        train(tiny_config(num_classes=5), tiny_options(tmp_path, "classes"), progress=False)
    assert not list(tmp_path.iterdir())


@pytest.mark.distributed
def test_torchrun_trains_on_two_processes(tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    out = tmp_path / "ddp.pt"
    command = [
        str(torchrun), "--standalone", "--nproc_per_node", "2",
        "-m", "instabnn_hw.cli", "train",
        "--model", "resnet-tiny", "--input-size", "8", "--width", "8",
        "--dataset", "digits", "--limit", "64", "--test-limit", "32", "--batch-size", "32",
        "--epochs1", "1", "--epochs2", "1", "--no-progress", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "BREVITAS_JIT": "0", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    model = load_checkpoint(out)
    assert model.meta["processes"] == 2
    assert [(r["step"], r["epoch"]) for r in model.meta["history"]] == [(1, 1), (2, 1)]
    assert not Path(f"{out}.state.pt").exists()
    # Only rank 0 reports.
    assert result.stdout.count("wrote ") == 1
