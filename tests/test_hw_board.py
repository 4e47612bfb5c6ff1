# amaranth: UnusedElaboratable=no
"""The UART image link alone and joined to a tiny generated design (Amaranth's simulator), the
port parser on emitted Verilog, and the board files rendered without any tool."""

import random
import re

import graphs
import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module, Shape
from test_hw_uart import StreamSink, StreamSource, run

from instabnn_hw.codegen.emit import build_top, emit
from instabnn_hw.codegen.plan import plan
from instabnn_hw.design_folder import DesignPorts, StreamPort
from instabnn_hw.hw.board import (
    BOARDS,
    POWER_ON_CYCLES,
    BoardTop,
    ImageLink,
    board_files,
    image_bytes,
)
from instabnn_hw.hw.uart import UART_ERRORS, uart_decode, uart_waveform
from instabnn_hw.sim.images import stream_payloads


def test_image_bytes_is_raster_order_channels_fastest():
    image = np.arange(2 * 2 * 3).reshape(2, 2, 3)  # C x H x W
    assert list(image_bytes(image)) == [0, 6, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11]
    assert image_bytes(np.stack([image, image + 100])) == image_bytes(image) + image_bytes(image + 100)
    with pytest.raises(ValueError, match=r"images must be <= 255, but holds 256"):
        image_bytes(np.full((1, 2, 2), 256))
    with pytest.raises(ValueError, match=r"not shape \(4, 4\)"):
        image_bytes(np.zeros((4, 4), dtype=int))


@pytest.mark.parametrize(("channels", "divisor", "ready_probability"), [(1, 2, 1.0), (3, 3, 0.5), (2, 2, 0.2)])
def test_image_link_gathers_pixels_and_sends_classes(channels, divisor, ready_probability):
    """Bytes with random gaps become pixel words (channel 0 first) obeying the stream rules under
    back-pressure; each result's low ``class_bits`` go out as one byte."""
    rng = random.Random(channels)
    class_bits, result_width = 4, 11
    pixels = [[rng.randrange(256) for _ in range(channels)] for _ in range(7)]
    results = [rng.randrange(1 << result_width) for _ in range(6)]
    parts = [np.ones(3, dtype=np.uint8)]
    for byte in bytes(b for pixel in pixels for b in pixel):
        parts += [uart_waveform([byte], divisor), np.ones(rng.randrange(2 * divisor), dtype=np.uint8)]
    levels = np.concatenate(parts)
    dut = ImageLink(channels=channels, class_bits=class_bits, result_width=result_width, divisor=divisor)
    sink = StreamSink(dut.pixels, ready_probability, rng)
    source = StreamSource(dut.result, results, 0.3, rng)
    tx, flags = [], []

    def step(ctx, cycle):
        ctx.set(dut.rx, int(levels[cycle]) if cycle < len(levels) else 1)
        sink.step(ctx, cycle)
        source.step(ctx, cycle)
        tx.append(ctx.get(dut.tx))
        errors = ctx.get(dut.errors)
        flags.append((errors.overrun, errors.framing))

    run(dut, max(len(levels), 12 * divisor * len(results) * 4) + 20 * divisor, step)
    received = [[(word >> (8 * k)) & 0xFF for k in range(channels)] for word in sink.received]
    assert received == pixels
    assert list(uart_decode(tx, divisor)) == [r & ((1 << class_bits) - 1) for r in results]
    assert flags[-1] == (0, 0)
    assert dut.initiation_interval == 10 * divisor * channels
    assert dut.errors.shape() == UART_ERRORS


class Harness(Elaboratable):
    """``ImageLink`` feeding a generated design's top and sending its classes back."""

    def __init__(self, top, channels, divisor):
        self.top = top
        layout = top.o.payload.shape()
        self.link = ImageLink(
            channels=channels,
            class_bits=Shape.cast(layout["index"].shape).width,
            result_width=layout.size,
            divisor=divisor,
        )

    def elaborate(self, platform):
        m = Module()
        m.submodules.top, m.submodules.link = top, link = self.top, self.link
        m.d.comb += [
            top.i.valid.eq(link.pixels.valid),
            top.i.payload.eq(link.pixels.payload),
            link.pixels.ready.eq(top.i.ready),
            link.result.valid.eq(top.o.valid),
            link.result.payload.eq(top.o.payload),
            top.o.ready.eq(link.result.ready),
            top.logits.ready.eq(1),
        ]
        return m


