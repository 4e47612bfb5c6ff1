"""What a simulation found: each image's verdict, the first difference, the run's figures and their summary.

:class:`SimResult` is what :func:`~instabnn_hw.sim.design.simulate_design` returns;
:func:`result_summary` is the text `instabnn-hw simulate` prints from it, measured figures side
by side with the manifest's estimate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..table import format_table

__all__ = ["Difference", "ImageResult", "SimResult", "result_summary"]


@dataclass(frozen=True)
class ImageResult:
    """One image: its ``label`` (or ``None``), the hardware's class (``None`` when it never came
    out), the reference's class, whether every output word was equal, and ``cycles`` from its
    first pixel accepted to its class leaving ``o`` (``None`` when it never came out)."""

    index: int
    label: int | None
    hw_class: int | None
    reference_class: int
    equal: bool
    cycles: int | None

    def record(self) -> dict:
        return {
            "index": self.index,
            "label": self.label,
            "hw_class": self.hw_class,
            "reference_class": self.reference_class,
            "equal": self.equal,
            "cycles": self.cycles,
        }


@dataclass(frozen=True)
class Difference:
    """Where hardware and reference first differ: ``layer`` (IR node name, as in the manifest) and
    its ``op``, the ``image``, ``channel`` and pixel ``(y, x)`` of the first differing element and
    both values. ``hardware`` is ``None`` when the layer produced too few words (``words`` says
    how many of ``expected_words`` of that image came); ``differing`` counts the differing
    elements of that layer and image."""

    layer: str
    op: str
    image: int
    channel: int | None
    y: int | None
    x: int | None
    hardware: int | None
    reference: int | None
    differing: int = 0
    words: int | None = None
    expected_words: int | None = None

    def describe(self) -> str:
        where = f"layer {self.layer} ({self.op}), image {self.image}"
        if self.hardware is None:
            return f"{where}: produced {self.words} of its {self.expected_words} words"
        return (
            f"{where}, channel {self.channel}, pixel (y={self.y}, x={self.x}): hardware {self.hardware}, "
            f"reference {self.reference} ({self.differing} elements of this layer differ)"
        )


@dataclass
class SimResult:
    """What :func:`simulate_design` measured and compared.

    Attributes
    ----------
    design : Path
    simulator : str
    seed : int
    images : list of ImageResult
    cycles_per_frame : float or None
        Steady-state cycles between two classes at full rate (the later half of the full-rate
        images); ``None`` with fewer than two full-rate images.
    input_cycles_per_frame : float or None
        The same between two frames' first pixels accepted.
    latency : int or None
        Cycles from the first pixel of the first image (design idle, full rate) to its class.
    estimate : dict
        The manifest's estimate (``cycles_per_frame``, ``latency_cycles``, ``fps``...).
    clock_mhz : float
    cycles : int
        Simulated cycles after the mid-frame reset.
    built : bool
        Whether this run built the design (``False``: the build was reused).
    build_seconds, run_seconds : float
    problems : list of str
        Stalls, extra outputs, a run that hit its cycle limit.
    difference : Difference or None
        The first difference (:func:`localise`) when an image failed and localisation ran.
    localised : bool
        Whether localisation ran.
    pre_reset : dict or None
        ``{"words": pixel words accepted, "outputs": output words}`` before the mid-frame reset.
    waves : Path or None
        The waveform file, with ``waves=True``.
    build_dir : Path
    """

    design: Path
    simulator: str
    seed: int
    images: list[ImageResult]
    cycles_per_frame: float | None
    input_cycles_per_frame: float | None
    latency: int | None
    estimate: dict
    clock_mhz: float
    cycles: int
    built: bool
    build_seconds: float
    run_seconds: float
    build_dir: Path
    problems: list[str] = field(default_factory=list)
    difference: Difference | None = None
    localised: bool = False
    waves: Path | None = None
    pre_reset: dict | None = None

    @property
    def passed(self) -> int:
        return sum(r.equal for r in self.images)

    @property
    def failed(self) -> int:
        return len(self.images) - self.passed

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.problems

    @property
    def cycles_per_second(self) -> float:
        return self.cycles / self.run_seconds if self.run_seconds > 0 else 0.0

    def accuracy(self, which: str = "hw") -> float | None:
        """Top-1 accuracy of the hardware (``"hw"``) or reference (``"reference"``) against the labels."""
        labelled = [r for r in self.images if r.label is not None]
        if not labelled:
            return None
        key = "hw_class" if which == "hw" else "reference_class"
        return sum(getattr(r, key) == r.label for r in labelled) / len(labelled)


def _number(value, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def result_summary(result: SimResult, *, source: str | None = None) -> str:
    """The text `instabnn-hw simulate` prints (without the final ``N passed, M failed`` line)."""
    e, clock = result.estimate, result.clock_mhz
    measured_fps = clock * 1e6 / result.cycles_per_frame if result.cycles_per_frame else None

    def ratio(measured, estimate):
        return f"{measured / estimate:.3f}" if measured and estimate else "-"

    rows = [
        (
            "cycles per frame",
            _number(result.cycles_per_frame, 1),
            _number(e.get("cycles_per_frame")),
            ratio(result.cycles_per_frame, e.get("cycles_per_frame")),
        ),
        (
            "latency (cycles)",
            _number(result.latency),
            _number(e.get("latency_cycles")),
            ratio(result.latency, e.get("latency_cycles")),
        ),
        (
            f"frames/s at {clock:g} MHz",
            _number(measured_fps, 1),
            _number(e.get("fps"), 1),
            ratio(measured_fps, e.get("fps")),
        ),
    ]
    build = f"{result.build_seconds:.1f} s" if result.built else "reused"
    lines = [
        f"design: {result.design} ({source or f'{len(result.images)} images'})",
        f"simulator: {result.simulator}, seed {result.seed}; {result.cycles:,} cycles in {result.run_seconds:.1f} s "
        f"({result.cycles_per_second:,.0f} cycles/s); build {build} in {result.build_dir}",
        "",
        format_table(("", "measured", "estimate", "ratio"), rows),
        "",
    ]
    hw, ref = result.accuracy("hw"), result.accuracy("reference")
    if hw is not None:
        labelled = sum(r.label is not None for r in result.images)
        lines.append(f"accuracy: hardware {hw:.3f}, reference {ref:.3f} ({labelled} labelled images)")
    failing = [r for r in result.images if not r.equal]
    for r in failing[:5]:
        if r.hw_class is None:
            what = f"no result came out (reference class {r.reference_class})"
        elif r.hw_class == r.reference_class:
            what = f"the logits differ (class {r.hw_class} on both)"
        else:
            what = f"hardware class {r.hw_class}, reference class {r.reference_class}"
        lines.append(f"mismatch: image {r.index}: {what}")
    if len(failing) > 5:
        lines.append(f"mismatch: ... and {len(failing) - 5} more images")
    lines += [f"problem: {p}" for p in result.problems]
    if result.difference is not None:
        lines.append(f"first difference: {result.difference.describe()}")
    elif result.localised:
        lines.append("first difference: not found in the layers' streams (see the outputs above)")
    if result.waves is not None:
        lines.append(f"waves: {result.waves}")
    return "\n".join(lines)
