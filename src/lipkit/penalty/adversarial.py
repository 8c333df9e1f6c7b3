"""Adversarial Lipschitz penalty, ALP (Terjék, ICLR 2020).

``||f||_L = sup_{x, r} |f(x) - f(x + r)| / ||r||_2``; ALP penalizes the ratio at the pair a
virtual-adversarial search (Miyato et al.'s VAT) finds for each sample ``x``:

    weight * E_{x ~ (mu + g#zeta) / 2} max(|f(x) - f(x + r_adv(x))| / ||r_adv(x)||_2 - lambda, 0)^2.

``r_adv(x)``: Miyato et al.'s argument for a divergence with zero gradient at ``r = 0``:
to second order the change is ``r^T H r / 2`` and grows fastest along the top eigenvector of
the Hessian ``H``, which power iteration finds from a random unit ``d`` with Hessian-vector
products by finite differences. ALP's code takes the same step on
``r -> |f(x) - f(x + r)|``: one power iteration replaces ``d`` by the normalized
``grad_r |f(x) - f(x + r)|`` at ``r = xi d``, which is
``sign(f(x + xi d) - f(x)) * grad f(x + xi d)``. That is ``H d`` (times ``xi``) only when
``grad f(x) = 0`` and ``xi`` is small; for a critic with a non-zero gradient, and at the
paper's ``xi = 10`` on data of scale 1, it is the critic's gradient at the distant point
``x + xi d``, up to sign, and the direction found is the steepest direction there, not an
eigenvector of ``H(x)``. Then ``r_adv = epsilon * d`` with a random magnitude
``epsilon ~ U[eps_min, eps_max]``.

Defaults are those of the paper's official code (dterjek/adversarial_lipschitz_regularization,
``wgan_alp.py``, its CIFAR-10 WGAN-ALP): one power iteration (``--ip 1``), ``xi = 10``,
``epsilon ~ U[0.1, 10]``, target ``K = 1``, weight ``lambda_lp = 10``, the l2 distance, the
mean over the batch, ``x`` from the concatenation of the real and generated batches (the
start direction is Gaussian here, uniformly random on the sphere; the code draws uniform
noise in a cube, which favours its diagonals). There images lie in ``[-1, 1]`` and perturbed
samples are clipped to that box (``clamp`` here); the magnitudes suit data of that scale and
may be set smaller for data of a smaller one (BENCHMARKS.md compares both on 2-D toys).

``hessian="exact"`` is not the finite difference made exact: it follows ``H(x) d``, the
Hessian of ``r -> f(x + r) - f(x)`` at ``r = 0``, computed by double back-propagation
(Pearlmutter's trick): the second-order argument above taken literally. The two agree when
``grad f(x) = 0`` and ``xi -> 0`` (quadratic critics centred at ``x``). ``H`` is zero almost
everywhere for piecewise-linear critics (ReLU, MaxMin), whose curvature only a finite step
sees: then the random start direction is kept. Use it with smooth critics, and only when
the Hessian's direction, rather than ALP's, is wanted.
"""

from __future__ import annotations

import torch

from lipkit.errors import InvalidArgumentError, check_positive
from lipkit.penalty._samples import (
    check_batches,
    check_weight,
    critic_values,
    per_sample,
    sample_norms,
)

HESSIAN_PRODUCTS = ("finite-difference", "exact")
_TINY = 1e-12


def _normalized(direction: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """Each sample scaled to unit l2 norm; samples with a zero direction keep ``fallback``."""
    norms = sample_norms(direction)
    unit = direction / per_sample(norms.clamp(min=_TINY), direction)
    return torch.where(per_sample(norms > _TINY, direction), unit, fallback)


def _check_epsilon(epsilon) -> tuple[float, float]:
    try:
        low, high = (float(value) for value in epsilon)
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"ALP epsilon must be a pair (eps_min, eps_max), got {epsilon!r}") from None
    check_positive("ALP eps_min", low)
    if not high >= low:
        raise InvalidArgumentError(f"ALP epsilon needs eps_max >= eps_min, got {epsilon!r}")
    return low, check_positive("ALP eps_max", high)


def adversarial_direction(critic, x: torch.Tensor, xi: float = 10.0,
                          n_power_iterations: int = 1, hessian: str = "finite-difference",
                          generator: torch.Generator | None = None,
                          values: torch.Tensor | None = None) -> torch.Tensor:
    """Unit directions ``d(x)`` of largest change of the critic, by power iteration.

    Args:
        critic: a module mapping a batch to one value per sample.
        x: the batch (not differentiated through: the direction is a constant of the penalty).
        xi: the finite-difference step ``||r||`` at which ``grad_r |f(x) - f(x + r)|`` is taken.
        n_power_iterations: Hessian-vector products (1 in the paper).
        hessian: ``"finite-difference"`` (the paper) or ``"exact"`` (double back-propagation).
        generator: the random source of the start directions.
        values: ``f(x)`` when the caller has it already (saves a forward pass).

    Example:
        >>> import torch
        >>> def critic(x):  # f(x) = x^T diag(3, 1) x / 2: top eigenvector e_1
        ...     return 1.5 * x[:, 0] ** 2 + 0.5 * x[:, 1] ** 2
        >>> d = adversarial_direction(critic, torch.zeros(1, 2), xi=1.0, n_power_iterations=20)
        >>> round(abs(float(d[0, 0])), 4)
        1.0
    """
    if hessian not in HESSIAN_PRODUCTS:
        raise InvalidArgumentError(
            f"unknown ALP hessian '{hessian}'; choose from: {', '.join(HESSIAN_PRODUCTS)}")
    xi = check_positive("ALP xi", xi)
    if int(n_power_iterations) < 1:
        raise InvalidArgumentError(
            f"ALP n_power_iterations must be >= 1, got {n_power_iterations}")
    with torch.enable_grad():  # the search differentiates even when called under no_grad
        return _power_iteration(critic, x.detach(), xi, int(n_power_iterations), hessian,
                                generator, values)


