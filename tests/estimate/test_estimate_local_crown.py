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
