"""instabnn-hw: INSTA-BNN binary neural networks to bit-exact FPGA hardware with open tools.

Subpackages: :mod:`instabnn_hw.quant` (training, Brevitas), :mod:`instabnn_hw.codegen`
(integer IR, golden model, compiler), :mod:`instabnn_hw.hw` (Amaranth components) and
:mod:`instabnn_hw.sim` (cocotb verification).
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
