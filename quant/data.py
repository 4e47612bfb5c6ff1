"""Offline dataset loaders for training and evaluating the binary networks.

Nothing here downloads anything: every dataset is read from the machine, either from a
Python package (scikit-learn's digits), a Debian package (Fashion-MNIST) or a folder the
user points at (CIFAR-10, ImageNet). No file runs code when loaded: IDX files are parsed
byte by byte, and CIFAR-10's pickled batches are read by an unpickler that rebuilds only what
they hold (a dict of bytes, lists and one uint8 array).

Every dataset yields ``(image, label)`` pairs where ``image`` is a float32 tensor of shape
``(C, S, S)`` holding integer pixel values 0..255. Images are deliberately *not*
normalised: the model performs its own exact fixed-point preprocessing, which the hardware
reproduces bit for bit, so the loaders must hand over raw pixel values.

Examples
--------
>>> from instabnn_hw.quant.data import load_dataset
>>> test_set = load_dataset("fashion-mnist", "test", input_size=32)
>>> image, label = test_set[0]
>>> image.shape
torch.Size([1, 32, 32])
"""

from __future__ import annotations

import functools
import gzip
import os
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UserError

__all__ = [
    "DATASETS",
    "DataError",
    "DatasetInfo",
    "ImageFolderDataset",
    "TensorImageDataset",
    "dataset_info",
    "load_dataset",
    "read_idx",
]


class DataError(UserError, ValueError):
    """Bad dataset name, missing or corrupt data folder.

    The message is one clear line naming what is wrong and what to do about it.
    """


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset.

    Attributes
    ----------
    name : str
        Name accepted by :func:`load_dataset`.
    in_channels : int
        Number of image channels (1 for grey scale, 3 for RGB).
    native_size : int
        Side of the (square) images as stored; for ImageNet, the usual evaluation size.
    num_classes : int
        Number of classes.
    description : str
        One line saying what the dataset is and where it comes from.
    """

    name: str
    in_channels: int
    native_size: int
    num_classes: int
    description: str


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("digits", 1, 8, 10, "scikit-learn handwritten digits, 1,797 images 8x8"),
        DatasetInfo(
            "fashion-mnist",
            1,
            28,
            10,
            "Fashion-MNIST, 60,000 train / 10,000 test images 28x28 (IDX files)",
        ),
        DatasetInfo("cifar10", 3, 32, 10, "CIFAR-10 python version, 50,000 / 10,000 RGB 32x32"),
        DatasetInfo(
            "imagenet",
            3,
            224,
            1000,
            "ImageNet folder layout train/<class>/*.JPEG and val/<class>/*.JPEG",
        ),
    )
}

SPLITS = ("train", "test")

FASHION_MNIST_DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FASHION_MNIST_HINT = "install the Debian package dataset-fashion-mnist or pass --data DIR"

DIGITS_TRAIN_COUNT = 1437

CIFAR10_FOLDER_NAME = "cifar-10-batches-py"
CIFAR10_BATCHES = {
    "train": tuple(f"data_batch_{index}" for index in range(1, 6)),
    "test": ("test_batch",),
}
CIFAR10_HINT = f"pass --data DIR pointing at {CIFAR10_FOLDER_NAME}"

IMAGENET_SPLIT_FOLDERS = {"train": "train", "test": "val"}
IMAGENET_HINT = "pass --data DIR holding train/<class>/*.JPEG and val/<class>/*.JPEG"
IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png"})

# The element type byte of an IDX header: only unsigned bytes occur in (Fashion-)MNIST.
IDX_UBYTE = 0x08


def dataset_info(name: str) -> DatasetInfo:
    """Return the static description of a dataset.

    Parameters
    ----------
    name : str
        One of the keys of :data:`DATASETS`.

    Returns
    -------
    DatasetInfo

    Raises
    ------
    DataError
        If the name is unknown; the message lists the known names.
    """
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(DATASETS)
        raise DataError(f"unknown dataset {name!r}; known datasets: {known}") from None


class TensorImageDataset(Dataset):
    """Images held in memory as one uint8 tensor, converted to float32 per item.

    A training loop may also batch directly through :attr:`images` and :attr:`labels`
    (``images[indices].float()``), which is much faster than going item by item.

    Parameters
    ----------
    images : torch.Tensor
        uint8 tensor of shape ``(N, C, S, S)``.
    labels : torch.Tensor
        Integer tensor of shape ``(N,)``; stored as int64.

    Attributes
    ----------
    images : torch.Tensor
        uint8 tensor of shape ``(N, C, S, S)``.
    labels : torch.Tensor
        int64 tensor of shape ``(N,)``.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"images must be a uint8 tensor N x C x H x W, got {images.dtype} of shape {tuple(images.shape)}"
            )
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.to(torch.int64)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index].float(), int(self.labels[index])


