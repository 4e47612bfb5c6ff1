"""Streaming Amaranth components: the hardware library the compiler assembles (never imports torch).

Every block is a :class:`amaranth.lib.wiring.Component` with :mod:`amaranth.lib.stream` ports
``i`` / ``o``, payloads laid out as in :mod:`.layouts`, and a module-level numpy function that
is the one model of its operation (shared with the compiler's reference executor). The
rounding and width rules are in :mod:`.fixed`.

============================  =====================================================
module                        components (numpy models)
============================  =====================================================
:mod:`.plumbing`              RegisterSlice, Fifo, Fork, JoinAdd (join_add)
:mod:`.reshape`               WidthConverter, Repeat (regroup, repeat_channels)
:mod:`.window`                SlidingWindow (sliding_windows)
:mod:`.pool`                  MaxPool, SumPool, GlobalSumPool (max_pool, sum_pool, global_sum_pool)
:mod:`.popcount`              PopCount (popcount); shared Verilog modules (popcount_verilog)
:mod:`.xnor_mvu`              XnorMatrixVector (xnor_matvec)
:mod:`.int_mvu`               IntMatrixVector, Argmax (int_matvec, argmax)
:mod:`.mvu`                   what both matrix-vector units share: folding, figures, ports
:mod:`.rom`                   Rom: weight memories, inline or from ``$readmemh`` files (rom_hex,
                              rom_verilog)
:mod:`.ram`                   Ram: read/write memories, inline or an instance of a Verilog module
                              (ram_verilog; RamModel)
:mod:`.threshold`             StaticThreshold (threshold)
:mod:`.affine`                Requantise, RPReLU (requantise, rprelu)
:mod:`.insta`                 the INSTA integer semantics (moment_sums, statistic_features,
                              feature_bounds, th_thresholds, thplus_thresholds, se_mlp, binarise,
                              insta_prelu)
:mod:`.moments`               MomentsThreshold: INSTA-Th / INSTA-Th+ (models in :mod:`.insta`)
:mod:`.moments_parameters`    MomentsThresholdParameters: its widths, timing and cost, unbuilt
:mod:`.insta_prelu`           InstaPReLU (model in :mod:`.insta`)
:mod:`.se_mlp`                SeMlp: the SE MLP of both INSTA units, on shared multipliers
:mod:`.banks`                 memories, double-buffer bank masks and counters of the INSTA units
:mod:`.intervals`             interval arithmetic: the bounds that size the INSTA datapaths
:mod:`.uart`                  UartRx, UartTx (uart_frame_bits, uart_waveform, uart_decode)
:mod:`.board`                 ImageLink, BoardTop: a design on a board, images in and classes out
                              over a UART (image_bytes; BOARDS, board_files)
============================  =====================================================

:mod:`.figures` holds the parameters classes' base (and the frame geometry they share) and the
LUT model; :mod:`.options` the ``external_modules`` build option; :mod:`.tables` looks up
per-channel constants by channel group; :mod:`.multiplier` builds products on DSP blocks'
registers and :mod:`.delay` the delay lines that carry values beside them; :mod:`.simulate` drives any
component in Amaranth's simulator with random flow control; :mod:`.synthesis` synthesises one
with the open ECP5 / iCE40 tools; :mod:`.build` turns a generated design into a bitstream
(fit check, Yosys, nextpnr, packing); :mod:`.block_ram_outputs` moves the flip-flops beside
the block RAMs into their output registers between the two.
"""

from .affine import Requantise, RPReLU
from .insta_prelu import InstaPReLU
from .int_mvu import Argmax, IntMatrixVector
from .moments import MomentsThreshold
from .plumbing import Fifo, Fork, JoinAdd
from .pool import GlobalSumPool, MaxPool, SumPool
from .popcount import PopCount
from .ram import Ram
from .reshape import Repeat, WidthConverter
from .rom import Rom
from .threshold import StaticThreshold
from .window import SlidingWindow
from .xnor_mvu import XnorMatrixVector

__all__ = [
    "Argmax",
    "Fifo",
    "Fork",
    "GlobalSumPool",
    "InstaPReLU",
    "IntMatrixVector",
    "JoinAdd",
    "MaxPool",
    "MomentsThreshold",
    "PopCount",
    "RPReLU",
    "Ram",
    "Repeat",
    "Requantise",
    "Rom",
    "SlidingWindow",
    "StaticThreshold",
    "SumPool",
    "WidthConverter",
    "XnorMatrixVector",
]
