"""What this machine has: the memory sizes checks refuse work by, and their wording."""

from __future__ import annotations

import os

__all__ = ["format_bytes", "physical_memory"]


def physical_memory() -> int | None:
    """Bytes of memory this machine has, or None where the system does not say."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None
    return memory if memory > 0 else None  # sysconf answers -1 for what it does not know


def format_bytes(count: int) -> str:
    """``count`` bytes in binary units with one decimal: ``"23.4 GiB"``."""
    if count < 1024:
        return f"{count} bytes"
    units = ("KiB", "MiB", "GiB", "TiB", "PiB")
    value, unit = count / 1024, 0
    while value >= 1024 and unit < len(units) - 1:
        value, unit = value / 1024, unit + 1
    return f"{value:.1f} {units[unit]}" if value < 10_000 else f"{value:.3g} {units[unit]}"
