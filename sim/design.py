"""Bit-exact simulation of a generated design (`instabnn-hw simulate`): build, stream, compare, localise.

:func:`simulate_design` takes a folder written by `instabnn-hw generate` (its ``rtl/*.v``, the
memory files, ``graph.npz`` and ``plan.json``; neither torch nor the model is needed), builds it
with Verilator (ccache; the build is kept in ``DIR/sim/<simulator>/`` and reused while the Verilog
is unchanged) or Icarus, and runs the cocotb testbench :mod:`instabnn_hw.sim.design_tb` on a
batch of images: a reset in the middle of a frame first, then the images, the first half at full
rate (measured cycles per frame and latency) and the rest with random valid gaps and random
back-pressure. The testbench records every ``o`` and ``logits`` word; here they are compared in
order with the reference executor's (:func:`instabnn_hw.codegen.reference.run`, fed the same raw
8-bit pixels).

When an image fails, :func:`localise` runs the same stimulus again with every IR node's output
stream tapped (the ``<node>__out`` streams of the generated Verilog, read through the
simulator's VPI) up to that image, and reports the first node in topological order whose words
differ from the reference's tensor, with the channel, pixel and both values.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..codegen import reference
from ..design_folder import TOP_NAME
from ..hw.layouts import tensor_to_words
from ..hw.payload import pack_words, unpack, unpack_words
from .folder import DesignFolder, SimulationError, check_build_dir, load_design, prepare_build_dir
from .images import check_image_count, check_seed, stream_payloads
from .results import Difference, ImageResult, SimResult
from .toolchain import SIMULATORS, build_cocotb, check_simulator, run_cocotb_tests

__all__ = ["localise", "simulate_design"]

TEST_MODULE = "instabnn_hw.sim.design_tb"
RESET_CYCLES = 3
#: At most this many whole frames of random pixels enter before the mid-frame reset.
JUNK_FRAMES = 4


def _hex(values: Sequence[int]) -> list[str]:
    return [format(v, "x") for v in values]


def _taps(design: DesignFolder, images: int) -> list[dict]:
    """The output stream of every node except the Argmax (the input as ``pixels``), up to ``images`` images."""
    return [
        {"name": name, "signal": tap.signal, "limit": tap.words_per_image * images}
        for name, tap in design.ports.taps.items()
    ]


class _Progress(threading.Thread):
    """Tails the testbench's progress file: one line per second at most, ``images done``."""

    def __init__(self, path: Path, total: int, report: Callable[[str], None]) -> None:
        super().__init__(daemon=True)
        self.path, self.total, self.report = path, total, report
        self.finished = threading.Event()
        self.shown = 0

    def run(self) -> None:
        started = time.monotonic()
        while not self.finished.wait(1.0):
            self.poll(started)
        self.poll(started)

    def poll(self, started: float) -> None:
        try:
            lines = self.path.read_text().split("\n")
        except OSError:
            return
        complete = [line for line in lines[:-1] if line]
        if complete and len(complete) > self.shown:
            self.shown = len(complete)
            done, cycle = complete[-1].split()
            elapsed = time.monotonic() - started
            self.report(f"simulated {done}/{self.total} images, {int(cycle):,} cycles, {elapsed:.1f} s")


def _build(design: DesignFolder, simulator: str, build_dir: Path, waves: bool, report) -> tuple[bool, float]:
    check_simulator(simulator)
    build_dir = Path(build_dir)
    prepare_build_dir(design, build_dir)
    report(f"building {design.path.name} with {simulator} in {build_dir}")
    started = time.monotonic()
    args = ["--trace-fst"] if waves and simulator == "verilator" else []
    try:
        built = build_cocotb(
            sources=design.sources,
            toplevel=TOP_NAME,
            build_dir=build_dir,
            simulator=simulator,
            build_args=args,
            waves=waves,
            reuse=True,
        )
    except RuntimeError as exc:
        raise SimulationError(str(exc).splitlines()[0] + f" (see {Path(build_dir) / 'build.log'})") from None
    seconds = time.monotonic() - started
    report(f"built in {seconds:.1f} s" if built else f"reused the build in {build_dir} (Verilog unchanged)")
    return built, seconds


