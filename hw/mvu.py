"""What the two matrix-vector units share: the folding of a matrix, its figures, ports and options.

Both :class:`~.xnor_mvu.XnorMatrixVector` and :class:`~.int_mvu.IntMatrixVector` fold a
``rows x cols`` matrix like FINN's MVAU: ``pe`` output channels times ``simd`` input elements
per cycle, ``NF = rows / pe`` output words per vector of ``SF = cols / simd`` input words, with
the later neuron folds rereading the buffered vector. :class:`MatrixVectorParameters` holds that
folding and the figures that follow from it; :class:`MatrixVectorUnit` the ports and the build
options (``weights_file``, ``external_modules``).
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Shape
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ._checks import check_divides, check_flag, check_int
from .figures import Figures, Parameters
from .layouts import channel_word, window_word
from .options import ExternalModules
from .rom import check_init_file, rom_latency

__all__ = ["MatrixVectorParameters", "MatrixVectorUnit"]


class MatrixVectorParameters(Parameters):
    """Base of the matrix-vector units' parameters: a ``rows x cols`` matrix folded over ``pe x simd``.

    A subclass validates its weights (and element shapes), calls :meth:`_check_folding` and sets
    ``_in_shape`` and ``_acc_shape``; it gives ``latency`` (from a vector's last input word to its
    first output word), ``weight_word_width`` and ``memory_bits``.
    """

    #: Hardware multipliers (DSP blocks).
    multipliers = 0

    def _check_folding(self, weights: np.ndarray, *, pe: object, simd: object, masked: object, max_simd=None) -> None:
        rows, cols = weights.shape
        self._weights = weights
        self._pe = check_divides("pe", check_int("pe", pe), "rows", rows)
        self._simd = check_divides("simd", check_int("simd", simd, high=max_simd), "cols", cols)
        self._masked = check_flag("masked", masked)

    @property
    def weights(self) -> np.ndarray:
        return self._weights

    @property
    def rows(self) -> int:
        """Output channels: rows of the matrix."""
        return self._weights.shape[0]

    @property
    def cols(self) -> int:
        """Elements of an input vector: columns of the matrix."""
        return self._weights.shape[1]

    @property
    def pe(self) -> int:
        """Output channels per cycle; divides ``rows``."""
        return self._pe

    @property
    def simd(self) -> int:
        """Input elements per cycle; divides ``cols``."""
        return self._simd

    @property
    def masked(self) -> bool:
        """Whether the input words are :func:`~.layouts.window_word` (with a padding mask)."""
        return self._masked

    @property
    def in_shape(self) -> Shape:
        """Element shape of the input."""
        return self._in_shape

    @property
    def acc_shape(self) -> Shape:
        """Element shape of the output: a whole dot product."""
        return self._acc_shape

    @property
    def neuron_fold(self) -> int:
        """``NF = rows / pe``: output words per vector."""
        return self.rows // self._pe

    @property
    def synapse_fold(self) -> int:
        """``SF = cols / simd``: input words per vector."""
        return self.cols // self._simd

    @property
    def weight_read_latency(self) -> int:
        """Enabled edges from a weight address to its word: the weight memory's
        :attr:`~.rom.Rom.latency` (3 when it is tiled over several block RAMs in depth, else 2)."""
        return rom_latency(self.neuron_fold * self.synapse_fold, self.weight_word_width)

    @property
    def initiation_interval(self) -> int:
        """Cycles per output word at full rate: ``SF``."""
        return self.synapse_fold

    @property
    def cycles_per_vector(self) -> int:
        """``NF * SF``: cycles per input vector at full rate."""
        return self.neuron_fold * self.synapse_fold

    def figures(self, words: int) -> Figures:
        nf, sf = self.neuron_fold, self.synapse_fold
        # the first output follows a vector's SF-th word; the later folds reread the buffered vector
        latency = sf - 1 + self.latency
        return Figures(words * nf, latency, latency, self.luts, self.memory_bits, self.multipliers, (nf - 1) * sf)


class MatrixVectorUnit(ExternalModules, wiring.Component):
    """Base of the matrix-vector components: their ports and ``weights_file``.

    A component derives from its parameters class first, then from this class; its
    ``__init__`` passes the parameters on and then calls :meth:`_build_ports`.
    """

    def _build_ports(self, *, weights_file: str | None, external_modules: bool) -> None:
        """The build options and the ports, once the parameters class has set the shapes."""
        self._weights_file = check_init_file("weights_file", weights_file)
        self._set_external_modules(external_modules)
        word = window_word if self._masked else channel_word
        wiring.Component.__init__(
            self,
            {
                "i": In(stream.Signature(word(self._in_shape, self._simd))),
                "o": Out(stream.Signature(channel_word(self._acc_shape, self._pe))),
            },
        )

    @property
    def weights_file(self) -> str | None:
        """The ``$readmemh`` file of the weight memory, or ``None`` for an inline memory."""
        return self._weights_file
