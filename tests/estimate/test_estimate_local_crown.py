"""local-crown: never below the exact local constants of exact-mip and exact-bab, equal to
them when its branch and bound finishes, its witness inside the domain."""

import pytest
import torch

from lipkit.estimate import METHODS, Options, load_network, options_for
from lipkit.estimate.domain import Domain

from .conftest import random_mlp


def run(name, network, norm, time_limit=30, **keywords):
    result = METHODS[name].function(network, options_for(name, network, norm=norm,
                                                         time_limit=time_limit, **keywords))
    return result if isinstance(result, list) else [result]


def values(bounds):
    upper = min(b.value for b in bounds if b.kind in ("upper", "exact"))
    lower = max(b.value for b in bounds if b.kind in ("lower", "exact"))
    return lower, upper


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_against_exact_mip_on_an_output(seed):
    network = load_network(random_mlp([4, 8, 8, 3], seed=seed))
    center = torch.randn(4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    extra = {"center": center, "radius": 0.3, "output": 1}
    local = run("local-crown", network, "inf", **extra)
    exact = run("exact-mip", network, "inf", **extra)
    assert exact[0].kind == "exact"
    low, high = values(local)
    assert high >= exact[0].value * (1 - 1e-9), (high, exact[0].value)
    assert low <= exact[0].value * (1 + 1e-9)
    assert local[0].kind == "upper"  # never "exact": the two ends keep their own proofs
    if local[0].status == "ok: complete, the upper end meets the witness":
        assert high <= exact[0].value * (1 + 1e-6)
        assert low >= exact[0].value * (1 - 1e-6)
    pair = local[0].details.get("pair")
    if pair is not None:
        domain = Domain.parse(4, center=center, radius=0.3)
        assert domain.contains(torch.stack([pair["x1"], pair["x2"]])).all()


def check_against(exact_method, widths, seed, norm, radius, time_limit=60):
    """local-crown's two ends around the exact value on a random net (output 0, a ball
    around a standard normal centre), and equal to it: the branch and bound finishes and
    a leaf's interior point gives the witness."""
    network = load_network(random_mlp(widths, seed=seed))
    center = torch.randn(widths[0], generator=torch.Generator().manual_seed(seed),
                         dtype=torch.float64)
    extra = {"center": center, "radius": radius, "output": 0}
    local = run("local-crown", network, norm, time_limit, **extra)
    exact = run(exact_method, network, norm, 120, **extra)
    assert exact[0].kind == "exact"
    low, high = values(local)
    assert high >= exact[0].value * (1 - 1e-9), (high, exact[0].value)
    assert low <= exact[0].value * (1 + 1e-9), (low, exact[0].value)
    # small enough to finish well inside the limit: both ends meet the exact value
    assert local[0].status == "ok: complete, the upper end meets the witness", local[0].status
    assert high <= exact[0].value * (1 + 1e-6) and low >= exact[0].value * (1 - 1e-6)
    return high / exact[0].value


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_against_exact_mip_at_radius_a_tenth(seed):
    # the benchmark's setting (BENCHMARKS.md: 10-50-50-1), narrower so exact-mip is quick
    check_against("exact-mip", [10, 30, 30, 1], seed, "inf", 0.1)


@pytest.mark.parametrize("seed", [0, 1])
def test_against_exact_mip_in_l1(seed):
    check_against("exact-mip", [6, 16, 16, 1], seed, "1", 0.2)


@pytest.mark.parametrize("seed", [0, 1])
def test_against_exact_bab_in_l2(seed):
    check_against("exact-bab", [2, 20, 20, 1], seed, "2", 0.5)


def test_margins_of_a_deeper_net_are_never_below_exact_mip():
    # three hidden layers: the splits of the second are constraints for the third
    network = load_network(random_mlp([5, 12, 12, 12, 3], seed=7))
    center = torch.randn(5, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    spec = torch.tensor([[1.0, -1.0, 0.0]], dtype=torch.float64)
    domain = Domain.parse(5, center=center, radius=0.3)
    from lipkit.estimate.local_crown import local_constants

    result = local_constants(network, spec, domain, "inf", time_limit=30)
    # the margin's constant is output 0's of the net with the margin as its last layer
    last = network.nodes[-1].op
    margin = random_mlp([5, 12, 12, 12, 1], seed=7)
    with torch.no_grad():
        margin[-1].weight.copy_(spec @ last.operator.weight)
        margin[-1].bias.copy_(spec @ last.bias)
    exact = run("exact-mip", load_network(margin), "inf", center=center, radius=0.3,
                output=0)
    assert exact[0].kind == "exact"
    assert result.upper[0] >= exact[0].value * (1 - 1e-9)
    assert result.lower[0] <= exact[0].value * (1 + 1e-9)
    if result.complete:
        assert result.upper[0] <= max(exact[0].value, result.lower[0]) * (1 + 1e-6)


@pytest.mark.parametrize("norm", ["inf", "1", "2"])
def test_against_exact_bab_on_two_inputs(norm):
    network = load_network(random_mlp([2, 10, 10, 1], seed=5))
    extra = {"box": ([-0.5, 0.2], [0.1, 0.6])}
    local = run("local-crown", network, norm, **extra)
    exact = run("exact-bab", network, norm, **extra)
    assert exact[0].kind == "exact"
    low, high = values(local)
    assert high >= exact[0].value * (1 - 1e-9)
    assert low <= exact[0].value * (1 + 1e-9)


def test_needs_a_bounded_domain_and_names_a_bad_output():
    network = load_network(random_mlp([3, 5, 2], seed=0))
    result = METHODS["local-crown"].function
    from lipkit.errors import InvalidArgumentError
    from lipkit.estimate.network import NotApplicableError

    with pytest.raises(NotApplicableError, match="local"):
        result(network, Options(norm="inf"))
    with pytest.raises(InvalidArgumentError, match="output 7"):
        result(network, options_for("local-crown", network, norm="inf",
                                    center=torch.zeros(3), output=7))


@pytest.mark.parametrize("time_limit", [None, 5])
@pytest.mark.parametrize("norm", ["inf", "1", "2"])
def test_a_network_with_no_hidden_unit_is_its_matrix(norm, time_limit):
    """A single Linear layer (fuzz seeds 691, 1348: the leaf's interior point had no row to
    stack; with no time limit the batch size was int(inf)). The lower end is the matrix's
    induced norm (the whole output's witness), computed here with numpy; the upper end
    combines the rows' exact constants ``||W_r||_*``: their max (l-inf, which is the
    induced norm), their sum (l1), their root sum of squares (l2, the Frobenius norm)."""
    import numpy as np

    layer = torch.nn.Linear(5, 3)
    torch.nn.init.normal_(layer.weight, generator=torch.Generator().manual_seed(7))
    matrix = layer.weight.detach().double().numpy()
    exact = np.linalg.norm(matrix, ord={"inf": np.inf, "1": 1, "2": 2}[norm])
    combined = {"inf": exact, "1": np.abs(matrix).max(axis=1).sum(),
                "2": np.linalg.norm(matrix)}[norm]
    network = load_network(torch.nn.Sequential(layer))
    local = run("local-crown", network, norm, time_limit, center=torch.ones(5), radius=0.25)
    low, high = values(local)
    assert local[0].status.startswith("ok"), local[0].status
    assert exact * (1 - 1e-6) <= low <= exact * (1 + 1e-9), (low, exact)
    assert combined * (1 - 1e-9) <= high <= combined * (1 + 1e-6), (high, combined)
    witness = local[0].details["witness"]
    ratio = (np.linalg.norm(matrix @ (witness["x1"] - witness["x2"]).numpy(), ord=float(norm))
             / np.linalg.norm((witness["x1"] - witness["x2"]).numpy(), ord=float(norm)))
    assert ratio >= low * (1 - 1e-9), (ratio, low)


@pytest.mark.parametrize("seed", [0, 1])
def test_root_bounds_passed_in_keep_the_constants_above_exact_mip(seed):
    """``local_constants(bounds=)``: the certificates hand their alpha-CROWN bounds of the
    box to the local constants' branch and bound; the upper bounds stay at or above
    exact-mip's value (and meet it when the search completes)."""
    from lipkit.estimate.engine import DenseChain, layer_bounds
    from lipkit.estimate.local_crown import local_constants

    network = load_network(random_mlp([4, 10, 10, 10, 2], seed=seed))
    center = torch.randn(4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    domain = Domain.parse(4, center=center, radius=0.3)
    chain = DenseChain.of(network)
    lower, upper = torch.from_numpy(domain.lower)[None], torch.from_numpy(domain.upper)[None]
    root = layer_bounds(chain, lower, upper, slope_steps=10)
    spec = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    found = local_constants(network, spec, domain, "inf", time_limit=30, chain=chain,
                            bounds=root)
    exact = run("exact-mip", network, "inf", center=center, radius=0.3, output=0)
    assert exact[0].kind == "exact"
    assert float(found.upper[0]) >= exact[0].value * (1 - 1e-9)
    if not found.open_branches:
        assert float(found.upper[0]) <= exact[0].value * (1 + 1e-6)
