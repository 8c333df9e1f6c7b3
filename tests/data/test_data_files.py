"""Loaders of files a user has: MNIST idx files and image folders, on files made here."""

import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from lipkit.data import load_idx, load_image_folder, load_mnist
from lipkit.errors import InvalidArgumentError, LipkitError


def _idx(array: np.ndarray, type_code: int = 0x08, dtype: str = ">u1") -> bytes:
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


def _write_mnist(folder, gz: bool, n=(5, 3)):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in zip(("train", "t10k"), n, strict=True):
        images = rng.integers(0, 256, size=(count, 4, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, size=count, dtype=np.uint8)
        for kind, array, rank in (("images", images, 3), ("labels", labels, 1)):
            data = _idx(array)
            name = f"{split}-{kind}-idx{rank}-ubyte" + (".gz" if gz else "")
            (folder / name).write_bytes(gzip.compress(data) if gz else data)
        arrays[split] = (images, labels)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_files_round_trip(tmp_path, gz):
    arrays = _write_mnist(tmp_path, gz)
    split = load_mnist(tmp_path)
    assert split.x_train.shape == (5, 1, 4, 3) and split.x_test.shape == (3, 1, 4, 3)
    torch.testing.assert_close(split.x_train[:, 0] * 255,
                               torch.from_numpy(arrays["train"][0]).float())
    assert split.y_test.tolist() == arrays["t10k"][1].tolist()


def test_idx_reads_big_endian_floats(tmp_path):
    array = np.arange(6, dtype=np.float64).reshape(2, 3) / 7
    (tmp_path / "a.idx").write_bytes(_idx(array, 0x0E, ">f8"))
    torch.testing.assert_close(load_idx(tmp_path / "a.idx"), torch.from_numpy(array))


@pytest.mark.parametrize("data, message", [
    (b"\x01\x02\x08\x01", "not an idx file"),
    (b"", "not an idx file"),
    (b"\x00\x00\x08\x02\x00\x00", "truncated"),
    (_idx(np.zeros((2, 3), np.uint8))[:-1], "expected 6"),
])
def test_corrupt_idx_files_are_named(tmp_path, data, message):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(InvalidArgumentError, match=message) as error:
        load_idx(path)
    assert str(path) in str(error.value)


def test_mnist_with_a_missing_or_mismatched_file(tmp_path):
    _write_mnist(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.zeros(4, np.uint8)))
    with pytest.raises(InvalidArgumentError, match="do not match"):
        load_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(LipkitError, match="no t10k-labels"):
        load_mnist(tmp_path)
    with pytest.raises(LipkitError, match="does not exist"):
        load_mnist(tmp_path / "nowhere")


def _png(path, array):
    Image.fromarray(array).save(path)


def test_image_folder_with_classes(tmp_path):
    rng = np.random.default_rng(0)
    written = {}
    for name in ("cats", "dogs"):
        (tmp_path / name).mkdir()
        for i in range(2):
            array = rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
            _png(tmp_path / name / f"{i}.png", array)
            written[(name, i)] = array
    data = load_image_folder(tmp_path)
    assert data.classes == ["cats", "dogs"] and data.labels.tolist() == [0, 0, 1, 1]
    assert data.images.shape == (4, 3, 5, 4)
    torch.testing.assert_close(data.images[2].permute(1, 2, 0) * 255,
                               torch.from_numpy(written[("dogs", 0)]).float())
    gray = load_image_folder(tmp_path, size=(8, 6), grayscale=True)
    assert gray.images.shape == (4, 1, 8, 6)
    assert float(gray.images.min()) >= 0 and float(gray.images.max()) <= 1


def test_image_folder_errors_name_the_file(tmp_path):
    with pytest.raises(LipkitError, match="no images"):
        load_image_folder(tmp_path)
    _png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    _png(tmp_path / "b.png", np.zeros((5, 4), np.uint8))
    with pytest.raises(InvalidArgumentError, match=r"b\.png.*size="):
        load_image_folder(tmp_path)
    assert load_image_folder(tmp_path, size=(4, 4)).images.shape == (2, 3, 4, 4)
    (tmp_path / "c.png").write_bytes(b"not a png")
    with pytest.raises(LipkitError, match=r"c\.png"):
        load_image_folder(tmp_path, size=(4, 4))


def test_corrupt_gzip_and_labels_outside_0_9_are_named(tmp_path):
    _write_mnist(tmp_path, gz=True)
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    good = labels.read_bytes()
    labels.write_bytes(gzip.compress(_idx(np.array([1, 2, 12, 3, 4], np.uint8))))
    with pytest.raises(InvalidArgumentError, match=r"label 12 of item 2 is outside 0-9") as error:
        load_mnist(tmp_path)
    assert str(labels) in str(error.value)
    for broken in (good[:len(good) // 2], good[:10] + b"\xff" * 8 + good[18:]):
        labels.write_bytes(broken)
        with pytest.raises(LipkitError, match="cannot read idx file") as error:
            load_mnist(tmp_path)
        assert str(labels) in str(error.value) and "\n" not in str(error.value)