def load_dataset(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    input_size: int | None = None,
    limit: int | None = None,
) -> Dataset:
    """Load one split of a dataset from local files.

    Parameters
    ----------
    name : str
        ``"digits"``, ``"fashion-mnist"``, ``"cifar10"`` or ``"imagenet"``.
    split : str
        ``"train"`` or ``"test"`` (for ImageNet, ``"test"`` reads ``val/``).
    data_dir : str or os.PathLike, optional
        Folder holding the data. Ignored for digits; defaults to
        ``/usr/share/datasets/fashion-mnist`` for Fashion-MNIST; required for CIFAR-10
        (the ``cifar-10-batches-py`` folder or its parent) and ImageNet (the folder holding
        ``train/`` and ``val/``).
    input_size : int, optional
        Side ``S`` of the images handed out; defaults to the native size. Fixed-size
        datasets are zero-padded symmetrically when ``S`` is larger (an odd extra pixel goes
        to the bottom/right) and centre-cropped when it is smaller. ImageNet images have
        their shorter side resized (bilinear) to ``round(S * 256 / 224)``, then are
        centre-cropped to ``S``.
    limit : int, optional
        Keep only the first ``limit`` images of the split (in storage order; for ImageNet,
        sorted by class folder then file name).

    Returns
    -------
    torch.utils.data.Dataset
        Yields ``(image, label)``: a float32 tensor ``(C, S, S)`` of integer pixel values
        0..255 and an int. Digits, Fashion-MNIST and CIFAR-10 give a
        :class:`TensorImageDataset`, ImageNet an :class:`ImageFolderDataset`.

    Raises
    ------
    DataError
        Unknown dataset or split, bad ``input_size`` or ``limit``, missing or corrupt data.
    """
    info = dataset_info(name)
    if split not in SPLITS:
        raise DataError(f"{name}: unknown split {split!r}; use 'train' or 'test'")
    if input_size is not None and input_size <= 0:
        raise DataError(f"{name}: input_size must be positive, got {input_size}")
    if limit is not None and limit <= 0:
        raise DataError(f"{name}: limit must be positive, got {limit}")
    size = info.native_size if input_size is None else input_size
    folder = None if data_dir is None else Path(data_dir).expanduser()

    if name == "imagenet":
        return ImageFolderDataset(_imagenet_split_folder(folder, split), size, limit)
    if name == "digits":
        images, labels = _load_digits(split)
    elif name == "fashion-mnist":
        images, labels = _load_fashion_mnist(folder or FASHION_MNIST_DEFAULT_DIR, split)
    else:
        images, labels = _load_cifar10(folder, split)
    # Copy the (possibly cached, read-only) arrays so callers may modify what they get.
    images = torch.from_numpy(np.array(images[:limit]))
    labels = torch.from_numpy(np.array(labels[:limit], dtype=np.int64))
    return TensorImageDataset(_pad_or_crop(images, size), labels)


