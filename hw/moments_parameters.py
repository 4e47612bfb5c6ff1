"""The parameters of :class:`~.moments.MomentsThreshold` (INSTA-Th / INSTA-Th+), without the unit.

:class:`MomentsThresholdParameters` validates them and gives the unit's widths, its evaluator
program, timing and cost (:class:`~.figures.Figures`), and its numpy reference from :mod:`.insta`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from amaranth.hdl import Shape

from ._checks import check_choice, check_flag, check_int, check_int_array, check_shape
from .dsp import constant_product_blocks
from .figures import Figures, FrameParameters
from .fixed import bounds, shape_for
from .insta import (
    MAX_SHIFT,
    MODES,
    binarise,
    check_shifts,
    check_stats,
    feature_bounds,
    moment_sums,
    polynomial_bounds,
    statistic_features,
    sum_bounds,
    sums_needed,
    th_thresholds,
    thplus_thresholds,
)
from .intervals import array_bounds, hull, iadd, imul, iscale, isquare, prefix_bounds, shape_of
from .multiplier import MUL_LATENCY, registered_product_blocks
from .se_mlp import SeMlpParameters
from .tiles import read_latency, tile_luts

__all__ = ["MomentsThresholdParameters"]


class MomentsThresholdParameters(FrameParameters):
    """The parameters of a :class:`~.moments.MomentsThreshold` and the figures derived from them."""

    lut_kind = "moments"

    def __init__(
        self,
        *,
        in_shape,
        channels: int,
        simd: int,
        height: int,
        width: int,
        stats: Sequence[str] = ("m3",),
        shifts: Sequence[int] = (0,),
        mode: str = "th",
        alpha=None,
        beta=None,
        out_shift: int = 0,
        w1=None,
        b1=None,
        hidden_shift: int | None = None,
        hidden_max: int | None = None,
        w2=None,
        parallel: int = 1,
        emit_stats: bool = False,
    ) -> None:
        self._in_shape = check_shape("in_shape", in_shape, max_width=32)
        self._check_frame(channels, simd, height, width)
        self._stats = check_stats(stats)
        self._shifts = check_shifts("shifts", shifts, len(self._stats))
        self._mode = check_choice("mode", mode, MODES)
        self._emit_stats = check_flag("emit_stats", emit_stats)
        self._parallel = check_int("parallel", parallel)
        self._out_shift = check_int("out_shift", out_shift, low=0, high=MAX_SHIFT)
        C, ns = self._channels, len(self._stats)
        if alpha is None:
            raise TypeError("alpha is required (an array of one integer per channel)")
        self._alpha = check_int_array("alpha", alpha, shape=(C,))
        pixels = self._height * self._width
        x_low, x_high = bounds(self._in_shape)
        self._low, self._high = x_low, x_high + 1
        self._threshold_shape = shape_for(self._low, self._high)

        # widths, from the bounds of in_shape
        self._sums = sums_needed(self._stats)
        sums_range = sum_bounds(self._in_shape, pixels)
        self._sum_shapes = {k: shape_for(*sums_range[k]) for k in self._sums}
        x = bounds(self._in_shape)
        self._square_shape = shape_for(*isquare(x))
        self._cube_shape = shape_for(x[0] ** 3, x[1] ** 3)
        self._feature_bounds = feature_bounds(self._in_shape, pixels, self._stats, self._shifts)
        self._polys = polynomial_bounds(self._in_shape, pixels, self._stats)
        self._feature_shape = shape_of(*self._feature_bounds)
        self._q_bounds = isquare(sums_range[1])
        self._r_bounds = iadd(iscale(2, self._q_bounds), iscale(-3 * pixels, sums_range[2]))

        self._program = self._feature_program()
        if self._mode == "th":
            if any(v is not None for v in (w1, b1, hidden_shift, hidden_max, w2)):
                raise ValueError("w1, b1, hidden_shift, hidden_max and w2 are only used in mode 'th+'")
            if beta is None:
                raise TypeError("mode 'th' needs beta, an array of shape (channels, len(stats))")
            self._beta = check_int_array("beta", beta, shape=(C, ns))
            self._mlp = None
            mlp_cycles = 0
        else:
            if beta is not None:
                raise ValueError("beta is only used in mode 'th'")
            self._mlp = SeMlpParameters(
                owner="mode 'th+'",
                stats_channels=C,
                n_stats=ns,
                outputs=C,
                feature_shape=self._feature_shape,
                feature_bounds=self._feature_bounds,
                w1=w1,
                b1=b1,
                hidden_shift=hidden_shift,
                hidden_max=hidden_max,
                w2=w2,
                parallel=self._parallel,
            )
            mlp_cycles = self._mlp.cycles + 2
        # start cycle, the channels, (th+) the MLP and the two cycles to its last threshold (the
        # output beside its alpha, their sum), then the last threshold's register
        self._eval_cycles = 1 + C * len(self._program) + mlp_cycles + 1

    def _feature_program(self) -> list[list[str]]:
        """Per-channel steps of the evaluator: a list scheduler over the one shared multiplier.

        Step 0 latches the channel's sums. A multiplication is issued (operands presented to the
        shared :func:`~.multiplier.registered_product`) in one step and committed
        :data:`~.multiplier.MUL_LATENCY` steps after the issue; at most one issue per step, in this
        order: ``sq`` (``q = S1 * S1``), the ``beta . F`` multiply-accumulates (``macJ``, ``"th"``
        only) of the statistics other than ``skew``, ``sk`` (``p = N**2*S3 + S1 * r``, the skew
        polynomial in Horner form, after ``r = 2q - 3N*S2``), then ``skew``'s. The last step (``w``)
        writes the threshold (``"th"``) or the features (``"th+"``) once every value it needs is
        committed.
        """
        names, th = self._stats, self._mode == "th"
        steps: dict[int, list[str]] = {0: ["load"]}
        ready = {"s": 1}  # the step from which each value can be read
        ops = [("sq", ["s"], "q")] if {"var", "skew"} & set(names) else []
        if th:
            ops += [(f"mac{j}", ["s", "q"] if n == "var" else ["s"], "acc") for j, n in enumerate(names) if n != "skew"]
        if "skew" in names:
            ops.append(("sk", ["s", "r"], "p"))
            if th:
                ops.append((f"mac{names.index('skew')}", ["p"], "acc"))
        t = 1
        for name, needs, dest in ops:
            if name == "sk":  # r, without the multiplier, as soon as q is there
                steps.setdefault(ready["q"], []).append("r")
                ready["r"] = ready["q"] + 1
            t = max([t] + [ready[n] for n in needs])
            steps.setdefault(t, []).append(f"issue:{name}")
            steps.setdefault(t + MUL_LATENCY, []).append(f"commit:{name}")
            ready[dest] = t + MUL_LATENCY + 1
            t += 1
        last = max(ready.values())
        steps.setdefault(last, []).append("w")
        return [steps.get(k, []) for k in range(last + 1)]

    def _accumulator_bounds(self) -> tuple[int, int]:
        """``"th"``: bounds of ``alpha_c + beta_c . F_c`` and of its partial sums, over every channel."""
        ns = len(self._stats)
        terms = [
            [imul((int(self._beta[c, j]),) * 2, self._feature_bounds[j]) for j in range(ns)]
            for c in range(self._channels)
        ]
        return hull(
            *(
                prefix_bounds([t[0] for t in row], [t[1] for t in row], (int(self._alpha[c]),) * 2)
                for c, row in enumerate(terms)
            )
        )

    @property
    def in_shape(self) -> Shape:
        return self._in_shape

    @property
    def statistics(self) -> tuple[str, ...]:
        """The ``stats`` names (the member ``stats`` is the stream)."""
        return self._stats

    @property
    def shifts(self) -> tuple[int, ...]:
        return self._shifts

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def emit_stats(self) -> bool:
        return self._emit_stats

    @property
    def parallel(self) -> int:
        return self._parallel

    @property
    def feature_shape(self) -> Shape:
        """Element shape of the features (covers every statistic's :func:`~.insta.feature_bounds`)."""
        return self._feature_shape

    @property
    def feature_bounds(self) -> list[tuple[int, int]]:
        return list(self._feature_bounds)

    @property
    def threshold_bounds(self) -> tuple[int, int]:
        """``(low, high)`` the thresholds are clamped to: the input minimum and maximum + 1."""
        return self._low, self._high

    @property
    def threshold_shape(self) -> Shape:
        return self._threshold_shape

    @property
    def sum_shapes(self) -> dict[int, Shape]:
        """Accumulator shape of each sum ``S_k`` kept (``k`` in 1, 2, 3)."""
        return dict(self._sum_shapes)

    @property
    def steps_per_channel(self) -> int:
        """Evaluator cycles per channel of the feature (and, for ``"th"``, threshold) phase."""
        return len(self._program)

    @property
    def eval_cycles(self) -> int:
        """Exact cycles the evaluator is busy per frame (no back-pressure on ``stats``)."""
        return self._eval_cycles

    @property
    def eval_gap(self) -> int:
        """Cycles the evaluator rests after each frame: the round trip from its end through the
        reader, the writer and its :attr:`writer_stages` to its next start, which makes
        ``max(frame_words, eval_cycles + eval_gap)`` the exact steady-state frame period."""
        return self.writer_stages + 1

    @property
    def cycles_per_frame(self) -> int:
        """Steady-state cycles per frame at full rate: ``max(frame_words, eval_cycles + eval_gap)``."""
        return max(self.frame_words, self._eval_cycles + self.eval_gap)

    @property
    def writer_stages(self) -> int:
        """Registers from a taken word to its sums' write: its lanes' square (and cube, a product
        of the square) take :data:`~.multiplier.MUL_LATENCY` each; at least 3 (the sums' read,
        its register, then the write)."""
        products = 2 if 3 in self._sums else 1 if 2 in self._sums else 0
        return max(3, 1 + products * MUL_LATENCY)

    @property
    def latency(self) -> int:
        """Cycles from an idle unit taking a frame's first word to emitting its first word, at full rate."""
        return self.frame_words + self._eval_cycles + self.writer_stages + self.reader_stages

    @property
    def frame_read_latency(self) -> int:
        """Enabled edges of a frame buffer read: 3 when the buffer is tiled over block RAMs in
        depth (:func:`~.tiles.read_latency`), else 1."""
        return read_latency(2 * self.frame_words, self._simd * self._in_shape.width)

    @property
    def reader_stages(self) -> int:
        """Registers from the reader's fetch to the output: the frame buffer's read
        (:attr:`frame_read_latency`), its words registered before the comparison, the output register."""
        return self.frame_read_latency + 2

    @property
    def memory_bits(self) -> int:
        """Bits of RAM and ROM: frame buffer, sums, thresholds, constants (and the MLP's)."""
        S, G, F, C = self._simd, self.groups, self.frame_words, self._channels
        lane = sum(s.width for s in self._sum_shapes.values())
        bits = 2 * F * S * self._in_shape.width + 2 * G * S * lane + 2 * G * S * self._threshold_shape.width
        bits += C * shape_of(array_bounds(self._alpha)).width
        if self._mode == "th":
            bits += C * len(self._stats) * shape_of(array_bounds(self._beta)).width
        else:
            bits += self._mlp.memory_bits
        return bits

    def _shared_operand_bounds(self) -> dict[str, tuple[tuple[int, int], tuple[int, int]]]:
        """The operand ranges ``(a, b)`` of each operation on the evaluator's shared multiplier, in
        the order its operand multiplexers take them."""
        actions = {action for step in self._program for action in step}
        s1 = bounds(self._sum_shapes[1]) if 1 in self._sum_shapes else None
        operands = {}
        if "issue:sq" in actions:
            operands["sq"] = (s1, s1)
        if "skew" in self._stats:
            operands["sk"] = (s1, self._r_bounds)
        if self._mode == "th":
            for j in range(len(self._stats)):
                operands[f"mac{j}"] = (array_bounds(self._beta), self._feature_bounds[j])
        return operands

    @property
    def multipliers(self) -> int:
        """MULT18X18D blocks (:mod:`.dsp`): each lane's square and / or cube for the sums, the
        evaluator's shared multiplier, its products by the constants ``N``, ``3N`` and ``N**2``
        (none where those are powers of two) and the INSTA-Th+ MLP's."""
        x, pixels, sums = self._in_shape, self._height * self._width, self._sums
        lane = registered_product_blocks(x, x) if 2 in sums or 3 in sums else 0
        lane += registered_product_blocks(self._square_shape, x) if 3 in sums else 0
        blocks = self._simd * lane
        shared = self._shared_operand_bounds()
        if shared:
            blocks += registered_product_blocks(
                shape_of(*(a for a, _ in shared.values())), shape_of(*(b for _, b in shared.values()))
            )
        if "var" in self._stats:
            blocks += constant_product_blocks(self._sum_shapes[2], pixels)
        if "skew" in self._stats:
            blocks += constant_product_blocks(self._sum_shapes[2], 3 * pixels)
            blocks += constant_product_blocks(self._sum_shapes[3], pixels * pixels)
        return blocks + (self._mlp.multipliers if self._mode == "th+" else 0)

    @property
    def luts(self) -> int:
        """LUT4 equivalents by the LUT model, and the tiles' pick of the frame buffer."""
        return super().luts + tile_luts(2 * self.frame_words, self._simd * self._in_shape.width)

    def lut_features(self) -> tuple[float, ...]:
        lane = sum(s.width for s in self._sum_shapes.values())
        return (
            1.0,
            float(self._simd * self._in_shape.width),
            float(self._simd * lane),
            float(self._feature_shape.width * len(self._stats) + self._threshold_shape.width),
            *(self._mlp.lut_features() if self._mode == "th+" else (0.0, 0.0)),
        )

    def figures(self, words: int) -> Figures:
        """The unit's own frame; ``post`` leaves out the frame it waits for before its first word."""
        latency = self.latency
        return Figures(
            self.cycles_per_frame, latency, latency - self.frame_words, self.luts, self.memory_bits, self.multipliers
        )

    def reference(self, frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(bits, thresholds, features)`` of one ``C x H x W`` frame, from :mod:`.insta`'s numpy functions."""
        pixels = self._height * self._width
        features = statistic_features(moment_sums(frame), pixels=pixels, stats=self._stats, shifts=self._shifts)
        if self._mode == "th":
            t = th_thresholds(
                features, alpha=self._alpha, beta=self._beta, out_shift=self._out_shift, low=self._low, high=self._high
            )
        else:
            t = thplus_thresholds(
                features,
                **self._mlp.constants,
                alpha=self._alpha,
                out_shift=self._out_shift,
                low=self._low,
                high=self._high,
            )
        return binarise(frame, t), t, features
