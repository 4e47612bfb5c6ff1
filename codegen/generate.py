"""`instabnn-hw generate`: model -> integer IR -> folding plan -> Verilog, memories, manifest, report.

:func:`generate` is the whole compiler in one call. The output folder must be new or a design
that generate wrote (:func:`design_owner`; ``force`` replaces anything else but a protected
folder); everything is written into a staging folder beside it, which replaces it only when
complete (:func:`instabnn_hw.files.staged_folder`), so a failure never leaves half a design and
a kill never corrupts the previous one. Every user error is a :class:`GenerateError` with a
one-line message.
"""

from __future__ import annotations

import hashlib
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..design_folder import DESIGN_FILES, design_owner, write_design
from ..errors import MAX_SEED, OptionError, UserError, check_number
from ..files import UnsafePathError, check_output_folder

__all__ = [
    "GenerateError",
    "GenerateOptions",
    "Design",
    "check_design_folder",
    "generate",
    "load_model",
]


class GenerateError(UserError, ValueError):
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
    device: str | None = None
    board: str | None = None
    seed: int | None = None
    force: bool = False


@dataclass(frozen=True)
class Design:
    """What :func:`generate` wrote: the folder, its manifest (as a dict), the graph and plan;
    ``replaced`` whether it replaced an existing folder, and ``dropped`` what that folder held
    besides a design (simulate's and build's folders, with ``force`` anything else; folders end in ``/``)."""

    out: Path
    manifest: dict
    graph: object
    plan: object
    seconds: float
    replaced: bool = False
    dropped: tuple[str, ...] = ()


def check_design_folder(out, *, force: bool = False, label: str | None = None) -> Path:
    """``out`` as an absolute path, checked to be writable as a design folder (:func:`design_owner`).

    Raises
    ------
    GenerateError
        When ``out`` must not be written (one line).
    """
    try:
        label = label or f"--out {shlex.quote(str(out))}"
        return check_output_folder(out, label=label, owner=design_owner, force=force)
    except UnsafePathError as exc:
        raise GenerateError(str(exc)) from None


def _target_device(options: GenerateOptions):
    """The :class:`~instabnn_hw.hw.build.Device` of ``--device`` / ``--board`` (``None``: neither given).

    Raises
    ------
    GenerateError
        An unknown device or board, or a board that carries another device.
    """
    from instabnn_hw.hw.devices import DeviceError, board_device, device_named

    try:
        device = device_named(options.device) if options.device is not None else None
        on_board = board_device(options.board) if options.board is not None else None
    except DeviceError as exc:
        raise GenerateError(str(exc)) from None
    if device is not None and on_board is not None and device != on_board:
        raise GenerateError(
            f"board {options.board} carries a {on_board.name}, not {device.name}: drop --device or --board"
        )
    return device or on_board


def _capacity(device):
    from instabnn_hw.hw.devices import PLANNED_LUT_SHARE, bigger_devices

    from .plan import Capacity

    return Capacity(
        name=device.name,
        luts=int(device.luts * PLANNED_LUT_SHARE),
        memory_bits=device.memory_bits,
        multipliers=device.dsp or None,  # none: the HX parts build products from logic
        bigger=tuple(bigger_devices(device)),
    )


def _pins_checker(device):
    """``check_ports`` of :func:`write_design` without a board: the ports are ``device``'s pins."""

    def check(ports) -> None:
        if ports.pins > device.io:
            raise GenerateError(
                f"the design's ports need {ports.pins:,} I/O pins but {device.name} has {device.io}: "
                "generate with --board (a UART top) for the build"
            )

    return check


def _check_options(options: GenerateOptions) -> Path:
    """Checks every option before the model is loaded; returns the output folder."""
    from .plan import check_targets

    _target_device(options)

    if options.model is None and options.checkpoint is None:
        raise GenerateError("give --model NAME (seeded random weights) or --checkpoint FILE")
    check_number("seed", options.seed, integer=True, low=0, high=MAX_SEED, optional=True)
    if options.checkpoint is not None and options.seed is not None:
        raise OptionError("seed", "seeds random weights; a checkpoint brings its own: leave it out")
    check_targets(fps=options.fps, lut_budget=options.lut_budget, fold=options.fold_config, clock_mhz=options.clock_mhz)
    return check_design_folder(options.out, force=options.force)


def load_model(options: GenerateOptions):
    """The model to compile: the checkpoint's (checked against the options) or a seeded random one.

    Returns ``(model, source)`` where ``source`` describes it for the manifest.
    """
    from instabnn_hw.quant.checkpoint import CheckpointError, load_checkpoint
    from instabnn_hw.quant.config import MODELS, ConfigError

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
    seed = 0 if options.seed is None else options.seed
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
        model = random_model(options.model, seed=seed, **kwargs)
    except ConfigError as exc:
        raise GenerateError(str(exc)) from None
    source = {"kind": "random", "name": options.model, "seed": seed}
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


def generate(options: GenerateOptions, *, progress: bool = True) -> Design:
    """Compiles a model into ``options.out`` (:func:`write_design`: rtl/, manifest.json, graph.npz, plan.json, ...).

    Raises
    ------
    GenerateError
        For any bad input (one line); nothing is written then.
    """
    from .fold_config import read_fold_config
    from .lower import LoweringError, lower
    from .plan import PlanError, plan

    started = time.monotonic()
    out = _check_options(options)
    step = _Steps(5, progress)
    step(f"model: {options.checkpoint or options.model}")
    model, source, dataset = load_model(options)
    step("lowering to the integer IR")
    try:
        graph = lower(model)
    except LoweringError as exc:
        raise GenerateError(str(exc)) from None
    device = _target_device(options)
    step("planning the folding" + (f" for {device.name}" if device else ""))
    try:
        fold = read_fold_config(options.fold_config, graph) if options.fold_config is not None else None
        design_plan = plan(
            graph,
            fps=options.fps,
            lut_budget=options.lut_budget,
            fold=fold,
            clock_mhz=options.clock_mhz,
            capacity=_capacity(device) if device else None,
        )
    except PlanError as exc:
        raise GenerateError(f"{graph.model}: {exc}" if device else str(exc)) from None
    config = model.config
    preprocessing = {
        "dataset": dataset or _default_dataset(config),
        "input_size": config.input_size,
        "pixels": "raw 8-bit pixels 0..255 (the hardware uses p - 128); smaller images zero-padded, centred",
    }
    # checked again: the folder may have changed during the minutes of lowering and planning
    out = check_design_folder(options.out, force=options.force)
    replaced = out.is_dir() and any(out.iterdir())
    dropped = (
        tuple(sorted(p.name + "/" * p.is_dir() for p in out.iterdir() if p.name not in DESIGN_FILES))
        if replaced
        else ()
    )
    target = None
    if device is not None:
        target = {"device": device.name, **({"board": options.board} if options.board else {})}
    data = write_design(
        out,
        graph,
        design_plan,
        source=source,
        preprocessing=preprocessing,
        target=target,
        check_ports=_pins_checker(device) if device and not options.board else None,
        step=step,
    )
    return Design(
        out=Path(options.out),
        manifest=data,
        graph=graph,
        plan=design_plan,
        seconds=time.monotonic() - started,
        replaced=replaced,
        dropped=dropped,
    )
