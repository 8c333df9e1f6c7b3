"""LipSDP: published values, orderings between formulations, brute force, soundness.

Oracles never come from the code under test: spectral norms by NumPy's SVD, Jacobians of the
network's activation pattern at sampled points (each one's norm is a lower bound on the true
constant), and the published values of the reference implementation.
"""

import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from lipkit.errors import InvalidArgumentError
from lipkit.estimate import lipsdp as lipsdp_module
from lipkit.estimate.importers.mat_file import import_mat
from lipkit.estimate.lipsdp import (
    Chain,
    LipSDPNetworkRandOptions,
    LipSDPOptions,
    Multipliers,
    Uncertified,
    certify,
    lipsdp,
    lipsdp_layer,
    lipsdp_network,
    lipsdp_network_rand,
    lipsdp_neuron,
    prove_negative_definite,
    split_chain,
)
from lipkit.estimate.network import Activation, Add, Affine, Matrix, Network, Node
from lipkit.estimate.registry import METHODS, Options

REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "lipsdp"
ACTIVATIONS = ("relu", "tanh", "sigmoid", "leaky_relu", "gelu", "softplus", "elu", "identity")


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """One BLAS thread per test process: two pytest-xdist workers on two cores would
    otherwise oversubscribe OpenBLAS, which slows the small factorizations tenfold."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def mlp(widths, seed=0, activation="relu", bias=True) -> Network:
    """A chain with standard normal weights (and biases) drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    nodes = []
    for k in range(len(widths) - 1):
        weight = torch.from_numpy(rng.standard_normal((widths[k + 1], widths[k])))
        offset = torch.from_numpy(rng.standard_normal(widths[k + 1])) if bias else None
        nodes.append(Node(f"fc{k}", Affine(Matrix(weight), offset), [len(nodes) - 1]))
        if k < len(widths) - 2:
            params = {"negative_slope": 0.1} if activation == "leaky_relu" else {}
            nodes.append(Node(f"act{k}", Activation(activation, params=params),
                              [len(nodes) - 1]))
    return Network((widths[0],), nodes)


def jacobian_norms(network: Network, points: torch.Tensor) -> torch.Tensor:
    """The spectral norm of the network's Jacobian at each point (autograd, float64)."""
    points = points.to(torch.float64).requires_grad_(True)
    output = network(points)
    rows = [torch.autograd.grad(output[:, i].sum(), points, retain_graph=True)[0]
            for i in range(output.shape[1])]
    return torch.linalg.matrix_norm(torch.stack(rows, dim=1), ord=2).detach()


def brute_force_2d(network: Network, radius=8.0, resolution=301, directions=4000) -> float:
    """The largest Jacobian norm over a dense grid of the plane and far along many directions
    (the unbounded activation regions): the exact l2 constant to the grid's resolution."""
    axis = torch.linspace(-radius, radius, resolution, dtype=torch.float64)
    grid_x, grid_y = torch.meshgrid(axis, axis, indexing="ij")
    angles = torch.linspace(0, 2 * math.pi, directions + 1, dtype=torch.float64)[:-1]
    far = 1e6 * torch.stack([angles.cos(), angles.sin()], dim=1)
    points = torch.cat([torch.stack([grid_x.ravel(), grid_y.ravel()], dim=1), far])
    return float(jacobian_norms(network, points).max())


def naive_product(network: Network) -> float:
    layers = network.chain()
    value = math.prod(float(np.linalg.norm(layer.weight.numpy(), 2)) for layer in layers)
    return value * math.prod(layer.activation.lipschitz for layer in layers[:-1])


def assert_certified(bound):
    assert bound.kind == "upper", (bound.kind, bound.status)
    assert bound.status == "ok", bound.status
    assert math.isfinite(bound.value)


# ----------------------------------------------------------------------------------------
# the published values


def test_random_weights_reproduces_the_published_values():
    network = import_mat(REFERENCE / "random_weights.mat")
    published = {("layer", None): 39.839, ("neuron", None): 36.482, ("neuron", 2): 37.668}
    functions = {"layer": lipsdp_layer, "neuron": lipsdp_neuron}
    values = {}
    for (formulation, split), value in published.items():
        bound = functions[formulation](network, Options(method=LipSDPOptions(split=split)))
        assert_certified(bound)
        assert abs(bound.value / value - 1) < 2e-3, (formulation, split, bound.value, value)
        values[formulation, split] = bound.value
    # no biases: the activation regions are cones, so directions on the circle visit all of
    # them (the README's 2,000,001 directions give 36.4822, the exact constant)
    angles = torch.linspace(0, 2 * math.pi, 100_001, dtype=torch.float64)[:-1]
    directions = torch.stack([angles.cos(), angles.sin()], dim=1)
    exact = float(jacobian_norms(network, directions).max())
    assert exact == pytest.approx(36.4822, abs=1e-4)
    assert values["neuron", None] >= exact
    assert values["neuron", None] <= exact * (1 + 1e-4), "LipSDP-Neuron is tight here"
    assert values["neuron", None] <= values["neuron", 2] <= naive_product(network)
    assert values["neuron", None] <= values["layer", None] <= naive_product(network)


