"""The shared Verilog modules that components built with ``external_modules=True`` instantiate.

:func:`module_sources` is the one list of them: the design emitter writes each beside a design,
the cocotb stream tests compile them with every bundle, and component synthesis reads them.
"""

from __future__ import annotations

from collections.abc import Iterable

from .multiplier import MULTIPLIER_MODULE, multiplier_verilog
from .popcount import POPCOUNT_MODULE, popcount_verilog
from .ram import RAM_MODULE, ram_verilog
from .rom import ROM_MODULE, rom_verilog

__all__ = ["module_sources"]

#: First line of the popcount source (which holds no module when no component counts bits).
_POPCOUNT_HEADER = "// The XNOR MVUs' popcounts: one module per (width, stages) (instabnn_hw.hw.popcount).\n"


def module_sources(popcount_sizes: Iterable[tuple[int, int]] = ()) -> dict[str, str]:
    """Verilog source of each shared module, by file stem: the ROM, RAM and multiplier modules, and
    the popcount modules of ``popcount_sizes`` (``(width, stages)`` pairs) in one source."""
    return {
        ROM_MODULE: rom_verilog(),
        RAM_MODULE: ram_verilog(),
        MULTIPLIER_MODULE: multiplier_verilog(),
        POPCOUNT_MODULE: _POPCOUNT_HEADER + popcount_verilog(popcount_sizes),
    }