def _pad_or_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad or centre-crop ``N x C x H x W`` images to ``size x size``.

    With an odd difference the extra padded (or cropped) pixel is at the bottom/right.
    """
    margins = []  # F.pad order: left, right, top, bottom; negative margins crop
    for side in (images.shape[3], images.shape[2]):
        difference = size - side
        before = int(difference / 2)  # rounds toward zero, so the odd pixel goes after
        margins += [before, difference - before]
    return torch.nn.functional.pad(images, margins).contiguous()


def _load_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Return scikit-learn's digits as uint8 ``N x 1 x 8 x 8`` images scaled to 0..255."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Values are 0..16; times 16 spreads them over the byte range (16 * 16 saturates at 255).
    pixels = np.minimum(digits.images * 16, 255).astype(np.uint8)[:, None]
    order = np.random.default_rng(0).permutation(len(pixels))
    chosen = order[:DIGITS_TRAIN_COUNT] if split == "train" else order[DIGITS_TRAIN_COUNT:]
    return pixels[chosen], digits.target[chosen]


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (as used by MNIST), raw or gzipped.

    Parameters
    ----------
    path : str or os.PathLike
        The file; a name ending in ``.gz`` is decompressed.

    Returns
    -------
    numpy.ndarray
        uint8 array with the dimensions given in the header.

    Raises
    ------
    DataError
        If the file cannot be read, is not an unsigned-byte IDX file, or is truncated or
        has trailing bytes.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as stream:
                content = stream.read()
        else:
            content = path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"cannot read {path}: {error}") from None

    # Header: two zero bytes, the element type, the number of dimensions, then one
    # big-endian uint32 per dimension.
    if len(content) < 4 or content[:2] != b"\0\0" or content[2] != IDX_UBYTE:
        raise DataError(f"{path} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = content[3]
    header_size = 4 + 4 * ndim
    if len(content) < header_size:
        raise DataError(f"{path} is truncated (incomplete IDX header)")
    shape = tuple(int(n) for n in np.frombuffer(content, ">u4", count=ndim, offset=4))
    expected_size = header_size + int(np.prod(shape))
    if len(content) != expected_size:
        problem = "is truncated" if len(content) < expected_size else "has trailing bytes"
        raise DataError(
            f"{path} {problem}: {len(content)} bytes where the IDX header of shape {shape} implies {expected_size}"
        )
    return np.frombuffer(content, np.uint8, offset=header_size).reshape(shape)


def _find_idx_file(folder: Path, base_name: str) -> Path:
    """Return ``folder/base_name`` or ``folder/base_name.gz``, whichever exists."""
    for candidate in (folder / base_name, folder / f"{base_name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"fashion-mnist: no {base_name}(.gz) in {folder}; {FASHION_MNIST_HINT}")


def _load_fashion_mnist(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Return Fashion-MNIST as uint8 ``N x 1 x 28 x 28`` images and labels."""
    if not folder.is_dir():
        raise DataError(f"fashion-mnist: folder {folder} does not exist; {FASHION_MNIST_HINT}")
    return _read_fashion_mnist_cached(folder.resolve(), split)


