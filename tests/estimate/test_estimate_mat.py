"""LipSDP .mat weight files: the reference networks load exactly, bad files fail in one line."""

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from lipkit.errors import InvalidArgumentError
from lipkit.estimate.importers import load_network
from lipkit.estimate.importers.mat_file import DamagedFileError, import_mat, read_mat5_numeric
from lipkit.estimate.network import Activation, Affine

REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "lipsdp"


def relu_chain(weights, x):
    """``W_L relu(... relu(W_1 x))`` in NumPy: the LipSDP format's meaning."""
    for weight in weights[:-1]:
        x = np.maximum(x @ weight.T, 0.0)
    return x @ weights[-1].T


def save_cell(path, weights):
    cell = np.empty((1, len(weights)), dtype=object)
    for i, weight in enumerate(weights):
        cell[0, i] = weight
    scipy.io.savemat(path, {"weights": cell})


@pytest.mark.parametrize(("name", "widths"), [
    ("random_weights", [2, 10, 30, 20, 2]),
    ("mnist_weights", [784, 50, 10]),
])
def test_reference_files_load_as_relu_chains_that_compute_the_same_function(name, widths):
    path = REFERENCE / f"{name}.mat"
    network = import_mat(path)
    weights = [w.astype(np.float64) for w in scipy.io.loadmat(path)["weights"].ravel()]
    layers = network.chain()
    assert [layers[0].weight.shape[1]] + [layer.weight.shape[0] for layer in layers] == widths
    assert all(layer.activation.kind == "relu" for layer in layers[:-1])
    assert layers[-1].activation is None
    for layer, weight in zip(layers, weights, strict=True):
        assert torch.equal(layer.weight, torch.from_numpy(weight)), "weights copied exactly"
        assert not torch.any(layer.bias), "the format has no biases"
    x = np.random.default_rng(0).standard_normal((16, widths[0]))
    with torch.no_grad():
        output = network(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(output, relu_chain(weights, x), rtol=1e-12, atol=1e-12)
    assert network.source == str(path)


def test_load_network_dispatches_mat_paths():
    network = load_network(REFERENCE / "random_weights.mat")
    assert network.input_shape == (2,)
    assert network.summary().count("relu") == 3


def test_round_trip_of_a_saved_cell_array(tmp_path):
    rng = np.random.default_rng(1)
    weights = [rng.standard_normal((4, 3)), rng.standard_normal((5, 4)),
               rng.standard_normal((2, 5))]
    save_cell(tmp_path / "net.mat", weights)
    network = import_mat(tmp_path / "net.mat")
    kinds = [type(node.op) for node in network.nodes]
    assert kinds == [Affine, Activation, Affine, Activation, Affine]
    x = rng.standard_normal((7, 3))
    with torch.no_grad():
        output = network(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(output, relu_chain(weights, x), rtol=1e-12, atol=1e-12)


def test_a_single_matrix_is_a_linear_network(tmp_path):
    weight = np.arange(6.0).reshape(2, 3)
    scipy.io.savemat(tmp_path / "one.mat", {"weights": weight})
    network = import_mat(tmp_path / "one.mat")
    assert len(network.nodes) == 1
    assert torch.equal(network.chain()[0].weight, torch.from_numpy(weight))


def bad_files(tmp_path):
    """(file, words its error message must contain) for every way a file can be wrong."""
    rng = np.random.default_rng(2)
    good = (REFERENCE / "random_weights.mat").read_bytes()
    cases = []
    truncated = tmp_path / "truncated.mat"
    truncated.write_bytes(good[: len(good) // 2])
    cases.append((truncated, "not a readable"))
    header_only = tmp_path / "header.mat"
    header_only.write_bytes(good[:100])
    cases.append((header_only, "not a readable"))
    text = tmp_path / "text.mat"
    text.write_text("not a matlab file\n" * 20)
    cases.append((text, "not a readable"))
    scipy.io.savemat(tmp_path / "key.mat", {"W": rng.standard_normal((2, 2))})
    cases.append((tmp_path / "key.mat", "'weights'"))
    save_cell(tmp_path / "chain.mat", [rng.standard_normal((4, 3)), rng.standard_normal((2, 5))])
    cases.append((tmp_path / "chain.mat", "chain"))
    save_cell(tmp_path / "string.mat", [rng.standard_normal((4, 3)), "relu"])
    cases.append((tmp_path / "string.mat", "weights[1]"))
    save_cell(tmp_path / "cube.mat", [rng.standard_normal((2, 2, 2))])
    cases.append((tmp_path / "cube.mat", "weights[0]"))
    save_cell(tmp_path / "complex.mat", [rng.standard_normal((2, 2)) * 1j])
    cases.append((tmp_path / "complex.mat", "weights[0]"))
    save_cell(tmp_path / "nan.mat", [np.full((2, 2), np.nan)])
    cases.append((tmp_path / "nan.mat", "non-finite"))
    grid = np.empty((2, 2), dtype=object)
    for index in np.ndindex(2, 2):
        grid[index] = rng.standard_normal((2, 2))
    scipy.io.savemat(tmp_path / "grid.mat", {"weights": grid})
    cases.append((tmp_path / "grid.mat", "1-D"))
    cases.append((tmp_path / "missing.mat", "no such file"))
    return cases


def test_bad_files_raise_one_line_errors_naming_the_file_and_the_problem(tmp_path):
    for path, words in bad_files(tmp_path):
        with pytest.raises(InvalidArgumentError) as caught:
            import_mat(path)
        message = str(caught.value)
        assert str(path) in message, message
        assert "\n" not in message, message
        assert words in message, (words, message)


def _same_as_scipy(data: bytes) -> dict:
    """read_mat5_numeric's arrays equal scipy.io.loadmat's (as float64, same shapes)."""
    import io

    fast = read_mat5_numeric(data)
    assert fast is not None
    slow = scipy.io.loadmat(io.BytesIO(data))
    for name, value in fast.items():
        if value is None:
            continue
        expected = slow[name]
        assert value.shape == expected.shape, name
        if value.dtype == object:
            for mine, theirs in zip(value.ravel(), expected.ravel(), strict=True):
                assert mine.dtype == np.float64 and np.array_equal(mine, theirs), name
        else:
            assert np.array_equal(value, expected), name
    return fast


@pytest.mark.parametrize("name", ["random_weights", "mnist_weights"])
def test_the_fast_reader_reads_the_reference_files_as_scipy_does(name):
    fast = _same_as_scipy((REFERENCE / f"{name}.mat").read_bytes())
    assert fast["weights"].dtype == object and fast["weights"].shape[0] == 1


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int8, np.uint16, np.int32,
                                   np.int64])
def test_the_fast_reader_agrees_with_scipy_on_what_scipy_writes(tmp_path, compress, dtype):
    import io

    rng = np.random.default_rng(3)
    for shape in ((1, 3), (3, 1)):
        cell = np.empty(shape, dtype=object)
        for i in range(3):  # values beyond each type's range wrap, as scipy stores them
            cell.flat[i] = (rng.standard_normal((i + 2, i + 1)) * 50).astype(dtype)
        buffer = io.BytesIO()
        scipy.io.savemat(buffer, {"weights": cell, "single": np.arange(6.0).reshape(2, 3),
                                  "note": "text", "flag": np.array([True])},
                         do_compression=compress)
        fast = _same_as_scipy(buffer.getvalue())
        assert fast["note"] is None and fast["flag"] is None  # left to scipy


def test_the_fast_reader_leaves_other_constructs_to_scipy(tmp_path):
    import io

    good = (REFERENCE / "random_weights.mat").read_bytes()
    with pytest.raises(DamagedFileError, match="runs past the end"):
        read_mat5_numeric(good[: len(good) // 2])  # truncated: refused, not scipy's
    assert read_mat5_numeric(b"not a matlab file\n" * 20) is None
    for entry in ("relu", np.eye(2) * 1j, np.array([[True, False]])):
        cell = np.empty((1, 2), dtype=object)
        cell[0, 0], cell[0, 1] = np.eye(2), entry
        buffer = io.BytesIO()
        scipy.io.savemat(buffer, {"weights": cell})
        assert read_mat5_numeric(buffer.getvalue()) is None, entry
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"weights": np.eye(2)}, format="4")
    assert read_mat5_numeric(buffer.getvalue()) is None  # v4
    # a file left to scipy still imports through it
    path = tmp_path / "v4.mat"
    path.write_bytes(buffer.getvalue())
    assert import_mat(path).in_features == 2


def test_damaged_files_are_refused_by_name_not_handed_to_scipy(tmp_path):
    """Damaged structure raises DamagedFileError (import_mat: one line naming the file)
    instead of reaching scipy.io.loadmat, which crashes the interpreter on some damage."""
    good = bytearray((REFERENCE / "random_weights.mat").read_bytes())
    rng = np.random.default_rng(0)
    path = tmp_path / "damaged.mat"
    outcomes = {"read": 0, "refused": 0, "left to scipy": 0}
    for _ in range(300):
        damaged = bytearray(good)
        for position in rng.integers(128, 400, size=3):  # the tags and flags of the cells
            damaged[position] = int(rng.integers(0, 256))
        try:
            contents = read_mat5_numeric(bytes(damaged))
        except DamagedFileError:
            outcomes["refused"] += 1
            path.write_bytes(bytes(damaged))
            with pytest.raises(InvalidArgumentError, match=r"not a readable MATLAB \.mat file"):
                import_mat(path)
            continue
        outcomes["read" if contents is not None else "left to scipy"] += 1
    assert outcomes["refused"] > 100 and outcomes["left to scipy"] < 30, outcomes


def test_the_file_that_crashed_scipy_is_one_line(tmp_path):
    """Three changed bytes of random_weights.mat (array flags 0xba06 on the first cell:
    undefined bits, complex without an imaginary part) made ``lipkit estimate`` die of a
    segmentation fault inside scipy.io.loadmat."""
    import subprocess
    import sys

    damaged = bytearray((REFERENCE / "random_weights.mat").read_bytes())
    for position, value in ((201, 186), (242, 161), (388, 139)):
        damaged[position] = value
    path = tmp_path / "crash.mat"
    path.write_bytes(bytes(damaged))
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from lipkit.cli import run; run()", "estimate",
         str(path), "-m", "naive"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stderr.strip() == (f"error: {path}: not a readable MATLAB .mat file (bad array "
                                   "flags 0xba06)")
