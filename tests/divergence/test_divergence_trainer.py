"""The trainer: a short run reaches the true MI at a low level; files; errors."""

import json
import math

import pytest
import torch

from lipkit.divergence import (
    CRITICS,
    DIVERGENCES,
    ESTIMATORS,
    MUTUAL_INFORMATION,
    EstimationDivergedError,
    MiConfig,
    level_statistics,
    train_divergence,
    train_mutual_information,
)
from lipkit.errors import InvalidArgumentError, UnknownMethodError
from lipkit.penalty import METHODS


def test_short_infonce_run_lands_near_the_true_mi_at_two_nats(tmp_path):
    # dimension 5, batch 64, 600 steps: the mean estimate over the last 300 steps is within
    # 0.35 nats of I = 2 (InfoNCE's own bias at this level is ~0.1 nats) and below log(64)
    config = MiConfig(estimator="infonce", dim=5, mi=(2.0,), steps=600, lr=1e-3, seed=0)
    result = train_mutual_information(config, tmp_path)
    level = result.metrics["levels"][0]
    assert abs(level["mean"] - 2.0) < 0.35, level
    assert max(result.metrics["estimates"]) <= math.log(64) + 1e-6
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["levels"] == result.metrics["levels"]
    assert (tmp_path / "mi.png").stat().st_size > 1000


def test_level_statistics_are_over_the_second_half_of_each_level():
    estimates = [0.0, 0.0, 1.0, 3.0, 9.0, 9.0, 4.0, 6.0]
    rows = level_statistics(estimates, (2.0, 5.0), 4)
    assert rows[0]["mean"] == 2.0 and rows[0]["bias"] == 0.0 and rows[0]["variance"] == 2.0
    assert rows[1]["mean"] == 5.0 and rows[1]["variance"] == 2.0


@pytest.mark.parametrize("name", ["mine", "nwj", "d-lambda", "wpc", "wdm"])
def test_each_mi_estimator_runs_with_a_construction_and_a_penalty(name):
    for lipschitz in ("spectral", "gp"):
        config = MiConfig(estimator=name, lipschitz=lipschitz, lipschitz_constant=4.0, dim=3,
                          mi=(1.0,), steps=4, hidden=8, embedding=4, batch_size=8)
        estimates = train_mutual_information(config).metrics["estimates"]
        assert len(estimates) == 4 and all(math.isfinite(e) for e in estimates)


def test_w1_between_shifted_gaussians_is_recovered_and_w_alpha_runs():
    def sample_p(n, generator):
        return torch.randn(n, 2, generator=generator) + torch.tensor([1.5, 0.0])

    def sample_q(n, generator):
        return torch.randn(n, 2, generator=generator)

    result = train_divergence("w1", sample_p, sample_q, "gp", steps=300, lr=3e-3, seed=0)
    # translates: W1 = ||m|| = 1.5; the batch estimates average close to it
    assert abs(sum(result.estimates[-100:]) / 100 - 1.5) < 0.2
    alpha = train_divergence("w-alpha", sample_p, sample_q, "unconstrained-alpha", steps=3,
                             hidden=8, batch_size=16)
    assert len(alpha.estimates) == 3


def test_bad_configurations_are_one_line_errors():
    with pytest.raises(UnknownMethodError, match="choose from"):
        MiConfig(estimator="kl").check()
    with pytest.raises(InvalidArgumentError, match="needs a critic with a target"):
        MiConfig(estimator="d-lambda", lipschitz="none").check()
    with pytest.raises(InvalidArgumentError, match="mutual information"):
        MiConfig(estimator="w1", lipschitz="gp").check()
    with pytest.raises(UnknownMethodError, match="critic"):
        MiConfig(critic="diagonal").check()
    with pytest.raises(InvalidArgumentError, match="MI level"):
        MiConfig(mi=(2.0, -1.0)).check()
    with pytest.raises(InvalidArgumentError, match="pairs"):
        train_divergence("infonce", None, None)
    assert set(ESTIMATORS) >= {"w1", "w-alpha", "dv", "mine", "nwj", "infonce", "wdm",
                               "d-lambda"}


def test_nan_samples_stop_training_with_a_clear_error():
    def sample_p(n, generator):
        return torch.full((n, 1), float("nan"))

    def sample_q(n, generator):
        return torch.randn(n, 1, generator=generator)

    with pytest.raises(InvalidArgumentError, match="NaN"):
        train_divergence("dv", sample_p, sample_q, steps=2)


def test_a_users_own_constrained_critic_is_trained_and_keeps_its_bound():
    from lipkit.nn import lipschitz_bound, make_lipschitz

    critic = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    make_lipschitz(critic, method="aol", lipschitz=2.0)
    config = MiConfig(estimator="d-lambda", lipschitz="gp-one-sided", lipschitz_constant=2.0,
                      dim=3, mi=(1.0,), steps=5, batch_size=8)
    result = train_mutual_information(config, critic=critic)
    assert result.critic is critic and lipschitz_bound(critic) <= 2.0 + 1e-5


def test_an_overflowing_objective_stops_training_naming_the_step():
    # NWJ's e^{-1} E_q e^f overflows float32 for critic values near 100
    critic = torch.nn.Linear(1, 1)
    with torch.no_grad():
        critic.weight.fill_(0.0)
        critic.bias.fill_(100.0)

    def sample(n, generator):
        return torch.randn(n, 1, generator=generator)

    with pytest.raises(EstimationDivergedError, match="step 1: the loss"):
        train_divergence("nwj", sample, sample, critic=critic, steps=3)


@pytest.mark.parametrize("method", METHODS)
def test_every_estimator_runs_with_every_lipschitz_method_or_says_why_not(method):
    # the method is an argument: each (estimator, method) pair trains, or is refused with a
    # one-line reason (constrained estimators need a target constant; w-alpha its own term)
    def sample_p(n, generator):
        return torch.randn(n, 2, generator=generator) + 1.0

    def sample_q(n, generator):
        return torch.randn(n, 2, generator=generator)

    for name in MUTUAL_INFORMATION:
        config = MiConfig(estimator=name, lipschitz=method, dim=2, mi=(1.0,), steps=2,
                          hidden=4, embedding=2, batch_size=4)
        if ESTIMATORS[name].needs_constraint and method in ("none", "unconstrained-alpha"):
            with pytest.raises(InvalidArgumentError, match="target"):
                train_mutual_information(config)
            continue
        for critic in CRITICS:
            config.critic = critic
            estimates = train_mutual_information(config).metrics["estimates"]
            assert all(math.isfinite(e) for e in estimates), (name, method, critic)
    for name in DIVERGENCES:
        refused = ((name == "w-alpha" and method != "unconstrained-alpha")
                   or (ESTIMATORS[name].needs_constraint
                       and method in ("none", "unconstrained-alpha")))
        if refused:
            with pytest.raises(InvalidArgumentError):
                train_divergence(name, sample_p, sample_q, method, steps=2, hidden=4,
                                 batch_size=4)
            continue
        result = train_divergence(name, sample_p, sample_q, method, steps=2, hidden=4,
                                  batch_size=4)
        assert all(math.isfinite(e) for e in result.estimates), (name, method)
