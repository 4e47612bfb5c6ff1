"""INSTA-PReLU in hardware: RPReLU whose shift (and optionally slope) the block input's statistics set per image.

:class:`InstaPReLU` implements :func:`~.insta.insta_prelu` bit for bit;
:class:`InstaPReLUParameters` validates its parameters and gives its widths, timing and cost
without building it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ._checks import check_flag, check_int, check_int_array, check_shape
from .affine import RPRELU_STAGES, rprelu_bounds, rprelu_datapath
from .banks import bank_bits, constant_memory, counter, ram_ports
from .figures import Figures, FrameParameters
from .fixed import bounds, hdl_round_shift, round_shift, shape_for
from .insta import MAX_SHIFT, check_stats, insta_prelu
from .intervals import array_bounds, hull, iadd, shape_of
from .layouts import channel_word
from .multiplier import MUL_LATENCY, product_latency, registered_product_blocks
from .options import ExternalModules
from .se_mlp import SeMlp, SeMlpParameters

__all__ = ["InstaPReLU", "InstaPReLUParameters"]


class InstaPReLUParameters(FrameParameters):
    """The parameters of an :class:`InstaPReLU` and the figures derived from them."""

    lut_kind = "insta_prelu"

    def __init__(
        self,
        *,
        in_shape,
        channels: int,
        simd: int,
        height: int,
        width: int,
        stats_channels: int,
        stats: Sequence[str],
        feature_shape,
        w1,
        b1,
        hidden_shift: int,
        hidden_max: int,
        w2,
        delta_shift: int,
        gamma,
        slope,
        zeta,
        slope_shift: int,
        out_shift: int,
        low: int,
        high: int,
        instance_slope: bool = False,
        parallel: int = 1,
    ) -> None:
        self._in_shape = check_shape("in_shape", in_shape, max_width=32)
        self._check_frame(channels, simd, height, width)
        self._stats_channels = check_int("stats_channels", stats_channels)
        self._stats = check_stats(stats)
        self._feature_shape = check_shape("feature_shape", feature_shape, max_width=256)
        self._instance_slope = check_flag("instance_slope", instance_slope)
        C, ns = self._channels, len(self._stats)
        self._mlp = SeMlpParameters(
            owner="InstaPReLU",
            stats_channels=self._stats_channels,
            n_stats=ns,
            outputs=C * (2 if self._instance_slope else 1),
            feature_shape=self._feature_shape,
            feature_bounds=[bounds(self._feature_shape)] * ns,
            w1=w1,
            b1=b1,
            hidden_shift=hidden_shift,
            hidden_max=hidden_max,
            w2=w2,
            parallel=parallel,
        )
        self._delta_shift = check_int("delta_shift", delta_shift, low=0, high=MAX_SHIFT)
        self._gamma = check_int_array("gamma", gamma, shape=(C,))
        self._slope = check_int_array("slope", slope, shape=(C,))
        self._zeta = check_int_array("zeta", zeta, shape=(C,))
        self._slope_shift = check_int("slope_shift", slope_shift, low=0, high=32)
        self._out_shift = check_int("out_shift", out_shift, low=0, high=MAX_SHIFT)
        self._low = check_int("low", low, low=None)
        self._high = check_int("high", high, low=None)
        if self._low > self._high:
            raise ValueError(f"low ({self._low}) must be <= high ({self._high})")
        self._out_shape = shape_for(self._low, self._high)
        if self._out_shape.width > 64:
            raise ValueError(f"[low, high] must fit in 64 bits, not [{self._low}, {self._high}]")

        # widths of the per-element datapath
        ds = self._delta_shift
        deltas = [(round_shift(lo, ds), round_shift(hi, ds)) for lo, hi in self._mlp.out_bounds]
        self._base = np.concatenate([self._gamma, self._slope]) if self._instance_slope else self._gamma
        eff = [iadd((int(b),) * 2, d) for b, d in zip(self._base, deltas, strict=True)]
        self._gamma_bounds = hull(*eff[:C])
        self._slope_bounds = hull(*eff[C:]) if self._instance_slope else array_bounds(self._slope)
        self._mlp_cycles = self._mlp.cycles + 2

    @property
    def in_shape(self) -> Shape:
        return self._in_shape

    @property
    def out_shape(self) -> Shape:
        """Element shape of the output: ``shape_for(low, high)``."""
        return self._out_shape

    @property
    def feature_shape(self) -> Shape:
        """Element shape of the features in a ``stats`` word."""
        return self._feature_shape

    @property
    def stats_channels(self) -> int:
        return self._stats_channels

    @property
    def statistics(self) -> tuple[str, ...]:
        """The ``stats`` names (the member ``stats`` is the stream)."""
        return self._stats

    @property
    def instance_slope(self) -> bool:
        return self._instance_slope

    @property
    def parallel(self) -> int:
        return self._mlp.parallel

    @property
    def mlp_cycles(self) -> int:
        """Exact cycles from the MLP's start to its last parameter write, per frame."""
        return self._mlp_cycles

    @property
    def cycles_per_frame(self) -> int:
        """Steady-state cycles per frame at full rate: ``max(frame_words, stats_channels + mlp_cycles)``."""
        return max(self.frame_words, self._stats_channels + self._mlp_cycles)

    @property
    def latency(self) -> int:
        """Cycles from an idle unit taking a frame's first stats word to its first output word (data waiting)."""
        return self._stats_channels + self._mlp_cycles + 1 + self._datapath_latency

    @property
    def memory_bits(self) -> int:
        """Bits of RAM and ROM: parameter banks, constants and the MLP's features and weights."""
        S, G, C = self._simd, self.groups, self._channels
        gamma_w = shape_of(self._gamma_bounds).width
        slope_w = shape_of(self._slope_bounds).width
        bits = 2 * G * S * gamma_w + C * shape_of(array_bounds(self._zeta)).width
        bits += 2 * G * S * slope_w if self._instance_slope else C * slope_w
        bits += len(self._base) * shape_of(array_bounds(self._base)).width
        return bits + self._mlp.memory_bits

    @property
    def multipliers(self) -> int:
        """MULT18X18D blocks (:func:`~.multiplier.registered_product_blocks`): each lane's
        negative-slope product (none when ``u`` cannot be negative) and the MLP's."""
        lane = self._lane_product()
        return self._simd * (registered_product_blocks(*lane) if lane else 0) + self._mlp.multipliers

    @property
    def _mul_latency(self) -> int:
        """Cycles of every lane's product (and of the branch beside it where there is none)."""
        lane = self._lane_product()
        return product_latency(*lane) if lane else MUL_LATENCY

    @property
    def _datapath_latency(self) -> int:
        """Registers of :func:`~.affine.rprelu_datapath` in every lane: its stages and its product's."""
        return RPRELU_STAGES + self._mul_latency

    def _lane_product(self) -> tuple[Shape, Shape] | None:
        """Operand shapes of each lane's negative-slope product ``u * slope``; ``None`` when ``u``
        cannot be negative (no product)."""
        r = rprelu_bounds(
            bounds(self._in_shape),
            self._gamma_bounds,
            self._slope_bounds,
            array_bounds(self._zeta),
            slope_shift=self._slope_shift,
            out_shift=self._out_shift,
        )
        return (shape_for(*r["u"]), shape_of(self._slope_bounds)) if r["u"][0] < 0 else None

    def reference(self, frame, features) -> np.ndarray:
        """:func:`~.insta.insta_prelu` of one ``C x H x W`` frame with these constants."""
        return insta_prelu(
            frame,
            features,
            **self._mlp.constants,
            delta_shift=self._delta_shift,
            gamma=self._gamma,
            slope=self._slope,
            zeta=self._zeta,
            slope_shift=self._slope_shift,
            out_shift=self._out_shift,
            low=self._low,
            high=self._high,
            instance_slope=self._instance_slope,
        )

    def lut_features(self) -> tuple[float, ...]:
        s = self._simd
        return (1.0, float(s * self._in_shape.width), float(s * self._out_shape.width), float(self._mlp.parallel))

    def figures(self, words: int) -> Figures:
        """The unit's own frame; ``post`` leaves out the statistics and the MLP it waits for."""
        latency = self.latency
        post = latency - self._stats_channels - self._mlp_cycles
        return Figures(self.cycles_per_frame, latency, post, self.luts, self.memory_bits, self.multipliers)


