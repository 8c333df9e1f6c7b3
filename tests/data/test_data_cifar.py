"""The CIFAR-10 binary loader, on files made here: round trip, and corrupt files named."""

import numpy as np
import pytest
import torch

from lipkit.data import load_cifar10, load_cifar10_batch
from lipkit.errors import InvalidArgumentError, LipkitError


def _records(count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=count, dtype=np.uint8)
    images = rng.integers(0, 256, size=(count, 3, 32, 32), dtype=np.uint8)
    data = np.concatenate([labels[:, None], images.reshape(count, -1)], axis=1).tobytes()
    return data, images, labels


def test_batch_round_trip_in_channel_row_column_order(tmp_path):
    data, images, labels = _records(4)
    (tmp_path / "test_batch.bin").write_bytes(data)
    x, y = load_cifar10_batch(tmp_path / "test_batch.bin")
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    assert y.tolist() == labels.tolist()
    torch.testing.assert_close(x * 255, torch.from_numpy(images).float())
    # byte 1 + 1024 + 32 * 2 + 5 of record 1 is the green pixel at row 2, column 5
    assert float(x[1, 1, 2, 5]) * 255 == pytest.approx(data[3073 + 1 + 1024 + 64 + 5])


@pytest.mark.parametrize("nested", [False, True])
def test_folder_reads_the_batches_in_order(tmp_path, nested):
    folder = tmp_path / "cifar-10-batches-bin" if nested else tmp_path
    folder.mkdir(exist_ok=True)
    written = {}
    for seed, (name, count) in enumerate((("data_batch_2.bin", 2), ("data_batch_10.bin", 1),
                                          ("data_batch_1.bin", 3), ("test_batch.bin", 2))):
        data, _, labels = _records(count, seed)
        (folder / name).write_bytes(data)
        written[name] = labels.tolist()
    (folder / "data_batch_1").write_bytes(b"ignored: a pickled batch is never read")
    split = load_cifar10(tmp_path)
    assert split.x_train.shape == (6, 3, 32, 32) and split.x_test.shape == (2, 3, 32, 32)
    assert split.y_train.tolist() == (written["data_batch_1.bin"] + written["data_batch_2.bin"]
                                      + written["data_batch_10.bin"])
    assert split.y_test.tolist() == written["test_batch.bin"]


@pytest.mark.parametrize("cut, message", [
    (1, "truncated CIFAR-10 binary file (6145 bytes"),
    (3073 * 2, "truncated CIFAR-10 binary file (0 bytes"),
])
def test_truncated_files_are_one_line_errors(tmp_path, cut, message):
    data, _, _ = _records(2)
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(data[:len(data) - cut])
    with pytest.raises(InvalidArgumentError) as error:
        load_cifar10_batch(path)
    assert str(error.value).startswith(f"{path}: {message}") and "\n" not in str(error.value)


def test_a_label_outside_0_9_is_named(tmp_path):
    data = bytearray(_records(3)[0])
    data[3073 * 2] = 10  # the third record's label
    path = tmp_path / "test_batch.bin"
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidArgumentError, match=r"record 2 has label 10, outside 0-9") as error:
        load_cifar10_batch(path)
    assert str(path) in str(error.value)


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(LipkitError, match="does not exist"):
        load_cifar10(tmp_path / "nowhere")
    with pytest.raises(LipkitError, match="no data_batch"):
        load_cifar10(tmp_path)
    (tmp_path / "data_batch_1.bin").write_bytes(_records(1)[0])
    with pytest.raises(LipkitError, match=r"no test_batch\.bin"):
        load_cifar10(tmp_path)
    with pytest.raises(LipkitError, match="cannot read"):
        load_cifar10_batch(tmp_path / "test_batch.bin")