def test_mnist_network_neuron_and_layer_fast_and_between_the_bounds():
    network = import_mat(REFERENCE / "mnist_weights.mat")
    started = time.perf_counter()
    neuron = lipsdp_neuron(network, Options())
    seconds = time.perf_counter() - started
    layer = lipsdp_layer(network, Options())
    assert_certified(neuron)
    assert_certified(layer)
    # the 834-row LMI is solved as a 60-row one (the naive formulation takes many minutes;
    # typically about one second here)
    assert neuron.details["lmi_size"] == 834 and neuron.details["solved_lmi_size"] == 60
    assert seconds < 20, seconds
    naive = naive_product(network)
    assert naive == pytest.approx(31.504, abs=1e-3)
    assert neuron.value <= layer.value <= naive
    assert neuron.value == pytest.approx(24.366, rel=1e-2)
    assert layer.value == pytest.approx(26.256, rel=1e-2)
    # no biases: f is positively homogeneous, the Jacobian at a random direction is one of
    # its regions'
    points = torch.from_numpy(np.random.default_rng(0).standard_normal((300, 784)))
    lower = float(jacobian_norms(network, points).max())
    assert 0.5 * neuron.value < lower <= neuron.value
    # a time limit stops the solver early: its point still gives a proven (looser) bound,
    # or an estimate when it is too far from feasible
    limited = lipsdp_neuron(network, Options(time_limit=0.1))
    assert limited.details["solve_seconds"] < 5
    if limited.kind == "upper":
        assert limited.value >= neuron.value * (1 - 1e-4)
    else:
        assert limited.status.startswith("uncertified")


# ----------------------------------------------------------------------------------------
# orderings, closed forms, brute force


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1),
       widths=st.lists(st.integers(1, 5), min_size=3, max_size=5),
       activation=st.sampled_from(ACTIVATIONS))
def test_neuron_below_layer_below_naive_above_every_jacobian(seed, widths, activation):
    network = mlp(widths, seed, activation)
    neuron = lipsdp(network, "neuron")
    layer = lipsdp(network, "layer")
    assert_certified(neuron)
    assert_certified(layer)
    naive = naive_product(network)
    assert neuron.value <= layer.value * (1 + 1e-6), (neuron.value, layer.value)
    assert layer.value <= naive * (1 + 1e-6), (layer.value, naive)
    points = 3 * torch.from_numpy(np.random.default_rng(seed).standard_normal((256, widths[0])))
    lower = float(jacobian_norms(network, points).max())
    assert lower <= neuron.value * (1 + 1e-9), (lower, neuron.value)


def test_linear_networks_and_single_layers_give_the_spectral_norm():
    rng = np.random.default_rng(3)
    for widths in ([3, 4, 2], [4, 6, 5, 2], [5, 3]):
        network = mlp(widths, int(rng.integers(1000)), activation="identity")
        weights = [layer.weight.numpy() for layer in network.chain()]
        product = weights[0]
        for weight in weights[1:]:
            product = weight @ product
        exact = float(np.linalg.svd(product, compute_uv=False)[0])
        for formulation in ("neuron", "layer"):
            bound = lipsdp(network, formulation)
            assert_certified(bound)
            assert exact <= bound.value <= exact * (1 + 1e-10), (widths, bound.value, exact)


@pytest.mark.parametrize("seed", range(6))
def test_certified_bounds_dominate_brute_force_on_2d_input_nets(seed):
    rng = np.random.default_rng(100 + seed)
    widths = [2, *rng.integers(2, 7, size=int(rng.integers(1, 3))).tolist(), 2]
    network = mlp(widths, seed)
    exact = brute_force_2d(network)
    for formulation in ("neuron", "layer"):
        bound = lipsdp(network, formulation)
        assert_certified(bound)
        assert bound.value >= exact, (formulation, widths, bound.value, exact)


# ----------------------------------------------------------------------------------------
# LipSDP-Network: solved, shown, never called an upper bound


