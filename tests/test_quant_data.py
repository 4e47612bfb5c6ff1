"""Tests for instabnn_hw.quant.data: the offline dataset loaders."""

import gzip
import os
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from instabnn_hw.quant.data import (
    DATASETS,
    FASHION_MNIST_DEFAULT_DIR,
    DataError,
    ImageFolderDataset,
    TensorImageDataset,
    dataset_info,
    load_dataset,
    read_idx,
)

needs_fashion_mnist = pytest.mark.skipif(
    not FASHION_MNIST_DEFAULT_DIR.is_dir(),
    reason="Debian package dataset-fashion-mnist is not installed",
)


def write_idx(path, array, *, magic=b"\0\0\x08", truncate_by=0):
    """Write a uint8 array as an IDX file (gzipped when the name ends in .gz)."""
    header = magic + bytes([array.ndim]) + np.array(array.shape, ">u4").tobytes()
    content = header + array.astype(np.uint8).tobytes()
    content = content[: len(content) - truncate_by]
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(content))
    else:
        path.write_bytes(content)


def write_fashion_test_split(folder, images, labels, suffix=""):
    folder.mkdir(exist_ok=True)
    write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", images)
    write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", labels)


# --- registry and argument checks -------------------------------------------------------


def test_dataset_info_describes_each_dataset():
    assert set(DATASETS) == {"digits", "fashion-mnist", "cifar10", "imagenet"}
    assert dataset_info("fashion-mnist").native_size == 28
    assert dataset_info("cifar10").in_channels == 3
    assert dataset_info("imagenet").num_classes == 1000


def test_unknown_dataset_name_lists_known_ones():
    with pytest.raises(DataError, match="unknown dataset 'mnist'.*digits.*fashion-mnist"):
        dataset_info("mnist")
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("mnist", "train")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"split": "validation"}, "unknown split 'validation'"),
        ({"split": "train", "limit": 0}, "limit must be positive"),
        ({"split": "train", "input_size": -4}, "input_size must be positive"),
    ],
)
def test_bad_arguments_raise_data_error(arguments, message):
    with pytest.raises(DataError, match=message):
        load_dataset("digits", **arguments)


def test_tensor_image_dataset_converts_per_item():
    images = torch.arange(2 * 1 * 3 * 3, dtype=torch.uint8).reshape(2, 1, 3, 3)
    dataset = TensorImageDataset(images, torch.tensor([4, 7], dtype=torch.int32))
    assert len(dataset) == 2
    assert dataset.labels.dtype == torch.int64
    image, label = dataset[1]
    assert image.dtype == torch.float32 and torch.equal(image, images[1].float())
    assert label == 7 and isinstance(label, int)
    with pytest.raises(ValueError, match="uint8"):
        TensorImageDataset(images.float(), dataset.labels)


# --- digits -----------------------------------------------------------------------------


def test_digits_splits_shapes_and_values():
    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    assert (len(train), len(test)) == (1437, 360)
    assert train.images.shape == (1437, 1, 8, 8) and train.images.dtype == torch.uint8
    # Values 0..16 times 16, saturated at 255.
    allowed = set(range(0, 256, 16)) | {255}
    assert set(torch.cat([train.images, test.images]).unique().tolist()) <= allowed
    assert int(train.images.max()) == 255
    assert set(train.labels.tolist()) == set(range(10))
    image, label = test[0]
    assert image.shape == (1, 8, 8) and image.dtype == torch.float32
    assert isinstance(label, int)


def test_digits_split_is_deterministic_and_partitions_the_data():
    from sklearn.datasets import load_digits

    first, second = load_dataset("digits", "train"), load_dataset("digits", "train")
    assert torch.equal(first.images, second.images)
    assert torch.equal(first.labels, second.labels)
    test = load_dataset("digits", "test")
    all_labels = torch.cat([first.labels, test.labels])
    assert torch.equal(all_labels.bincount(), torch.from_numpy(np.bincount(load_digits().target)))


def test_digits_limit_keeps_the_first_images():
    full = load_dataset("digits", "test")
    limited = load_dataset("digits", "test", limit=10)
    assert len(limited) == 10
    assert torch.equal(limited.images, full.images[:10])
    assert torch.equal(limited.labels, full.labels[:10])


# --- Fashion-MNIST (real files) ---------------------------------------------------------


