# amaranth: UnusedElaboratable=no
"""Generated designs, as emit() writes them, under cocotb + Verilator (Icarus: slow): every ``o`` and
``logits`` word equals the reference, with random input gaps and random back-pressure.

Each design's ``instabnn_top.v`` is used as written, with its modules renamed ``<case>_top...`` and
its ``$readmemh`` paths moved from ``mem/`` to ``<case>_mem/`` so that several designs share one
simulator build (with the other ``*.v`` that emit() writes: the ROM and RAM modules, which hold
the weights and every line buffer, frame buffer and FIFO, and the design's popcount modules,
renamed ``<case>_popcount_...``); a small wrapper exposes every design's streams as
``<case>_<port>`` to the generic testbench :mod:`instabnn_hw.sim.stream_tb`.
"""

import json
import shutil

import numpy as np
import pytest
from amaranth.hdl import Shape
from graphs import standin_plan, tiny_cnv, tiny_mobilenet, tiny_resnet

from instabnn_hw.codegen.emit import TOP_NAME, build_top, emit
from instabnn_hw.hw.payload import pack, unpack
from instabnn_hw.hw.popcount import POPCOUNT_MODULE
from instabnn_hw.hw.ram import RAM_MODULE
from instabnn_hw.hw.rom import ROM_MODULE
from instabnn_hw.sim.images import stream_payloads
from instabnn_hw.sim.streams import stimulus_seed
from instabnn_hw.sim.toolchain import run_cocotb

pytestmark = pytest.mark.cocotb

PORTS = (("i", "in"), ("o", "out"), ("logits", "out"))

DESIGNS = {
    # case: (graph factory, folding, INSTA parallel)
    "resnet": (lambda: tiny_resnet(21), None, 1),
    "insta": (lambda: tiny_resnet(22, insta="th+", prelu="insta"), None, 2),
    "cnv": (lambda: tiny_cnv(23), {"conv0": (2, 3), "conv1": (4, 8), "fc0": (2, 16), "fc1": (5, 2)}, 1),
    "mobilenet": (
        lambda: tiny_mobilenet(24),
        {"stem.conv": (3, 3), "b1.conv": (6, 2), "b2.conv": (4, 3), "fc": (2, 4)},
        1,
    ),
}


def wrapper(tops: dict) -> str:
    """Verilog module ``bundle``: each ``<case>_top`` with its streams as ``<case>_<port>__<signal>``."""
    ports, body = ["clk", "rst"], []
    decls = ["  input clk;", "  input rst;"]
    for case, top in tops.items():
        connections = [".clk(clk)", ".rst(rst)"]
        for port, direction in PORTS:
            width = Shape.cast(getattr(top, port).payload.shape()).width
            into, out = ("input", "output") if direction == "in" else ("output", "input")
            for signal, kind, bits in (("payload", into, width), ("valid", into, 1), ("ready", out, 1)):
                name = f"{case}_{port}__{signal}"
                ports.append(name)
                decls.append(f"  {kind} [{bits - 1}:0] {name};")
                connections.append(f".{port}__{signal}({name})")
        body.append(f"  {case}_top {case} ({', '.join(connections)});")
    return "module bundle(" + ", ".join(ports) + ");\n" + "\n".join(decls + body) + "\nendmodule\n"


def run_designs(cases: list[str], build_dir, simulator: str, *, images: int = 3) -> dict:
    seed = stimulus_seed()
    rng = np.random.default_rng(seed)
    run_dir = build_dir / simulator  # the simulator's working directory: $readmemh paths resolve here
    run_dir.mkdir(parents=True)
    sources, tops, streams, shapes = [], {}, [], {}
    for case in cases:
        factory, folding, parallel = DESIGNS[case]
        graph = factory()
        plan = standin_plan(graph, folding, parallel=parallel)
        rtl = build_dir / case
        written, _ = emit(graph, plan, rtl)
        assert {rtl / f"{name}.v" for name in (TOP_NAME, ROM_MODULE, RAM_MODULE, POPCOUNT_MODULE)} <= set(written)
        text = (rtl / f"{TOP_NAME}.v").read_text()
        text = text.replace(TOP_NAME, f"{case}_top").replace('.INIT_FILE("mem/', f'.INIT_FILE("{case}_mem/')
        # each design's popcount modules, renamed too (designs may share a size)
        popcounts = (rtl / f"{POPCOUNT_MODULE}.v").read_text().replace(POPCOUNT_MODULE, f"{case}_popcount")
        (build_dir / f"{case}.v").write_text(text.replace(POPCOUNT_MODULE, f"{case}_popcount") + popcounts)
        sources.append(build_dir / f"{case}.v")
        shutil.copytree(rtl / "mem", run_dir / f"{case}_mem")
        top, _ = build_top(graph, plan)  # the same design: its port shapes
        tops[case] = top
        pixels = rng.integers(0, 256, size=(images, *graph.input_shape))
        pixels[0, :, 0] = 255
        words, results, logits = stream_payloads(graph, top.ports.logits.elements, pixels)
        for (port, direction), payloads in zip(PORTS, (words, results, logits), strict=True):
            shape = getattr(top, port).payload.shape()
            shapes[f"{case}_{port}"] = shape
            streams.append(
                {
                    "name": f"{case}_{port}",
                    "direction": direction,
                    "words": [format(pack(shape, p), "x") for p in payloads],
                }
            )
    (build_dir / "bundle.v").write_text(wrapper(tops))
    # the other modules the tops instantiate (the ROM and RAM modules), the same for every design
    modules = sorted(
        p for p in (build_dir / cases[0]).glob("*.v") if p.name not in (f"{TOP_NAME}.v", f"{POPCOUNT_MODULE}.v")
    )
    spec = {
        "seed": seed,
        "valid_probability": 0.7,
        "ready_probability": 0.6,
        "max_cycles": 200_000,
        "streams": streams,
    }
    (build_dir / "streams.json").write_text(json.dumps(spec))
    record_path = build_dir / "record.json"
    env = {
        "INSTABNN_STREAMS": str((build_dir / "streams.json").resolve()),
        "INSTABNN_RECORD": str(record_path.resolve()),
    }
    failure = None
    try:
        run_cocotb(
            verilog=build_dir / "bundle.v",
            toplevel="bundle",
            test_module="instabnn_hw.sim.stream_tb",
            build_dir=run_dir,
            simulator=simulator,
            extra_env=env,
            extra_sources=[*sources, *modules],
        )
    except AssertionError as error:
        if not record_path.exists():
            raise
        failure = error
    record = json.loads(record_path.read_text())
    problems = list(record["stalled"])
    for mismatch in record["mismatches"][:5]:
        shape = shapes[mismatch["stream"]]
        expected, got = (unpack(shape, int(mismatch[k], 16)) for k in ("expected", "got"))
        problems.append(f"{mismatch['stream']}[{mismatch['index']}]: expected {expected}, got {got}")
    assert not problems, f"{simulator} (seed {seed}): {len(record['mismatches'])} mismatches; " + "; ".join(problems)
    if failure is not None:
        raise failure
    return record


def test_emitted_designs_verilator(tmp_path, quick_build):
    record = run_designs(["resnet", "insta", "cnv", "mobilenet"], tmp_path, "verilator")
    assert len(record["transfers"]["insta_o"]) == 3 and len(record["transfers"]["cnv_logits"]) == 3 * 2


@pytest.mark.slow
def test_emitted_designs_icarus(tmp_path):
    run_designs(["resnet", "insta", "cnv", "mobilenet"], tmp_path, "icarus", images=2)
