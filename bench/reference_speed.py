"""Images per second of the numpy reference executor (the golden model) against the Brevitas model's.

Run: ``python bench/reference_speed.py [--images 64] [--threads 1]``.

For each model (the shipped resnet-tiny INSTA-Th checkpoint, CNV and ResNet-18 with seeded
weights) the same random 8-bit images go through the Brevitas model in eval mode without
gradients and through :func:`instabnn_hw.codegen.reference.run` over the lowered integer IR,
both as one batch. Writes ``bench/results/reference_speed.csv``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("BREVITAS_JIT", "0")

from results import machine_line, write_csv  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from instabnn_hw.codegen import reference  # noqa: E402
from instabnn_hw.codegen.lower import lower, random_model  # noqa: E402
from instabnn_hw.quant.checkpoint import load_checkpoint  # noqa: E402
from instabnn_hw.table import format_table  # noqa: E402

CHECKPOINTS = Path(__file__).resolve().parents[1] / "quant" / "checkpoints"
#: Model -> images per batch divisor (ResNet-18 at 224 x 224 is ~200 times the work of resnet-tiny).
MODELS = {"resnet-tiny": 1, "cnv": 4, "resnet18": 32}


def model_named(name: str) -> torch.nn.Module:
    if name == "resnet-tiny":
        return load_checkpoint(CHECKPOINTS / "resnet-tiny-th-fashion-mnist.pt")
    return random_model(name, insta="th", seed=0)


def best_seconds(repeats: int, function, *arguments) -> float:
    """The fastest of ``repeats`` calls of ``function(*arguments)`` after one untimed call."""
    function(*arguments)  # warm-up: allocations, torch's first-call paths
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        function(*arguments)
        seconds.append(time.perf_counter() - started)
    return min(seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="images per batch for resnet-tiny (default: 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed batches; the best counts (default: 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.images < 1 or args.repeats < 1:
        parser.error("--images and --repeats must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{machine_line()}; torch threads {torch.get_num_threads()}", flush=True)

    header = ["model", "input", "images", "Brevitas images/s", "reference images/s", "reference / Brevitas"]
    rows = []
    generator = np.random.default_rng(0)
    for name, divisor in MODELS.items():
        model = model_named(name).eval()
        graph = lower(model)
        count = max(1, args.images // divisor)
        pixels = generator.integers(0, 256, (count, *graph.input_shape))
        tensor = torch.from_numpy(pixels).float()
        with torch.no_grad():
            brevitas = count / best_seconds(args.repeats, model, tensor)
        golden = count / best_seconds(args.repeats, reference.run, graph, pixels)
        shape = "x".join(map(str, graph.input_shape))
        rows.append([name, shape, count, round(brevitas, 1), round(golden, 1), round(golden / brevitas, 2)])
        print(f"{name}: Brevitas {brevitas:,.1f}, reference {golden:,.1f} images/s", flush=True)

    print()
    print(format_table(header, [[str(c) for c in row] for row in rows], text_columns=2))
    print(f"wrote {write_csv('reference_speed.csv', header, rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