@pytest.mark.parametrize(
    ("design", "divisor", "seed"), [("resnet", 4, 5), ("mobilenet", 3, 0)], ids=["resnet-C1", "mobilenet-C3"]
)
def test_images_over_the_uart_give_the_reference_classes(design, divisor, seed):
    """End to end: three images sent as 8N1 frames on ``rx`` (the host protocol's bytes), the
    classes decoded from ``tx`` equal the reference executor's."""
    graph = graphs.tiny_resnet(2) if design == "resnet" else graphs.tiny_mobilenet(5)
    result = plan(graph)
    top, _ = build_top(graph, result, rom_dir=None)
    images = np.random.default_rng(seed).integers(0, 256, size=(3, *graph.input_shape))
    words, classes, _ = stream_payloads(graph, top.ports.logits.elements, images)
    expected = [c["index"] for c in classes]
    assert len(set(expected)) > 1  # the images tell the classes apart
    data = image_bytes(images)
    assert list(data) == [value for word in words for value in word]  # the protocol is the top's word order
    channels = graph.input_shape[0]
    dut = Harness(top, channels, divisor)
    levels = uart_waveform(data, divisor)
    tx, flags = [], []

    def step(ctx, cycle):
        ctx.set(dut.link.rx, int(levels[cycle]) if cycle < len(levels) else 1)
        tx.append(ctx.get(dut.link.tx))
        errors = ctx.get(dut.link.errors)
        flags.append((errors.overrun, errors.framing))

    run(dut, len(levels) + result.estimate.latency_cycles + 12 * divisor, step)
    assert list(uart_decode(tx, divisor)) == expected
    assert flags[-1] == (0, 0)


def test_manifest_ports_are_the_emitted_verilog_ports(tmp_path):
    """The ports the manifest records are those the Verilog declares (read here, never by the tools)."""
    graph = graphs.tiny_mobilenet(5)
    result = plan(graph)
    _, ports = emit(graph, result, tmp_path)
    text = (tmp_path / "instabnn_top.v").read_text()
    start = text.index("module instabnn_top(")
    top = text[start : text.index("endmodule", start)]
    declared = {
        name: int(high) + 1 if high else 1
        for high, name in re.findall(r"^\s*(?:input|output)\s+(?:\[(\d+):0\]\s+)?(\w+__payload);", top, re.M)
    }
    assert declared == {f"{p.signal}__payload": p.width for p in (ports.i, ports.o, ports.logits)}
    assert ports.i.width == 8 * graph.input_shape[0] and ports.i.words_per_image == 8 * 8
    assert [name for name, _, _ in ports.o.fields] == ["index", "value"]
    assert list(ports.taps) == [n.name for n in graph.nodes[:-1]] and ports.taps["input"].signal == "pixels"
    assert re.search(rf"\b{ports.taps[graph.logits].signal}__payload\b", text)
    assert DesignPorts.from_json(ports.to_json()) == ports
    record = ports.to_json()
    record["i"]["width"] += 1
    with pytest.raises(ValueError, match=r"ports\.i\.width must be 24, not 25"):
        DesignPorts.from_json(record)
    with pytest.raises(ValueError, match=r"ports must be an object of i, o, logits and taps"):
        DesignPorts.from_json("pixels, 3 x 8 bits per word")


PORTS = DesignPorts(
    i=StreamPort("i", 3, 8, False, 64),
    o=StreamPort("o", 1, 19, False, 1, (("index", 4, False), ("value", 15, True))),
    logits=StreamPort("logits", 1, 17, True, 10),
)


