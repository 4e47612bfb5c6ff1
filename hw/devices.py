"""The FPGA parts ``build`` and ``generate --device`` know: their capacities and names, and the boards' parts."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError

__all__ = [
    "DEVICES",
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
    placer picks one).
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

    @property
    def memory_bits(self) -> int:
        """Bits of block RAM."""
        return self.bram * self.bram_bits

    @property
    def bitstream_suffix(self) -> str:
        return ".bit" if self.family == "ecp5" else ".bin"


#: The devices ``build`` supports, by name (Lattice data sheets; packages as on common boards;
#: the ECP5 clock pin G2 is PCLKT6_0 of the CABGA381 package, the ULX3S oscillator's pin).
DEVICES = {
    d.name: d
    for d in (
        Device("LFE5U-25F", "ecp5", "25k", "CABGA381", 24288, 24288, 56, 18432, 28, 197, "G2"),
        Device("LFE5U-45F", "ecp5", "45k", "CABGA381", 43848, 43848, 108, 18432, 72, 203, "G2"),
        Device("LFE5U-85F", "ecp5", "85k", "CABGA381", 83640, 83640, 208, 18432, 156, 205, "G2"),
        Device("up5k", "ice40", "up5k", "sg48", 5280, 5280, 30, 4096, 8, 39),
        Device("hx8k", "ice40", "hx8k", "ct256", 7680, 7680, 32, 4096, 0, 206),
    )
}


#: Share of a device's LUT4 that ``generate --device`` lets a design's estimate take: synthesis
#: comes out about 15 % above the estimate, placement adds about 20 % more (carry and RAM cells),
#: and nextpnr routes reliably below about 85 % of the device.
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
