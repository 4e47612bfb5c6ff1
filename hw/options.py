"""The one build option every component with memories shares: inline, or instances of Verilog modules.

``external_modules`` changes how a component is built, never what it computes or its figures:
``True`` makes its read/write memories (an XNOR unit's popcounts) instances of the shared Verilog
modules (:func:`~.ram.ram_verilog`, :func:`~.popcount.popcount_verilog`), for Verilog output;
``False`` keeps them inline, for Amaranth's simulator.
"""

from __future__ import annotations

from ._checks import check_flag

__all__ = ["ExternalModules"]


class ExternalModules:
    """Mixin of the components that take ``external_modules``; their ``__init__`` calls
    :meth:`_set_external_modules` before building ports."""

    _external_modules = False

    def _set_external_modules(self, value: object) -> None:
        self._external_modules = check_flag("external_modules", value)

    @property
    def external_modules(self) -> bool:
        """Whether the memories (an XNOR unit's popcounts) are instances of the shared Verilog modules."""
        return self._external_modules