@needs_fashion_mnist
def test_fashion_mnist_real_test_split():
    test = load_dataset("fashion-mnist", "test")
    assert len(test) == 10_000
    assert test.images.shape == (10_000, 1, 28, 28) and test.images.dtype == torch.uint8
    assert set(test.labels.tolist()) == set(range(10))
    assert int(test.images.min()) == 0 and int(test.images.max()) == 255
    image, label = test[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert 0 <= label <= 9


@needs_fashion_mnist
def test_fashion_mnist_real_train_split():
    train = load_dataset("fashion-mnist", "train")
    assert len(train) == 60_000
    assert torch.equal(train.labels.bincount(), torch.full((10,), 6_000))


@needs_fashion_mnist
def test_fashion_mnist_padding_to_32_keeps_the_image_in_the_middle():
    native = load_dataset("fashion-mnist", "test", limit=50)
    padded = load_dataset("fashion-mnist", "test", input_size=32, limit=50)
    assert padded.images.shape == (50, 1, 32, 32)
    assert torch.equal(padded.images[:, :, 2:30, 2:30], native.images)
    border = padded.images.clone()
    border[:, :, 2:30, 2:30] = 0
    assert int(border.count_nonzero()) == 0
    assert torch.equal(padded.labels, native.labels)


@needs_fashion_mnist
def test_loaded_images_are_copies_of_the_cache():
    first = load_dataset("fashion-mnist", "test", limit=5)
    first.images.fill_(7)
    assert not torch.equal(load_dataset("fashion-mnist", "test", limit=5).images, first.images)


# --- IDX parsing on generated files -----------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_raw_and_gzipped(tmp_path, suffix):
    array = np.random.default_rng(1).integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    path = tmp_path / f"images{suffix}"
    write_idx(path, array)
    assert np.array_equal(read_idx(path), array)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_fashion_mnist_from_generated_folder(tmp_path, suffix):
    images = np.random.default_rng(2).integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5, 9], dtype=np.uint8)
    write_fashion_test_split(tmp_path, images, labels, suffix)
    dataset = load_dataset("fashion-mnist", "test", data_dir=tmp_path)
    assert torch.equal(dataset.images[:, 0], torch.from_numpy(images))
    assert dataset.labels.tolist() == labels.tolist()
    cropped = load_dataset("fashion-mnist", "test", data_dir=tmp_path, input_size=25)
    # Odd difference: one pixel off the top/left, two off the bottom/right.
    assert torch.equal(cropped.images[:, 0], torch.from_numpy(images[:, 1:26, 1:26]))


def test_padding_with_odd_difference_puts_the_extra_pixel_bottom_right(tmp_path):
    images = np.full((1, 28, 28), 200, dtype=np.uint8)
    write_fashion_test_split(tmp_path, images, np.array([0], dtype=np.uint8))
    padded = load_dataset("fashion-mnist", "test", data_dir=tmp_path, input_size=31).images[0, 0]
    rows = padded.count_nonzero(dim=1).nonzero().flatten()
    assert (int(rows[0]), int(rows[-1])) == (1, 28)


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda path, array: write_idx(path, array, magic=b"\0\0\x0d"), "bad magic number"),
        (lambda path, array: write_idx(path, array, truncate_by=10), "is truncated"),
        (lambda path, array: path.write_bytes(gzip.compress(b"\0\0\x08\x03" + bytes(100))[:-12]), "cannot read"),
    ],
    ids=["bad-magic", "truncated", "truncated-gzip"],
)
def test_corrupt_idx_file_raises_data_error_naming_it(tmp_path, write, message):
    array = np.zeros((2, 28, 28), dtype=np.uint8)
    write_fashion_test_split(tmp_path, array, np.zeros(2, dtype=np.uint8), ".gz")
    write(tmp_path / "t10k-images-idx3-ubyte.gz", array)
    with pytest.raises(DataError, match=message) as caught:
        load_dataset("fashion-mnist", "test", data_dir=tmp_path)
    assert "t10k-images-idx3-ubyte.gz" in str(caught.value)


def test_image_and_label_count_mismatch_raises_data_error(tmp_path):
    write_fashion_test_split(tmp_path, np.zeros((3, 28, 28), np.uint8), np.zeros(2, np.uint8))
    with pytest.raises(DataError, match="3 images but .*t10k-labels-idx1-ubyte holds 2 labels"):
        load_dataset("fashion-mnist", "test", data_dir=tmp_path)