class InstaPReLU(InstaPReLUParameters, ExternalModules, wiring.Component):
    """INSTA-PReLU: RPReLU whose shift (and optionally slope) comes per image from the block input's statistics.

    Per frame: the ``stats_channels`` feature words of the block input arrive on ``stats``
    (the ``stats`` output of a :class:`~.moments.MomentsThreshold`, or the words of
    :func:`~.insta.statistic_features` transposed); the SE MLP (:func:`~.insta.se_mlp`, ``parallel``
    multiply-accumulates per cycle) turns them into ``gamma_eff`` (and ``slope_eff``), written
    into one half of a double-buffered parameter memory; then the frame's channel words pass
    through the per-element RPReLU datapath (:func:`~.affine.rprelu`) with those parameters.
    The MLP of frame n+1 runs while frame n streams through.

    Timing (full rate, no back-pressure): the MLP takes ``mlp_cycles = ceil(hidden / parallel)
    * (len(stats) * stats_channels + outputs) + 5`` cycles (``outputs`` = C, or 2C with
    ``instance_slope``) from its start to its last parameter write; the statistics memory is
    single-buffered, so the next frame's statistics are taken after that, and a frame takes
    ``cycles_per_frame = max(frame_words, stats_channels + mlp_cycles)`` cycles in steady state
    and ``initiation_interval`` is 1 when ``stats_channels + mlp_cycles <= frame_words``. The
    datapath is a parameter fetch and :func:`~.affine.rprelu_datapath` (its
    :data:`~.affine.RPRELU_STAGES` and its product's cycles); an idle unit whose data is waiting
    emits the first word :attr:`latency` cycles after taking the first statistics word.

    Parameters
    ----------
    in_shape : shape
        Integer element shape of ``x`` (the block output), up to 32 bits.
    channels, simd, height, width : int
        Geometry ``C x H x W`` of ``x``; ``simd`` (dividing C) channels per word.
    stats_channels : int
        Channels of the block input (one ``stats`` word each per frame).
    stats : sequence of str
        The statistics in each ``stats`` word, distinct names from :data:`~.insta.STATISTICS`.
    feature_shape : shape
        Element shape of the ``stats`` words (a :class:`~.moments.MomentsThreshold`'s ``feature_shape``).
    w1, b1, hidden_shift, hidden_max, w2 : arrays and ints
        The SE branch (:func:`~.insta.se_mlp`): ``w1`` is ``(hidden, len(stats) * stats_channels)``,
        ``w2`` is ``(C, hidden)``, or ``(2C, hidden)`` with ``instance_slope``.
    delta_shift : int
        Rounding shift of the MLP outputs before they are added to ``gamma`` / ``slope``.
    gamma, slope, zeta : arrays of C ints
        RPReLU constants (see :func:`~.affine.rprelu`).
    slope_shift, out_shift, low, high : int
        RPReLU scale, output rounding shift and output clamp; the output elements have shape
        ``shape_for(low, high)``.
    instance_slope : bool
        The MLP also corrects the slope.
    parallel : int
        Multiply-accumulates per cycle of the MLP, 1 to ``hidden``.
    external_modules : bool
        Make every read/write memory (the gamma / slope banks, the MLP's features) a
        :class:`~.ram.Ram` instance of the Verilog module, for Verilog output; ``False``
        (default): inline, for Amaranth's simulator. The constant ROMs stay inline.

    Members
    -------
    i : In(stream.Signature(channel_word(in_shape, simd)))
    stats : In(stream.Signature(data.ArrayLayout(feature_shape, len(stats))))
    o : Out(stream.Signature(channel_word(shape_for(low, high), simd)))
    """

    def __init__(self, *, external_modules: bool = False, **params) -> None:
        super().__init__(**params)
        self._set_external_modules(external_modules)
        wiring.Component.__init__(
            self,
            {
                "i": In(stream.Signature(channel_word(self._in_shape, self._simd))),
                "stats": In(stream.Signature(data.ArrayLayout(self._feature_shape, len(self._stats)))),
                "o": Out(stream.Signature(channel_word(self._out_shape, self._simd))),
            },
        )

    def elaborate(self, platform):
        m = Module()
        S, G, F, cs = self._simd, self.groups, self.frame_words, self._stats_channels
        external = self._external_modules
        m.submodules.mlp = mlp = SeMlp(self._mlp, external_modules=external)
        gamma_shape = shape_of(self._gamma_bounds)
        slope_shape = shape_of(self._slope_bounds)
        gw, (gr,) = ram_ports(m, "gamma", channel_word(gamma_shape, S), 2 * G, external_modules=external, granular=True)
        zeta_words = [[int(z) for z in self._zeta[g * S : (g + 1) * S]] for g in range(G)]
        m.submodules.zeta = zrom = constant_memory(G, channel_word(shape_of(array_bounds(self._zeta)), S), zeta_words)
        zr = zrom.read_port()
        if self._instance_slope:
            sw, (sr,) = ram_ports(
                m, "slope", channel_word(slope_shape, S), 2 * G, external_modules=external, granular=True
            )
        else:
            slope_words = [[int(s) for s in self._slope[g * S : (g + 1) * S]] for g in range(G)]
            m.submodules.slope = srom = constant_memory(G, channel_word(slope_shape, S), slope_words)
            sr = srom.read_port()
        base_shape = shape_of(array_bounds(self._base))
        m.submodules.base = base_rom = constant_memory(len(self._base), base_shape, [int(b) for b in self._base])
        base_r = base_rom.read_port()

        ready, ready_set, ready_clr = Signal(2, name="ready"), Signal(2, name="ready_set"), Signal(2, name="ready_clr")
        m.d.sync += ready.eq((ready & ~ready_clr) | ready_set)
        mb, db = Signal(name="mb"), Signal(name="db")  # banks of the MLP and of the datapath

        # ---- statistics in: the MLP's feature memory
        recv, feat_full = counter(cs, name="recv"), Signal(name="feat_full")
        m.d.comb += self.stats.ready.eq(~feat_full)
        take = self.stats.valid & self.stats.ready
        m.d.comb += [mlp.feat_w_addr.eq(recv), mlp.feat_w_data.eq(self.stats.payload), mlp.feat_w_en.eq(take)]
        with m.If(take):
            m.d.sync += recv.eq(Mux(recv == cs - 1, 0, recv + 1))
            with m.If(recv == cs - 1):
                m.d.sync += feat_full.eq(1)

        # ---- MLP and parameter writes: output o -> base_o + round_shift(delta_o), one cycle later (base ROM)
        m.d.comb += [base_r.addr.eq(mlp.out_index), base_r.en.eq(1)]
        d_valid, d_last = Signal(name="d_valid"), Signal(name="d_last")
        d_value = Signal(self._mlp.out_shape)
        m.d.sync += [d_valid.eq(mlp.out_valid), d_last.eq(mlp.out_last), d_value.eq(mlp.out_value)]
        done = d_valid & d_last
        tg, tl, part = counter(G, name="tg"), counter(S, name="tl"), Signal(name="part")
        value = base_r.data + hdl_round_shift(d_value, self._delta_shift)
        lanes = Mux(d_valid, Const(1, S) << tl, 0)
        m.d.comb += [gw.addr.eq(Mux(mb, G, 0) + tg), gw.en.eq(Mux(part, 0, lanes))]
        m.d.comb += Value.cast(gw.data).eq(Cat(*[value[: gamma_shape.width]] * S))
        if self._instance_slope:
            m.d.comb += [sw.addr.eq(Mux(mb, G, 0) + tg), sw.en.eq(Mux(part, lanes, 0))]
            m.d.comb += Value.cast(sw.data).eq(Cat(*[value[: slope_shape.width]] * S))
        with m.If(d_valid):
            m.d.sync += tl.eq(Mux(tl == S - 1, 0, tl + 1))
            with m.If(tl == S - 1):
                m.d.sync += tg.eq(Mux(tg == G - 1, 0, tg + 1))
                with m.If(tg == G - 1):
                    m.d.sync += part.eq(~part)
        with m.FSM(name="control") as fsm:
            with m.State("IDLE"):
                with m.If(feat_full & ~ready.bit_select(mb, 1)):
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(done):
                    m.next = "IDLE"
        m.d.comb += mlp.start.eq(fsm.ongoing("IDLE") & feat_full & ~ready.bit_select(mb, 1))
        m.d.comb += ready_set.eq(bank_bits(mb, done))
        with m.If(done):
            m.d.sync += [mb.eq(~mb), feat_full.eq(0), part.eq(0)]

        # ---- datapath: accept (parameters fetched) -> u, v + zeta -> round and clamp
        advance = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(advance & ready.bit_select(db, 1))
        accept = self.i.valid & self.i.ready
        dpos, dgrp = counter(F, name="dpos"), counter(G, name="dgrp")
        m.d.comb += [gr.addr.eq(Mux(db, G, 0) + dgrp), gr.en.eq(advance), zr.addr.eq(dgrp), zr.en.eq(advance)]
        if self._instance_slope:
            m.d.comb += [sr.addr.eq(Mux(db, G, 0) + dgrp), sr.en.eq(advance)]
        else:
            m.d.comb += [sr.addr.eq(dgrp), sr.en.eq(advance)]
        with m.If(accept):
            d_end = dpos == F - 1
            m.d.sync += [dpos.eq(Mux(d_end, 0, dpos + 1)), dgrp.eq(Mux(dgrp == G - 1, 0, dgrp + 1)), db.eq(db ^ d_end)]
        m.d.comb += ready_clr.eq(bank_bits(db, accept & (dpos == F - 1)))
        # stage A: the word and its channels' parameters; then hw.affine's three-stage RPReLU datapath
        valid = [Signal(name=f"valid{k}") for k in range(self._datapath_latency + 1)]
        xa = Signal(channel_word(self._in_shape, S))
        with m.If(advance):
            m.d.sync += [valid[0].eq(accept), xa.eq(self.i.payload)]
            m.d.sync += [valid[k + 1].eq(valid[k]) for k in range(self._datapath_latency)]
        m.d.comb += self.o.valid.eq(valid[-1])
        outs = []
        for lane in range(S):
            out = rprelu_datapath(
                m,
                xa[lane],
                gr.data[lane],
                sr.data[lane],
                zr.data[lane],
                slope_shift=self._slope_shift,
                out_shift=self._out_shift,
                low=self._low,
                high=self._high,
                enable=advance,
                x_bounds=bounds(self._in_shape),
                gamma_bounds=self._gamma_bounds,
                slope_bounds=self._slope_bounds,
                zeta_bounds=array_bounds(self._zeta),
                mul_latency=self._mul_latency,
                external_modules=external,
                name=f"rprelu{lane}",
            )
            outs.append(out)
        m.d.comb += Value.cast(self.o.payload).eq(Cat(*outs))
        return m