def test_lipsdp_network_couplings_are_refuted_by_a_two_neuron_counterexample():
    # f(x) = relu(x) - relu(x - 1): f(1) - f(0) = 1, but the two neurons' pre-activations
    # always change alike, and the coupling (e_1 - e_2) then forbids their outputs to differ
    nodes = [Node("fc0", Affine(Matrix(torch.tensor([[1.0], [1.0]], dtype=torch.float64)),
                               torch.tensor([0.0, -1.0], dtype=torch.float64)), [-1]),
             Node("act0", Activation("relu"), [0]),
             Node("fc1", Affine(Matrix(torch.tensor([[1.0, -1.0]], dtype=torch.float64))),
                  [1])]
    network = Network((1,), nodes)
    with torch.no_grad():
        rise = float(network(torch.tensor([[1.0]])) - network(torch.tensor([[0.0]])))
    assert rise == 1.0
    coupled = lipsdp_network(network, Options())
    assert coupled.value < 0.1, "the unproven couplings claim f is nearly constant"
    assert coupled.kind == "estimate" and coupled.status.startswith("uncertified")
    assert not coupled.usable
    neuron = lipsdp_neuron(network, Options())
    assert_certified(neuron)
    assert neuron.value >= rise


def test_lipsdp_network_falls_below_brute_force_on_random_2d_nets():
    below = []
    for seed in range(8):
        network = mlp([2, 2 + seed % 4, 1 + seed % 2], 200 + seed)
        exact = brute_force_2d(network, resolution=201)
        coupled = lipsdp_network(network, Options())
        neuron = lipsdp_neuron(network, Options())
        assert coupled.kind == "estimate" and not coupled.usable
        assert coupled.value <= neuron.value * (1 + 1e-6), "more multipliers, lower value"
        assert neuron.value >= exact
        if coupled.value < exact * (1 - 1e-3):
            below.append((seed, coupled.value, exact))
    assert len(below) >= 2, below


def test_lipsdp_network_rand_couplings_are_seeded():
    network = import_mat(REFERENCE / "random_weights.mat")
    first = lipsdp_network_rand(network, Options(seed=3, method=LipSDPNetworkRandOptions(
        couplings=7)))
    second = lipsdp_network_rand(network, Options(seed=3, method=LipSDPNetworkRandOptions(
        couplings=7)))
    assert first.details["couplings"] == 7
    assert first.value == second.value
    assert first.kind == "estimate"
    # the published LipSDP-Network value equals LipSDP-Neuron's on this network
    assert first.value == pytest.approx(36.482, rel=2e-3)


# ----------------------------------------------------------------------------------------
# soundness machinery


def test_uncertifiable_multipliers_and_failed_solves_give_estimates(monkeypatch):
    network = mlp([3, 4, 2], 7)
    chain = Chain.from_layers(network.chain())
    with pytest.raises(Uncertified, match="not negative definite"):
        certify(chain, Multipliers([np.zeros(4)]))  # T = 0: R = W_1^T W_1 >= 0

    def bad_solve(chain, formulation, pairs, *args):
        return lipsdp_module._Solution(Multipliers([np.zeros(4)]), 1.5, "optimal", "forged",
                                       0.0, 7, "reduced")

    monkeypatch.setattr(lipsdp_module, "_solve", bad_solve)
    bound = lipsdp(network, "neuron")
    assert bound.kind == "estimate" and bound.status.startswith("uncertified"), bound.status
    assert bound.value == 1.5 and bound.details["solver_value"] == 1.5

    def failed_solve(chain, formulation, pairs, *args):
        return lipsdp_module._Solution(None, math.nan, "infeasible", "forged", 0.0, 7,
                                       "reduced")

    monkeypatch.setattr(lipsdp_module, "_solve", failed_solve)
    bound = lipsdp(network, "neuron")
    assert bound.kind == "estimate" and "no solution (infeasible)" in bound.status