@functools.lru_cache(maxsize=4)
def _read_fashion_mnist_cached(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    # Cached because decompressing the training set takes a noticeable fraction of a
    # second and callers (tests, train-then-evaluate) load it several times.
    images_name, labels_name = FASHION_MNIST_FILES[split]
    images_path = _find_idx_file(folder, images_name)
    labels_path = _find_idx_file(folder, labels_name)
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3:
        raise DataError(f"{images_path} holds a {images.ndim}-d array, expected N x H x W")
    if labels.ndim != 1:
        raise DataError(f"{labels_path} holds a {labels.ndim}-d array, expected N labels")
    if len(images) != len(labels):
        raise DataError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels")
    return images[:, None], labels


def _load_cifar10(data_dir: Path | None, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Return CIFAR-10 as uint8 ``N x 3 x 32 x 32`` images and labels."""
    if data_dir is None:
        raise DataError(f"cifar10: no data folder given; {CIFAR10_HINT}")
    nested = data_dir / CIFAR10_FOLDER_NAME
    folder = nested if nested.is_dir() else data_dir
    if not folder.is_dir():
        raise DataError(f"cifar10: folder {folder} does not exist; {CIFAR10_HINT}")
    return _read_cifar10_cached(folder.resolve(), split)


@functools.lru_cache(maxsize=4)
def _read_cifar10_cached(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for batch_name in CIFAR10_BATCHES[split]:
        batch_images, batch_labels = _read_cifar10_batch(folder / batch_name)
        images.append(batch_images)
        labels.append(batch_labels)
    return np.concatenate(images), np.concatenate(labels)


def _read_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one pickled CIFAR-10 batch: rows of 3072 bytes, all red, then green, then blue."""
    if not path.is_file():
        raise DataError(f"cifar10: no {path.name} in {path.parent}; {CIFAR10_HINT}")
    try:
        with path.open("rb") as stream:
            batch = _CIFAR10Unpickler(stream, encoding="bytes").load()
        if not isinstance(batch, dict):
            raise DataError(f"cifar10: {path} is not a CIFAR-10 batch (it holds a {type(batch).__name__}, not a dict)")
        # asarray turns the checked array subclass back into a plain ndarray.
        data = np.asarray(batch[b"data"])
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except _RefusedPickle as refusal:
        raise DataError(f"cifar10: {path} is not a CIFAR-10 batch ({refusal})") from None
    except DataError:
        raise
    except Exception as error:  # a corrupt pickle can raise almost anything
        raise DataError(f"cifar10: {path} is not a CIFAR-10 batch ({error!r})") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"cifar10: {path} data is {data.dtype} of shape {data.shape}, expected uint8 N x 3072")
    if labels.shape != (len(data),):
        raise DataError(f"cifar10: {path} has {len(data)} images but {labels.size} labels")
    return data.reshape(-1, 3, 32, 32), labels


class _RefusedPickle(Exception):
    """Raised while unpickling a CIFAR-10 batch that asks for something a real batch never holds."""


#: Kinds of the dtypes an unpickled array may have: booleans and numbers, never Python objects.
_PLAIN_DTYPE_KINDS = frozenset("biufc")


def _plain_dtype(dtype) -> np.dtype:
    """The shared numpy dtype equal to ``dtype``, refusing any but a plain number (or bool) type.

    The items of an object array are arbitrary Python objects, and a structured or void dtype
    may carry object flags, so neither belongs in a CIFAR-10 batch. Handing numpy its own
    descriptor rather than the unpickled one means a later edit of that one changes nothing.
    """
    if not isinstance(dtype, np.dtype) or dtype.kind not in _PLAIN_DTYPE_KINDS or dtype.fields or dtype.flags:
        raise _RefusedPickle(f"it holds an array of dtype {dtype}, which a CIFAR-10 batch never holds")
    return np.dtype(dtype.str)


def _unpickled_dtype(spec, align=False, copy=True) -> np.dtype:
    """``numpy.dtype`` as pickles call it: from a type string, always as a private copy."""
    if not isinstance(spec, (str, bytes)):
        raise _RefusedPickle(f"it builds a dtype from {type(spec).__name__}, which a CIFAR-10 batch never does")
    if isinstance(spec, bytes):
        spec = spec.decode("latin1")
    # A copy, so that the pickle's edits of the dtype (its BUILD step) never reach numpy's shared one.
    dtype = np.dtype(spec, align=bool(align), copy=True)
    _plain_dtype(dtype)  # refused here already, before the items of an object array are unpickled
    return dtype


class _UnpickledArray(np.ndarray):
    """The array a CIFAR-10 batch rebuilds; its state is checked before numpy sees it."""

    def __setstate__(self, state):
        if not isinstance(state, tuple) or sum(isinstance(item, np.dtype) for item in state) != 1:
            raise _RefusedPickle("it holds an array whose state is not numpy's, which a CIFAR-10 batch never holds")
        super().__setstate__(tuple(_plain_dtype(item) if isinstance(item, np.dtype) else item for item in state))


#: Stands for ``numpy.ndarray`` in a batch, where it only ever is the first argument of
#: ``_reconstruct``: handing out the class itself would let a pickle call ``ndarray(shape, object)``.
_PICKLED_NDARRAY_CLASS = object()


def _unpickled_reconstruct(cls, shape, typecode) -> np.ndarray:
    """``numpy.core.multiarray._reconstruct`` for a plain array of numbers."""
    if cls is not _PICKLED_NDARRAY_CLASS:
        raise _RefusedPickle("it rebuilds an array of another class than numpy.ndarray")
    # numpy pickles start from an empty array and set its shape and data afterwards; another
    # shape would only allocate memory the file never fills.
    if shape != (0,):
        raise _RefusedPickle(f"it rebuilds an array from shape {shape!r}, which a CIFAR-10 batch never does")
    _unpickled_dtype(typecode)
    return _NUMPY_RECONSTRUCT(_UnpickledArray, shape, typecode)


def _unpickled_codecs_encode(text, encoding="utf-8") -> bytes:
    """``_codecs.encode`` as Python 3 writes bytes in protocol 2 pickles: latin-1 text to bytes."""
    if not isinstance(text, str) or encoding != "latin1":
        raise _RefusedPickle(f"it encodes {type(text).__name__} as {encoding!r}, which a CIFAR-10 batch never does")
    return text.encode("latin1")


#: The function ``ndarray.__reduce__`` names, wherever this numpy keeps it.
_NUMPY_RECONSTRUCT = np.ndarray(0).__reduce__()[0]

#: The only globals a CIFAR-10 batch (a dict of bytes, lists and one uint8 array) names.
_CIFAR10_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _unpickled_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _unpickled_reconstruct,
    ("numpy", "ndarray"): _PICKLED_NDARRAY_CLASS,
    ("numpy", "dtype"): _unpickled_dtype,
    ("_codecs", "encode"): _unpickled_codecs_encode,
}


