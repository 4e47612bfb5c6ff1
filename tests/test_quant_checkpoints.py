"""Checkpoints: the shipped ones are as accurate as their records say; crafted or edited ones are refused.

Loading never runs code from a file, and a damaged or edited checkpoint (or training state)
gives one ``CheckpointError`` line naming what is wrong.
"""

import contextlib
import dataclasses
import json
import math
import pickle
import shlex
import time
from pathlib import Path

import pytest
import torch

from instabnn_hw.cli import build_parser
from instabnn_hw.quant import train as train_module
from instabnn_hw.quant.checkpoint import (
    CHECKPOINT_FORMAT,
    SHIPPED_DIR,
    CheckpointError,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    shipped_checkpoints,
)
from instabnn_hw.quant.data import load_dataset
from instabnn_hw.quant.models import build_model
from instabnn_hw.quant.train import TrainOptions, evaluate

REQUIRED = [("resnet-tiny", "th"), ("resnet-tiny", "rsign")]


def _stem(model: str, insta: str) -> str:
    return f"{model}-{insta}-fashion-mnist"


@pytest.fixture(scope="module")
def fashion_mnist_test():
    return load_dataset("fashion-mnist", "test")


@pytest.mark.parametrize("name, insta", REQUIRED)
def test_shipped_checkpoint_reaches_88_percent_on_fashion_mnist(name, insta, fashion_mnist_test):
    stem = _stem(name, insta)
    model = load_checkpoint(SHIPPED_DIR / f"{stem}.pt")
    record = json.loads((SHIPPED_DIR / f"{stem}.json").read_text())
    assert (model.config.name, model.config.insta, record["dataset"]) == (name, insta, "fashion-mnist")
    assert model.config.binary_weights
    accuracy = evaluate(model, fashion_mnist_test)
    assert len(fashion_mnist_test) == 10_000
    assert accuracy >= 0.88
    assert accuracy == pytest.approx(record["test_accuracy"], abs=1e-12)


@pytest.mark.parametrize("name, insta", REQUIRED)
def test_record_holds_the_command_that_made_it(name, insta):
    stem = _stem(name, insta)
    record = json.loads((SHIPPED_DIR / f"{stem}.json").read_text())
    argv = shlex.split(record["command"])
    assert argv[:2] == ["instabnn-hw", "train"]
    args = build_parser().parse_args(argv[1:])
    assert args.out.endswith(f"{stem}.pt")
    assert (args.seed, args.epochs1, args.epochs2) == (record["seed"], record["epochs1"], record["epochs2"])
    assert record["test_images"] == 10_000


# --- loading is safe: crafted files run no code, edited ones give one clear line ---------------


def write_marker(path):
    """What a crafted pickle calls: proof, if the file exists afterwards, that loading ran code."""
    Path(path).write_text("the pickle ran code")


class RunsCodeWhenUnpickled:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return write_marker, (self.marker,)


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    """A checkpoint of a small real model, written by save_checkpoint."""
    torch.manual_seed(0)
    model = build_model("resnet-tiny", input_size=8, width=8)
    with torch.no_grad():
        # Brevitas puts the activation scales in the state dict only once they have seen data.
        model(torch.zeros(2, 1, 8, 8))
    path = tmp_path_factory.mktemp("checkpoint") / "small.pt"
    save_checkpoint(path, model.eval(), meta={"seed": 0})
    return path


