"""Lower bound: the adversarial ratio search of the seminar (Terjék, ICLR 2020).

``r_adv(x) = argmax_r ||f(x) - f(x + r)|| / ||r||``. Its direction is approximated by power
iteration with finite-difference Hessian-vector products of ``r -> ||f(x) - f(x + r)||^2``
at ``r = 0`` (``d <- grad_r ||f(x + xi d) - f(x)||^2``, as in virtual adversarial
training), then pairs ``(x, x + eps d)`` are scored for magnitudes ``eps`` over several
decades, and the best pairs are refined by gradient ascent on the ratio itself, which is
differentiable even for ReLU networks (it depends on values of ``f``, not derivatives).
The witness is the final pair.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from lipkit.estimate.bound import Bound
from lipkit.estimate.domain import domain_of
from lipkit.estimate.jacobian import candidate_points
from lipkit.estimate.network import DTYPE
from lipkit.estimate.registry import MethodOptions, Options, register_method
from lipkit.estimate.witness import (
    certified_ratios,
    pair_ratios,
    vector_norm,
    witness_details,
)


def adversarial_direction(network, x: torch.Tensor, n_iterations: int = 10,
                          xi: float = 1e-3, seed: int = 0,
                          deadline: float | None = None) -> torch.Tensor:
    """Power iteration with finite-difference Hessian-vector products (unit l2 directions);
    past ``deadline`` the iterations stop where they are."""
    generator = torch.Generator().manual_seed(seed)
    d = torch.randn(x.shape, generator=generator, dtype=DTYPE)
    shape = (-1, *([1] * (x.ndim - 1)))
    with torch.no_grad():
        fx = network.forward(x)
    for _ in range(n_iterations):
        if deadline is not None and time.perf_counter() > deadline:
            break
        d = (d / d.flatten(1).norm(dim=1).clamp_min(1e-300).reshape(shape)).requires_grad_(True)
        difference = network.forward(x + xi * d) - fx
        (grad,) = torch.autograd.grad(difference.pow(2).sum(), d)
        d = grad.detach()
    return d / d.flatten(1).norm(dim=1).clamp_min(1e-300).reshape(shape)


@dataclass(frozen=True)
class AdversarialOptions(MethodOptions):
    """Options of ``lower-adversarial``."""

    points: int = 128  # random points (of the domain) the power iteration starts from
    refine: int = 16  # best pairs refined by ascent on their ratio
    steps: int = 100  # ascent steps of the refinement
    learning_rate: float = 1e-3  # Adam's step size on the pairs


@register_method("lower-adversarial", kind="lower", norms=("2", "1", "inf"), local=True,
                 options=AdversarialOptions)
def lower_adversarial(network, options: Options) -> Bound:
    """r_adv by power iteration, scored over magnitudes, refined by ascent on the ratio."""
    started = time.perf_counter()
    norm = options.norm
    domain = domain_of(network, options)
    own = options.own(AdversarialOptions)
    x = candidate_points(network, options, own.points)
    deadline = None if options.time_limit is None else started + 0.4 * options.time_limit
    d = adversarial_direction(network, x, seed=options.seed, deadline=deadline)
    if norm == "inf":
        directions = [torch.sign(d)]
    elif norm == "1":  # the unit-l1 steps are coordinates: try those d stresses most
        flat = d.flatten(1)
        top = flat.abs().topk(min(8, flat.shape[1]), dim=1).indices
        directions = [torch.zeros_like(flat).scatter_(1, top[:, k:k + 1], 1.0).reshape(x.shape)
                      for k in range(top.shape[1])]
    else:
        directions = [d]
    scale = 1.0 + vector_norm(x, norm).reshape(-1, *([1] * (x.ndim - 1)))
    if not domain.is_global:  # magnitudes relative to the domain's width
        scale = torch.full_like(scale, float((domain.upper - domain.lower).max()))
    best_ratio = torch.full((len(x),), -1.0, dtype=DTYPE)
    best_second = x.clone()
    for direction in directions:
        for eps in (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0):
            second = domain.project(x + eps * scale * direction)
            ratio = pair_ratios(network, x, second, norm)
            better = ratio > best_ratio
            best_ratio = torch.where(better, ratio, best_ratio)
            best_second[better] = second[better]
    keep = best_ratio.argsort(descending=True)[: own.refine]
    first = x[keep].clone().requires_grad_(True)
    second = best_second[keep].clone().requires_grad_(True)
    optimizer = torch.optim.Adam([first, second], lr=own.learning_rate)
    history = [(first.detach().clone(), second.detach().clone())]
    for _ in range(own.steps):
        if options.time_limit and time.perf_counter() - started > 0.8 * options.time_limit:
            break
        numerator = vector_norm(network.forward(first) - network.forward(second), norm)
        ratio = numerator / vector_norm(first - second, norm).clamp_min(1e-12)
        optimizer.zero_grad()
        (-ratio.sum()).backward()
        optimizer.step()
        if not domain.is_global:
            with torch.no_grad():
                first.copy_(domain.project(first))
                second.copy_(domain.project(second))
        history.append((first.detach().clone(), second.detach().clone()))
    firsts = torch.cat([h[0] for h in history])
    seconds_ = torch.cat([h[1] for h in history])
    # the float64 ratios pick the candidates; only the best few are certified (each
    # certification is a forward error analysis of both points)
    inside = domain.contains(firsts) & domain.contains(seconds_)
    rough = torch.where(inside, pair_ratios(network, firsts, seconds_, norm),
                        torch.full((len(firsts),), -1.0, dtype=DTYPE))
    rough = torch.nan_to_num(rough, nan=-1.0)
    pick = rough.argsort(descending=True)[:16]
    firsts, seconds_ = firsts[pick], seconds_[pick]
    ratios, raw = certified_ratios(network, firsts, seconds_, norm)
    ratios = torch.where(domain.contains(firsts) & domain.contains(seconds_), ratios,
                         torch.zeros_like(ratios))
    index = int(ratios.argmax())
    return Bound(
        float(ratios[index]), "lower", norm, "lower-adversarial", time.perf_counter() - started,
        details=witness_details(firsts[index], seconds_[index], ratio=float(raw[index]),
                                distance=float(vector_norm(firsts[index:index + 1]
                                                           - seconds_[index:index + 1],
                                                           norm)[0])),
    )
