"""``make demo``: the whole pipeline on the shipped INSTA-BNN checkpoint.

1. ``instabnn-hw generate --checkpoint <shipped resnet-tiny th>``: lowering to the integer IR,
   folding, Verilog and memory files in ``build/demo/design``;
2. ``instabnn-hw simulate`` of 20 Fashion-MNIST test images under Verilator (cocotb): every
   output compared with the reference, cycles per frame and latency measured;
3. a summary: accuracy, cycles per frame against the estimate, and the bit-exact verdict.

The Verilator build is kept in ``build/demo/sim`` and reused while the Verilog is unchanged.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

__all__ = ["main"]

#: The checkpoint the demo compiles (in ``quant/checkpoints``).
CHECKPOINT = "resnet-tiny-th-fashion-mnist.pt"
#: Test images simulated.
IMAGES = 20
#: Where the design and the simulator build go (``make clean`` removes ``build/``).
OUT = Path("build") / "demo"


def main() -> int:
    os.environ.setdefault("BREVITAS_JIT", "0")
    from instabnn_hw.codegen.generate import GenerateOptions, generate
    from instabnn_hw.quant.checkpoint import SHIPPED_DIR
    from instabnn_hw.sim.design import simulate_design
    from instabnn_hw.sim.folder import load_design
    from instabnn_hw.sim.images import design_images
    from instabnn_hw.sim.results import result_summary
    from instabnn_hw.table import format_table

    started = time.monotonic()

    def progress(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {text}", file=sys.stderr, flush=True)

    checkpoint = SHIPPED_DIR / CHECKPOINT
    folder = OUT / "design"
    print(f"1/2 generate: {checkpoint.name} -> {folder}", flush=True)
    made = generate(GenerateOptions(out=str(folder), checkpoint=str(checkpoint)))
    print(f"2/2 simulate: {IMAGES} Fashion-MNIST test images under Verilator", flush=True)
    design = load_design(folder)
    pixels, labels, source = design_images(design, IMAGES, seed=1)
    result = simulate_design(
        folder, pixels, labels, seed=1, build_dir=OUT / "sim" / "verilator", progress=progress, design=design
    )
    print()
    print(result_summary(result, source=source))
    estimate = made.manifest["estimate"]
    print()
    print(
        format_table(
            ("design", "LUT4 (est.)", "memory bits", "multipliers", "cycles/frame (sim)", "fps (est.)", "bit-exact"),
            [
                (
                    made.manifest["model"] + " " + made.manifest["insta"],
                    f"{estimate['luts']:,}",
                    f"{estimate['memory_bits']:,}",
                    f"{estimate['multipliers']:,}",
                    f"{result.cycles_per_frame:,.0f}" if result.cycles_per_frame else "-",
                    f"{estimate['fps']:,.0f}",
                    "yes" if result.ok else "NO",
                )
            ],
            text_columns=1,
        )
    )
    print(f"{result.passed} passed, {result.failed} failed")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
