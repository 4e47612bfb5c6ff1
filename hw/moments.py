"""INSTA-Th / INSTA-Th+ in hardware: per-image thresholds from the frame's own moments, then binarisation.

:class:`MomentsThreshold` implements :func:`~.insta.statistic_features`,
:func:`~.insta.th_thresholds` / :func:`~.insta.thplus_thresholds` and :func:`~.insta.binarise`
bit for bit; :class:`~.moments_parameters.MomentsThresholdParameters` validates its parameters
and gives its widths, timing and cost without building it.
"""

from __future__ import annotations

from functools import reduce
from operator import or_
from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .banks import bank_bits, constant_memory, counter, ram_ports
from .delay import delayed
from .fixed import hdl_ceil_shift, hdl_clamp, shape_for
from .intervals import array_bounds, shape_of
from .layouts import channel_word
from .moments_parameters import MomentsThresholdParameters
from .multiplier import MUL_LATENCY, registered_product
from .options import ExternalModules
from .se_mlp import SeMlp

__all__ = ["MomentsThreshold"]


class MomentsThreshold(MomentsThresholdParameters, ExternalModules, wiring.Component):
    """INSTA-Th / INSTA-Th+: per-image thresholds from the frame's own moments, then binarisation.

    A frame (``C x H x W`` channel words, raster order) is written into one half of a
    double-buffered frame buffer while the per-channel sums ``S1, S2, S3`` (those the
    statistics need) accumulate. Once it is complete, a sequential evaluator computes the
    features (:func:`~.insta.statistic_features`) and the thresholds (:func:`~.insta.th_thresholds` or
    :func:`~.insta.thplus_thresholds`); the frame is then read out, each element compared with its
    channel's threshold (:func:`~.insta.binarise`), while the next frame is written into the other half
    (a word may be overwritten as soon as the previous frame's reader has fetched it).

    Timing (full rate, no back-pressure): the evaluator is busy ``eval_cycles`` per frame and
    then rests ``eval_gap`` cycles, so a frame takes ``cycles_per_frame = max(frame_words,
    eval_cycles + eval_gap)`` cycles in steady state; ``initiation_interval`` is 1 when
    ``eval_cycles + eval_gap <= frame_words`` (the rate of a static threshold unit). An idle
    unit emits a frame's first word ``latency = frame_words + eval_cycles + writer_stages + 3`` cycles after
    taking its first word.

    Evaluator (``eval_cycles``): one start cycle, then ``channels * steps_per_channel`` cycles
    (per channel: latch its sums; the multiplications of ``var`` / ``skew`` and, for ``"th"``,
    one multiply-accumulate of ``beta . F`` per statistic, scheduled on one shared multiplier
    (:func:`~.multiplier.registered_product`, :data:`~.multiplier.MUL_LATENCY` steps); one write step); for ``"th+"``
    then FC1 (``ceil(hidden / parallel) * len(stats) * C`` cycles) and FC2 (``ceil(hidden /
    parallel) * C`` cycles) on ``parallel`` multipliers and their pipeline (:attr:`~.se_mlp.SeMlpParameters.cycles`),
    then the alpha read and the sum of alpha and the MLP's output; last, the last threshold's
    register (each threshold is registered before its memory). For example
    ``steps_per_channel`` is 6 for ``"th"`` with ``("m3",)``, 15 with ``("m1", "var", "skew")``,
    2 for ``"th+"`` with raw moments only.

    Storage (:attr:`memory_bits`): the frame buffer (``2 * frame_words`` words of ``simd``
    inputs), the sums and the thresholds (``2 * C / simd`` words each, banked like the frame),
    ROMs of ``alpha`` and ``beta`` (or of the MLP's weights, and its feature memory). Every
    width comes from the bounds of ``in_shape`` and of the constants, so nothing can overflow.

    With ``emit_stats`` a channel's features leave on ``stats`` while the evaluator processes
    it, before the frame's bits; the evaluator waits while ``stats`` is not taken, so that
    stream must be consumed (a FIFO of C words decouples a consumer that takes them later).

    Parameters
    ----------
    in_shape : shape
        Integer element shape of the input (signed or unsigned, up to 32 bits).
    channels, simd, height, width : int
        Frame geometry ``C x H x W``; ``simd`` (dividing C) channels per word.
    stats : sequence of str
        Distinct names from :data:`~.insta.STATISTICS`.
    shifts : sequence of int
        Right shift (floor) of each statistic's polynomial, 0 to 256.
    mode : {"th", "th+"}
        INSTA-Th (``alpha``, ``beta``, ``out_shift``) or INSTA-Th+ (``w1``, ``b1``,
        ``hidden_shift``, ``hidden_max``, ``w2``, ``alpha``, ``out_shift``).
    alpha : array of C ints
        Threshold offsets (for ``"th+"`` including FC2's bias), in units of ``2**-out_shift``.
    beta : array (C, len(stats)) of ints
        ``"th"`` only: the per-channel feature weights.
    out_shift : int
        Final ceiling shift, 0 to 256.
    w1, b1, hidden_shift, hidden_max, w2 : arrays and ints
        ``"th+"`` only: see :func:`~.insta.se_mlp`; ``w1`` is ``(hidden, len(stats) * C)``, ``w2``
        ``(C, hidden)``.
    parallel : int
        ``"th+"``: multiply-accumulates per cycle of the MLP, 1 to ``hidden`` (unused by ``"th"``).
    emit_stats : bool
        Add the ``stats`` output: per frame, C words (channel ascending) holding that
        channel's features ``F[:, c]`` (for an :class:`~.insta_prelu.InstaPReLU` downstream).
    external_modules : bool
        Make every read/write memory (frame buffer, sums, thresholds, the MLP's features) a
        :class:`~.ram.Ram` instance of the Verilog module, for Verilog output; ``False``
        (default): inline, for Amaranth's simulator. The constant ROMs stay inline.

    Members
    -------
    i : In(stream.Signature(channel_word(in_shape, simd)))
    o : Out(stream.Signature(channel_word(unsigned(1), simd)))
    stats : Out(stream.Signature(data.ArrayLayout(feature_shape, len(stats)))), with ``emit_stats``
    """

    def __init__(self, *, external_modules: bool = False, **params) -> None:
        super().__init__(**params)
        self._set_external_modules(external_modules)
        members = {
            "i": In(stream.Signature(channel_word(self._in_shape, self._simd))),
            "o": Out(stream.Signature(channel_word(unsigned(1), self._simd))),
        }
        if self._emit_stats:
            members["stats"] = Out(stream.Signature(data.ArrayLayout(self._feature_shape, len(self._stats))))
        wiring.Component.__init__(self, members)

    def elaborate(self, platform):
        m = Module()
        mlp = SeMlp(self._mlp, external_modules=self._external_modules) if self._mode == "th+" else None
        net = self._memories(m)
        self._bank_state(m, net)
        self._frame_writer(m, net)
        self._frame_reader(m, net)
        self._feature_phase(m, net)
        self._shared_multiplier(m, net)
        self._threshold_writer(m, net, mlp)
        self._evaluator_control(m, net)
        return m

    # The sections of the logic, in the order they are built; ``net`` holds the signals and
    # memory ports that later sections use.

    def _memories(self, m: Module) -> SimpleNamespace:
        """The frame buffer, the sums and the thresholds (two banks each), and the alpha ROM."""
        C, S, G, F = self._channels, self._simd, self.groups, self.frame_words
        external = self._external_modules
        fw, (fr,) = ram_ports(m, "frame", channel_word(self._in_shape, S), 2 * F, external_modules=external, tiled=True)
        lane_layout = data.StructLayout({f"s{k}": self._sum_shapes[k] for k in self._sums})
        # read ports: the accumulation's read-modify-write, the evaluator's
        sw, (sa, se) = ram_ports(
            m, "sums", data.ArrayLayout(lane_layout, S), 2 * G, external_modules=external, read_ports=("sync", "sync")
        )
        tw, (tr,) = ram_ports(
            m, "thresholds", channel_word(self._threshold_shape, S), 2 * G, external_modules=external, granular=True
        )
        alpha_shape = shape_of(array_bounds(self._alpha))
        m.submodules.alpha = alpha_rom = constant_memory(C, alpha_shape, [int(a) for a in self._alpha])
        ar = alpha_rom.read_port()
        return SimpleNamespace(fw=fw, fr=fr, sw=sw, sa=sa, se=se, tw=tw, tr=tr, ar=ar)

    def _bank_state(self, m: Module, net: SimpleNamespace) -> None:
        """The flags of the two banks and the bank and position of the writer, reader and evaluator."""
        G, F = self.groups, self.frame_words
        # bank state: written = the writer has taken the whole frame; full = its sums are complete too
        # (both until it is evaluated); ready = evaluated, not yet fully read
        for name in ("written", "full", "ready", "written_set", "full_set", "full_clr", "ready_set", "ready_clr"):
            setattr(net, name, Signal(2, name=name))
        net.written_next, net.ready_next = Signal(2, name="written_next"), Signal(2, name="ready_next")
        m.d.comb += [
            net.written_next.eq((net.written & ~net.full_clr) | net.written_set),
            net.ready_next.eq((net.ready & ~net.ready_clr) | net.ready_set),
        ]
        m.d.sync += [
            net.written.eq(net.written_next),
            net.full.eq((net.full & ~net.full_clr) | net.full_set),
            net.ready.eq(net.ready_next),
        ]
        # banks and positions of the writer, reader and evaluator; the writer's and reader's next
        # values are driven by their sections
        net.wb, net.rb, net.eb = Signal(name="wb"), Signal(name="rb"), Signal(name="eb")
        net.wpos, net.rpos = counter(F, name="wpos"), counter(F, name="rpos")
        net.wgrp, net.rgrp = counter(G, name="wgrp"), counter(G, name="rgrp")
        net.wb_next, net.rb_next = Signal(name="wb_next"), Signal(name="rb_next")
        net.wpos_next, net.rpos_next = counter(F, name="wpos_next"), counter(F, name="rpos_next")
        m.d.sync += [
            net.wb.eq(net.wb_next),
            net.rb.eq(net.rb_next),
            net.wpos.eq(net.wpos_next),
            net.rpos.eq(net.rpos_next),
        ]

        # the steps the writer and reader take this cycle (driven by their sections), and whether
        # each is at its bank's last position: registers, kept from the steps
        net.accept, net.issue = Signal(name="accept"), Signal(name="issue")
        net.w_last, net.r_last = Signal(init=F == 1, name="w_last"), Signal(init=F == 1, name="r_last")
        with m.If(net.accept):
            m.d.sync += net.w_last.eq(Mux(net.w_last, F == 1, net.wpos == F - 2))
        with m.If(net.issue):
            m.d.sync += net.r_last.eq(Mux(net.r_last, F == 1, net.rpos == F - 2))
        w_step, w_wrap = net.accept & ~net.w_last, net.accept & net.w_last
        r_step, r_wrap = net.issue & ~net.r_last, net.issue & net.r_last

        # i.ready is a register, computed from the next state. Whether the reader will be ahead of
        # the writer in their bank (rpos_next > wpos_next) is picked by the steps from comparisons
        # of registers, the positions' difference among them, so no carry chain follows a step.
        diff = Signal(range(-F, F + 1), name="diff")  # rpos - wpos
        with m.If(r_wrap):  # rpos_next = 0
            m.d.sync += diff.eq(Mux(w_step, -(net.wpos + 1), Mux(w_wrap, 0, -net.wpos)))
        with m.Elif(w_wrap):  # wpos_next = 0
            m.d.sync += diff.eq(Mux(r_step, net.rpos + 1, net.rpos))
        with m.Elif(r_step & ~w_step):
            m.d.sync += diff.eq(diff + 1)
        with m.Elif(w_step & ~r_step):
            m.d.sync += diff.eq(diff - 1)
        reader_ahead = Mux(
            r_wrap,
            0,
            Mux(
                w_wrap,
                r_step | (net.rpos != 0),
                Mux(r_step & ~w_step, diff >= 0, Mux(w_step & ~r_step, diff > 1, diff > 0)),
            ),
        )
        # the writer may take into a bank neither written nor evaluated, or the reader's bank behind the reader
        w_written = net.written_next.bit_select(net.wb_next, 1)
        w_ready = net.ready_next.bit_select(net.wb_next, 1)
        taking = Signal(init=1, name="taking")
        m.d.sync += taking.eq((~w_written & ~w_ready) | (w_ready & (net.rb_next == net.wb_next) & reader_ahead))
        m.d.comb += self.i.ready.eq(taking)

    def _frame_writer(self, m: Module, net: SimpleNamespace) -> None:
        """The writer: the frame buffer, and the sums pipeline (powers, read-modify-write of the sums)."""
        S, G, F = self._simd, self.groups, self.frame_words
        fw, sa, sw = net.fw, net.sa, net.sw
        wb, wpos, wgrp = net.wb, net.wpos, net.wgrp
        accept, w_last = net.accept, net.w_last
        m.d.comb += accept.eq(self.i.valid & self.i.ready)
        m.d.comb += [fw.addr.eq(Mux(wb, F, 0) + wpos), fw.data.eq(self.i.payload), fw.en.eq(accept)]
        m.d.comb += [
            net.wpos_next.eq(Mux(accept, Mux(w_last, 0, wpos + 1), wpos)),
            net.wb_next.eq(wb ^ (accept & w_last)),
        ]
        with m.If(accept):
            m.d.sync += wgrp.eq(Mux(wgrp == G - 1, 0, wgrp + 1))
        m.d.comb += net.written_set.eq(bank_bits(wb, accept & w_last))

        def stage(name):
            return {
                "v": Signal(name=f"{name}_valid"),
                "g": counter(G, name=f"{name}_group"),
                "b": Signal(name=f"{name}_bank"),
                "first": Signal(name=f"{name}_first"),
                "last": Signal(name=f"{name}_last"),
                "x": Signal(channel_word(self._in_shape, S), name=f"{name}_x"),
            }

        # stage pK holds a word K edges after it was taken; the lanes' powers are products on
        # DSP blocks' registers, so the sums' read-modify-write waits in the last stage for them
        stages = [stage(f"p{k + 1}") for k in range(self.writer_stages)]
        first, reading, before, last = stages[0], stages[-3], stages[-2], stages[-1]
        m.d.sync += [
            first["v"].eq(accept),
            first["g"].eq(wgrp),
            first["b"].eq(wb),
            first["first"].eq(wpos < G),
            first["last"].eq(w_last),
            first["x"].eq(self.i.payload),
        ]
        for prev, cur in zip(stages, stages[1:], strict=False):
            m.d.sync += [cur[key].eq(prev[key]) for key in cur]
        squares, cubes = [], []
        for lane in range(S):
            if 2 in self._sums or 3 in self._sums:
                x = first["x"][lane]
                square = Signal(self._square_shape, name=f"square{lane}")
                product = registered_product(
                    m, x, x, latency=MUL_LATENCY, external_modules=self._external_modules, name=f"sq{lane}"
                )
                m.d.comb += square.eq(product)
                squares.append(square)
            if 3 in self._sums:
                x = stages[MUL_LATENCY]["x"][lane]  # beside its square
                product = registered_product(
                    m, square, x, latency=MUL_LATENCY, external_modules=self._external_modules, name=f"cu{lane}"
                )
                cubes.append(product)
                # the square beside the cube
                squares[lane] = delayed(m, squares[lane], MUL_LATENCY, name=f"square{lane}_d")
        # The sums are read two edges before their write and the block RAM's word registered, so
        # the addition starts from flip-flops. The two writes the read cannot see (those of the
        # words one and two ahead) are forwarded from registers of the written words, picked by
        # matches registered a cycle ahead.
        m.d.comb += sa.addr.eq(Mux(reading["b"], G, 0) + reading["g"])
        sums_word = Value.cast(sw.data)
        stored = Signal(sums_word.shape(), name="sums_read")
        written = [Signal(sums_word.shape(), name=f"sums_written{k}") for k in (1, 2)]
        written_v = [Signal(name=f"written{k}_valid") for k in (1, 2)]
        written_at = [(Signal(name=f"written{k}_bank"), counter(G, name=f"written{k}_group")) for k in (1, 2)]
        m.d.sync += [stored.eq(Value.cast(sa.data)), written[0].eq(sums_word), written[1].eq(written[0])]
        m.d.sync += [written_v[0].eq(last["v"]), written_v[1].eq(written_v[0])]
        m.d.sync += [written_at[0][0].eq(last["b"]), written_at[0][1].eq(last["g"])]
        m.d.sync += [written_at[1][0].eq(written_at[0][0]), written_at[1][1].eq(written_at[0][1])]
        # registered while a word is in `before`: whether the word writing now (last) or the one
        # that wrote a cycle ago (written1) has its address; with it in `last`, those are written1
        # and written2
        same_as_last, same_as_written = Signal(name="same_as_last"), Signal(name="same_as_written1")
        m.d.sync += [
            same_as_last.eq(last["v"] & (last["b"] == before["b"]) & (last["g"] == before["g"])),
            same_as_written.eq(written_v[0] & (written_at[0][0] == before["b"]) & (written_at[0][1] == before["g"])),
        ]
        previous = Signal(sums_word.shape(), name="sums_previous")
        m.d.comb += previous.eq(
            Mux(last["first"], 0, Mux(same_as_last, written[0], Mux(same_as_written, written[1], stored)))
        )
        previous_lanes = data.View(sw.data.shape(), previous)
        powers = {1: last["x"], 2: squares, 3: cubes}
        m.d.comb += [sw.addr.eq(Mux(last["b"], G, 0) + last["g"]), sw.en.eq(last["v"])]
        new_sums = []  # whole signals, then one Cat: see bank_bits on Icarus and partial assignments
        for lane in range(S):
            for k in self._sums:
                total = Signal(self._sum_shapes[k], name=f"new_s{k}_{lane}")
                m.d.comb += total.eq(previous_lanes[lane][f"s{k}"] + powers[k][lane])
                new_sums.append(total)
        m.d.comb += sums_word.eq(Cat(*new_sums))
        m.d.comb += net.full_set.eq(bank_bits(last["b"], last["v"] & last["last"]))

    def _frame_reader(self, m: Module, net: SimpleNamespace) -> None:
        """The reader: frame buffer and thresholds fetched together, registered, compared into the output register."""
        S, G, F = self._simd, self.groups, self.frame_words
        fr, tr, rb, rpos, rgrp = net.fr, net.tr, net.rb, net.rpos, net.rgrp
        advance = ~self.o.valid | self.o.ready
        issue, r_last = net.issue, net.r_last
        m.d.comb += issue.eq(advance & net.ready.bit_select(rb, 1))
        m.d.comb += [fr.addr.eq(Mux(rb, F, 0) + rpos), fr.en.eq(advance)]
        m.d.comb += [tr.addr.eq(Mux(rb, G, 0) + rgrp), tr.en.eq(advance)]
        # the memories' words registered before the comparison: a block RAM's clock-to-output
        # and the multiplexer over the tiles of a deep buffer fill most of a cycle; the frame
        # buffer's read takes frame_read_latency edges, the thresholds' one
        extra = self.frame_read_latency - 1
        fetched = delayed(m, issue, self.frame_read_latency, enable=advance, name="fetched")
        threshold_word = delayed(m, Value.cast(tr.data), extra, enable=advance, name="threshold_w", reset_less=True)
        frame, threshold = Signal(fr.data.shape(), name="frame_r"), Signal(tr.data.shape(), name="threshold_r")
        loaded = Signal()
        with m.If(advance):
            m.d.sync += [loaded.eq(fetched), self.o.valid.eq(loaded)]
            m.d.sync += [frame.eq(fr.data), Value.cast(threshold).eq(threshold_word)]
            m.d.sync += [self.o.payload[lane].eq(frame[lane] >= threshold[lane]) for lane in range(S)]
        m.d.comb += [
            net.rpos_next.eq(Mux(issue, Mux(r_last, 0, rpos + 1), rpos)),
            net.rb_next.eq(rb ^ (issue & r_last)),
        ]
        with m.If(issue):
            m.d.sync += rgrp.eq(Mux(rgrp == G - 1, 0, rgrp + 1))
        m.d.comb += net.ready_clr.eq(bank_bits(rb, issue & r_last))

    def _feature_phase(self, m: Module, net: SimpleNamespace) -> None:
        """The evaluator's feature phase: one channel every ``steps_per_channel`` cycles, its sums
        latched and its features computed (the products come from :meth:`_shared_multiplier`)."""
        C, S, G = self._channels, self._simd, self.groups
        pixels = self._height * self._width
        program = self._program
        K = len(program)
        # the step one-hot: each step's decode, and the multiplier's operand pick, is one flip-flop
        step, ec = Signal(K, init=1, name="step"), counter(C, name="ec")
        eg, el = counter(G, name="eg"), counter(S, name="el")
        feat_phase = Signal()
        at_w = feat_phase & step[K - 1]
        if self._emit_stats:
            stall = at_w & self.stats.valid & ~self.stats.ready
            with m.If(self.stats.ready):
                m.d.sync += self.stats.valid.eq(0)
        else:
            stall = Const(0)
        go = feat_phase & ~stall
        # ports read the current channel, or the next one in the write step (data one cycle later)
        rd_c = Mux(at_w, Mux(ec == C - 1, 0, ec + 1), ec)
        rd_g = Mux(at_w & (el == S - 1), Mux(eg == G - 1, 0, eg + 1), eg)
        se = net.se
        m.d.comb += [se.addr.eq(Mux(net.eb, G, 0) + rd_g), se.en.eq(~stall)]
        lane_sums = se.data[el]
        with m.If(go):
            m.d.sync += step.eq(step.rotate_left(1))
        at = [go & step[k] for k in range(K)]
        actions = {action: k for k, step_actions in enumerate(program) for action in step_actions}

        # the channel's sums, latched in step 0 (the ports hold its word from the previous write step)
        sums_c = {k: Signal(self._sum_shapes[k], name=f"s{k}") for k in self._sums}
        with m.If(at[0]):
            m.d.sync += [sums_c[k].eq(lane_sums[f"s{k}"]) for k in self._sums]
        q = Signal(shape_for(*self._q_bounds), name="q") if "commit:sq" in actions else None
        r = Signal(shape_for(*self._r_bounds), name="r") if "r" in actions else None
        sk_index = self._stats.index("skew") if "skew" in self._stats else None
        p_sk = Signal(shape_for(*self._polys[sk_index]), name="p_skew") if sk_index is not None else None
        fe = [Signal(self._feature_shape, name=f"feature_{name}") for name in self._stats]
        for j, name in enumerate(self._stats):
            poly = {
                "m1": lambda: sums_c[1],
                "m2": lambda: sums_c[2],
                "m3": lambda: sums_c[3],
                "var": lambda: pixels * sums_c[2] - q,
                "skew": lambda: p_sk,
            }[name]()
            m.d.comb += fe[j].eq(poly >> self._shifts[j])
        if r is not None:
            with m.If(at[actions["r"]]):
                m.d.sync += r.eq(2 * q - 3 * pixels * sums_c[2])
        net.step, net.ec, net.eg, net.el, net.feat_phase = step, ec, eg, el, feat_phase
        net.at_w, net.stall, net.rd_c, net.at, net.actions = at_w, stall, rd_c, at, actions
        net.sums_c, net.q, net.r, net.p_sk, net.fe = sums_c, q, r, p_sk, fe

    def _shared_multiplier(self, m: Module, net: SimpleNamespace) -> None:
        """The evaluator's one multiplier: operands registered at the issue, product one step later,
        committed to ``q``, the skew polynomial or (``"th"``, with the beta ROM) the accumulator."""
        C, ns = self._channels, len(self._stats)
        pixels = self._height * self._width
        at, actions, sums_c, q, r, p_sk, fe = net.at, net.actions, net.sums_c, net.q, net.r, net.p_sk, net.fe
        ar, stall, rd_c = net.ar, net.stall, net.rd_c
        if self._mode == "th":
            beta_shape = shape_of(array_bounds(self._beta))
            beta_words = [[int(b) for b in row] for row in self._beta]
            m.submodules.beta = beta_rom = constant_memory(C, data.ArrayLayout(beta_shape, ns), beta_words)
            br = beta_rom.read_port()
            m.d.comb += [br.addr.eq(rd_c), br.en.eq(~stall), ar.addr.eq(rd_c), ar.en.eq(~stall)]
            net.acc = acc = Signal(shape_for(*self._accumulator_bounds()), name="acc")
        values = {"sq": (sums_c.get(1), sums_c.get(1)), "sk": (sums_c.get(1), r)}
        if self._mode == "th":
            values |= {f"mac{j}": (br.data[j], fe[j]) for j in range(ns)}
        operands = {  # operation -> (a, a bounds, b, b bounds)
            name: (values[name][0], a_bounds, values[name][1], b_bounds)
            for name, (a_bounds, b_bounds) in self._shared_operand_bounds().items()
        }
        if operands:
            mul_a = Signal(shape_of(*(o[1] for o in operands.values())), name="mul_a")
            mul_b = Signal(shape_of(*(o[3] for o in operands.values())), name="mul_b")
            # one operation issues per step: an OR of the operands gated by their steps' bits
            issuing = {name: net.step[actions[f"issue:{name}"]] for name in operands}
            m.d.comb += [
                mul_a.eq(reduce(or_, [Mux(issuing[name], a, 0) for name, (a, _, _, _) in operands.items()])),
                mul_b.eq(reduce(or_, [Mux(issuing[name], b, 0) for name, (_, _, b, _) in operands.items()])),
            ]
            product = registered_product(
                m, mul_a, mul_b, latency=MUL_LATENCY, external_modules=self._external_modules, name="mul"
            )
        first_mac = min((actions[f"commit:mac{j}"] for j in range(ns)), default=None) if self._mode == "th" else None
        for name in operands:
            with m.If(at[actions[f"commit:{name}"]]):
                if name == "sq":
                    m.d.sync += q.eq(product)
                elif name == "sk":
                    m.d.sync += p_sk.eq(pixels * pixels * sums_c[3] + product)
                else:
                    first = actions[f"commit:{name}"] == first_mac
                    m.d.sync += acc.eq((ar.data if first else acc) + product)

    def _threshold_writer(self, m: Module, net: SimpleNamespace, mlp: SeMlp | None) -> None:
        """The write step of each channel (features out on ``stats``) and the thresholds into their
        bank: ``"th"`` from the accumulator, ``"th+"`` from the MLP's outputs once it has run."""
        C, S, G, ns = self._channels, self._simd, self.groups, len(self._stats)
        ec, eg, el, fe, ar = net.ec, net.eg, net.el, net.fe, net.ar
        write = net.at_w & ~net.stall
        net.last_channel = last_channel = write & (ec == C - 1)
        with m.If(write):
            m.d.sync += [el.eq(Mux(el == S - 1, 0, el + 1)), ec.eq(ec + 1)]
            with m.If(el == S - 1):
                m.d.sync += eg.eq(eg + 1)
            if self._emit_stats:
                m.d.sync += self.stats.valid.eq(1)
                m.d.sync += [self.stats.payload[j].eq(fe[j]) for j in range(ns)]
        if self._mode == "th":
            threshold = hdl_clamp(hdl_ceil_shift(net.acc, self._out_shift), self._low, self._high)
            net.done = self._write_threshold(m, net, write, eg, el, threshold, last_channel)
        else:
            m.submodules.mlp = mlp
            m.d.comb += [mlp.feat_w_addr.eq(ec), mlp.feat_w_en.eq(write), mlp.start.eq(last_channel)]
            m.d.comb += [mlp.feat_w_data[j].eq(fe[j]) for j in range(ns)]
            # FC2 output o -> T_o = clamp(ceil_shift(alpha_o + out_o)): the output beside its alpha
            # a cycle later (the ROM's read), their sum registered, then its shift and clamp in
            # the threshold's register
            m.d.comb += [ar.addr.eq(mlp.out_index), ar.en.eq(1)]
            d_valid, d_last = Signal(name="d_valid"), Signal(name="d_last")
            d_value = Signal(self._mlp.out_shape)
            m.d.sync += [d_valid.eq(mlp.out_valid), d_last.eq(mlp.out_last), d_value.eq(mlp.out_value)]
            s_valid, s_last = Signal(name="s_valid"), Signal(name="s_last")
            s_value = Signal((ar.data + d_value).shape(), name="s_value")
            m.d.sync += [s_valid.eq(d_valid), s_last.eq(d_last), s_value.eq(ar.data + d_value)]
            tg, tl = counter(G, name="tg"), counter(S, name="tl")
            threshold = hdl_clamp(hdl_ceil_shift(s_value, self._out_shift), self._low, self._high)
            with m.If(s_valid):
                m.d.sync += tl.eq(Mux(tl == S - 1, 0, tl + 1))
                with m.If(tl == S - 1):
                    m.d.sync += tg.eq(Mux(tg == G - 1, 0, tg + 1))
            net.done = self._write_threshold(m, net, s_valid, tg, tl, threshold, s_valid & s_last)

    def _write_threshold(self, m: Module, net: SimpleNamespace, valid, group, lane, threshold, last) -> Signal:
        """A threshold registered, then written into lane ``lane`` of word ``group`` of bank ``eb``:
        its arithmetic and the memory's write port do not share a cycle. Returns the signal that
        the last one is written (the bank's thresholds are complete)."""
        S, G = self._simd, self.groups
        en, addr = Signal(S, name="threshold_en"), Signal(range(2 * G), name="threshold_addr")
        value = Signal(self._threshold_shape, name="threshold")
        written = Signal(name="thresholds_written")
        m.d.sync += [
            en.eq(Mux(valid, Const(1, S) << lane, 0)),
            addr.eq(Mux(net.eb, G, 0) + group),
            value.eq(threshold),
            written.eq(last),
        ]
        m.d.comb += [net.tw.addr.eq(addr), net.tw.en.eq(en), Value.cast(net.tw.data).eq(Cat(*[value] * S))]
        return written

    def _evaluator_control(self, m: Module, net: SimpleNamespace) -> None:
        """The evaluator's FSM (idle, features, MLP, rest) and the hand-over of its bank to the reader."""
        eb, done = net.eb, net.done
        gap = counter(self.eval_gap + 1)
        with m.FSM(name="evaluator") as fsm:
            with m.State("IDLE"):
                with m.If(net.full.bit_select(eb, 1)):  # channel 0's ports are read in this cycle
                    m.next = "FEATURES"
            with m.State("FEATURES"):
                with m.If(net.last_channel):
                    m.d.sync += [net.step.eq(1), net.ec.eq(0), net.eg.eq(0), net.el.eq(0)]
                    m.next = "THRESHOLDS"
            with m.State("THRESHOLDS"):  # (th+: the MLP, then) the last threshold's write
                with m.If(done):
                    m.next = "REST"
            with m.State("REST"):
                m.d.sync += gap.eq(gap + 1)
                with m.If(gap == self.eval_gap - 1):
                    m.d.sync += gap.eq(0)
                    m.next = "IDLE"
        m.d.comb += net.feat_phase.eq(fsm.ongoing("FEATURES"))
        m.d.comb += [net.ready_set.eq(bank_bits(eb, done)), net.full_clr.eq(bank_bits(eb, done))]
        with m.If(done):
            m.d.sync += eb.eq(~eb)
