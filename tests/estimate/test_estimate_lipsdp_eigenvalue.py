"""LipSDP-Layer / Neuron in the eigenvalue form: the conic solver's optimum, the dual bound
below it, exact constants and cheaper bounds around it, time limits, the proof.

Oracles: Clarabel's interior-point optimum of the same SDP (through cvxpy, to 1e-9), NumPy's
SVD, Jacobian norms at sampled points (lower bounds on the true constant).
"""

import math
import time

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from lipkit.estimate import lipsdp_eigenvalue
from lipkit.estimate.compositional import compositional
from lipkit.estimate.lipsdp import (
    Chain,
    Multipliers,
    Uncertified,
    certify,
    lipsdp,
    lipsdp_neuron,
    lmi_matrix,
    prove_negative_definite,
)
from lipkit.estimate.network import Activation, Affine, Matrix, Network, Node
from lipkit.estimate.registry import Options


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def mlp(widths, seed=0, activation="relu", scale=None) -> Network:
    """A chain with normal weights (standard, or ``scale / sqrt(fan_in)``) and biases."""
    rng = np.random.default_rng(seed)
    nodes = []
    for k in range(len(widths) - 1):
        std = 1.0 if scale is None else scale / math.sqrt(widths[k])
        weight = torch.from_numpy(std * rng.standard_normal((widths[k + 1], widths[k])))
        offset = torch.from_numpy(rng.standard_normal(widths[k + 1]))
        nodes.append(Node(f"fc{k}", Affine(Matrix(weight), offset), [len(nodes) - 1]))
        if k < len(widths) - 2:
            params = {"negative_slope": 0.1} if activation == "leaky_relu" else {}
            nodes.append(Node(f"act{k}", Activation(activation, params=params),
                              [len(nodes) - 1]))
    return Network((widths[0],), nodes)


def jacobian_norms(network: Network, points: torch.Tensor) -> torch.Tensor:
    points = points.to(torch.float64).requires_grad_(True)
    output = network(points)
    rows = [torch.autograd.grad(output[:, i].sum(), points, retain_graph=True)[0]
            for i in range(output.shape[1])]
    return torch.linalg.matrix_norm(torch.stack(rows, dim=1), ord=2).detach()


def naive_product(network: Network) -> float:
    layers = network.chain()
    value = math.prod(float(np.linalg.norm(layer.weight.numpy(), 2)) for layer in layers)
    return value * math.prod(layer.activation.lipschitz for layer in layers[:-1])


def assert_certified(bound):
    assert bound.kind == "upper" and bound.status == "ok", (bound.kind, bound.status)
    assert math.isfinite(bound.value)


@pytest.mark.parametrize(("widths", "activation", "seed"), [
    ([5, 10, 10, 3], "relu", 0), ([5, 10, 10, 3], "leaky_relu", 1),
    ([5, 10, 10, 3], "tanh", 2), ([6, 12, 4], "relu", 3), ([4, 8, 8, 8, 2], "relu", 4)])
def test_equals_the_conic_solvers_optimum_with_the_dual_bound_below(widths, activation, seed):
    network = mlp(widths, seed, activation)
    for formulation in ("neuron", "layer"):
        first_order = lipsdp(network, formulation, solver="eigenvalue", tolerance=1e-6)
        conic = lipsdp(network, formulation, solver="clarabel", tolerance=1e-9)
        assert_certified(first_order)
        assert_certified(conic)
        assert first_order.details["solver"] == "eigenvalue"
        optimum = conic.details["solver_value"]
        # both are proven upper bounds on the SDP optimum; the descent reaches it
        assert first_order.value == pytest.approx(conic.value, rel=2e-4), formulation
        lower = first_order.details["sdp_lower"]
        assert lower <= optimum * (1 + 1e-7), (formulation, lower, optimum)
        assert lower >= optimum * (1 - 1e-3), (formulation, lower, optimum)  # a closed gap


def test_neuron_bound_sits_between_the_jacobians_and_compositional_and_naive():
    network = mlp([8, 30, 30, 4], 5, scale=1.5)
    bound = lipsdp(network, "neuron", solver="eigenvalue")
    assert_certified(bound)
    composed = compositional(network, Options())
    assert_certified(composed)
    assert bound.value <= composed.value * (1 + 1e-8), (bound.value, composed.value)
    assert bound.value <= naive_product(network)
    points = 3 * torch.from_numpy(np.random.default_rng(0).standard_normal((2000, 8)))
    lower = float(jacobian_norms(network, points).max())
    assert lower <= bound.value, (lower, bound.value)
    # the ECLipsE-Fast start is not the answer: the descent improves on it
    assert bound.value < composed.details["eclipse_fast"] * (1 - 1e-3)


@pytest.mark.parametrize("seed", range(4))
def test_one_dimensional_inputs_bounded_below_by_the_exact_constant(seed):
    # f: R -> R^2 is piecewise linear with at most (hidden neurons + 1) pieces per layer;
    # a dense grid over the kinks and far out hits every piece's slope
    network = mlp([1, 6, 5, 2], 40 + seed)
    grid = torch.cat([torch.linspace(-30, 30, 200_001, dtype=torch.float64),
                      torch.tensor([-1e6, 1e6], dtype=torch.float64)])[:, None]
    exact = float(jacobian_norms(network, grid).max())
    bound = lipsdp(network, "neuron", solver="eigenvalue")
    assert_certified(bound)
    assert bound.value >= exact, (bound.value, exact)


