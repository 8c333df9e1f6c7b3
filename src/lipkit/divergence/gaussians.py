"""Ground truth: Gaussians whose mutual information, KL and W1 are known in closed form.

- Correlated Gaussians (Poole et al. 2019's benchmark): ``x ~ N(0, I_d)`` and
  ``y = rho x + sqrt(1 - rho^2) eps`` with ``eps ~ N(0, I_d)``, so
  ``I(X; Y) = -d/2 log(1 - rho^2)``; :func:`correlation` inverts it for a target MI.
- ``N(m, s^2 I)`` against ``N(0, I)``: KL (:func:`gaussian_kl`) and, in one dimension, W1
  (:func:`gaussian_wasserstein_1d`).
"""

from __future__ import annotations

import math

import torch

from lipkit.errors import InvalidArgumentError, check_positive


def correlation(mutual_information: float, dim: int) -> float:
    """``rho`` with ``-d/2 log(1 - rho^2) = I``: ``sqrt(1 - exp(-2 I / d))``.

    Example:
        >>> round(correlation(2.0, 20), 4)
        0.4258
    """
    mutual_information = check_positive("mutual information", mutual_information)
    dim = _check_dim(dim)
    return math.sqrt(-math.expm1(-2.0 * mutual_information / dim))


def sample_correlated_gaussians(n: int, dim: int, mutual_information: float,
                                generator: torch.Generator | None = None,
                                dtype: torch.dtype = torch.float32
                                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` pairs ``(x, y)`` of dimension ``dim`` with ``I(X; Y) = mutual_information`` nats."""
    rho = correlation(mutual_information, dim)
    x = torch.randn(n, _check_dim(dim), generator=generator, dtype=dtype)
    noise = torch.randn(n, dim, generator=generator, dtype=dtype)
    return x, rho * x + math.sqrt(1.0 - rho * rho) * noise


def gaussian_log_ratio(x: torch.Tensor, y: torch.Tensor, mutual_information: float
                       ) -> torch.Tensor:
    """The optimal critic ``log p(y | x) / p(y)`` of the correlated Gaussians (per pair).

    Its mean under the joint is the MI and ``E_{p(x)p(y)} e^f = 1``, so DV, MINE and (with
    ``f + 1``) NWJ attain the MI with it.
    """
    rho = correlation(mutual_information, x.shape[1])
    variance = 1.0 - rho * rho
    return (-0.5 * math.log(variance) * x.shape[1]
            - (y - rho * x).square().sum(1) / (2.0 * variance) + y.square().sum(1) / 2.0)


def gaussian_kl(mean: torch.Tensor | list[float], std: float) -> float:
    """``D(N(m, s^2 I) || N(0, I)) = (d s^2 + ||m||^2 - d - 2 d log s) / 2``.

    Example:
        >>> gaussian_kl([2.0], 1.0)
        2.0
    """
    mean = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
    std = check_positive("gaussian_kl std", std)
    d = mean.numel()
    return float(d * std**2 + mean.square().sum() - d - 2 * d * math.log(std)) / 2.0


def gaussian_wasserstein_1d(mean: float, std: float) -> float:
    """``W1(N(m, s^2), N(0, 1)) = E|m + (s - 1) Z|`` (the quantile coupling is optimal in 1-D).

    Example:
        >>> gaussian_wasserstein_1d(1.5, 1.0)
        1.5
    """
    std = check_positive("gaussian_wasserstein_1d std", std)
    scale = abs(std - 1.0)
    mean = abs(float(mean))
    if scale == 0.0:
        return mean
    ratio = mean / scale  # E|a + bZ| for a folded normal
    return (scale * math.sqrt(2.0 / math.pi) * math.exp(-ratio * ratio / 2.0)
            + mean * math.erf(ratio / math.sqrt(2.0)))


def _check_dim(dim: int) -> int:
    if isinstance(dim, bool) or int(dim) != dim or dim < 1:
        raise InvalidArgumentError(f"dimension must be an integer >= 1, got {dim!r}")
    return int(dim)


def donsker_varadhan_1d(critic, mean: float, std: float, lipschitz: float = 8.0,
                        points: int = 40_001) -> float:
    """``E_mu f - log E_nu e^f`` for ``mu = N(mean, std^2)``, ``nu = N(0, 1)`` by quadrature: the
    population objective of a 1-D critic, with no sampling error.

    The uniform grid covers ``[-(lambda + 12), lambda + 12 + |mean| + 8 std]``, where the
    mass of ``mu`` and of ``e^f nu`` lies for a critic with ``||f||_L <= lipschitz`` (``e^f nu``
    peaks at most ``lambda`` away from 0).

    Example:
        >>> import torch
        >>> critic = torch.nn.Linear(1, 1)
        >>> with torch.no_grad():
        ...     _ = critic.weight.fill_(1.0)
        >>> round(donsker_varadhan_1d(critic, 2.0, 1.0), 6)  # D_1 = 2 - 1/2
        1.5
    """
    std = check_positive("donsker_varadhan_1d std", std)
    reach = check_positive("donsker_varadhan_1d lipschitz", lipschitz) + 12.0
    grid = torch.linspace(-reach, reach + abs(float(mean)) + 8 * std, points,
                          dtype=torch.float64)
    step = float(grid[1] - grid[0])
    log_mu = -(grid - mean) ** 2 / (2 * std * std) - math.log(std * math.sqrt(2 * math.pi))
    log_nu = -grid**2 / 2 - math.log(math.sqrt(2 * math.pi))
    parameter = next(iter(critic.parameters()), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    with torch.no_grad():
        values = critic(grid[:, None].to(dtype)).double().reshape(-1)
    expectation = float((values * log_mu.exp()).sum() * step)
    return expectation - float(torch.logsumexp(values + log_nu, 0) + math.log(step))
