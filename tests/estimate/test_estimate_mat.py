"""LipSDP .mat weight files: the reference networks load exactly, bad files fail in one line."""

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from lipkit.errors import InvalidArgumentError
from lipkit.estimate.importers import load_network
from lipkit.estimate.importers.mat_file import import_mat
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
