"""Accuracy study: resnet-tiny on Fashion-MNIST with each threshold variant, several seeds.

Run: ``python bench/accuracy.py [--epochs1 1] [--epochs2 1] [--seeds 0,1,2] [--jobs 2]``.

Every variant gets the same recipe (``instabnn-hw train --model resnet-tiny --dataset
fashion-mnist``, the same epochs, batch, learning rate and seeds), one thread per run and
``--jobs`` runs at once: static sign (``none``), ReActNet's learnable threshold (``rsign``),
INSTA-Th (``th``), INSTA-Th+ (``th+``) and INSTA-Th with INSTA-PReLU (``th-insta-prelu``). The
score is the test accuracy on all 10,000 test images after the second (binary-weight) step.

Checkpoints go under ``build/bench/accuracy/``; a run whose record is already there with the same
epochs is reused, so an interrupted study resumes. Writes ``bench/results/accuracy_runs.csv``
(one line per run), ``accuracy.csv`` (mean and standard deviation per variant) and
``accuracy.png``. One epoch of the 60,000 training images takes about 3 minutes on one core.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from results import WORK, machine_line, save_figure, write_csv

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from instabnn_hw.table import format_table  # noqa: E402

#: Variant name -> its `instabnn-hw train` options.
VARIANTS: dict[str, list[str]] = {
    "none": ["--insta", "none"],
    "rsign": ["--insta", "rsign"],
    "th": ["--insta", "th"],
    "th+": ["--insta", "th+"],
    "th-insta-prelu": ["--insta", "th", "--prelu", "insta"],
}


def checkpoint_path(variant: str, seed: int) -> Path:
    return WORK / "accuracy" / f"{variant}-seed{seed}.pt"


def finished_record(variant: str, seed: int, epochs: tuple[int, int]) -> dict | None:
    """The training record of a finished run with these epochs, or ``None``."""
    path = checkpoint_path(variant, seed).with_suffix(".json")
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    return record if (record["epochs1"], record["epochs2"]) == epochs else None


def train(variant: str, seed: int, epochs: tuple[int, int]) -> dict:
    """Trains one run in its own process (or reuses a finished one); returns its record."""
    record = finished_record(variant, seed, epochs)
    if record is None:
        out = checkpoint_path(variant, seed)
        out.parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "instabnn_hw",
            "train",
            "--model",
            "resnet-tiny",
            *VARIANTS[variant],
            "--dataset",
            "fashion-mnist",
            "--epochs1",
            str(epochs[0]),
            "--epochs2",
            str(epochs[1]),
            "--seed",
            str(seed),
            "--threads",
            "1",
            "--no-progress",
            "--out",
            str(out),
        ]
        print(f"[{time.strftime('%H:%M:%S')}] {variant} seed {seed}: training", flush=True)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        record = finished_record(variant, seed, epochs)
    print(
        f"[{time.strftime('%H:%M:%S')}] {variant} seed {seed}: test accuracy {record['test_accuracy']:.4f} "
        f"({record['train_seconds']:.0f} s)",
        flush=True,
    )
    return record


def summarise(runs: dict[tuple[str, int], dict]) -> dict[str, tuple[float, float, list[float]]]:
    """Variant -> (mean, sample standard deviation, accuracies by seed)."""
    by_variant: dict[str, list[float]] = {}
    for (variant, _), record in runs.items():
        by_variant.setdefault(variant, []).append(record["test_accuracy"])
    return {
        variant: (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0, values)
        for variant, values in by_variant.items()
    }


def verdict(summary: dict) -> str:
    """Plainly, per INSTA variant: its mean gap to RSign and whether the runs overlap RSign's."""
    if "rsign" not in summary:
        return "rsign was not trained: no comparison"
    base_mean, _, base_values = summary["rsign"]
    lines = []
    for variant in ("th", "th+", "th-insta-prelu"):
        if variant not in summary:
            continue
        mean, _, values = summary[variant]
        if min(values) > max(base_values):
            outcome = "beats rsign: every run above rsign's best"
        elif max(values) < min(base_values):
            outcome = "loses to rsign: every run below rsign's worst"
        else:
            outcome = "overlaps rsign: runs on both sides of rsign's"
        lines.append(f"{variant} {outcome} ({100 * (mean - base_mean):+.2f} points on the mean of {len(values)} seeds)")
    return "\n".join(lines)


def plot(summary: dict, epochs: tuple[int, int]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    figure, axis = plt.subplots(figsize=(7, 4))
    for i, name in enumerate(names):
        mean, std, values = summary[name]
        axis.errorbar(i, 100 * mean, yerr=100 * std, fmt="o", color="tab:blue", capsize=6, markersize=8)
        axis.scatter([i + 0.12] * len(values), [100 * v for v in values], color="tab:gray", s=14, zorder=3)
    axis.set_xticks(range(len(names)), names)
    axis.set_ylabel("test accuracy %")
    axis.set_title(f"resnet-tiny, Fashion-MNIST, {epochs[0]} + {epochs[1]} epochs: mean and std over seeds (dots)")
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated (default: all)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated (default: 0,1,2)")
    parser.add_argument("--epochs1", type=int, default=1, help="epochs of step 1, real weights (default: 1)")
    parser.add_argument("--epochs2", type=int, default=1, help="epochs of step 2, binary weights (default: 1)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once, one thread each (default: 2)")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds must be comma-separated whole numbers, not {args.seeds!r}")
    if min(args.epochs1, args.epochs2, args.jobs) < 1:
        parser.error("--epochs1, --epochs2 and --jobs must be >= 1")
    epochs = (args.epochs1, args.epochs2)

    print(machine_line(), flush=True)
    # seeds outermost: with fewer jobs than runs, every variant gets its first seed early
    keys = [(variant, seed) for seed in seeds for variant in variants]
    with ThreadPoolExecutor(args.jobs) as pool:
        records = dict(zip(keys, pool.map(lambda key: train(*key, epochs), keys), strict=True))

    run_header = ["variant", "seed", "epochs1", "epochs2", "test accuracy", "train seconds"]
    run_rows = [
        [variant, seed, *epochs, record["test_accuracy"], round(record["train_seconds"])]
        for variant in variants
        for seed in seeds
        for record in [records[variant, seed]]
    ]
    write_csv("accuracy_runs.csv", run_header, run_rows)
    summary = summarise(records)
    header = ["variant", "runs", "mean %", "std %", "min %", "max %"]
    rows = [
        [name, len(values), *(round(100 * v, 2) for v in (mean, std, min(values), max(values)))]
        for name, (mean, std, values) in summary.items()
    ]
    print()
    print(
        format_table(
            header,
            [[c if isinstance(c, str) else str(c) if isinstance(c, int) else f"{c:.2f}" for c in r] for r in rows],
        )
    )
    print()
    print(verdict(summary))
    print(f"wrote {write_csv('accuracy.csv', header, rows)}")
    print(f"wrote {save_figure(plot(summary, epochs), 'accuracy.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
