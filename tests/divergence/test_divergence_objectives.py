"""lipkit.divergence objectives: exact values on discrete distributions and Gaussians, bounds."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lipkit.divergence import (
    MovingAverage,
    donsker_varadhan,
    gaussian_log_ratio,
    info_nce,
    kantorovich_rubinstein,
    mine_objective,
    moreau_yosida_kl,
    nguyen_wainwright_jordan,
    sample_correlated_gaussians,
    wasserstein_alpha,
    wasserstein_dependency,
)
from lipkit.errors import InvalidArgumentError

counts = st.lists(st.integers(1, 6), min_size=2, max_size=5)


def _discrete(p_counts, q_counts):
    """Samples that ARE the discrete distributions: atom k repeated count_k times, so batch
    means are exact expectations; the atoms are the points 0, 1, 2, ... on a line."""
    k = min(len(p_counts), len(q_counts))
    p_counts, q_counts = p_counts[:k], q_counts[:k]
    p = torch.tensor(p_counts, dtype=torch.float64) / sum(p_counts)
    q = torch.tensor(q_counts, dtype=torch.float64) / sum(q_counts)
    p_atoms = torch.repeat_interleave(torch.arange(k), torch.tensor(p_counts))
    q_atoms = torch.repeat_interleave(torch.arange(k), torch.tensor(q_counts))
    return p, q, p_atoms, q_atoms


@settings(max_examples=40)
@given(counts, counts, st.floats(-3, 3))
def test_log_ratio_critic_gives_the_exact_kl_for_dv_mine_nwj(p_counts, q_counts, shift):
    p, q, p_atoms, q_atoms = _discrete(p_counts, q_counts)
    kl = float((p * (p / q).log()).sum())  # the oracle: the definition
    log_ratio = (p / q).log()
    # DV is invariant to adding a constant to the critic; NWJ is tight at 1 + log ratio
    dv = donsker_varadhan(log_ratio[p_atoms] + shift, log_ratio[q_atoms] + shift)
    nwj = nguyen_wainwright_jordan(log_ratio[p_atoms] + 1, log_ratio[q_atoms] + 1)
    my = moreau_yosida_kl(log_ratio[p_atoms], log_ratio[q_atoms])
    for name, value in (("dv", dv), ("nwj", nwj), ("d-lambda objective", my)):
        assert abs(float(value) - kl) < 1e-10, f"{name}: {float(value)} != KL {kl}"
    # the average starts at the batch: a_1 = E_q e^f = 1 for the log ratio, so MINE's
    # surrogate is E_p f - 1 = KL - 1
    surrogate = mine_objective(log_ratio[p_atoms], log_ratio[q_atoms], MovingAverage())
    assert abs(float(surrogate) - (kl - 1.0)) < 1e-10


@settings(max_examples=40)
@given(counts, counts)
def test_kr_dual_of_the_identity_critic_is_w1_on_a_line(p_counts, q_counts):
    p, q, p_atoms, q_atoms = _discrete(p_counts, q_counts)
    # on a line W1 = integral |F_p - F_q|; f(x) = x is optimal when F_p <= F_q everywhere,
    # and in general E_p x - E_q x <= W1 (a 1-Lipschitz critic)
    w1 = float((p.cumsum(0) - q.cumsum(0)).abs().sum())
    value = float(kantorovich_rubinstein(p_atoms.double(), q_atoms.double()))
    assert value <= w1 + 1e-12
    if bool((p.cumsum(0) <= q.cumsum(0) + 1e-15).all()):
        assert abs(value - w1) < 1e-12


@settings(max_examples=60)
@given(st.integers(2, 12), st.floats(0.1, 60.0), st.integers(0, 10_000))
def test_info_nce_never_exceeds_log_batch_and_nwj_never_exceeds_dv(k, scale, seed):
    generator = torch.Generator().manual_seed(seed)
    scores = scale * torch.randn(k, k, generator=generator, dtype=torch.float64)
    scores += scale * torch.eye(k, dtype=torch.float64)  # informative diagonals too
    assert float(info_nce(scores)) <= math.log(k) + 1e-12
    p, q = scores.diagonal(), scores.flatten()
    # log u <= u / e for every u > 0
    assert float(nguyen_wainwright_jordan(p, q)) <= float(donsker_varadhan(p, q)) + 1e-9


def test_info_nce_approaches_log_batch_for_a_perfect_critic():
    assert abs(float(info_nce(50 * torch.eye(64, dtype=torch.float64))) - math.log(64)) < 1e-12


def test_optimal_gaussian_critic_attains_the_mi_within_sampling_error():
    # E_{p(x,y)} f* = I and E_{p(x)p(y)} e^{f*} = 1: the sample means are within 5 standard
    # errors (n = 20000), for DV and for NWJ with f* + 1
    generator = torch.Generator().manual_seed(0)
    mi = 1.0
    x, y = sample_correlated_gaussians(20_000, 5, mi, generator, dtype=torch.float64)
    joint = gaussian_log_ratio(x, y, mi)
    marginal = gaussian_log_ratio(x, y.roll(1, dims=0), mi)
    standard_error = float(joint.std()) / math.sqrt(len(joint))
    assert abs(float(joint.mean()) - mi) < 5 * standard_error
    exp_error = float(marginal.exp().std()) / math.sqrt(len(marginal))
    assert abs(float(marginal.exp().mean()) - 1.0) < 5 * exp_error
    dv = float(donsker_varadhan(joint, marginal))
    nwj = float(nguyen_wainwright_jordan(joint + 1, marginal + 1))
    assert abs(dv - mi) < 5 * (standard_error + exp_error)
    assert abs(nwj - mi) < 5 * (standard_error + exp_error)


def test_mine_gradient_is_the_moving_average_corrected_gradient():
    # linear critic T(x) = <w, x>: grad = E_p x - E_q[e^T x] / a_t, a_t the EMA in linear space
    generator = torch.Generator().manual_seed(1)
    w = torch.randn(3, dtype=torch.float64, generator=generator, requires_grad=True)
    rate, average, linear_average = 0.1, MovingAverage(0.1), None
    for _ in range(4):
        p = torch.randn(16, 3, dtype=torch.float64, generator=generator) + 1.0
        q = torch.randn(16, 3, dtype=torch.float64, generator=generator)
        batch = float((q @ w).detach().exp().mean())
        linear_average = batch if linear_average is None else (
            (1 - rate) * linear_average + rate * batch)
        (gradient,) = torch.autograd.grad(mine_objective(p @ w, q @ w, average), w)
        weights = (q @ w).detach().exp()
        expected = p.mean(0) - (weights[:, None] * q).mean(0) / linear_average
        torch.testing.assert_close(gradient, expected, rtol=1e-10, atol=1e-12)
        assert abs(math.exp(float(average.log_average)) - linear_average) < 1e-10


@pytest.mark.parametrize("alpha", [2.0, 3.0])
def test_w_alpha_dual_over_linear_critics_is_the_distance_to_the_alpha(alpha):
    # point masses at 0 and d: W1 = d; f = a x has ||f||_L = a; sup_a is d^alpha
    d = 1.5
    slopes = torch.linspace(0.0, 10.0, 100_001, dtype=torch.float64)
    values = torch.stack([wasserstein_alpha(torch.tensor([a * d]), torch.tensor([0.0]), a, alpha)
                          for a in slopes[1::50]])
    assert abs(float(values.max()) - d**alpha) < 1e-3
    assert float(values.max()) <= d**alpha + 1e-12


def test_wasserstein_dependency_is_the_gap_between_diagonal_and_the_rest():
    scores = torch.tensor([[3.0, 1.0, 0.0], [2.0, 4.0, 1.0], [0.0, 0.0, 5.0]])
    assert float(wasserstein_dependency(scores, lipschitz=2.0)) == pytest.approx((4 - 4 / 6) / 2)


@pytest.mark.parametrize("bad", [torch.tensor([1.0, float("nan")]), torch.zeros(0),
                                 torch.zeros(2, 3), torch.tensor([1, 2])])
def test_bad_critic_outputs_are_one_line_errors(bad):
    with pytest.raises(InvalidArgumentError, match="donsker_varadhan"):
        donsker_varadhan(bad, torch.zeros(3))
    with pytest.raises(InvalidArgumentError, match="info_nce"):
        info_nce(torch.zeros(2, 3))
    with pytest.raises(InvalidArgumentError, match="rate"):
        MovingAverage(0.0)
