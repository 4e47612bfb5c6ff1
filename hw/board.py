"""A generated design on an FPGA board, fed images and answering classes over the board's UART.

Host protocol (8N1 at ``baud``, 115200 by default, on the board's USB serial port):

* after configuration (or a reset) the board waits for an image;
* the host sends each image as ``H * W * C`` bytes, the unsigned 8-bit pixel values in raster
  order (row 0 left to right, then row 1, ...), channels fastest (channel 0 of a pixel first);
* the board answers one byte per image: the class index (the ``index`` field of the design's
  ``o`` output, zero-extended to 8 bits).

The link counts bytes only: there is no header, checksum or resynchronisation, so a lost or
extra byte shifts every later image until the board is reset (button 0, where the board has
one, or reconfiguration). The host may send the next image before the previous answer arrives
(the design takes pixels far faster than the line delivers them); answers come in image order.
The receiver has no flow control: the design must take each pixel within about ``C`` byte
times (``10 * C`` bit periods; the link holds one pixel and the next one's bytes), else a byte
is dropped and ``ImageLink.errors.overrun`` is set (an error LED where the board has a spare one). A
design is far faster than the line (its frame period is a small fraction of the
``10 * H * W * C`` bit periods an image takes), so its input is waiting for each pixel.

:func:`image_bytes` is the host side (images to bytes); :class:`ImageLink` is the UART side;
:class:`BoardTop` joins it to the design's Verilog module ``instabnn_top`` (an
:class:`~amaranth.hdl.Instance`) on an amaranth-boards platform; :func:`board_files` renders the
RTLIL and pin constraints for a board in :data:`BOARDS` without running any tool;
:class:`~instabnn_hw.design_folder.DesignPorts` (the manifest's ``ports``) gives the design's port widths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from amaranth.build import ResourceError
from amaranth.hdl import ClockSignal, Elaboratable, Instance, Module, ResetInserter, Signal, Value, unsigned
from amaranth.lib import data, io, stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out
from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.ulx3s import (
    ULX3S_25F_Platform,
    ULX3S_45F_Platform,
    ULX3S_85F_Platform,
)

from ..design_folder import TOP_NAME, DesignPorts
from ._checks import check_int, check_int_array
from .uart import UART_ERRORS, UartRx, UartTx, divisor_for

__all__ = [
    "BOARDS",
    "Board",
    "BoardTop",
    "ImageLink",
    "board_files",
    "image_bytes",
]

#: Cycles :class:`BoardTop` holds the link and the design in reset after configuration.
POWER_ON_CYCLES = 16


def image_bytes(images) -> bytes:
    """The bytes a host sends for ``images``: one ``C x H x W`` image or ``N x C x H x W`` images of
    integers 0 to 255, each as ``H * W * C`` bytes in raster order, channels fastest
    (``images.transpose(0, 2, 3, 1)``), which :class:`ImageLink` gathers into the design's pixel
    words (:func:`~.layouts.tensor_to_words` order, element ``c`` = channel ``c``)."""
    array = np.asarray(images)
    if array.ndim == 3:
        array = array[np.newaxis]
    if array.ndim != 4:
        raise ValueError(f"images must be C x H x W or N x C x H x W, not shape {array.shape}")
    array = check_int_array("images", array, low=0, high=255)
    return array.transpose(0, 2, 3, 1).astype(np.uint8).tobytes()


class ImageLink(wiring.Component):
    """UART to pixel stream, and class stream to UART: the board side of the host protocol.

    Bytes received on ``rx`` are gathered ``channels`` at a time (channel 0 first) into one
    ``pixels`` word; the last byte of a pixel moves the gathered bytes to the ``pixels`` output
    register, so ``pixels`` obeys the stream rules while the next pixel's bytes arrive. The
    ``index`` field (the low ``class_bits`` bits) of each ``result`` payload is sent on ``tx``
    as one byte. ``errors`` are the receiver's sticky flags (:data:`~.uart.UART_ERRORS`).

    Parameters
    ----------
    channels : int
        Pixel channels ``C`` (bytes per pixel).
    class_bits : int
        Width of the result's class index field, 1 to 8.
    result_width : int
        Width of the whole ``result`` payload (the design's ``o`` payload), >= ``class_bits``.
    divisor : int
        Clock cycles per UART bit, >= 2 (:func:`~.uart.divisor_for`).

    Members
    -------
    rx : In(1, init=1)
    tx : Out(1, init=1)
    pixels : Out(stream.Signature(data.ArrayLayout(unsigned(8), channels)))
    result : In(stream.Signature(unsigned(result_width)))
    errors : Out(UART_ERRORS)
    """

    def __init__(self, *, channels: int, class_bits: int, result_width: int, divisor: int) -> None:
        self._channels = check_int("channels", channels)
        self._class_bits = check_int("class_bits", class_bits, high=8)
        self._result_width = check_int("result_width", result_width, low=self._class_bits)
        self._divisor = check_int("divisor", divisor, low=2)
        super().__init__(
            {
                "rx": In(1, init=1),
                "tx": Out(1, init=1),
                "pixels": Out(stream.Signature(data.ArrayLayout(unsigned(8), self._channels))),
                "result": In(stream.Signature(unsigned(self._result_width))),
                "errors": Out(UART_ERRORS),
            }
        )

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def class_bits(self) -> int:
        return self._class_bits

    @property
    def result_width(self) -> int:
        return self._result_width

    @property
    def divisor(self) -> int:
        return self._divisor

    @property
    def initiation_interval(self) -> int:
        """Cycles per pixel at the full line rate: ``10 * divisor * channels``."""
        return 10 * self._divisor * self._channels

    def elaborate(self, platform):
        m = Module()
        m.submodules.rx = rx = UartRx(divisor=self._divisor)
        m.submodules.tx = tx = UartTx(divisor=self._divisor)
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx), self.errors.eq(rx.errors)]

        last = self._channels - 1
        channel = Signal(range(self._channels))  # the channel the next byte belongs to
        gathered = [Signal(8, name=f"byte{k}") for k in range(last)]  # channels 0 .. C-2 of this pixel
        closing = channel == last
        m.d.comb += rx.o.ready.eq(~closing | ~self.pixels.valid | self.pixels.ready)
        with m.If(rx.o.valid & rx.o.ready):
            if last:
                with m.If(closing):
                    m.d.sync += channel.eq(0)
                with m.Else():
                    m.d.sync += channel.eq(channel + 1)
                for k, byte in enumerate(gathered):
                    with m.If(channel == k):
                        m.d.sync += byte.eq(rx.o.payload)
        with m.If(rx.o.valid & rx.o.ready & closing):
            m.d.sync += self.pixels.valid.eq(1)
            for k, byte in enumerate(gathered):
                m.d.sync += self.pixels.payload[k].eq(byte)
            m.d.sync += self.pixels.payload[last].eq(rx.o.payload)
        with m.Elif(self.pixels.ready):
            m.d.sync += self.pixels.valid.eq(0)

        m.d.comb += [
            tx.i.valid.eq(self.result.valid),
            tx.i.payload.eq(self.result.payload[: self._class_bits]),
            self.result.ready.eq(tx.i.ready),
        ]
        return m


@dataclass(frozen=True)
class Board:
    """A board the design can be built for.

    Attributes
    ----------
    name : str
        Key in :data:`BOARDS`.
    platform : type
        The amaranth-boards platform class.
    family : str
        ``"ecp5"`` or ``"ice40"`` (a key of :data:`~.synthesis.FAMILIES`).
    device : str
        The nextpnr device option without dashes (``nextpnr-ecp5 --85k``, ``nextpnr-ice40 --up5k``).
    package : str
        The package as nextpnr names it (``--package CABGA381`` / ``--package sg48``).
    clock_hz : float
        Frequency of the platform's default clock, which clocks the design.
    """

    name: str
    platform: type
    family: str
    device: str
    package: str
    clock_hz: float


#: The boards :func:`board_files` knows, by name.
BOARDS: dict[str, Board] = {
    board.name: board
    for board in (
        Board("ulx3s-25f", ULX3S_25F_Platform, "ecp5", "25k", "CABGA381", 25e6),
        Board("ulx3s-45f", ULX3S_45F_Platform, "ecp5", "45k", "CABGA381", 25e6),
        Board("ulx3s-85f", ULX3S_85F_Platform, "ecp5", "85k", "CABGA381", 25e6),
        Board("icebreaker", ICEBreakerPlatform, "ice40", "up5k", "sg48", 12e6),
    )
}


class BoardTop(Elaboratable):
    """The board's top: the UART :class:`ImageLink` and the design module ``instabnn_top``.

    Elaborated for an amaranth-boards platform only: it requests ``uart`` 0, clocks everything
    from the platform's default clock, resets the link and the design (``rst``) for
    :data:`POWER_ON_CYCLES` cycles after configuration and while button 0 is pressed (on boards
    that have one: a way to resynchronise the host protocol), ties ``logits__ready`` high (the
    logits are not used), and shows the last class index on the board's LEDs ``led`` 0, 1, ...
    (as many as the board has, up to ``class_bits``; none is fine) and the link's sticky errors
    (``errors.overrun | errors.framing``) on LED ``class_bits`` if the board has it.

    Parameters
    ----------
    ports : DesignPorts
        The design's ports (the manifest's); ``i`` must be ``channels`` bytes wide.
    channels : int
        Pixel channels ``C``.
    class_bits : int
        Width of the class index in the low bits of the ``o`` payload, 1 to 8.
    baud : int
        UART rate; the divisor comes from the platform's default clock (:func:`~.uart.divisor_for`).
    """

    def __init__(self, *, ports: DesignPorts, channels: int, class_bits: int, baud: int = 115200) -> None:
        if not isinstance(ports, DesignPorts):
            raise TypeError(f"ports must be a DesignPorts, not {ports!r}")
        self._channels = check_int("channels", channels)
        self._class_bits = check_int("class_bits", class_bits, high=min(8, ports.o.width))
        self._baud = check_int("baud", baud)
        if ports.i.width != 8 * self._channels:
            raise ValueError(f"ports.i.width ({ports.i.width}) must be 8 * channels ({8 * self._channels})")
        self._ports = ports

    @property
    def ports(self) -> DesignPorts:
        return self._ports

    def elaborate(self, platform):
        if platform is None:
            raise ValueError("BoardTop needs a board platform (see BOARDS)")
        m = Module()
        # the design's synchronous reset: some cycles after configuration (the ECP5 platforms' own
        # clock domain has no reset signal), and while button 0 is pressed where the board has one
        counter = Signal(range(POWER_ON_CYCLES + 1))
        with m.If(counter != POWER_ON_CYCLES):
            m.d.sync += counter.eq(counter + 1)
        reset = Signal()
        pressed = Signal()
        try:
            button = platform.request("button", 0, dir="-")
        except ResourceError:
            pass
        else:
            m.submodules.button = button = io.Buffer("i", button)
            m.submodules.button_sync = FFSynchronizer(button.i, pressed)
        m.d.comb += reset.eq((counter != POWER_ON_CYCLES) | pressed)

        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx = uart_rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = uart_tx = io.Buffer("o", uart.tx)
        divisor = divisor_for(platform.default_clk_frequency, self._baud)
        link = ImageLink(
            channels=self._channels, class_bits=self._class_bits, result_width=self._ports.o.width, divisor=divisor
        )
        m.submodules.link = ResetInserter(reset)(link)
        m.d.comb += [link.rx.eq(uart_rx.i), uart_tx.o.eq(link.tx)]
        m.submodules.design = Instance(
            TOP_NAME,
            i_clk=ClockSignal(),
            i_rst=reset,
            i_i__valid=link.pixels.valid,
            o_i__ready=link.pixels.ready,
            i_i__payload=Value.cast(link.pixels.payload),
            o_o__valid=link.result.valid,
            i_o__ready=link.result.ready,
            o_o__payload=link.result.payload,
            o_logits__valid=Signal(name="logits_valid"),
            i_logits__ready=1,
            o_logits__payload=Signal(self._ports.logits.width, name="logits_payload"),
        )

        shown = Signal(self._class_bits)  # the last class sent
        with m.If(reset):
            m.d.sync += shown.eq(0)
        with m.Elif(link.result.valid & link.result.ready):
            m.d.sync += shown.eq(link.result.payload[: self._class_bits])
        lights = [*shown, link.errors.overrun | link.errors.framing]
        for k, light in enumerate(lights):
            try:
                led = platform.request("led", k, dir="-")
            except ResourceError:
                break
            m.submodules[f"led_{k}"] = led = io.Buffer("o", led)
            m.d.comb += led.o.eq(light)
        return m


def board_files(
    board_name: str,
    *,
    ports: DesignPorts,
    channels: int,
    class_bits: int,
    baud: int = 115200,
    name: str = "instabnn_board",
) -> dict[str, str]:
    """The board top's RTLIL and pin constraints for ``board_name``, rendered by the platform
    without running (or looking for) any tool: ``{f"{name}.il": ..., f"{name}.lpf": ...}`` on
    ECP5, ``{f"{name}.il": ..., f"{name}.pcf": ...}`` on iCE40.

    The RTLIL instantiates ``instabnn_top`` as a black box: synthesis reads the design's Verilog
    (``rtl/*.v``, with ``mem/*.hex`` beside it) together with it.

    Raises
    ------
    ValueError
        For a board not in :data:`BOARDS` (the message lists them), or a baud rate the board's
        clock cannot make within 2 %.
    """
    if board_name not in BOARDS:
        raise ValueError(f"unknown board {board_name!r}; known boards: {', '.join(sorted(BOARDS))}")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"name must be an identifier, not {name!r}")
    board = BOARDS[board_name]
    divisor_for(board.clock_hz, baud)  # a baud rate the board's clock cannot make fails here, not in prepare()
    top = BoardTop(ports=ports, channels=channels, class_bits=class_bits, baud=baud)
    plan = board.platform().prepare(top, name=name)
    constraints = f"{name}.lpf" if board.family == "ecp5" else f"{name}.pcf"
    files = {}
    for filename in (f"{name}.il", constraints):
        content = plan.files[filename]
        files[filename] = content.decode() if isinstance(content, bytes) else content
    return files
