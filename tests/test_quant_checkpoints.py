"""The shipped checkpoints: present, documented, and as accurate as their records say."""

import json
import shlex

import pytest

from instabnn_hw.cli import build_parser
from instabnn_hw.quant.checkpoint import SHIPPED_DIR, load_checkpoint
from instabnn_hw.quant.data import load_dataset
from instabnn_hw.quant.train import evaluate

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