@pytest.mark.parametrize(
    ("board", "uart_lines"),
    [
        ("ulx3s-85f", ['LOCATE COMP "uart_0__rx__io" SITE "M1";', 'LOCATE COMP "uart_0__tx__io" SITE "L4";']),
        ("icebreaker", ["set_io uart_0__rx__io 6", "set_io uart_0__tx__io 9"]),
    ],
)
def test_board_files_render_without_tools(board, uart_lines, monkeypatch):
    monkeypatch.setenv("PATH", "")  # prepare() must not look for the toolchain
    files = board_files(board, ports=PORTS, channels=3, class_bits=2, name="demo")
    constraints = "demo.lpf" if BOARDS[board].family == "ecp5" else "demo.pcf"
    assert sorted(files) == sorted(["demo.il", constraints])
    rtlil = files["demo.il"]
    assert re.search(r"^\s*cell \\instabnn_top ", rtlil, re.MULTILINE)
    for port in ("i__payload", "o__payload", "logits__ready", "clk", "rst"):
        assert f"connect \\{port} " in rtlil
    for line in uart_lines:
        assert line in files[constraints].splitlines()
    assert "led_0__io" in files[constraints] and "led_1__io" in files[constraints]  # the class on LEDs
    assert ("led_2__io" in files[constraints]) == (board == "ulx3s-85f")  # error LED where there is one
    assert "button_0__io" in files[constraints]  # the reset button


def test_boards_table_matches_the_platforms():
    assert {"ulx3s-85f", "icebreaker"} <= set(BOARDS)
    for name, board in BOARDS.items():
        platform = board.platform()
        assert board.name == name and board.clock_hz == platform.default_clk_frequency
        if board.family == "ecp5":
            assert platform.device == f"LFE5U-{board.device.upper()[:-1]}F" and platform.package == "BG381"
            assert board.package == "CABGA381"
        else:
            assert board.family == "ice40" and platform.device == f"iCE40{board.device.upper()}"
            assert board.package == platform.package.lower()
    assert BOARDS["ulx3s-85f"].device == "85k" and BOARDS["icebreaker"].device == "up5k"


def test_board_parameter_errors():
    known = ", ".join(sorted(BOARDS))
    with pytest.raises(ValueError, match=rf"unknown board 'de10'; known boards: {re.escape(known)}"):
        board_files("de10", ports=PORTS, channels=3, class_bits=2)
    with pytest.raises(ValueError, match=r"ports.i.width \(24\) must be 8 \* channels \(8\)"):
        BoardTop(ports=PORTS, channels=1, class_bits=2)
    with pytest.raises(ValueError, match=r"class_bits must be in \[1, 8\], not 9"):
        BoardTop(ports=PORTS, channels=3, class_bits=9)
    with pytest.raises(TypeError, match=r"ports must be a DesignPorts"):
        BoardTop(ports=(24, 19, 17), channels=3, class_bits=2)
    with pytest.raises(ValueError, match=r"a 1\.2e\+07 Hz clock cannot make 5000000 baud"):
        board_files("icebreaker", ports=PORTS, channels=3, class_bits=2, baud=5_000_000)
    with pytest.raises(ValueError, match=r"name must be an identifier, not 'a b'"):
        board_files("icebreaker", ports=PORTS, channels=3, class_bits=2, name="a b")
    with pytest.raises(ValueError, match=r"class_bits must be in \[1, 8\], not 0"):
        ImageLink(channels=1, class_bits=0, result_width=4, divisor=2)
    with pytest.raises(ValueError, match=r"result_width must be >= 4, not 3"):
        ImageLink(channels=1, class_bits=4, result_width=3, divisor=2)
    with pytest.raises(ValueError, match=r"divisor must be >= 2, not 1"):
        ImageLink(channels=1, class_bits=4, result_width=8, divisor=1)
    with pytest.raises(ValueError, match=r"channels must be >= 1, not 0"):
        ImageLink(channels=0, class_bits=4, result_width=8, divisor=2)
    assert POWER_ON_CYCLES >= 1
