"""The FPGA parts ``build`` and ``generate --device`` know: their capacities and names, and the boards' parts."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import UserError

__all__ = [
    "DEVICES",
    "ECP5_PLACED_LUT_FACTOR",
    "PLANNED_LUT_SHARE",
    "Device",
    "DeviceError",
    "bigger_devices",
    "board_device",
    "device_named",
]


class DeviceError(UserError, ValueError):
    """An unknown device or board; the message is one line listing the known ones."""


@dataclass(frozen=True)
class Device:
    """An FPGA part: nextpnr's names for it and the capacities the fit check uses.

    ``luts`` are LUT4 (ECP5 slices hold two; an iCE40 logic cell one), ``bram`` block RAMs of
    ``bram_bits`` each (ECP5 ``DP16KD`` 18 kbit, iCE40 ``SB_RAM40_4K`` 4 kbit), ``dsp`` the
    multiplier blocks (ECP5 18 x 18, iCE40 UltraPlus 16 x 16; none on the HX parts), ``io`` the
    user I/O pins of ``package``, ``clock_pin`` a pin of ``package`` with a dedicated path to
    the global clock network, which a build without a board gives the clock (``None``: the
    placer picks one), ``placed_lut_factor`` the LUT4 nextpnr places per LUT4 of synthesis
    (:meth:`placed_luts`).
    """

    name: str
    family: str
    nextpnr: str
    package: str
    luts: int
    ff: int
    bram: int
    bram_bits: int
    dsp: int
    io: int
    clock_pin: str | None = None
    placed_lut_factor: float = 1.0

    def placed_luts(self, luts: int) -> int:
        """The LUT4 that ``luts`` LUT4 of synthesis (LUT4 + 2 x carry: the estimate's unit) take
        once nextpnr has packed them, which is what decides whether a design fits."""
        return math.ceil(luts * self.placed_lut_factor)

    @property
    def memory_bits(self) -> int:
        """Bits of block RAM."""
        return self.bram * self.bram_bits

    @property
    def bitstream_suffix(self) -> str:
        return ".bit" if self.family == "ecp5" else ".bin"


#: nextpnr's placed LUT4 (``TRELLIS_COMB`` cells) per LUT4 of synthesis on ECP5: beyond Yosys's
#: LUT4 + 2 x CCU2C it counts the LUT RAMs' cells and adds cells while packing (CNV: 10,112
#: LUT4 before packing, 11,520 after). Measured on the designs of ``bench/hardware.py``
#: (LFE5U-85F): 1.15 to 1.21.
#: The iCE40 parts keep 1.0: not measured.
ECP5_PLACED_LUT_FACTOR = 1.18


def _ecp5(name: str, nextpnr: str, *, luts: int, bram: int, dsp: int, io: int) -> Device:
    """An ECP5 part in the CABGA381 package: a flip-flop per LUT4, 18 kbit DP16KD, the clock on G2."""
    return Device(name, "ecp5", nextpnr, "CABGA381", luts, luts, bram, 18432, dsp, io, "G2", ECP5_PLACED_LUT_FACTOR)


#: The devices ``build`` supports, by name (Lattice data sheets; packages as on common boards;
#: the ECP5 clock pin G2 is PCLKT6_0 of the CABGA381 package, the ULX3S oscillator's pin).
DEVICES = {
    d.name: d
    for d in (
        _ecp5("LFE5U-25F", "25k", luts=24288, bram=56, dsp=28, io=197),
        _ecp5("LFE5U-45F", "45k", luts=43848, bram=108, dsp=72, io=203),
        _ecp5("LFE5U-85F", "85k", luts=83640, bram=208, dsp=156, io=205),
        Device("up5k", "ice40", "up5k", "sg48", 5280, 5280, 30, 4096, 8, 39),
        Device("hx8k", "ice40", "hx8k", "ct256", 7680, 7680, 32, 4096, 0, 206),
    )
}


#: Share of a device's LUT4 that ``generate --device`` lets a design's estimate take: synthesis
#: comes out within a few percent of the estimate, placement adds about 18 % on ECP5
#: (:data:`ECP5_PLACED_LUT_FACTOR`), which leaves about 70 % of the device placed: room for
#: nextpnr's router.
PLANNED_LUT_SHARE = 0.6


def device_named(name: str) -> Device:
    """The :class:`Device` called ``name`` (case-insensitive); :class:`DeviceError` listing the known ones."""
    for key, device in DEVICES.items():
        if key.lower() == str(name).lower():
            return device
    raise DeviceError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")


def board_device(board: str) -> Device:
    """The :class:`Device` on ``board`` (a key of :data:`instabnn_hw.hw.board.BOARDS`); :class:`DeviceError`
    listing the known boards."""
    from .board import BOARDS

    if board not in BOARDS:
        raise DeviceError(f"unknown board {board!r}; choose one of {', '.join(BOARDS)}")
    spec = BOARDS[board]
    return next(d for d in DEVICES.values() if d.nextpnr == spec.device and d.family == spec.family)


def bigger_devices(device: Device) -> list[str]:
    """The larger parts of ``device``'s family."""
    return [d.name for d in DEVICES.values() if d.family == device.family and d.luts > device.luts]