def _run(design: DesignFolder, spec: dict, build_dir: Path, simulator: str, waves: bool, report) -> tuple[dict, float]:
    build_dir = Path(build_dir).resolve()
    spec_path, record_path = build_dir / "design_spec.json", build_dir / "design_record.json"
    progress_path = build_dir / "progress.txt"
    progress_path.write_text("")
    spec = dict(spec, progress=str(progress_path))
    spec_path.write_text(json.dumps(spec))
    record_path.unlink(missing_ok=True)
    env = {"INSTABNN_DESIGN_SPEC": str(spec_path), "INSTABNN_DESIGN_RECORD": str(record_path)}
    tail = _Progress(progress_path, spec["images"], report)
    tail.start()
    started = time.monotonic()
    try:
        run_cocotb_tests(
            toplevel=TOP_NAME,
            test_module=TEST_MODULE,
            build_dir=build_dir,
            simulator=simulator,
            extra_env=env,
            waves=waves,
        )
    except AssertionError:
        if not record_path.exists():
            raise SimulationError(
                f"the {simulator} simulation failed without a record; see {build_dir / 'test.log'}"
            ) from None
    finally:
        tail.finished.set()
        tail.join()
    return json.loads(record_path.read_text()), time.monotonic() - started


def _spec(design: DesignFolder, pixels: np.ndarray, trace, *, seed, valid_probability, ready_probability, full, reset):
    graph, ports = design.graph, design.ports
    words, _, logits = stream_payloads(graph, ports.logits.elements, pixels, trace)
    i_layout = ports.i.layout
    per_image = len(words) // len(pixels)
    estimate = design.estimate
    period = max(1, int(estimate.get("cycles_per_frame", 0)) or per_image)
    latency = max(period, int(estimate.get("latency_cycles", 0)))
    rng = random.Random(seed)
    junk = np.zeros((0, graph.input.channels), dtype=np.int64)
    if reset:
        # enough frames to have every stage busy (up to JUNK_FRAMES), then part of one more
        frames = min(JUNK_FRAMES, max(1, math.ceil(latency / period)))
        count = frames * per_image + (rng.randrange(1, per_image) if per_image > 1 else 0)
        junk = np.array([rng.randrange(256) for _ in range(count * graph.input.channels)]).reshape(count, -1)
    slowest = max(0.05, min(valid_probability, ready_probability))
    n = len(pixels)
    return {
        "seed": rng.randrange(1 << 30),
        "valid_probability": valid_probability,
        "ready_probability": ready_probability,
        "images": n,
        "full_rate_images": full,
        "words_per_image": per_image,
        "logits_words_per_image": len(logits) // n,
        "stimulus": _hex(pack_words(i_layout, np.array(words))),
        "junk": _hex(pack_words(i_layout, junk)) if reset else [],
        "reset_cycles": RESET_CYCLES,
        "idle_limit": 4 * (period + latency) + 1000,
        "max_cycles": int((n + 3) * period * 4 / slowest + 4 * latency + 10_000),
        "stop_after_image": None,
        "taps": [],
    }


def _steady(times: Sequence[int]) -> float | None:
    """Mean interval over the later half of ``times`` (``None`` for fewer than two)."""
    if len(times) < 2:
        return None
    start = (len(times) - 1) // 2 if len(times) >= 3 else 0
    return (times[-1] - times[start]) / (len(times) - 1 - start)


