"""cocotb + Verilator bit-exact verification of generated designs (issue #5)."""

__all__: list[str] = []
