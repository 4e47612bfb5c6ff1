"""``make demo``: evaluates the shipped checkpoints on their test sets and prints a table.

Each checkpoint is named ``<model>-<insta>-<dataset>.pt``; its JSON record beside it says
how it was trained and what accuracy training measured, which this run must reproduce.
"""

from __future__ import annotations

import os
import sys
import time

__all__ = ["main"]


def main() -> int:
    os.environ.setdefault("BREVITAS_JIT", "0")
    from instabnn_hw.quant.checkpoint import SHIPPED_DIR, load_checkpoint, shipped_checkpoints
    from instabnn_hw.quant.data import load_dataset
    from instabnn_hw.quant.summary import summarize
    from instabnn_hw.quant.train import evaluate
    from instabnn_hw.table import format_table

    paths = shipped_checkpoints()
    if not paths:
        print(f"demo: no checkpoints in {SHIPPED_DIR}", file=sys.stderr)
        return 1
    header = ("checkpoint", "insta", "prelu", "parameters", "binary ops", "images", "accuracy", "recorded", "seconds")
    rows = []
    for path in paths:
        model = load_checkpoint(path)
        dataset = model.meta["dataset"]
        print(f"evaluating {path.name} on the {dataset} test set ...", flush=True)
        started = time.monotonic()
        test_set = load_dataset(dataset, "test", input_size=model.config.input_size)
        accuracy = evaluate(model, test_set)
        summary = summarize(model)
        rows.append(
            (
                path.stem,
                model.config.insta,
                str(model.config.prelu),
                f"{summary.parameters:,}",
                f"{summary.binary_ops:,}",
                f"{len(test_set):,}",
                f"{accuracy:.4f}",
                f"{model.meta['test_accuracy']:.4f}",
                f"{time.monotonic() - started:.1f}",
            )
        )
    print()
    print(format_table(header, rows, text_columns=3))
    mismatched = [row[0] for row in rows if row[6] != row[7]]
    if mismatched:
        print(f"demo: accuracy differs from the training record for {', '.join(mismatched)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