def simulate_design(
    path,
    pixels,
    labels=None,
    *,
    simulator: str = "verilator",
    seed: int | None = None,
    waves: bool = False,
    build_dir=None,
    valid_probability: float = 0.7,
    ready_probability: float = 0.6,
    full_rate_images: int | None = None,
    mid_frame_reset: bool = True,
    localise_failures: bool = True,
    progress: Callable[[str], None] | None = None,
    design: DesignFolder | None = None,
) -> SimResult:
    """Simulates the generated design in ``path`` on ``pixels`` and compares it with the reference.

    Parameters
    ----------
    path : str or Path
        A folder written by `instabnn-hw generate`.
    pixels : array (N, C, H, W)
        Raw 8-bit pixels 0..255 of the design's input shape (the reference gets the same).
    labels : sequence of int, optional
        For the accuracy.
    simulator : {"verilator", "icarus"}
    seed : int, optional
        Of the junk before the reset and of the flow control; default :func:`stimulus_seed`.
    waves : bool
        Record a waveform (Verilator FST ``dump.fst``; Icarus ``instabnn_top.fst``), in its own
        build folder.
    build_dir : str or Path, optional
        Default ``path/sim/<simulator>`` (``<simulator>-waves`` with ``waves``). The build is reused
        while the Verilog is unchanged; the memory files are read from ``path/rtl/mem`` at every run.
        Another folder must be new, empty or one simulate wrote (:func:`check_build_dir`).
    valid_probability, ready_probability : float
        Of the random flow control after the full-rate images.
    full_rate_images : int, optional
        Images streamed with valid and ready always high (the measurement); default half, rounded
        up, and at least two.
    mid_frame_reset : bool
        Reset in the middle of a frame (after more than a frame of random pixels) before the images.
    localise_failures : bool
        Run :func:`localise` on the first failing image.
    progress : callable, optional
        Called with a line of text at each step (build, run, every second of simulation).
    design : DesignFolder, optional
        ``path`` already loaded (:func:`load_design`).

    Raises
    ------
    SimulationError
        A folder that is not a generated design, pixels of the wrong shape or range, more images
        than memory holds, a seed out of range, a build folder that must not be written, a failed
        build (one line); all but the last before anything is simulated.
    SimulatorMissing
        When ``simulator`` is not installed.
    """
    report = progress or (lambda text: None)
    if simulator not in SIMULATORS:
        raise SimulationError(f"simulator must be one of {', '.join(SIMULATORS)}, not {simulator!r}")
    for name, p in (("valid_probability", valid_probability), ("ready_probability", ready_probability)):
        if not 0 < p <= 1:
            raise SimulationError(f"{name} must be in (0, 1], not {p!r}")
    design = design or load_design(path)
    try:
        pixels = reference.check_pixels(design.graph, pixels)
    except ValueError as exc:
        raise SimulationError(str(exc)) from None
    n = len(pixels)
    if n < 1:
        raise SimulationError("give at least one image")
    check_image_count(design, n)
    seed = check_seed(seed)
    # where it builds is checked before the (possibly long) reference run
    build_dir = check_build_dir(design, build_dir, simulator=simulator, waves=waves)
    if labels is not None:
        labels = [int(v) for v in labels]
        if len(labels) != n:
            raise SimulationError(f"{len(labels)} labels for {n} images")
    full = max(min(n, 2), math.ceil(n / 2)) if full_rate_images is None else full_rate_images
    if not 0 <= full <= n:
        raise SimulationError(f"full_rate_images must be in 0..{n}, not {full}")

    report(f"reference: {n} images")
    trace = reference.run(design.graph, pixels)
    built, build_seconds = _build(design, simulator, build_dir, waves, report)
    spec = _spec(
        design,
        pixels,
        trace,
        seed=seed,
        valid_probability=valid_probability,
        ready_probability=ready_probability,
        full=full,
        reset=mid_frame_reset,
    )
    report(f"simulating {n} images with {simulator} (seed {seed})")
    record, run_seconds = _run(design, spec, build_dir, simulator, waves, report)

    o_shape, logits_layout = design.ports.o.layout, design.ports.logits.layout
    per_logits = spec["logits_words_per_image"]
    expected_logits = trace.logits.reshape(n, -1)
    results = []
    for k in range(n):
        hw_class = cycles = None
        equal = False
        if k < len(record["o"]):
            cycle, payload = record["o"][k]
            got = unpack(o_shape, int(payload, 16))
            hw_class = int(got["index"])
            if k < len(record["first_accept"]):
                cycles = cycle - record["first_accept"][k]
            words = record["logits"][k * per_logits : (k + 1) * per_logits]
            if len(words) == per_logits:
                hw_logits = unpack_words(logits_layout, [int(w, 16) for _, w in words]).reshape(-1)
                equal = got == {
                    "index": int(trace.classes[k]),
                    "value": int(expected_logits[k, trace.classes[k]]),
                } and np.array_equal(hw_logits, expected_logits[k])
        results.append(
            ImageResult(
                index=k,
                label=None if labels is None else labels[k],
                hw_class=hw_class,
                reference_class=int(trace.classes[k]),
                equal=equal,
                cycles=cycles,
            )
        )
    problems = []
    if record["stop"] == "idle":
        problems.append(
            f"the design stalled: no stream moved for {spec['idle_limit']:,} cycles after {record['cycles']:,} "
            f"cycles ({len(record['o'])} of {n} classes out, {len(record['first_accept'])} images entered)"
        )
    elif record["stop"] == "max_cycles":
        problems.append(f"the run reached its limit of {spec['max_cycles']:,} cycles")
    for port, count in record["extra"].items():
        if count:
            problems.append(f"{count} words on {port} beyond the expected ones (from before the reset?)")
    problems += [f"stream protocol: {line}" for line in record["protocol"]]

    o_times = [cycle for cycle, _ in record["o"][:full]]
    accept_times = record["first_accept"][:full]
    latency = results[0].cycles if full >= 1 and results[0].cycles is not None else None
    result = SimResult(
        design=design.path,
        simulator=simulator,
        seed=seed,
        images=results,
        cycles_per_frame=_steady(o_times) if len(o_times) == full else None,
        input_cycles_per_frame=_steady(accept_times) if len(accept_times) == full else None,
        latency=latency,
        estimate=design.estimate,
        clock_mhz=float(design.manifest.get("clock_mhz", 100.0)),
        cycles=int(record["cycles"]),
        built=built,
        build_seconds=build_seconds,
        run_seconds=run_seconds,
        build_dir=build_dir,
        problems=problems,
        pre_reset=record["pre_reset"],
    )
    if waves:
        result.waves = build_dir / ("dump.fst" if simulator == "verilator" else f"{TOP_NAME}.fst")
    failing = [r.index for r in results if not r.equal]
    if failing and localise_failures:
        report(f"localising the first mismatch (image {failing[0]}): re-running with every layer's stream tapped")
        result.localised = True
        result.difference = localise(
            design, pixels, failing[0], spec=spec, build_dir=build_dir, simulator=simulator, trace=None
        )
    return result


