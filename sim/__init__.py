"""cocotb + Verilator bit-exact verification of generated designs.

* :mod:`.design`: `instabnn-hw simulate` as an API (:func:`~.design.simulate_design`): build a
  generated design folder, stream images with a mid-frame reset, random valid gaps and
  back-pressure, compare with the reference, measure cycles, localise the first mismatch;
* :mod:`.design_tb`: its cocotb testbench;
* :mod:`.streams` / :mod:`.stream_tb`: the generic stream testbench of hardware components;
* :mod:`.cocotb_streams`: the driver, monitor, scoreboard and reset both testbenches share;
* :mod:`.toolchain`: simulator set-up, builds (reused while unchanged) and runs.
"""

__all__: list[str] = []
