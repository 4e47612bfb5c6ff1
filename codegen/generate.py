"""`instabnn-hw generate`: model -> integer IR -> folding plan -> Verilog, memories, manifest, report.

:func:`generate` is the whole compiler in one call. Everything is written into a temporary
folder beside the output, which replaces the output only when complete, so a failure never
leaves half a design. Every user error is a :class:`GenerateError` with a one-line message.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GenerateError", "GenerateOptions", "Design", "generate", "load_model", "write_design"]


class GenerateError(ValueError):
    """A bad option, model, checkpoint or target; the message is one line saying what to do."""


@dataclass(frozen=True)
class GenerateOptions:
    """The options of `instabnn-hw generate` (``None``: the model's or the tool's default)."""

    out: str
    model: str | None = None
    checkpoint: str | None = None
    insta: str | None = None
    prelu: str | None = None
    input_size: int | None = None
    width: int | None = None
    fps: float | None = None
    lut_budget: int | None = None
    fold_config: str | None = None
    clock_mhz: float = 100.0
    seed: int = 0


@dataclass(frozen=True)
class Design:
    """What :func:`generate` wrote: the folder, its manifest (as a dict) and the graph and plan."""

    out: Path
    manifest: dict
    graph: object
    plan: object
    seconds: float


def _positive(name: str, value, kind=float):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise GenerateError(f"{name} must be a positive number, not {value!r}")
    if kind is int and int(value) != value:
        raise GenerateError(f"{name} must be a whole number, not {value!r}")
    return kind(value)


def _check_options(options: GenerateOptions) -> None:
    if options.model is None and options.checkpoint is None:
        raise GenerateError("give --model NAME (seeded random weights) or --checkpoint FILE")
    _positive("--fps", options.fps)
    _positive("--lut-budget", options.lut_budget, int)
    _positive("--clock", options.clock_mhz)
    targets = [
        flag
        for flag, value in (
            ("--fps", options.fps),
            ("--lut-budget", options.lut_budget),
            ("--fold-config", options.fold_config),
        )
        if value is not None
    ]
    if len(targets) > 1:
        raise GenerateError(f"{' and '.join(targets)} are alternatives; give at most one")
    out = Path(options.out)
    if out.exists() and not out.is_dir():
        raise GenerateError(f"--out {out} is a file; give a folder to write the design into")


def load_model(options: GenerateOptions):
    """The model to compile: the checkpoint's (checked against the options) or a seeded random one.

    Returns ``(model, source)`` where ``source`` describes it for the manifest.
    """
    from instabnn_hw.quant.checkpoint import CheckpointError, load_checkpoint
    from instabnn_hw.quant.models import MODELS, ConfigError

    from .lower import random_model

    if options.checkpoint is not None:
        try:
            model = load_checkpoint(options.checkpoint)
        except CheckpointError as exc:
            raise GenerateError(str(exc)) from None
        config = model.config
        given = {
            "--model": (options.model, config.name),
            "--insta": (options.insta, config.insta),
            "--prelu": (options.prelu, config.prelu),
            "--input-size": (options.input_size, config.input_size),
            "--width": (options.width, config.width),
        }
        for flag, (value, stored) in given.items():
            if value is not None and value != stored:
                raise GenerateError(
                    f"the checkpoint {Path(options.checkpoint).name} holds {flag.lstrip('-')} {stored}, not {value}; "
                    f"leave {flag} out or pick a matching checkpoint"
                )
        digest = hashlib.sha256(Path(options.checkpoint).read_bytes()).hexdigest()
        source = {"kind": "checkpoint", "name": Path(options.checkpoint).name, "sha256": digest}
        return model, source, model.meta.get("dataset")
    if options.model not in MODELS:
        raise GenerateError(f"unknown model {options.model!r}; choose one of {', '.join(MODELS)}")
    kwargs = {
        key: value
        for key, value in (
            ("insta", options.insta),
            ("prelu", options.prelu),
            ("input_size", options.input_size),
            ("width", options.width),
        )
        if value is not None
    }
    try:
        model = random_model(options.model, seed=options.seed, **kwargs)
    except ConfigError as exc:
        raise GenerateError(str(exc)) from None
    source = {"kind": "random", "name": options.model, "seed": options.seed}
    return model, source, None


def _default_dataset(config) -> str | None:
    return {1: "fashion-mnist", 3: None}.get(config.in_channels)


class _Steps:
    """One line per step on stderr with its time: the progress display of the slow steps."""

    def __init__(self, total: int, enabled: bool, stream=None) -> None:
        self.total, self.enabled, self.stream = total, enabled, stream or sys.stderr
        self.count, self.started = 0, time.monotonic()

    def __call__(self, text: str) -> None:
        self.count += 1
        if self.enabled:
            elapsed = time.monotonic() - self.started
            print(f"[{self.count}/{self.total}] {elapsed:6.1f} s  {text}", file=self.stream, flush=True)


def _write_atomically(out: Path, write: Callable[[Path], None]) -> None:
    """Runs ``write(folder)`` on a fresh temporary folder beside ``out``, then puts it in ``out``'s place."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write(staging)
        os.chmod(staging, 0o777 & ~_umask())
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_design(out: Path, graph, design_plan, *, source: dict, preprocessing: dict, step=None) -> dict:
    """Writes the design folder ``out`` (atomically) for ``graph`` folded by ``design_plan``; returns the manifest.

    ``out`` gets rtl/ (Verilog, memory files), manifest.json, graph.npz (the IR,
    :func:`~.ir.save_graph`), plan.json (:func:`~.report.plan_json`), folding.json, report.md and
    cycles.png. ``step(text)`` is called before the two slow steps (progress lines).
    """
    from .emit import emit
    from .ir import save_graph
    from .plan import fold_config
    from .report import GRAPH_FILE, PLAN_FILE, cycles_chart, manifest, manifest_json, plan_json, report_markdown

    step = step or (lambda text: None)
    results: dict = {}

    def write(folder: Path) -> None:
        step("emitting Verilog and memory files")
        files = emit(graph, design_plan, folder / "rtl")
        relative = sorted(str(f.relative_to(folder)) for f in files)
        memories = [f for f in relative if f.endswith(".hex")]
        verilog = [f for f in relative if f.endswith(".v")]
        data = manifest(
            graph,
            design_plan,
            source=source,
            memory_files=memories,
            preprocessing=preprocessing,
            verilog_files=verilog,
        )
        step("writing manifest, graph, plan, report and chart")
        (folder / "manifest.json").write_text(manifest_json(data))
        save_graph(graph, folder / GRAPH_FILE)
        (folder / PLAN_FILE).write_text(plan_json(design_plan))
        (folder / "folding.json").write_text(json.dumps(fold_config(design_plan), indent=2) + "\n")
        (folder / "report.md").write_text(report_markdown(data))
        cycles_chart(data).save(folder / "cycles.png", format="PNG", optimize=False)
        results["manifest"] = data

    _write_atomically(Path(out), write)
    return results["manifest"]


