"""Per-channel affine arithmetic: requantisation (batch norm) and RPReLU.

The numpy functions below are THE integer semantics; the components in this module implement
them bit for bit, and the compiler's reference executor calls them. Channel ``c`` of an
element is its index along the last axis modulo the number of channels (tensors are given as
``(..., C)`` arrays, e.g. ``H x W x C``).
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Const, Module, Mux, Shape, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ._checks import check_int, check_int_array, check_shape
from .delay import delayed
from .figures import ChannelParameters, Figures, rom_luts
from .fixed import bounds, clamp, hdl_clamp, hdl_fit, product_range, round_shift, shape_for
from .layouts import channel_word
from .multiplier import MUL_LATENCY, product_latency, registered_product, registered_product_blocks
from .options import ExternalModules
from .tables import channel_table

__all__ = [
    "REQUANTISE_STAGES",
    "RPRELU_STAGES",
    "RPReLU",
    "RPReLUParameters",
    "Requantise",
    "RequantiseParameters",
    "requantise",
    "requantise_bounds",
    "requantise_datapath",
    "rprelu",
    "rprelu_bounds",
    "rprelu_datapath",
]


def requantise(x, mult, bias, *, shift: int, low: int, high: int):
    """``clamp(round_shift(x * mult_c + bias_c, shift), low, high)``.

    Batch norm (and any per-channel affine map) in fixed point: ``mult`` and ``bias`` are
    integer vectors of length C; the one rounding is :func:`~.fixed.round_shift`.
    """
    return clamp(round_shift(np.asarray(x) * mult + bias, shift), low, high)


def rprelu(x, gamma, slope, zeta, *, slope_shift: int, out_shift: int, low: int, high: int):
    """RPReLU in fixed point, ``f(x) = PReLU_slope(x - gamma_c) + zeta_c``.

    ``u = x - gamma_c``; ``v = u * 2**slope_shift`` when ``u >= 0``, else ``u * slope_c``
    (``slope_c / 2**slope_shift`` is the negative slope); the result is
    ``clamp(round_shift(v + zeta_c, out_shift), low, high)``, with ``zeta`` in units of
    ``2**-slope_shift`` of ``x``. ``gamma``, ``slope`` and ``zeta`` are integer vectors of
    length C, or arrays broadcastable to ``x`` (INSTA-PReLU passes a per-image ``gamma``).
    """
    u = np.asarray(x) - gamma
    v = np.where(u >= 0, u << slope_shift, u * slope)
    return clamp(round_shift(v + zeta, out_shift), low, high)


# ---------------------------------------------------------------------------------------------
# Hardware: shared helpers, the per-element datapaths (reusable with register-fed parameters),
# and the two streaming components.
# ---------------------------------------------------------------------------------------------

#: Registered stages of :func:`requantise_datapath` besides its product's (the sum, the shift and clamp).
REQUANTISE_STAGES = 2

#: Registered stages of :func:`rprelu_datapath` besides its product's (``u``, the sum, the shift and clamp).
RPRELU_STAGES = 3


def _ints(pair) -> tuple[int, int]:
    """A ``(low, high)`` pair as Python ints (numpy ints would overflow in the products)."""
    low, high = pair
    return int(low), int(high)


def _param(name: str, value, given) -> tuple[object, tuple[int, int]]:
    """A datapath parameter as ``(int or Value, (low, high))``."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer or an Amaranth value, not {value!r}")
    if isinstance(value, (int, np.integer)):
        value = int(value)
        return value, (value, value)
    try:
        value = Value.cast(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer or an Amaranth value, not {value!r}") from None
    if given is None:
        return value, bounds(value.shape())
    low, high = (check_int(f"{name}_bounds[{k}]", b, low=None) for k, b in enumerate(given))
    if low > high:
        raise ValueError(f"{name}_bounds must be (low, high) with low <= high, not {given!r}")
    return value, (low, high)


def _operand(value, value_bounds: tuple[int, int]) -> Value:
    """A multiplier operand (int or Value) in the narrowest shape of its bounds."""
    if isinstance(value, int):
        return Const(value, shape_for(value, value))
    return hdl_fit(value, *value_bounds)


def _intersect(derived: tuple[int, int], given) -> tuple[int, int]:
    if given is None:
        return derived
    low, high = max(derived[0], int(given[0])), min(derived[1], int(given[1]))
    if low > high:
        raise ValueError(f"bounds {tuple(given)!r} do not meet the derived range {derived!r}")
    return low, high


def _output(m: Module, domain: str, enable, value, natural: tuple[int, int], low: int, high: int, name: str):
    """Register ``clamp(value, low, high)``; the clamp is left out where ``natural`` lies inside."""
    out = Signal(shape_for(low, high), name=name)
    if low <= natural[0] and natural[1] <= high:
        result = hdl_fit(value, *natural)
    elif natural[0] >= low:  # only the upper side can saturate
        result = Mux(value > high, high, value)
    elif natural[1] <= high:
        result = Mux(value < low, low, value)
    else:
        result = hdl_clamp(value, low, high)
    with m.If(enable):
        m.d[domain] += out.eq(result)
    return out


def requantise_bounds(x_bounds, mult_bounds, bias_bounds, *, shift: int) -> tuple[int, int]:
    """The range of ``round_shift(x * mult + bias, shift)`` over the three ranges (before any clamp)."""
    product = product_range(x_bounds, mult_bounds)
    bias_bounds = _ints(bias_bounds)
    return round_shift(product[0] + bias_bounds[0], shift), round_shift(product[1] + bias_bounds[1], shift)


def requantise_datapath(
    m: Module,
    x,
    mult,
    bias,
    *,
    shift: int,
    low: int,
    high: int,
    enable=1,
    domain: str = "sync",
    x_bounds=None,
    mult_bounds=None,
    bias_bounds=None,
    product_bounds=None,
    sum_bounds=None,
    mul_latency: int | None = None,
    external_modules: bool = False,
    name: str = "requantise",
) -> Signal:
    """Build ``clamp(round_shift(x * mult + bias, shift), low, high)`` for one element into ``m``.

    Registered stages: the product's ``mul_latency`` (:func:`~.multiplier.registered_product`),
    then add the bias and the rounding constant, then shift and clamp, each advancing on a clock
    edge of ``domain`` where ``enable`` is high: the returned signal (shape
    ``shape_for(low, high)``) holds the result ``mul_latency +`` :data:`REQUANTISE_STAGES` enabled
    edges after ``x``, ``mult`` and ``bias`` were presented. ``mult`` and ``bias`` are ints (constants)
    or Amaranth values (e.g. a table read or a register), delayed inside alongside ``x``.

    Parameters
    ----------
    m : Module
        Where the logic goes.
    x, mult, bias : int or Value
        Operands; the widths of every intermediate come from their bounds.
    shift, low, high : int
        As in :func:`requantise`; the clamp is left out where the range cannot exceed ``[low, high]``.
    enable : Value or int
        Advance condition of every stage (a stream pipeline's ``advance``).
    x_bounds, mult_bounds, bias_bounds : (int, int), optional
        Tighter ranges than the values' shapes (e.g. of a table of constants).
    product_bounds, sum_bounds : (int, int), optional
        Tighter ranges of ``x * mult`` and ``x * mult + bias`` known to the caller (e.g. per
        channel), intersected with the derived ones.
    mul_latency : int, optional
        Cycles of the product (:func:`~.multiplier.registered_product`'s ``latency``); ``None``:
        the least its operands take (:func:`~.multiplier.product_latency`).
    external_modules : bool
        The product on a DSP block's own registers (an instance of the Verilog multiplier
        module), for Verilog output.
    """
    check_int("shift", shift, low=0)
    x, xb = _param("x", x, x_bounds)
    mult, mb = _param("mult", mult, mult_bounds)
    bias, bb = _param("bias", bias, bias_bounds)
    rnd = (1 << (shift - 1)) if shift else 0
    pb = _intersect(product_range(xb, mb), product_bounds)
    sb = _intersect((pb[0] + bb[0], pb[1] + bb[1]), sum_bounds)
    sb_rounded = (sb[0] + rnd, sb[1] + rnd)
    # the product's stages
    x, mult = _operand(x, xb), _operand(mult, mb)
    if mul_latency is None:
        mul_latency = product_latency(x, mult)
    product = registered_product(
        m, x, mult, latency=mul_latency, enable=enable, domain=domain, external_modules=external_modules,
        name=f"{name}_mul",
    )  # fmt: skip
    bias_now = delayed(m, bias, mul_latency, enable=enable, domain=domain, name=f"{name}_bias")
    # the sum with the rounding constant
    total = Signal(shape_for(*sb_rounded), name=f"{name}_sum")
    addend = bias_now + rnd if isinstance(bias_now, int) else bias_now + Const(rnd)
    with m.If(enable):
        m.d[domain] += total.eq(hdl_fit(hdl_fit(product, *pb) + addend, *sb_rounded))
    # shift (floor) and clamp
    natural = (sb_rounded[0] >> shift, sb_rounded[1] >> shift)
    return _output(m, domain, enable, total >> shift, natural, low, high, f"{name}_out")


def rprelu_bounds(x_bounds, gamma_bounds, slope_bounds, zeta_bounds, *, slope_shift: int, out_shift: int):
    """Ranges of the intermediates of :func:`rprelu` (``u``, ``v``, ``v + zeta + rounding``) and of
    the result before the clamp, as a dict of ``(low, high)`` pairs."""
    x_bounds, gamma_bounds, zeta_bounds = _ints(x_bounds), _ints(gamma_bounds), _ints(zeta_bounds)
    ul, uh = x_bounds[0] - gamma_bounds[1], x_bounds[1] - gamma_bounds[0]
    candidates = []
    if uh >= 0:
        candidates += [max(ul, 0) << slope_shift, uh << slope_shift]
    if ul < 0:
        candidates += list(product_range((ul, min(uh, -1)), slope_bounds))
    vl, vh = min(candidates), max(candidates)
    rnd = (1 << (out_shift - 1)) if out_shift else 0
    wl, wh = vl + zeta_bounds[0] + rnd, vh + zeta_bounds[1] + rnd
    return {"u": (ul, uh), "v": (vl, vh), "w": (wl, wh), "y": (wl >> out_shift, wh >> out_shift)}


def rprelu_datapath(
    m: Module,
    x,
    gamma,
    slope,
    zeta,
    *,
    slope_shift: int,
    out_shift: int,
    low: int,
    high: int,
    enable=1,
    domain: str = "sync",
    x_bounds=None,
    gamma_bounds=None,
    slope_bounds=None,
    zeta_bounds=None,
    mul_latency: int | None = None,
    external_modules: bool = False,
    name: str = "rprelu",
) -> Signal:
    """Build :func:`rprelu` for one element into ``m``; reusable with per-image parameters.

    Registered stages: ``u = x - gamma``; ``mul_latency`` for ``u << slope_shift`` and
    ``u * slope`` (:func:`~.multiplier.registered_product`); ``w = v + zeta`` plus the rounding
    constant, ``v`` the branch ``u``'s sign picks; ``clamp(w >> out_shift, low, high)``; each
    advancing on a clock edge of ``domain`` where ``enable`` is high. The returned signal (shape
    ``shape_for(low, high)``) holds the result ``mul_latency +`` :data:`RPRELU_STAGES` enabled edges after ``x``,
    ``gamma``, ``slope`` and ``zeta`` were presented together: each of the three may be an int (a
    constant: no logic) or an Amaranth value (a table read, or INSTA-PReLU's per-image register);
    values are carried along the pipeline with ``x``, so a parameter may change on the very next
    edge.

    Parameters
    ----------
    m : Module
        Where the logic goes.
    x, gamma, slope, zeta : int or Value
        Operands; every intermediate width comes from their bounds (:func:`rprelu_bounds`).
    slope_shift, out_shift, low, high : int
        As in :func:`rprelu`; the clamp is left out where the range cannot exceed ``[low, high]``.
    enable : Value or int
        Advance condition of every stage (a stream pipeline's ``advance``).
    x_bounds, gamma_bounds, slope_bounds, zeta_bounds : (int, int), optional
        Ranges tighter than the values' shapes (the caller guarantees them), e.g. the range of
        a per-image gamma that a register holds in a wider shape.
    mul_latency : int, optional
        Cycles of the product and of the branch beside it; ``None``: the least its operands take
        (:func:`~.multiplier.product_latency`; :data:`~.multiplier.MUL_LATENCY` when ``u`` cannot be
        negative: no product).
    external_modules : bool
        The product on a DSP block's own registers (an instance of the Verilog multiplier
        module), for Verilog output.
    """
    check_int("slope_shift", slope_shift, low=0)
    check_int("out_shift", out_shift, low=0)
    x, xb = _param("x", x, x_bounds)
    gamma, gb = _param("gamma", gamma, gamma_bounds)
    slope, pb = _param("slope", slope, slope_bounds)
    zeta, zb = _param("zeta", zeta, zeta_bounds)
    r = rprelu_bounds(xb, gb, pb, zb, slope_shift=slope_shift, out_shift=out_shift)
    u_shape = shape_for(*r["u"])
    if mul_latency is None:
        mul_latency = MUL_LATENCY if r["u"][0] >= 0 else product_latency(u_shape, _operand(slope, pb))
    rnd = (1 << (out_shift - 1)) if out_shift else 0
    # stage 1: u = x - gamma
    u = Signal(u_shape, name=f"{name}_u")
    with m.If(enable):
        m.d[domain] += u.eq(hdl_fit(x - gamma, *r["u"]))
    slope1 = delayed(m, slope, enable=enable, domain=domain, name=f"{name}_slope")
    zeta1 = delayed(m, zeta, enable=enable, domain=domain, name=f"{name}_zeta1")

    # the two branches of the PReLU, each registered as long as the product takes
    def beside_product(value, label):
        return delayed(m, value, mul_latency, enable=enable, domain=domain, name=f"{name}_{label}")

    shifted = product = None
    if r["u"][1] >= 0:  # u may be >= 0: u << slope_shift
        shifted_bounds = (max(r["u"][0], 0) << slope_shift, r["u"][1] << slope_shift)
        shifted = beside_product(hdl_fit(u << slope_shift, *shifted_bounds), "shifted")
    if r["u"][0] < 0:  # u may be < 0: u * slope, which the sum reads only then
        product_bounds = product_range((r["u"][0], min(r["u"][1], -1)), pb)
        product = registered_product(
            m, u, _operand(slope1, pb), latency=mul_latency, enable=enable, domain=domain,
            external_modules=external_modules, name=f"{name}_mul",
        )  # fmt: skip
        product = hdl_fit(product, *product_bounds)
    if product is None or shifted is None:
        v = shifted if product is None else product
    else:
        v = Mux(beside_product(u[-1], "negative"), product, shifted)
    zeta_now = beside_product(zeta1, "zeta")
    # add zeta and the rounding constant
    addend = zeta_now + rnd if isinstance(zeta_now, int) else zeta_now + Const(rnd)
    total = Signal(shape_for(*r["w"]), name=f"{name}_w")
    with m.If(enable):
        m.d[domain] += total.eq(hdl_fit(v + addend, *r["w"]))
    # shift (floor) and clamp
    return _output(m, domain, enable, total >> out_shift, r["y"], low, high, f"{name}_out")


class _PerChannelParameters(ChannelParameters):
    """The parameters shared by :class:`Requantise` and :class:`RPReLU` and the figures derived
    from them: a stream of channel words through a per-element datapath of fixed latency, with
    per-channel constants from a table."""

    #: One word per cycle.
    initiation_interval = 1

    def _check_common(self, in_shape, channels, simd) -> None:
        self._in_shape = check_shape("in_shape", in_shape)
        self._check_channels(channels, simd)

    @property
    def in_shape(self) -> Shape:
        return self._in_shape

    @property
    def out_shape(self) -> Shape:
        """Element shape of the output words."""
        return self._out_shape

    @property
    def low(self) -> int:
        """Smallest output value (the clamp's lower limit)."""
        return self._low

    @property
    def high(self) -> int:
        """Largest output value (the clamp's upper limit)."""
        return self._high

    @property
    def latency(self) -> int:
        """Cycles from an input transfer to its output word's ``valid`` (with no back-pressure)."""
        return 1 + self._table_stages + self._datapath_latency

    @property
    def _table_stages(self) -> int:
        """Registers the constants' word passes after the table's read: one when there is a
        table (its ROM becomes logic whose levels must not run on into the datapath's)."""
        return int(self.groups > 1)

    @property
    def multipliers(self) -> int:
        """MULT18X18D blocks of the lanes' products (:func:`~.multiplier.registered_product_blocks`)."""
        return sum(registered_product_blocks(x, factor, width=width) for x, factor, width in self._lane_products())

    @property
    def _mul_latency(self) -> int:
        """Cycles of every lane's product: the longest any lane's operands take."""
        return max((product_latency(x, factor) for x, factor, _ in self._lane_products()), default=MUL_LATENCY)

    @property
    def _datapath_latency(self) -> int:
        return self._stages + self._mul_latency

    def _lane_products(self) -> list[tuple[Shape, object, int | None]]:
        """``(operand shape, factor, kept width)`` of each lane's product: the factor the lane's
        channel constant when the constants fit one word, else the table field's shape (all bits
        kept); none where there is no product."""
        factor, operand, width = self._product()
        if operand is None:
            return []
        if self.groups > 1:
            return [(operand, shape_for(*self._column_ranges()[factor]), None)] * self._simd
        return [(operand, int(c), width) for c in self._columns()[factor]]

    @property
    def memory_bits(self) -> int:
        """Bits of the per-channel constant table (0 when the constants fit one word: no table)."""
        groups = self.groups
        if groups == 1:
            return 0
        return groups * self._simd * sum(shape_for(*r).width for r in self._column_ranges().values())

    def _column_ranges(self) -> dict[str, tuple[int, int]]:
        """``(low, high)`` of each per-channel constant: the table fields' ranges."""
        return {key: (int(c.min()), int(c.max())) for key, c in self._columns().items()}

    def lut_features(self) -> tuple[float, ...]:
        groups = self.groups
        # the constants are arithmetic operands: a ROM in logic costs whole LUT4s, none merged
        rom = rom_luts(groups, self.memory_bits // max(1, groups), merged=False)
        s = self._simd
        return (1.0, float(s * self._in_shape.width), float(s * self._out_shape.width), float(rom))

    def figures(self, words: int) -> Figures:
        return Figures(words, self.latency, self.latency, self.luts, self.memory_bits, self.multipliers)


class _PerChannel(_PerChannelParameters, ExternalModules, wiring.Component):
    """Shared frame of :class:`Requantise` and :class:`RPReLU`: ports and the pipeline around the
    per-element datapath."""

    def _signature(self):
        return {
            "i": In(stream.Signature(channel_word(self._in_shape, self._simd))),
            "o": Out(stream.Signature(channel_word(self._out_shape, self._simd))),
        }

    def elaborate(self, platform):
        m = Module()
        groups = self.groups
        advance = Signal()
        m.d.comb += [advance.eq(~self.o.valid | self.o.ready), self.i.ready.eq(advance)]
        group = Signal(range(groups))
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += group.eq(Mux(group == groups - 1, 0, group + 1))
        # the input word beside its channels' constants, read (and registered again) from the table
        stages = 1 + self._table_stages
        word = delayed(m, self.i.payload, stages, enable=advance, name="x", reset_less=True)
        x = channel_word(self._in_shape, self._simd)(word)
        tags = [delayed(m, self.i.valid, stages, enable=advance, name="valid_in")]
        table = channel_table(
            m, "constants", self._columns(), simd=self._simd, group=group, enable=advance,
            registered=self._table_stages > 0,
        )  # fmt: skip
        for k in range(self._simd):
            m.d.comb += self.o.payload[k].eq(self._datapath(m, x[k], table, k, advance))
        for stage in range(1, self._datapath_latency):
            tags.append(delayed(m, tags[-1], enable=advance, name=f"valid{stage}"))
        with m.If(advance):
            m.d.sync += self.o.valid.eq(tags[-1])
        return m


class RequantiseParameters(_PerChannelParameters):
    """The parameters of a :class:`Requantise` and the figures derived from them."""

    lut_kind = "requantise"

    _stages = REQUANTISE_STAGES

    def __init__(self, *, in_shape, channels: int, simd: int, mult, bias, shift: int, low=None, high=None) -> None:
        self._check_common(in_shape, channels, simd)
        self._mult = check_int_array("mult", mult, shape=(self._channels,))
        self._bias = check_int_array("bias", bias, shape=(self._channels,))
        self._shift = check_int("shift", shift, low=0, high=64)
        xb = bounds(self._in_shape)
        per_channel = [
            requantise_bounds(xb, (int(m_), int(m_)), (int(b_), int(b_)), shift=self._shift)
            for m_, b_ in zip(self._mult, self._bias, strict=True)
        ]
        natural = (min(b[0] for b in per_channel), max(b[1] for b in per_channel))
        self._low = natural[0] if low is None else check_int("low", low, low=None)
        self._high = natural[1] if high is None else check_int("high", high, low=None)
        if self._low > self._high:
            raise ValueError(f"low ({self._low}) must be <= high ({self._high})")
        self._out_shape = shape_for(self._low, self._high)

    @property
    def mult(self) -> np.ndarray:
        return self._mult

    @property
    def bias(self) -> np.ndarray:
        return self._bias

    @property
    def shift(self) -> int:
        return self._shift

    def _columns(self) -> dict:
        return {"mult": self._mult, "bias": self._bias}

    def _channel_products(self) -> list[tuple[int, int]]:
        """The range of ``x * mult_c`` of each channel (together tighter than over the table's range)."""
        return [product_range(bounds(self._in_shape), (int(v), int(v))) for v in self._mult]

    def _product(self):
        """``(factor column, operand shape, kept product width)`` of the lanes' products."""
        products = self._channel_products()
        derived = product_range(bounds(self._in_shape), self._column_ranges()["mult"])
        kept = _intersect(derived, (min(p[0] for p in products), max(p[1] for p in products)))
        return "mult", self._in_shape, shape_for(*kept).width


class Requantise(RequantiseParameters, _PerChannel):
    """Per-channel fixed-point affine map (batch norm): :func:`requantise` on a stream.

    ``y = clamp(round_shift(x * mult_c + bias_c, shift), low, high)`` for every element, channel
    ``c`` cycling through ``channels`` in groups of ``simd`` (word ``n`` carries channels
    ``(n mod G)*simd ...``, ``G = channels / simd``). Pipelined (table read, multiply, add, round
    and clamp), one word per cycle, registered output; :attr:`latency` cycles.

    Parameters
    ----------
    in_shape : shape-castable
        Integer element shape of the input.
    channels, simd : int
        Channels per pixel and elements per word (``simd`` divides ``channels``).
    mult, bias : int vectors of length ``channels``
        Per-channel multiplier and bias (in units of ``2**-shift`` of the output).
    shift : int
        Right shift with rounding (:func:`~.fixed.round_shift`), 0 to 64.
    low, high : int, optional
        Output clamp; ``None`` takes the bound of ``round_shift(x * mult_c + bias_c)`` over
        every ``x`` of ``in_shape`` and every channel (no clamp on that side). The output
        element shape is ``shape_for(low, high)``.
    external_modules : bool
        Each product on a DSP block's own registers (an instance of
        :data:`~.multiplier.MULTIPLIER_MODULE`), for Verilog output; ``False`` (default): inline,
        for Amaranth's simulator. Same cycles either way.

    Members
    -------
    i : In(stream.Signature(channel_word(in_shape, simd)))
    o : Out(stream.Signature(channel_word(out_shape, simd)))
    """

    def __init__(self, *, external_modules: bool = False, **params) -> None:
        super().__init__(**params)
        self._set_external_modules(external_modules)
        wiring.Component.__init__(self, self._signature())

    def _datapath(self, m, x, table, k, advance):
        products = self._channel_products()
        sums = [(p[0] + int(b), p[1] + int(b)) for p, b in zip(products, self._bias, strict=True)]
        return requantise_datapath(
            m,
            x,
            table["mult"][0][k],
            table["bias"][0][k],
            shift=self._shift,
            low=self._low,
            high=self._high,
            enable=advance,
            mult_bounds=table["mult"][1],
            bias_bounds=table["bias"][1],
            product_bounds=(min(p[0] for p in products), max(p[1] for p in products)),
            sum_bounds=(min(s[0] for s in sums), max(s[1] for s in sums)),
            mul_latency=self._mul_latency,
            external_modules=self._external_modules,
            name=f"requantise{k}",
        )


class RPReLUParameters(_PerChannelParameters):
    """The parameters of an :class:`RPReLU` and the figures derived from them."""

    lut_kind = "rprelu"

    _stages = RPRELU_STAGES

    def __init__(
        self,
        *,
        in_shape,
        channels: int,
        simd: int,
        gamma,
        slope,
        zeta,
        slope_shift: int,
        out_shift: int,
        low: int,
        high: int,
    ) -> None:
        self._check_common(in_shape, channels, simd)
        self._gamma = check_int_array("gamma", gamma, shape=(self._channels,))
        self._slope = check_int_array("slope", slope, shape=(self._channels,))
        self._zeta = check_int_array("zeta", zeta, shape=(self._channels,))
        self._slope_shift = check_int("slope_shift", slope_shift, low=0, high=64)
        self._out_shift = check_int("out_shift", out_shift, low=0, high=128)
        self._low = check_int("low", low, low=None)
        self._high = check_int("high", high, low=None)
        if self._low > self._high:
            raise ValueError(f"low ({self._low}) must be <= high ({self._high})")
        self._out_shape = shape_for(self._low, self._high)

    @property
    def gamma(self) -> np.ndarray:
        return self._gamma

    @property
    def slope(self) -> np.ndarray:
        return self._slope

    @property
    def zeta(self) -> np.ndarray:
        return self._zeta

    @property
    def slope_shift(self) -> int:
        return self._slope_shift

    @property
    def out_shift(self) -> int:
        return self._out_shift

    def _columns(self) -> dict:
        return {"gamma": self._gamma, "slope": self._slope, "zeta": self._zeta}

    def _product(self):
        """``(factor column, operand shape, kept product width)`` of the negative branch's
        ``u * slope_c``; no operand when ``u`` cannot be negative."""
        columns = self._column_ranges()
        r = rprelu_bounds(
            bounds(self._in_shape),
            columns["gamma"],
            columns["slope"],
            columns["zeta"],
            slope_shift=self._slope_shift,
            out_shift=self._out_shift,
        )
        if r["u"][0] >= 0:
            return "slope", None, 0
        return "slope", shape_for(*r["u"]), shape_for(*r["v"]).width


class RPReLU(RPReLUParameters, _PerChannel):
    """RPReLU on a stream: :func:`rprelu` with per-channel ``gamma``, ``slope`` and ``zeta``.

    ``u = x - gamma_c``; ``v = u << slope_shift`` if ``u >= 0`` else ``u * slope_c``;
    ``y = clamp(round_shift(v + zeta_c, out_shift), low, high)``, channel ``c`` cycling as in
    :class:`Requantise`. The per-element logic is :func:`rprelu_datapath`, which INSTA-PReLU
    reuses with a per-image gamma. One word per cycle, registered output; :attr:`latency` cycles.

    Parameters
    ----------
    in_shape : shape-castable
        Integer element shape of the input.
    channels, simd : int
        Channels per pixel and elements per word (``simd`` divides ``channels``).
    gamma, slope, zeta : int vectors of length ``channels``
        Shift before the PReLU (units of ``x``), negative slope (units of ``2**-slope_shift``)
        and shift after it (units of ``2**-slope_shift`` of ``x``).
    slope_shift, out_shift : int
        Fraction bits of the slope (0 to 64), and the rounding right shift of the result (0 to 128).
    low, high : int
        Output clamp; the output element shape is ``shape_for(low, high)``.
    external_modules : bool
        Each product on a DSP block's own registers (an instance of
        :data:`~.multiplier.MULTIPLIER_MODULE`), for Verilog output; ``False`` (default): inline,
        for Amaranth's simulator. Same cycles either way.

    Members
    -------
    i : In(stream.Signature(channel_word(in_shape, simd)))
    o : Out(stream.Signature(channel_word(out_shape, simd)))
    """

    def __init__(self, *, external_modules: bool = False, **params) -> None:
        super().__init__(**params)
        self._set_external_modules(external_modules)
        wiring.Component.__init__(self, self._signature())

    def _datapath(self, m, x, table, k, advance):
        return rprelu_datapath(
            m,
            x,
            table["gamma"][0][k],
            table["slope"][0][k],
            table["zeta"][0][k],
            slope_shift=self._slope_shift,
            out_shift=self._out_shift,
            low=self._low,
            high=self._high,
            enable=advance,
            gamma_bounds=table["gamma"][1],
            slope_bounds=table["slope"][1],
            zeta_bounds=table["zeta"][1],
            mul_latency=self._mul_latency,
            external_modules=self._external_modules,
            name=f"rprelu{k}",
        )