def test_fashion_mnist_missing_folder_or_file(tmp_path):
    with pytest.raises(DataError, match="does not exist.*dataset-fashion-mnist"):
        load_dataset("fashion-mnist", "test", data_dir=tmp_path / "absent")
    with pytest.raises(DataError, match=r"no t10k-images-idx3-ubyte\(\.gz\) in .*pass --data DIR"):
        load_dataset("fashion-mnist", "test", data_dir=tmp_path)


# --- CIFAR-10 on a generated folder -----------------------------------------------------


def cifar10_batch(name, data, labels):
    """The dict a CIFAR-10 python batch holds (keys as ``pickle.load(..., encoding="bytes")`` gives them)."""
    return {
        b"batch_label": f"{name} of 6".encode(),
        b"labels": labels,
        b"data": data,
        b"filenames": [f"image_{n:05d}.png".encode() for n in range(len(data))],
    }


def write_cifar10_folder(folder, images_per_batch=2, protocol=2):
    """Write a tiny cifar-10-batches-py folder; return {batch name: (data, labels)}.

    Protocol 2, as the real files (pickled by Python 2) are.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    batches = {}
    for index, name in enumerate([*(f"data_batch_{n}" for n in range(1, 6)), "test_batch"]):
        data = rng.integers(0, 256, size=(images_per_batch, 3072), dtype=np.uint8)
        labels = [(index + n) % 10 for n in range(images_per_batch)]
        with open(folder / name, "wb") as stream:
            pickle.dump(cifar10_batch(name, data, labels), stream, protocol=protocol)
        batches[name] = (data, labels)
    return batches


def python2_cifar10_pickle(data, labels):
    """A batch pickled the way Python 2 and numpy 1 wrote the real files (byte strings, ``numpy.core``)."""

    def string(text):  # Python 2's str: BINSTRING, which encoding="bytes" reads as bytes
        return b"T" + struct.pack("<I", len(text)) + text

    def integer(value):
        return b"J" + struct.pack("<i", value)

    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
        + integer(0)
        + b"\x85"  # TUPLE1: the shape (0,)
        + string(b"b")
        + b"\x87R"  # TUPLE3, REDUCE: _reconstruct(ndarray, (0,), "b")
        + b"("
        + integer(1)
        + integer(data.shape[0])
        + integer(data.shape[1])
        + b"\x86"  # TUPLE2: the shape
        + b"cnumpy\ndtype\n"
        + string(b"u1")
        + integer(0)
        + integer(1)
        + b"\x87R"  # dtype("u1", 0, 1)
        + b"("
        + integer(3)
        + string(b"|")
        + b"NNN"
        + integer(-1)
        + integer(-1)
        + integer(0)
        + b"tb"  # the dtype's state, BUILD
        + b"\x89"  # NEWFALSE: C order
        + string(data.tobytes())
        + b"tb"  # the array's state, BUILD
    )
    label_list = b"](" + b"".join(integer(label) for label in labels) + b"e"
    return (
        b"\x80\x02}("
        + string(b"batch_label")
        + string(b"testing batch 1 of 1")
        + string(b"labels")
        + label_list
        + string(b"data")
        + array
        + string(b"filenames")
        + b"]("
        + b"".join(string(f"image_{n}.png".encode()) for n in range(len(data)))
        + b"e"
        + b"u."
    )


@pytest.mark.parametrize("point_at_parent", [False, True])
def test_cifar10_from_generated_folder(tmp_path, point_at_parent):
    folder = tmp_path / "cifar-10-batches-py"
    batches = write_cifar10_folder(folder)
    data_dir = tmp_path if point_at_parent else folder
    train = load_dataset("cifar10", "train", data_dir=data_dir)
    test = load_dataset("cifar10", "test", data_dir=data_dir)
    assert train.images.shape == (10, 3, 32, 32) and len(test) == 2
    assert train.labels.tolist()[:4] == batches["data_batch_1"][1] + batches["data_batch_2"][1]
    # Channel-major rows: the first 1024 bytes are red, row by row.
    data, labels = batches["test_batch"]
    image, label = test[1]
    for channel in range(3):
        expected = data[1, channel * 1024 : (channel + 1) * 1024].reshape(32, 32)
        assert torch.equal(image[channel], torch.from_numpy(expected).float())
    assert label == labels[1]


def test_cifar10_padding_and_limit(tmp_path):
    write_cifar10_folder(tmp_path / "cifar-10-batches-py")
    dataset = load_dataset("cifar10", "train", data_dir=tmp_path, input_size=36, limit=3)
    assert dataset.images.shape == (3, 3, 36, 36)
    assert int(dataset.images[:, :, :2].count_nonzero()) == 0


def test_cifar10_missing_data(tmp_path):
    with pytest.raises(DataError, match="no data folder given.*cifar-10-batches-py"):
        load_dataset("cifar10", "train")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("cifar10", "train", data_dir=tmp_path / "absent")
    with pytest.raises(DataError, match="no data_batch_1 in"):
        load_dataset("cifar10", "train", data_dir=tmp_path)


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL, 4])
def test_cifar10_batch_in_each_pickle_protocol_numpy_writes_with_reconstruct(tmp_path, protocol):
    batches = write_cifar10_folder(tmp_path, protocol=protocol)
    test = load_dataset("cifar10", "test", data_dir=tmp_path)
    data, labels = batches["test_batch"]
    assert torch.equal(test.images, torch.from_numpy(data.reshape(-1, 3, 32, 32)))
    assert test.labels.tolist() == labels


def test_cifar10_batch_pickled_by_python2_as_the_real_files_are(tmp_path):
    write_cifar10_folder(tmp_path)
    data = np.random.default_rng(5).integers(0, 256, size=(3, 3072), dtype=np.uint8)
    content = python2_cifar10_pickle(data, [7, 0, 9])
    (tmp_path / "test_batch").write_bytes(content)
    # The hand-made pickle is what Python's own unpickler reads as a batch, numpy.core and all.
    reference = pickle.loads(content, encoding="bytes")
    assert reference[b"labels"] == [7, 0, 9] and np.array_equal(reference[b"data"], data)

    test = load_dataset("cifar10", "test", data_dir=tmp_path)
    assert torch.equal(test.images, torch.from_numpy(data.reshape(3, 3, 32, 32)))
    assert test.labels.tolist() == [7, 0, 9]


def write_marker(path):
    """What a crafted pickle calls: proof, if the file exists afterwards, that loading ran code."""
    Path(path).write_text("the pickle ran code")


class RunsCodeWhenUnpickled:
    def __init__(self, function, *arguments):
        self.function, self.arguments = function, arguments

    def __reduce__(self):
        return self.function, self.arguments


def marker_payloads(marker):
    return {
        "os.system": RunsCodeWhenUnpickled(os.system, f"touch {marker}"),
        "a function": RunsCodeWhenUnpickled(write_marker, str(marker)),
    }


@pytest.mark.parametrize("payload", ["os.system", "a function"])
@pytest.mark.parametrize("where", ["the whole batch", "its data", "an item of an object array"])
def test_cifar10_batch_that_runs_code_is_refused_without_running_it(tmp_path, payload, where):
    write_cifar10_folder(tmp_path)
    marker = tmp_path / "marker"
    evil = marker_payloads(marker)[payload]
    batch = {
        "the whole batch": evil,
        "its data": {b"data": evil, b"labels": [0]},
        "an item of an object array": {b"data": np.array([evil, 1], dtype=object), b"labels": [0, 1]},
    }[where]
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    # Python's own unpickler would run it:
    pickle.loads(pickle.dumps(marker_payloads(tmp_path / "proof")[payload]))
    assert (tmp_path / "proof").exists()

    with pytest.raises(DataError, match="test_batch is not a CIFAR-10 batch .it ") as caught:
        load_dataset("cifar10", "test", data_dir=tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert ("dtype object" if where.startswith("an item") else "which a CIFAR-10 batch never holds") in message
    assert not marker.exists()


@pytest.mark.parametrize(
    "batch, message",
    [
        ({b"data": np.array([b"x" * 3072], dtype=object), b"labels": [0]}, "dtype object"),
        ({b"data": np.zeros((1, 3072), dtype=[("red", "u1")]), b"labels": [0]}, "dtype |V1"),
        ({b"data": np.zeros((1, 3072), dtype="S1"), b"labels": [0]}, "dtype |S1"),
        ({b"data": bytearray(3072), b"labels": [0]}, "bytearray, which a CIFAR-10 batch never holds"),
        ([np.zeros((1, 3072), np.uint8)], "holds a list, not a dict"),
    ],
    ids=["object array", "structured array", "byte-string array", "bytearray", "list"],
)
def test_cifar10_batch_with_what_a_real_batch_never_holds_is_refused(tmp_path, batch, message):
    write_cifar10_folder(tmp_path)
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match="test_batch is not a CIFAR-10 batch") as caught:
        load_dataset("cifar10", "test", data_dir=tmp_path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_cifar10_corrupt_batch(tmp_path):
    write_cifar10_folder(tmp_path)
    (tmp_path / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="test_batch is not a CIFAR-10 batch"):
        load_dataset("cifar10", "test", data_dir=tmp_path)


# --- ImageNet folder layout on generated images -----------------------------------------


def write_image(path, pixels):
    from PIL import Image

    Image.fromarray(pixels).save(path)


@pytest.fixture
def imagenet_folder(tmp_path):
    """A tiny ImageNet-style folder: two classes per split, PNG and JPEG of mixed sizes."""
    rng = np.random.default_rng(4)
    for split in ("train", "val"):
        for class_name in ("n02_zebra", "n01_apple"):
            (tmp_path / split / class_name).mkdir(parents=True)
        write_image(tmp_path / split / "n01_apple" / "a.PNG", np.full((40, 60, 3), 90, np.uint8))
        write_image(
            tmp_path / split / "n01_apple" / "b.JPEG",
            rng.integers(0, 256, size=(70, 50, 3), dtype=np.uint8),
        )
        write_image(
            tmp_path / split / "n02_zebra" / "c.png",
            rng.integers(0, 256, size=(256, 300, 3), dtype=np.uint8),
        )
        (tmp_path / split / "n02_zebra" / "notes.txt").write_text("not an image")
    return tmp_path


def test_imagenet_folder_classes_shapes_and_values(imagenet_folder):
    dataset = load_dataset("imagenet", "test", data_dir=imagenet_folder, input_size=32)
    assert isinstance(dataset, ImageFolderDataset)
    assert dataset.classes == ["n01_apple", "n02_zebra"]
    assert [path.name for path, _ in dataset.samples] == ["a.PNG", "b.JPEG", "c.png"]
    items = [dataset[index] for index in range(len(dataset))]
    assert [label for _, label in items] == [0, 0, 1]
    for image, _ in items:
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32
        assert float(image.min()) >= 0 and float(image.max()) <= 255
        assert torch.equal(image, image.round())
    # A uniform image stays uniform through bilinear resizing.
    assert torch.equal(items[0][0], torch.full((3, 32, 32), 90.0))


def test_imagenet_center_crop_geometry(imagenet_folder):
    from PIL import Image

    # 300 wide x 256 high: the shorter side is already 256, so only the crop acts.
    path = imagenet_folder / "train" / "n02_zebra" / "c.png"
    pixels = np.asarray(Image.open(path))
    dataset = load_dataset("imagenet", "train", data_dir=imagenet_folder)
    image, label = dataset[2]
    assert label == 1 and image.shape == (3, 224, 224)
    expected = torch.from_numpy(pixels[16:240, 38:262].copy()).permute(2, 0, 1).float()
    assert torch.equal(image, expected)


def test_imagenet_limit(imagenet_folder):
    dataset = load_dataset("imagenet", "train", data_dir=imagenet_folder, limit=2)
    assert len(dataset) == 2


def test_imagenet_missing_or_empty_folders(tmp_path):
    with pytest.raises(DataError, match="no data folder given"):
        load_dataset("imagenet", "train")
    with pytest.raises(DataError, match="val does not exist"):
        load_dataset("imagenet", "test", data_dir=tmp_path)
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        load_dataset("imagenet", "train", data_dir=tmp_path)
    (tmp_path / "train" / "n01").mkdir()
    with pytest.raises(DataError, match="no JPEG/PNG images"):
        load_dataset("imagenet", "train", data_dir=tmp_path)


def test_imagenet_without_pillow_says_how_to_install_it(tmp_path, monkeypatch):
    (tmp_path / "train" / "n01").mkdir(parents=True)
    # A None entry in sys.modules makes `import PIL` raise ImportError.
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(DataError, match="pip install pillow"):
        load_dataset("imagenet", "train", data_dir=tmp_path)
