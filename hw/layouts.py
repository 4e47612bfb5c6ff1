"""How tensors travel on streams: one convention shared by every component and the compiler.

* A tensor ``C x H x W`` streams pixel by pixel in raster order (row ``y`` outer, column ``x``
  inner). Each pixel is ``C / simd`` consecutive *channel words*, channels ascending: word ``g``
  carries channels ``g*simd .. g*simd+simd-1`` as a :func:`channel_word` (an
  :class:`~amaranth.lib.data.ArrayLayout`). Binary tensors use ``unsigned(1)`` elements with
  bit 1 meaning +1.
* A *window stream* (the output of a sliding-window generator) carries, for each output pixel in
  raster order, the ``K*K*C/simd`` words of its window in the order (``ky``, ``kx``, channel
  word), each a :func:`window_word`: the data plus a ``mask`` bit that is 0 for a zero-padding
  position (whose data is all zero).
* A weight matrix ``C_out x (K*K*C_in)`` orders its columns the same way, (``ky``, ``kx``,
  ``c``): :func:`conv_weight_matrix` turns PyTorch's ``C_out x C_in x K x K`` into it.
"""

from __future__ import annotations

import numpy as np
from amaranth.lib import data

__all__ = ["channel_word", "conv_weight_matrix", "tensor_to_words", "window_word", "words_to_tensor"]


def channel_word(shape, simd: int) -> data.ArrayLayout:
    """Layout of one channel word: ``simd`` elements of ``shape``."""
    return data.ArrayLayout(shape, simd)


def window_word(shape, simd: int) -> data.StructLayout:
    """Layout of one window word: ``{"data": channel_word(shape, simd), "mask": 1}``."""
    return data.StructLayout({"data": channel_word(shape, simd), "mask": 1})


def tensor_to_words(tensor: np.ndarray, simd: int) -> np.ndarray:
    """``C x H x W`` tensor to its stream of channel words, shape ``(H*W*C/simd, simd)``."""
    channels = tensor.shape[0]
    if channels % simd:
        raise ValueError(f"simd ({simd}) must divide the channel count ({channels})")
    return np.ascontiguousarray(np.moveaxis(tensor, 0, -1)).reshape(-1, simd)


def words_to_tensor(words: np.ndarray, channels: int, height: int, width: int) -> np.ndarray:
    """Inverse of :func:`tensor_to_words`."""
    return np.moveaxis(np.asarray(words).reshape(height, width, channels), -1, 0)


def conv_weight_matrix(weight: np.ndarray) -> np.ndarray:
    """PyTorch ``C_out x C_in x K x K`` weights to the ``C_out x (K*K*C_in)`` matrix of the stream order."""
    weight = np.asarray(weight)
    return weight.transpose(0, 2, 3, 1).reshape(weight.shape[0], -1)
