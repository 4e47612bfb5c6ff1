"""Tests for the ``instabnn-hw`` command line, run in-process through ``main`` where possible."""

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from instabnn_hw.cli import build_parser, main
from instabnn_hw.quant.checkpoint import load_checkpoint, save_checkpoint
from instabnn_hw.quant.data import load_dataset
from instabnn_hw.quant.models import build_model
from instabnn_hw.quant.summary import summarize

INSTABNN_HW = Path(sys.executable).parent / "instabnn-hw"
TINY_DIGITS = ["--dataset", "digits", "--input-size", "8", "--width", "8", "--batch-size", "32"]
TRAIN_DIGITS = [
    "train",
    *TINY_DIGITS,
    "--epochs1",
    "1",
    "--epochs2",
    "1",
    "--limit",
    "64",
    "--test-limit",
    "32",
    "--no-progress",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def subprocess_env() -> dict:
    return {**os.environ, "BREVITAS_JIT": "0", "OMP_NUM_THREADS": "1"}


def save_untrained(path: Path, model) -> Path:
    with torch.no_grad():
        # Brevitas puts the activation scales in the state dict only once they have seen data.
        model(torch.zeros(2, model.config.in_channels, model.config.input_size, model.config.input_size))
    save_checkpoint(path, model)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Checkpoints the commands read: a trained one and several broken or unsuitable ones."""
    folder = tmp_path_factory.mktemp("inputs")
    trained = folder / "digits.pt"
    assert main([*TRAIN_DIGITS, "--out", str(trained)]) == 0

    checkpoint = torch.load(trained, weights_only=True)
    del checkpoint["state_dict"]["head.fc.weight"]
    torch.save(checkpoint, folder / "missing-tensor.pt")
    checkpoint = torch.load(trained, weights_only=True)
    weight = checkpoint["state_dict"]["blocks.0.conv.weight"]
    checkpoint["state_dict"]["blocks.0.conv.weight"] = weight[: len(weight) // 2]
    torch.save(checkpoint, folder / "reshaped-tensor.pt")

    (folder / "corrupt.pt").write_bytes(np.random.default_rng(0).bytes(512))
    save_untrained(folder / "fashion.pt", build_model("resnet-tiny", width=8))
    return folder


def test_models_prints_a_table_of_the_named_models(capsys):
    assert main(["models", "--name", "resnet-tiny", "--name", "cnv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["model", "input", "parameters", "binary", "ops", "other", "ops"]
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines[1:-1]]
    assert [row[0] for row in rows] == ["resnet-tiny", "cnv"]
    for name, shape, parameters, binary_ops, other_ops in rows:
        summary = summarize(build_model(name))
        assert shape == "x".join(map(str, summary.input_shape))
        assert parameters == f"{summary.parameters:,}"
        assert binary_ops == f"{summary.binary_ops:,}"
        assert other_ops == f"{summary.other_ops:,}"
        assert summary.binary_ops > 0 and summary.parameters > 0
    assert lines[-1].startswith("(insta=th;")


def test_train_records_the_command_it_was_given(inputs):
    meta = load_checkpoint(inputs / "digits.pt").meta
    assert meta["command"].startswith("instabnn-hw train --dataset digits --input-size 8")
    assert meta["command"].endswith(f"--out {inputs / 'digits.pt'}")
    assert (meta["epochs1"], meta["epochs2"], meta["train_images"], meta["test_images"]) == (1, 1, 64, 32)


def test_eval_prints_accuracy_and_writes_records(inputs, tmp_path, capsys):
    records_path = tmp_path / "records.json"
    checkpoint = str(inputs / "digits.pt")
    assert (
        main(["eval", checkpoint, "--dataset", "digits", "--limit", "50", "--json", str(records_path), "--no-progress"])
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2] == "images: 50"
    assert re.fullmatch(r"accuracy: 0\.\d{4}", lines[-1])

    records = json.loads(records_path.read_text())
    assert len(records) == 50
    assert all(record.keys() == {"index", "label", "predicted"} for record in records)
    assert [record["index"] for record in records] == list(range(50))
    labels = load_dataset("digits", "test", limit=50).labels.tolist()
    assert [record["label"] for record in records] == labels
    correct = sum(record["label"] == record["predicted"] for record in records)
    assert lines[-1] == f"accuracy: {correct / 50:.4f}"


# Each case: the arguments ({inputs} and {out} are folders) and a fragment of the error message.
USER_ERRORS = {
    "unknown model (train)": (
        ["train", "--model", "nope", *TINY_DIGITS, "--out", "{out}/m.pt"],
        "unknown model 'nope'",
    ),
    "unknown model (models)": (["models", "--name", "nope"], "unknown model 'nope'"),
    "unknown dataset (train)": (["train", "--dataset", "mnist", "--out", "{out}/m.pt"], "unknown dataset 'mnist'"),
    "unknown dataset (eval)": (
        ["eval", "{inputs}/digits.pt", "--dataset", "mnist", "--json", "{out}/r.json"],
        "unknown dataset 'mnist'",
    ),
    "missing data folder (train)": (
        ["train", "--dataset", "fashion-mnist", "--data", "/nonexistent", "--width", "8", "--out", "{out}/m.pt"],
        "folder /nonexistent does not exist",
    ),
    "missing data folder (eval)": (
        [
            "eval",
            "{inputs}/fashion.pt",
            "--dataset",
            "fashion-mnist",
            "--data",
            "/nonexistent",
            "--json",
            "{out}/r.json",
        ],
        "folder /nonexistent does not exist",
    ),
    "missing checkpoint": (
        ["eval", "{out}/none.pt", "--dataset", "digits", "--json", "{out}/r.json"],
        "no checkpoint at",
    ),
    "corrupt checkpoint": (
        ["eval", "{inputs}/corrupt.pt", "--dataset", "digits", "--json", "{out}/r.json"],
        "not a readable checkpoint",
    ),
    "checkpoint missing a tensor": (
        ["eval", "{inputs}/missing-tensor.pt", "--dataset", "digits", "--json", "{out}/r.json"],
        'does not match its model config: .*Missing key.*"head.fc.weight"',
    ),
    "checkpoint with a reshaped tensor": (
        ["eval", "{inputs}/reshaped-tensor.pt", "--dataset", "digits", "--json", "{out}/r.json"],
        "does not match its model config: .*size mismatch for blocks.0.conv.weight",
    ),
    "corrupt teacher": (
        [*TRAIN_DIGITS, "--teacher", "{inputs}/corrupt.pt", "--out", "{out}/m.pt"],
        "corrupt.pt is not a readable checkpoint",
    ),
    "invalid combination": (
        ["train", "--model", "cnv", "--prelu", "insta", "--dataset", "cifar10", "--out", "{out}/m.pt"],
        "cnv has no PReLU",
    ),
    "input size too small (train)": (
        ["train", "--dataset", "fashion-mnist", "--input-size", "8", "--out", "{out}/m.pt"],
        "fashion-mnist images are 28x28 but the model takes 8x8",
    ),
    "input size too small (eval)": (
        ["eval", "{inputs}/digits.pt", "--dataset", "fashion-mnist", "--json", "{out}/r.json"],
        "fashion-mnist images are 28x28 but the model takes 8x8",
    ),
}


@pytest.mark.parametrize("argv, message", USER_ERRORS.values(), ids=USER_ERRORS.keys())
def test_user_error_is_one_line_and_status_2(inputs, tmp_path, capsys, argv, message):
    argv = [arg.format(inputs=inputs, out=tmp_path) for arg in argv]
    assert main(argv) == 2
    error_lines = capsys.readouterr().err.splitlines()
    assert len(error_lines) == 1, error_lines
    assert error_lines[0].startswith("instabnn-hw: error: ")
    assert re.search(message, error_lines[0])
    assert not list(tmp_path.iterdir()), "a failed command must leave no output behind"


@pytest.mark.parametrize(
    "argv, prefix",
    [
        (["eval", "x.pt", "--dataset", "digits", "--bogus"], "instabnn-hw: error: unrecognized arguments: --bogus"),
        (["bogus"], "instabnn-hw: error: argument COMMAND: invalid choice: 'bogus'"),
        (
            ["train", "--insta", "bogus", "--out", "m.pt"],
            "instabnn-hw train: error: argument --insta: invalid choice: 'bogus'",
        ),
        (
            ["train", "--epochs1", "two", "--out", "m.pt"],
            "instabnn-hw train: error: argument --epochs1: invalid int value",
        ),
    ],
    ids=["unknown option", "unknown command", "invalid choice", "not a number"],
)
def test_usage_error_is_one_line_and_status_2(capsys, argv, prefix):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error_lines = capsys.readouterr().err.splitlines()
    assert len(error_lines) == 1, error_lines
    assert error_lines[0].startswith(prefix)


def test_console_script_help():
    result = subprocess.run(
        [str(INSTABNN_HW), "--help"], env=subprocess_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: instabnn-hw")
    for command in ("models", "train", "eval"):
        assert command in result.stdout


def _commands() -> list[str]:
    (commands,) = (action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction))
    return list(commands.choices)


@pytest.mark.parametrize("command", _commands())
def test_command_help(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: instabnn-hw {command}")


def test_console_script_error_is_one_line(inputs, tmp_path):
    # In a real process nothing else (warnings, progress bars) may reach stderr either.
    records_path = tmp_path / "r.json"
    command = [str(INSTABNN_HW), "eval", str(inputs / "corrupt.pt"), "--dataset", "digits", "--json", str(records_path)]
    result = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"instabnn-hw: error: {inputs / 'corrupt.pt'} is not a readable checkpoint (UnpicklingError); "
        "re-create it with `instabnn-hw train`"
    ]
    assert not records_path.exists()
