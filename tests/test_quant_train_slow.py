"""Training to accuracy on real data (slow: a few minutes per variant on 2 cores)."""

import pytest

from instabnn_hw.quant.checkpoint import load_checkpoint
from instabnn_hw.quant.data import load_dataset
from instabnn_hw.quant.models import build_model
from instabnn_hw.quant.train import TrainOptions, evaluate, train

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("insta", ["rsign", "th"])
def test_two_step_training_learns_fashion_mnist(tmp_path, insta):
    config = build_model("resnet-tiny", insta=insta).config
    out = tmp_path / f"{insta}.pt"
    meta = train(
        config,
        TrainOptions(dataset="fashion-mnist", out=str(out), epochs1=1, epochs2=1, test_limit=2_000, seed=3),
        progress=False,
    )
    assert [(r["step"], r["epoch"]) for r in meta["history"]] == [(1, 1), (2, 1)]
    model = load_checkpoint(out)
    accuracy = evaluate(model, load_dataset("fashion-mnist", "test", limit=2_000))
    assert accuracy == meta["test_accuracy"]
    assert accuracy >= 0.84