def raw_checkpoint(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_one_line(error, fragment):
    message = str(error)
    assert "\n" not in message, message
    assert fragment in message, message


def crafted_files(marker):
    """Files that run ``write_marker(marker)`` when unpickled, by how they were written."""
    evil = RunsCodeWhenUnpickled(marker)
    return {
        "torch.save of the object": lambda path: torch.save(evil, path),
        "torch.save of a checkpoint holding it": lambda path: torch.save(
            {"format": CHECKPOINT_FORMAT, "config": "{}", "state_dict": {}, "meta": evil}, path
        ),
        "pickle.dump of the object": lambda path: path.write_bytes(pickle.dumps(evil)),
    }


@pytest.mark.parametrize("how", list(crafted_files("unused")))
def test_crafted_checkpoint_is_refused_without_running_its_code(tmp_path, how):
    marker = tmp_path / "marker"
    path = tmp_path / "crafted.pt"
    crafted_files(marker)[how](path)
    # An unrestricted load would run it:
    proof = tmp_path / "proof.pt"
    crafted_files(tmp_path / "proof")[how](proof)
    with contextlib.suppress(RuntimeError):  # a plain pickle runs, then fails torch's magic number check
        torch.load(proof, weights_only=False)
    assert (tmp_path / "proof").exists()

    for load in (read_checkpoint, load_checkpoint):
        with pytest.raises(CheckpointError) as caught:
            load(path)
        assert_one_line(caught.value, f"{path} is not a readable checkpoint (UnpicklingError)")
    assert not marker.exists()


def tiny_train_options(folder, **overrides) -> TrainOptions:
    options = dict(dataset="digits", out=str(folder / "run.pt"), epochs1=1, epochs2=1, batch_size=32, limit=64)
    options.update(overrides)
    return TrainOptions(**options)


def training_state(options, model) -> dict:
    """A state as train saves it after an epoch (the optimizer's and schedule's, empty)."""
    return {
        "options": json.dumps(dataclasses.asdict(options), sort_keys=True),
        "config": model.config.to_json(),
        "step": 1,
        "epoch": 1,
        "model": model.state_dict(),
        "scale_statistics": {},
        "optimizer": {},
        "schedule": {},
        "history": [],
    }


@pytest.mark.parametrize("how", list(crafted_files("unused")))
def test_crafted_resume_state_is_refused_without_running_its_code(tmp_path, how):
    options = tiny_train_options(tmp_path, resume=True)
    marker = tmp_path / "marker"
    crafted_files(marker)[how](Path(f"{options.out}.state.pt"))
    with pytest.raises(CheckpointError) as caught:
        train_module._resume_state(options, build_model("resnet-tiny", input_size=8, width=8).config)
    assert_one_line(caught.value, "cannot resume from")
    assert not marker.exists()


def _state_without(key):
    def edit(state):
        del state[key]
        return state

    return edit


RESUME_CASES = [
    # (id, edit of the saved state, fragment of the message)
    ("a checkpoint in its place", None, "not a training state of instabnn-hw train (it has no 'options' entry)"),
    ("a list", lambda state: [state], "not a training state of instabnn-hw train (it holds a list)"),
    ("no history", _state_without("history"), "(it has no 'history' entry)"),
    ("step as text", lambda state: {**state, "step": "1"}, "its 'step' is a str"),
    ("step 3", lambda state: {**state, "step": 3}, "it stopped at step 3, epoch 1"),
    ("options not JSON", lambda state: {**state, "options": "{"}, "damaged options or config"),
    ("options a list", lambda state: {**state, "options": "[1]"}, "its options are not a JSON object"),
    ("another seed", lambda state: {**state, "options": state["options"].replace('"seed": 0', '"seed": 5')}, "seed=5"),
    (
        "another width",
        lambda state: {**state, "config": state["config"].replace('"width": 8', '"width": 12')},
        "width=12",
    ),
    ("model a list", lambda state: {**state, "model": []}, "its 'model' is a list"),
    (
        "NaN weights",
        lambda state: {**state, "model": {**state["model"], "stem.conv.weight": torch.full((8, 1, 3, 3), math.nan)}},
        "it holds non-finite values in stem.conv.weight; delete it to start afresh",
    ),
    (
        "scale statistics",
        lambda state: {**state, "scale_statistics": {"stem": {"counter": "3"}}},
        "its scale statistics of 'stem' are damaged",
    ),
]


@pytest.mark.parametrize("edit, fragment", [case[1:] for case in RESUME_CASES], ids=[c[0] for c in RESUME_CASES])
def test_resume_from_what_is_not_this_runs_training_state_is_refused(tmp_path, small_checkpoint, edit, fragment):
    options = tiny_train_options(tmp_path, resume=True)
    model = load_checkpoint(small_checkpoint)
    state_path = Path(f"{options.out}.state.pt")
    torch.save(raw_checkpoint(small_checkpoint) if edit is None else edit(training_state(options, model)), state_path)
    with pytest.raises(CheckpointError) as caught:
        train_module._resume_state(options, model.config)
    assert_one_line(caught.value, f"cannot resume from {state_path}")
    assert_one_line(caught.value, fragment)


def test_resume_state_as_train_saves_it_is_accepted(tmp_path, small_checkpoint):
    options = tiny_train_options(tmp_path, resume=True)
    model = load_checkpoint(small_checkpoint)
    torch.save(training_state(options, model), f"{options.out}.state.pt")
    state = train_module._resume_state(options, model.config)
    assert state["step"] == 1 and state["model"].keys() == model.state_dict().keys()


def _edit_config(**changes):
    def edit(raw):
        config = json.loads(raw["config"])
        for key, value in changes.items():
            if value is _REMOVE:
                del config[key]
            else:
                config[key] = value
        raw["config"] = json.dumps(config)
        return raw

    return edit


def _set(key, value):
    def edit(raw):
        if value is _REMOVE:
            del raw[key]
        else:
            raw[key] = value
        return raw

    return edit


def _set_tensor(name, value):
    def edit(raw):
        tensor = raw["state_dict"].pop(name)
        if value is not _REMOVE:
            raw["state_dict"][name] = torch.full_like(tensor, value) if isinstance(value, float) else value
        return raw

    return edit


_REMOVE = object()

#: (id, edit of the saved dict, fragment of the message, whether read_checkpoint already refuses it)
EDITED_CHECKPOINTS = [
    ("act_bits as text", _edit_config(act_bits="8"), "damaged config: act_bits must be an integer, not '8'", True),
    ("width a bool", _edit_config(width=True), "width must be an integer, not True", True),
    ("width a float", _edit_config(width=8.0), "width must be an integer, not 8.0", True),
    ("input_size null", _edit_config(input_size=None), "input_size must be an integer, not None", True),
    ("binary_weights 1", _edit_config(binary_weights=1), "binary_weights must be true or false, not 1", True),
    ("stats as text", _edit_config(stats="m3"), "stats must be a list of statistic names, not 'm3'", True),
    ("insta_stages of bools", _edit_config(insta_stages=[True]), "insta stages must be a list of stage numbers", True),
    ("grad a number", _edit_config(grad=1), "grad must be a string, not 1", True),
    ("name a list", _edit_config(name=["cnv"]), "unknown model ['cnv']", True),
    ("unknown model", _edit_config(name="vgg"), "unknown model 'vgg'", True),
    ("unknown field", _edit_config(colour="red"), "unknown model config keys ['colour']", True),
    ("missing field", _edit_config(grad=_REMOVE), "the model config lacks the keys ['grad']", True),
    ("width 0", _edit_config(width=0), "width must be a positive integer, not 0", True),
    ("act_bits 64", _edit_config(act_bits=64), "act_bits must be in 2..16, not 64", True),
    ("input_size 30", _edit_config(input_size=30), "divisible by 4", True),
    ("width 10**6", _edit_config(width=10**6), "resnet-tiny with width 1000000 needs about", True),
    ("input_size 10**6", _edit_config(input_size=10**6), "resnet-tiny with input_size 1000000 needs about", True),
    (
        "config a JSON array",
        _set("config", "[1, 2]"),
        "a model config is a JSON object of its fields, not a JSON array",
        True,
    ),
    ("config not JSON", _set("config", '{"name": '), "damaged config: config is not JSON (Expecting value", True),
    ("config nested too deep", _set("config", "[" * 100_000), "damaged config: config is not JSON", True),
    ("config a dict", _set("config", {"name": "cnv"}), "config must be JSON text, not a dict", True),
    ("config missing", _set("config", _REMOVE), "damaged config: there is no config entry", True),
    (
        "state_dict a list",
        _set("state_dict", []),
        "holds a list as its state_dict, not a dict of tensors; the checkpoint is damaged",
        True,
    ),
    ("state_dict a string", _set("state_dict", "weights"), "holds a str as its state_dict, not a dict", True),
    ("state_dict missing", _set("state_dict", _REMOVE), "has no state_dict entry", True),
    (
        "a list as a tensor",
        _set_tensor("stem.conv.weight", [1.0]),
        "holds a list as stem.conv.weight in its state_dict, not a dense",
        True,
    ),
    (
        "a sparse tensor",
        _set_tensor("stem.bn.bias", torch.eye(8).to_sparse()),
        "holds a torch.sparse_coo tensor as stem.bn.bias",
        True,
    ),
    (
        "NaN weights",
        _set_tensor("blocks.0.conv.weight", math.nan),
        "holds non-finite values in blocks.0.conv.weight; the checkpoint is damaged (re-train it)",
        True,
    ),
    (
        "infinite mean",
        _set_tensor("stem.bn.running_mean", math.inf),
        "holds non-finite values in stem.bn.running_mean",
        True,
    ),
    ("wrong shape", _set_tensor("stem.conv.weight", torch.zeros(8, 1, 5, 5)), "does not match its model config", False),
    ("missing tensor", _set_tensor("head.fc.weight", _REMOVE), 'Missing key(s) in state_dict: "head.fc.weight"', False),
    ("meta a JSON array", _set("meta", "[1, 2]"), "meta must be a JSON object, not a JSON array", True),
    ("meta null", _set("meta", "null"), "damaged metadata: meta must be a JSON object, not a JSON null", True),
    ("meta not JSON", _set("meta", "{"), "damaged metadata: meta is not JSON", True),
    ("meta not text", _set("meta", None), "damaged metadata: meta must be JSON text, not a NoneType", True),
    ("format missing", _set("format", _REMOVE), f"(format {CHECKPOINT_FORMAT} expected, it has no format)", True),
    ("another format", _set("format", "instabnn-hw/0"), "its format is 'instabnn-hw/0'", True),
    ("a list", lambda raw: [raw], "it holds a list", True),
]


@pytest.mark.parametrize(
    "edit, fragment, read_refuses", [case[1:] for case in EDITED_CHECKPOINTS], ids=[c[0] for c in EDITED_CHECKPOINTS]
)
def test_edited_checkpoint_gives_one_clear_line(tmp_path, small_checkpoint, edit, fragment, read_refuses):
    path = tmp_path / "edited.pt"
    torch.save(edit(raw_checkpoint(small_checkpoint)), path)
    loaders = (read_checkpoint, load_checkpoint) if read_refuses else (load_checkpoint,)
    for load in loaders:
        started = time.perf_counter()
        with pytest.raises(CheckpointError) as caught:
            load(path)
        assert time.perf_counter() - started < 1.0, "refusing a checkpoint must not build (or allocate) its model"
        assert_one_line(caught.value, str(path))
        assert_one_line(caught.value, fragment)


def test_checkpoint_without_meta_loads_with_empty_meta(tmp_path, small_checkpoint):
    path = tmp_path / "no-meta.pt"
    torch.save(_set("meta", _REMOVE)(raw_checkpoint(small_checkpoint)), path)
    assert load_checkpoint(path).meta == {}
    assert load_checkpoint(small_checkpoint).meta == {"seed": 0}


@pytest.mark.parametrize("path", shipped_checkpoints(), ids=lambda path: path.name)
def test_shipped_checkpoints_pass_every_check(path):
    config, state_dict, meta = read_checkpoint(path)
    assert load_checkpoint(path).config == config
    assert meta["dataset"] == "fashion-mnist"