def test_certificate_is_the_original_lmi_held_for_the_solver_multipliers():
    network = mlp([4, 5, 3, 2], 11, activation="tanh")
    chain = Chain.from_layers(network.chain())
    bound = lipsdp(network, "neuron")
    assert_certified(bound)
    # any valid multipliers give an upper bound: the exact minimal rho for a fixed T is
    # the largest eigenvalue of the Schur complement, and the certificate sits just above.
    # T_2 = 2 ||W_2||^2 I and T_1 = T_2 ||W_1||^2 I make the hidden block negative definite
    norms = [np.linalg.norm(w, 2) for w in chain.weights]
    multipliers = Multipliers([np.full(5, 2 * norms[2] ** 2 * norms[1] ** 2),
                               np.full(3, 2 * norms[2] ** 2)])
    certificate = certify(chain, multipliers)
    matrix = lipsdp_module.lmi_matrix(chain, multipliers, certificate.rho)
    assert np.linalg.eigvalsh(matrix).max() < 0
    slightly_less = lipsdp_module.lmi_matrix(chain, multipliers,
                                            certificate.schur_rho * (1 - 1e-6))
    assert np.linalg.eigvalsh(slightly_less).max() > 0
    assert 0 <= certificate.inflation < 1e-6
    assert bound.value <= certificate.value * (1 + 1e-9), "the SDP beats a fixed T"


def test_prove_negative_definite_accepts_only_margins_above_rounding():
    assert prove_negative_definite(-np.eye(5), 0.0)
    assert not prove_negative_definite(np.diag([-1.0, -1.0, 1e-3]), 0.0)
    assert not prove_negative_definite(np.diag([-1.0, -1e-20]), 0.0), "below rounding"
    assert not prove_negative_definite(-np.eye(3), error=2.0)
    rotation = np.linalg.qr(np.random.default_rng(0).standard_normal((40, 40)))[0]
    nearly = rotation @ np.diag(np.r_[-np.ones(39), 1e-12]) @ rotation.T
    assert not prove_negative_definite(nearly, 0.0)


# ----------------------------------------------------------------------------------------
# splitting, applicability, registration


def test_split_chain_cuts_by_layers_and_by_neurons():
    layers = import_mat(REFERENCE / "random_weights.mat").chain()  # 2-10-30-20-2
    assert [len(piece) for piece in split_chain(layers, 2)] == [2, 2]
    assert [len(piece) for piece in split_chain(layers, None, max_neurons=40)] == [3, 1]
    assert [len(piece) for piece in split_chain(layers, None, max_neurons=5)] == [1] * 4
    with pytest.raises(InvalidArgumentError):
        split_chain(layers, 0)
    network = import_mat(REFERENCE / "random_weights.mat")
    bound = lipsdp_neuron(network, Options(method=LipSDPOptions(max_neurons=40)))
    assert_certified(bound)
    assert len(bound.details["pieces"]) == 2
    assert 36.482 <= bound.value <= naive_product(network)


def test_fits_and_not_applicable_reasons():
    fits = METHODS["lipsdp-neuron"].fits
    assert fits(mlp([3, 4, 2])) is None
    wide = mlp([2, 1001, 1], bias=False)
    assert "1001 neurons" in fits(wide)
    residual = Network((2,), [
        Node("fc0", Affine(Matrix(torch.eye(2, dtype=torch.float64))), [-1]),
        Node("act0", Activation("relu"), [0]),
        Node("sum", Add(), [1, -1]),
    ])
    assert "residual" in fits(residual)
    sorted_net = Network((2,), [
        Node("fc0", Affine(Matrix(torch.eye(2, dtype=torch.float64))), [-1]),
        Node("sort", Activation("groupsort"), [0]),
        Node("fc1", Affine(Matrix(torch.eye(2, dtype=torch.float64))), [1]),
    ])
    assert "not elementwise" in fits(sorted_net)
    bound = lipsdp_neuron(residual, Options())
    assert bound.status.startswith("not applicable") and not bound.usable
    bound = lipsdp_neuron(mlp([3, 4, 2]), Options(norm="inf"))
    assert bound.status.startswith("not applicable")
    with pytest.raises(InvalidArgumentError, match="formulation"):
        lipsdp(mlp([3, 4, 2]), "nonsense")


def test_registered_methods_and_progress_messages():
    kinds = {name: METHODS[name].kind for name in
             ("lipsdp-layer", "lipsdp-neuron", "lipsdp-network", "lipsdp-network-rand")}
    assert kinds == {"lipsdp-layer": "upper", "lipsdp-neuron": "upper",
                     "lipsdp-network": "estimate", "lipsdp-network-rand": "estimate"}
    assert all(METHODS[name].norms == ("2",) for name in kinds)
    messages = []
    bound = METHODS["lipsdp-neuron"].function(mlp([3, 5, 4, 2], 5),
                                              Options(progress=messages.append))
    assert_certified(bound)
    assert any("solving" in m for m in messages) and any("certifying" in m for m in messages)
    for key in ("solver", "solver_status", "solver_value", "certified_value",
                "relative_inflation", "solve_seconds", "lmi_size"):
        assert key in bound.details, key
    assert bound.details["certified_value"] == bound.value
