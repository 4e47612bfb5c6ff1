# amaranth: UnusedElaboratable=no
"""hw.ram under cocotb + Verilator (Icarus: slow): the external RAM module gives the read data of the
inline Memory (as Amaranth writes it in Verilog), cycle by cycle, for random writes and reads of
every port kind.

Each case is a :class:`~test_hw_ram.RamBench` holding an inline and an external Ram of one
geometry driven by the same commands; both must return the model's result for every command.
In the ``*_start`` cases, the external Ram alone shows its read registers' zero start (Amaranth's
Verilog leaves those of the inline Memory undefined until the first read, so its cases enable
every read port in their first command).
"""

import numpy as np
import pytest
from test_hw_ram import GEOMETRIES, RamBench, commands, expected

from instabnn_hw.sim.streams import StreamCase, run_stream_cases, stimulus_seed

pytestmark = pytest.mark.cocotb


def check(simulator, tmp_path):
    seed = stimulus_seed()
    rng = np.random.default_rng(seed)
    cases = {}
    for name, (width, depth, kinds, granularity) in GEOMETRIES.items():
        geometry = {"width": width, "depth": depth, "read_ports": kinds, "granularity": granularity}
        cmds = commands(rng, **geometry, count=150)
        cases[name] = StreamCase(
            RamBench(**geometry, external=(False, True)),
            {"i": cmds},
            {"o": expected(cmds, **geometry, external=(False, True))},
        )
        if name in ("mixed", "lanes"):
            cmds = commands(rng, **geometry, count=30, first_reads_all=False)
            cmds[0]["r_en"] = 0  # the registers' start value first
            cases[f"{name}_start"] = StreamCase(
                RamBench(**geometry, external=(True,)), {"i": cmds}, {"o": expected(cmds, **geometry, external=(True,))}
            )
    record = run_stream_cases(cases, build_dir=tmp_path, simulator=simulator, seed=seed)
    assert len(record["transfers"]["mixed_o"]) == 150 and len(record["transfers"]["lanes_start_o"]) == 30


def test_external_ram_equals_inline_memory_verilator(tmp_path):
    check("verilator", tmp_path)


@pytest.mark.slow
def test_external_ram_equals_inline_memory_icarus(tmp_path):
    check("icarus", tmp_path)
