"""The cocotb simulation suite: every design of :data:`instabnn_hw.sim.suite.SUITE`,
generated as a user would, bit-exact against the reference under Verilator and Icarus.
The measured cycles per frame against the planner's estimate: ``bench/sim_rate.py``.

`make test-cocotb` runs every cocotb test; the designs marked slow run under `make test-slow`
(CI), those also marked long (Icarus, full-width ResNet-18) under `make test-long`.
"""

import pytest

from instabnn_hw.sim.design import simulate_design
from instabnn_hw.sim.folder import load_design
from instabnn_hw.sim.images import design_images
from instabnn_hw.sim.streams import stimulus_seed
from instabnn_hw.sim.suite import SUITE, generate_suite_design

pytestmark = pytest.mark.cocotb


@pytest.fixture(scope="module")
def designs(tmp_path_factory):
    """Generates each design once for both simulators."""
    root = tmp_path_factory.mktemp("suite")
    made = {}

    def get(name):
        if name not in made:
            made[name] = generate_suite_design(name, root)
        return made[name]

    return get


def cases():
    """Verilator runs carry the design's own marks (every design is ``slow``: minutes each);
    Icarus runs (about 200 cycles/s on these designs: minutes to an hour per design) are ``long``."""
    for name, entry in SUITE.items():
        for simulator in ("verilator", "icarus"):
            long = entry.long or simulator == "icarus"
            marks = [pytest.mark.slow] * (entry.slow or long) + [pytest.mark.long] * long
            yield pytest.param(name, simulator, id=f"{name}-{simulator}", marks=marks)


@pytest.mark.parametrize(("name", "simulator"), list(cases()))
def test_suite_design_is_bit_exact(name, simulator, designs, quick_build):
    folder = designs(name)
    design = load_design(folder)
    images = SUITE[name].images if simulator == "verilator" else 2
    pixels, labels, _ = design_images(design, images, seed=stimulus_seed())
    result = simulate_design(folder, pixels, labels, simulator=simulator, design=design)
    assert result.failed == 0 and not result.problems, (
        f"{name} under {simulator} (seed {result.seed}): {result.failed} of {len(result.images)} images differ; "
        f"{result.difference.describe() if result.difference else ''} {result.problems}"
    )
    assert len(result.images) == images