def localise(
    design: DesignFolder,
    pixels: np.ndarray,
    image: int,
    *,
    spec: dict,
    build_dir: Path,
    simulator: str,
    trace=None,
) -> Difference | None:
    """Re-runs ``spec`` (the failing run's stimulus and flow control) with every node's output stream
    tapped until image ``image`` is out, and returns the first difference from the reference in
    topological order (``None`` when every tapped stream matched up to that image)."""
    graph = design.graph
    count = image + 1
    trace = reference.run(graph, pixels[:count], keep=True) if trace is None else trace
    tapped = dict(spec, stop_after_image=image, taps=_taps(design, count))
    record, _ = _run(design, tapped, Path(build_dir), simulator, False, lambda text: None)
    for node in graph.nodes[:-1]:
        t = graph.types[node.name]
        if node.name in record["missing_taps"]:
            continue
        tap = design.ports.taps[node.name]
        width, per_image = tap.elements, tap.words_per_image
        got = unpack_words(tap.layout, [int(w, 16) for w in record["taps"].get(node.name, [])])
        groups = t.channels // width
        for j in range(count):
            expected = tensor_to_words(trace.tensors[node.name][j], width)
            mine = got[j * per_image : (j + 1) * per_image]
            rows = min(len(mine), per_image)
            differs = np.nonzero(np.any(mine[:rows] != expected[:rows], axis=1))[0] if rows else np.array([], int)
            if len(differs):
                w = int(differs[0])
                e = int(np.nonzero(mine[w] != expected[w])[0][0])
                pixel, group = divmod(w, groups)
                return Difference(
                    layer=node.name,
                    op=node.op,
                    image=j,
                    channel=group * width + e,
                    y=pixel // t.width,
                    x=pixel % t.width,
                    hardware=int(mine[w][e]),
                    reference=int(expected[w][e]),
                    differing=int(np.count_nonzero(mine[:rows] != expected[:rows])),
                )
            if len(mine) < per_image:
                return Difference(
                    layer=node.name,
                    op=node.op,
                    image=j,
                    channel=None,
                    y=None,
                    x=None,
                    hardware=None,
                    reference=None,
                    words=len(mine),
                    expected_words=per_image,
                )
    # every tapped stream matched: the classifier's argmax (or the outputs after the taps)
    o_shape = design.ports.o.layout
    for j, (_, payload) in enumerate(record["o"][:count]):
        got = unpack(o_shape, int(payload, 16))
        if got["index"] != int(trace.classes[j]):
            node = graph.output
            return Difference(
                layer=node.name,
                op=node.op,
                image=j,
                channel=0,
                y=0,
                x=0,
                hardware=int(got["index"]),
                reference=int(trace.classes[j]),
                differing=1,
            )
    return None