def _power_iteration(critic, x, xi, n_power_iterations, hessian, generator, values):
    start = torch.randn(x.shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)
    direction = _normalized(start, start)
    if hessian == "finite-difference" and values is None:
        with torch.no_grad():
            values = critic_values(critic, x, "adversarial_direction")
    elif values is not None:
        values = values.detach().reshape(x.shape[0])
    for _ in range(n_power_iterations):
        if hessian == "finite-difference":
            step = direction.clone().requires_grad_(True)
            change = (critic_values(critic, x + xi * step, "adversarial_direction")
                      - values).abs().sum()
            (product,) = torch.autograd.grad(change, step)
        else:
            point = x.clone().requires_grad_(True)
            value = critic_values(critic, point, "adversarial_direction").sum()
            (gradient,) = torch.autograd.grad(value, point, create_graph=True)
            product = None
            if gradient.requires_grad:
                (product,) = torch.autograd.grad((gradient * direction).sum(), point,
                                                 allow_unused=True)
            if product is None:  # the critic is affine in x: no curvature to follow
                product = torch.zeros_like(x)
        direction = _normalized(product.detach(), direction)
    return direction


def adversarial_perturbation(critic, x: torch.Tensor, xi: float = 10.0,
                             epsilon: tuple[float, float] = (0.1, 10.0),
                             n_power_iterations: int = 1, hessian: str = "finite-difference",
                             generator: torch.Generator | None = None,
                             values: torch.Tensor | None = None) -> torch.Tensor:
    """``r_adv(x) = epsilon * d(x)``, ``epsilon ~ U[eps_min, eps_max]`` per sample (the paper)."""
    low, high = _check_epsilon(epsilon)
    direction = adversarial_direction(critic, x, xi, n_power_iterations, hessian, generator,
                                      values)
    magnitude = torch.rand(x.shape[0], generator=generator, dtype=x.dtype, device="cpu")
    magnitude = (low + (high - low) * magnitude).to(x.device)
    return direction * per_sample(magnitude, x)


def adversarial_pairs(critic, real: torch.Tensor, fake: torch.Tensor, xi: float = 10.0,
                      epsilon: tuple[float, float] = (0.1, 10.0), n_power_iterations: int = 1,
                      hessian: str = "finite-difference",
                      clamp: tuple[float, float] | None = None,
                      generator: torch.Generator | None = None,
                      values: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """ALP's ``rho``: the pairs ``(x, x + r_adv(x))``, ``x`` from the real and fake batches.

    ``values``: the critic at ``cat([real, fake])`` when the caller has it already.
    """
    samples = torch.cat([real.detach(), fake.detach()])
    perturbed = samples + adversarial_perturbation(critic, samples, xi, epsilon,
                                                   n_power_iterations, hessian, generator,
                                                   values)
    if clamp is not None:
        perturbed = perturbed.clamp(*clamp)
    return samples, perturbed


def adversarial_lipschitz_penalty(critic, real: torch.Tensor, fake: torch.Tensor,
                                  lipschitz: float = 1.0, weight: float = 10.0,
                                  xi: float = 10.0, epsilon: tuple[float, float] = (0.1, 10.0),
                                  n_power_iterations: int = 1,
                                  hessian: str = "finite-difference",
                                  clamp: tuple[float, float] | None = None,
                                  generator: torch.Generator | None = None) -> torch.Tensor:
    """``weight * E max(|f(x) - f(x + r_adv)| / ||r_adv|| - lambda, 0)^2`` (module docstring).

    Args:
        critic: a module mapping a batch to one value per sample.
        real, fake: batches of one shape; ``x`` runs over both (the mixture of the paper).
        lipschitz: the target constant ``lambda`` (``K`` in the official code).
        weight: the multiplier ``l`` (``lambda_lp = 10``).
        xi, epsilon, n_power_iterations, hessian: the search for ``r_adv`` (module docstring).
        clamp: a box ``(low, high)`` the perturbed samples are clipped to (data bounds).
        generator: the random source of the directions and magnitudes.

    Example:
        >>> import torch
        >>> critic = torch.nn.Linear(2, 1)
        >>> with torch.no_grad():
        ...     _ = critic.weight.copy_(torch.tensor([[3.0, 4.0]]))
        >>> penalty = adversarial_lipschitz_penalty(critic, torch.randn(8, 2), torch.randn(8, 2),
        ...                                         weight=1.0)
        >>> round(penalty.item(), 4)  # r_adv along w: (||w|| - 1)^2
        16.0
    """
    check_batches(real, fake, "adversarial_lipschitz_penalty")
    lipschitz = check_positive("adversarial_lipschitz_penalty lipschitz", lipschitz)
    weight = check_weight(weight, "adversarial_lipschitz_penalty")
    where = "adversarial_lipschitz_penalty"
    values = critic_values(critic, torch.cat([real.detach(), fake.detach()]), where)
    samples, perturbed = adversarial_pairs(critic, real, fake, xi, epsilon, n_power_iterations,
                                           hessian, clamp, generator, values.detach())
    distance = sample_norms(samples - perturbed).clamp(min=_TINY)
    ratio = (values - critic_values(critic, perturbed, where)).abs() / distance
    return weight * (ratio - lipschitz).clamp(min=0).square().mean()