def generate(options: GenerateOptions, *, progress: bool = True) -> Design:
    """Compiles a model into ``options.out`` (:func:`write_design`: rtl/, manifest.json, graph.npz, plan.json, ...).

    Raises
    ------
    GenerateError
        For any bad input (one line); nothing is written then.
    """
    from .lower import LoweringError, lower
    from .plan import PlanError, plan, read_fold_config

    started = time.monotonic()
    _check_options(options)
    step = _Steps(5, progress)
    step(f"model: {options.checkpoint or options.model}")
    model, source, dataset = load_model(options)
    step("lowering to the integer IR")
    try:
        graph = lower(model)
    except LoweringError as exc:
        raise GenerateError(str(exc)) from None
    step("planning the folding")
    try:
        fold = read_fold_config(options.fold_config, graph) if options.fold_config is not None else None
        design_plan = plan(
            graph, fps=options.fps, lut_budget=options.lut_budget, fold=fold, clock_mhz=options.clock_mhz
        )
    except PlanError as exc:
        raise GenerateError(str(exc)) from None
    config = model.config
    preprocessing = {
        "dataset": dataset or _default_dataset(config),
        "input_size": config.input_size,
        "pixels": "raw 8-bit pixels 0..255 (the hardware uses p - 128); smaller images zero-padded, centred",
    }
    data = write_design(Path(options.out), graph, design_plan, source=source, preprocessing=preprocessing, step=step)
    return Design(
        out=Path(options.out),
        manifest=data,
        graph=graph,
        plan=design_plan,
        seconds=time.monotonic() - started,
    )