def test_one_neuron_per_layer_is_exact():
    # f(x) = w_3 relu(w_2 relu(w_1 x)) with w_1, w_2 > 0: slope |w_1 w_2 w_3| for x > 0
    weights = [2.0, 0.5, -3.0]
    nodes = []
    for k, w in enumerate(weights):
        nodes.append(Node(f"fc{k}", Affine(Matrix(torch.tensor([[w]], dtype=torch.float64))),
                          [len(nodes) - 1]))
        if k < 2:
            nodes.append(Node(f"act{k}", Activation("relu"), [len(nodes) - 1]))
    bound = lipsdp(Network((1,), nodes), "neuron", solver="eigenvalue")
    assert_certified(bound)
    assert 3.0 <= bound.value <= 3.0 * (1 + 1e-4), bound.value


def test_linear_activations_approach_the_spectral_norm_from_above():
    # slope range [1, 1] kept as an activation (not merged): the SDP's optimum is the
    # product's spectral norm, reached as the multipliers grow
    rng = np.random.default_rng(2)
    weights = [rng.standard_normal((6, 4)), rng.standard_normal((3, 6))]
    chain = Chain(weights, [(1.0, 1.0)])
    exact = float(np.linalg.norm(weights[1] @ weights[0], 2))
    solution = lipsdp_eigenvalue.solve(chain, "neuron")
    certificate = certify(chain, solution.multipliers)
    assert exact <= certificate.value <= exact * (1 + 2e-2), (certificate.value, exact)


def test_the_time_limit_stops_the_descent_with_a_proven_or_estimated_value():
    network = mlp([784, 256, 10], 0, scale=1.0)
    started = time.perf_counter()
    bound = lipsdp_neuron(network, Options(time_limit=0.5))
    seconds = time.perf_counter() - started
    assert seconds < 4.0, seconds  # ~2 s: SVD, start, the proof of the 1040-row LMI
    assert bound.details["solver"] == "eigenvalue"
    if bound.kind == "upper":
        assert bound.status == "ok"
        assert bound.value <= naive_product(network)
    else:
        assert bound.kind == "estimate" and bound.status.startswith("uncertified")
    assert bound.details["solver_status"] in ("time limit", "optimal")


def test_the_proof_refuses_a_value_below_the_certified_one():
    network = mlp([6, 12, 8, 3], 9)
    chain = Chain.from_layers(network.chain())
    solution = lipsdp_eigenvalue.solve(chain, "neuron", tolerance=1e-6)
    certificate = certify(chain, solution.multipliers)
    n_input = chain.widths[0]
    matrix = lmi_matrix(chain, certificate.multipliers, certificate.rho)
    assert prove_negative_definite(matrix, 0.0)
    for factor in (1 - 1e-3, 1 - 1e-6):  # rho below the Schur value: M has a positive
        matrix = lmi_matrix(chain, certificate.multipliers, certificate.schur_rho * factor)
        assert not prove_negative_definite(matrix, 0.0), factor
        assert np.linalg.eigvalsh(matrix).max() > 0
    # multipliers shrunk until the hidden block is indefinite cannot be proven at all
    shrunk = Multipliers([d * 1e-3 for d in certificate.multipliers.diagonal])
    with pytest.raises(Uncertified):
        certify(chain, shrunk)
    assert matrix.shape[0] == n_input + sum(chain.widths[1:])


def test_the_dual_bound_is_below_every_proven_value():
    network = mlp([10, 20, 20, 3], 13, activation="leaky_relu")
    chain = Chain.from_layers(network.chain())
    solution = lipsdp_eigenvalue.solve(chain, "neuron")
    lower = lipsdp_eigenvalue.sdp_lower_bound(chain, solution.multipliers)
    # any multipliers' proven value bounds the SDP optimum above, hence the dual bounds
    for factor in (1.0, 2.0, 0.7):
        try:
            proven = certify(chain, Multipliers([d * factor for d in
                                                 solution.multipliers.diagonal])).value
        except Uncertified:
            continue
        assert max(lower, solution.lower) <= proven, (factor, lower, solution.lower, proven)
    # the descent stopped because its own dual bound came within the tolerance (1e-3)
    assert solution.status == "optimal"
    assert solution.value <= solution.lower * (1 + 1e-3) + 1e-12


def test_the_conic_solver_also_stops_at_the_time_limit():
    # a 180-row reduced LMI that SCS does not solve in 0.5 s: compiled (which cannot be
    # interrupted: ~1-2 s here), then given the rest, or not run when none is left
    import cvxpy  # noqa: F401 - imported before the clock starts (seconds, once)

    network = mlp([100, 60, 60, 10], 21, scale=1.0)
    started = time.perf_counter()
    bound = lipsdp(network, "neuron", solver="scs", time_limit=0.5)
    seconds = time.perf_counter() - started
    assert seconds < 5.0, seconds
    assert bound.details["solver"] == "scs"
    assert bound.kind == "upper" or bound.status.startswith("uncertified"), bound.status
    if bound.kind == "upper":  # a proven value is never below the SDP's optimum
        best = lipsdp(network, "neuron", solver="eigenvalue")
        assert bound.value >= best.details["sdp_lower"]