class _CIFAR10Unpickler(pickle.Unpickler):
    """An unpickler that rebuilds a CIFAR-10 batch and nothing else.

    A pickle may name any importable callable and have it called with arguments of its
    choice, so loading a crafted ``data_batch_1`` with ``pickle.load`` would run its code.
    This one admits only the callables that rebuild a numpy array of numbers.
    """

    def find_class(self, module: str, name: str):
        try:
            return _CIFAR10_GLOBALS[module, name]
        except (KeyError, TypeError):
            raise _RefusedPickle(f"it names {module}.{name}, which a CIFAR-10 batch never holds") from None

    def persistent_load(self, pid):
        raise _RefusedPickle("it refers to a persistent object, which a CIFAR-10 batch never holds")


def _imagenet_split_folder(data_dir: Path | None, split: str) -> Path:
    if data_dir is None:
        raise DataError(f"imagenet: no data folder given; {IMAGENET_HINT}")
    folder = data_dir / IMAGENET_SPLIT_FOLDERS[split]
    if not folder.is_dir():
        raise DataError(f"imagenet: folder {folder} does not exist; {IMAGENET_HINT}")
    return folder


def _import_pil_image():
    try:
        from PIL import Image
    except ImportError:
        raise DataError("imagenet: decoding JPEG/PNG images needs Pillow; pip install pillow") from None
    return Image


class ImageFolderDataset(Dataset):
    """Images stored as ``folder/<class_name>/<image file>``, decoded lazily per item.

    Each image is converted to RGB, its shorter side resized (bilinear) to
    ``round(input_size * 256 / 224)``, then centre-cropped to ``input_size`` (the standard
    ImageNet evaluation transform), and returned as a float32 ``(3, S, S)`` tensor of
    pixel values 0..255.

    Parameters
    ----------
    folder : pathlib.Path
        Split folder (for example ``imagenet/val``) holding one sub-folder per class.
    input_size : int
        Side ``S`` of the images handed out.
    limit : int, optional
        Keep only the first ``limit`` images (sorted by class folder, then file name).

    Attributes
    ----------
    classes : list of str
        Sorted class folder names; a label is an index into this list.
    samples : list of tuple of (pathlib.Path, int)
        Image files with their labels.

    Raises
    ------
    DataError
        If Pillow is missing, or the folder holds no class folders or no images.
    """

    def __init__(self, folder: Path, input_size: int, limit: int | None = None):
        _import_pil_image()  # fail here, not in the middle of an epoch
        self.input_size = input_size
        self.resize_size = round(input_size * 256 / 224)
        self.classes = sorted(entry.name for entry in folder.iterdir() if entry.is_dir())
        if not self.classes:
            raise DataError(f"imagenet: no class folders in {folder}; {IMAGENET_HINT}")
        self.samples = [
            (path, label)
            for label, class_name in enumerate(self.classes)
            for path in sorted((folder / class_name).iterdir())
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
        ][:limit]
        if not self.samples:
            raise DataError(f"imagenet: no JPEG/PNG images in {folder}/<class>/; {IMAGENET_HINT}")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        pil_image = _import_pil_image()
        try:
            with pil_image.open(path) as image:
                image = self._resize_and_crop(image.convert("RGB"))
        except OSError as error:  # includes PIL.UnidentifiedImageError
            raise DataError(f"imagenet: cannot decode {path}: {error}") from None
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())
        return pixels.permute(2, 0, 1).float(), label

    def _resize_and_crop(self, image):
        pil_image = _import_pil_image()
        width, height = image.size
        scale = self.resize_size / min(width, height)
        resized_width, resized_height = round(width * scale), round(height * scale)
        image = image.resize((resized_width, resized_height), pil_image.Resampling.BILINEAR)
        left = (resized_width - self.input_size) // 2
        top = (resized_height - self.input_size) // 2
        return image.crop((left, top, left + self.input_size, top + self.input_size))
