"""CPU speed of training and inference, on synthetic pixels (no dataset needed).

Measures:

- ``resnet-tiny`` (1x28x28, the Fashion-MNIST shape, width 16, INSTA-Th): the time of one
  training step (forward, cross-entropy, backward, Adam) at batch 128 for the step-1 model
  (real weights) and the step-2 model (binary weights), and evaluation throughput at batch
  256 in eval mode without gradients;
- ``resnet18`` (3x224x224, INSTA-Th): forward latency of one image in eval mode.

Usage::

    BREVITAS_JIT=0 .venv/bin/python bench/train_speed.py --steps 20 --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("BREVITAS_JIT", "0")

import torch  # noqa: E402  (after BREVITAS_JIT, which Brevitas reads on import)
import torch.nn.functional as F  # noqa: E402
from results import cpu_model  # noqa: E402

from instabnn_hw.quant.models import build_model, model_from_config  # noqa: E402
from instabnn_hw.table import format_table  # noqa: E402

WARMUP = 3


def random_pixels(batch: int, channels: int, size: int) -> torch.Tensor:
    """8-bit pixels as the datasets hand them out: integer-valued floats 0..255."""
    return torch.randint(0, 256, (batch, channels, size, size)).float()


def timed(run: Callable[[], object], repeats: int, warmup: int = WARMUP) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``run`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return seconds


def end_statistics_collection(model: torch.nn.Module, pixels: torch.Tensor) -> None:
    """Puts the model in the state of a run past its first few hundred steps.

    Brevitas's activation scales average input statistics over their first 300 training
    steps, a slower path than the learned scale that follows; loading a state dict ends the
    collection, so the steps timed are those of the bulk of a real run.
    """
    with torch.no_grad():
        model.train()(pixels[:2])
    model.load_state_dict(model.state_dict())


def train_step_seconds(model: torch.nn.Module, steps: int, batch: int = 128) -> list[float]:
    pixels = random_pixels(batch, model.config.in_channels, model.config.input_size)
    labels = torch.randint(0, model.config.num_classes, (batch,))
    end_statistics_collection(model, pixels)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)

    def step() -> None:
        loss = F.cross_entropy(model(pixels), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return timed(step, steps)


def eval_batch_seconds(model: torch.nn.Module, batches: int, batch: int = 256) -> list[float]:
    pixels = random_pixels(batch, model.config.in_channels, model.config.input_size)
    end_statistics_collection(model, pixels)
    model.eval()
    with torch.no_grad():
        return timed(lambda: model(pixels), batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed training steps and eval batches (default: 20)")
    parser.add_argument("--repeats", type=int, default=5, help="timed resnet18 forward passes (default: 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    print(
        f"torch {torch.__version__}; threads: {torch.get_num_threads()}; "
        f"CPU: {cpu_model()} ({os.cpu_count()} logical cores)"
    )
    print(f"load average {os.getloadavg()[0]:.2f}; warm-up {WARMUP}, then {args.steps} steps / {args.repeats} repeats")

    tiny = build_model("resnet-tiny", insta="th", width=16, input_size=28, in_channels=1, num_classes=10).config
    step1 = model_from_config(dataclasses.replace(tiny, binary_weights=False))
    step2 = model_from_config(tiny)
    resnet18 = build_model("resnet18", insta="th")

    rows = []
    for label, seconds in (
        ("resnet-tiny step-1 train step (batch 128)", train_step_seconds(step1, args.steps)),
        ("resnet-tiny step-2 train step (batch 128)", train_step_seconds(step2, args.steps)),
    ):
        rows.append((label, "ms", f"{1e3 * statistics.mean(seconds):.1f}", f"{1e3 * min(seconds):.1f}"))
    seconds = eval_batch_seconds(step2, args.steps)
    rows.append(
        (
            "resnet-tiny eval (batch 256)",
            "images/s",
            f"{256 / statistics.mean(seconds):,.0f}",
            f"{256 / min(seconds):,.0f}",
        )
    )
    seconds = eval_batch_seconds(resnet18, args.repeats, batch=1)
    rows.append(
        (
            "resnet18 224x224 forward (batch 1)",
            "ms",
            f"{1e3 * statistics.mean(seconds):.1f}",
            f"{1e3 * min(seconds):.1f}",
        )
    )

    print(format_table(("measurement", "unit", "mean", "best"), rows, text_columns=2))


if __name__ == "__main__":
    main()
