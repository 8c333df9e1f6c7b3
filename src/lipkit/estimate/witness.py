"""Shared tools of the lower-bound methods: Jacobians, induced norms, verified pair ratios.

Every lower bound lipkit reports is the ratio ``||f(x1) - f(x2)|| / ||x1 - x2||`` of a real
pair of inputs, evaluated in float64: whatever the search that found it, the number is
attained, so it is at most ``||f||_L``. A Jacobian norm ``||J_f(x)||`` found by a search is
turned into such a pair by a step along the direction the Jacobian stretches most.

The ratio is computed in float64, and with tiny weights or a tiny separation its rounding
could exceed the difference it measures: :func:`certified_ratios` subtracts the proven
bound of :func:`lipkit.estimate.rounding.forward_error` on both outputs and the rounding
of the two norms, so the reported value is at most the pair's ratio in exact arithmetic.
Steps are tried over several decades and the pair with the best *certified* value is kept.
"""

from __future__ import annotations

import math
import time

import torch

from lipkit.estimate.bound import norm_value
from lipkit.estimate.network import DTYPE, Network
from lipkit.estimate.rounding import forward_error, gamma


def vector_norm(x: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample norm of a batch (flattened)."""
    return torch.linalg.vector_norm(x.flatten(1), ord=norm_value(norm), dim=1)


class DeadlineError(Exception):
    """A Jacobian computation passed its deadline (raised between passes)."""


def jacobians(network: Network, x: torch.Tensor, mode: str = "auto",
              deadline: float | None = None) -> torch.Tensor:
    """The Jacobians ``(batch, out_features, in_features)`` at the points of a batch.

    One reverse pass per output (the usual case: few outputs), or one forward-mode pass per
    input where there are more outputs (decoders, generators), batched over the points;
    ``mode`` ``"reverse"`` or ``"forward"`` forces one of them (for comparisons). Past
    ``deadline`` (``time.perf_counter()``), raises :class:`DeadlineError` between passes.
    """
    if mode not in ("auto", "reverse", "forward"):
        raise ValueError(f"mode must be 'auto', 'reverse' or 'forward', got {mode!r}")
    x = x.detach().to(DTYPE)
    forward = network.out_features > network.in_features if mode == "auto" else mode == "forward"
    if forward:
        basis = torch.eye(network.in_features, dtype=DTYPE).reshape(-1, *x.shape[1:])
        columns = []
        for direction in basis:
            if deadline is not None and time.perf_counter() > deadline:
                raise DeadlineError
            _, column = torch.func.jvp(network.forward, (x,), (direction.expand_as(x),))
            columns.append(column.flatten(1))
        return torch.stack(columns, dim=2)
    with torch.enable_grad():
        x = x.requires_grad_(True)
        y = network.forward(x).flatten(1)
        rows = []
        for k in range(y.shape[1]):
            if deadline is not None and time.perf_counter() > deadline:
                raise DeadlineError
            (grad,) = torch.autograd.grad(y[:, k].sum(), x, retain_graph=k + 1 < y.shape[1])
            rows.append(grad.flatten(1))
    return torch.stack(rows, dim=1)


def induced_norms(jac: torch.Tensor, norm: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Induced norms of a batch of matrices and, for each, an input direction attaining it.

    l2: spectral norm and top right singular vector; l-inf: largest row l1 norm and the
    sign pattern of that row; l1: largest column l1 norm and that coordinate's unit vector.
    """
    p = norm_value(norm)
    if p == 2:
        # the top eigenpair of the smaller Gram matrix (much faster than a batched SVD)
        if jac.shape[1] <= jac.shape[2]:
            values, vectors = torch.linalg.eigh(jac @ jac.mT)
            top = values[:, -1].clamp_min(0).sqrt()
            direction = (jac.mT @ vectors[:, :, -1:]).squeeze(-1)
            direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-300)
        else:
            values, vectors = torch.linalg.eigh(jac.mT @ jac)
            top = values[:, -1].clamp_min(0).sqrt()
            direction = vectors[:, :, -1]
        return top, direction
    if p == math.inf:
        rows = jac.abs().sum(dim=2)
        best = rows.argmax(dim=1)
        direction = torch.sign(jac[torch.arange(len(jac)), best])
        direction[direction == 0] = 1.0
        return rows.max(dim=1).values, direction
    columns = jac.abs().sum(dim=1)
    best = columns.argmax(dim=1)
    direction = torch.zeros(jac.shape[0], jac.shape[2], dtype=jac.dtype)
    direction[torch.arange(len(jac)), best] = 1.0
    return columns.max(dim=1).values, direction


@torch.no_grad()
def pair_ratios(network: Network, first: torch.Tensor, second: torch.Tensor,
                norm: str) -> torch.Tensor:
    """``||f(x1) - f(x2)|| / ||x1 - x2||`` for a batch of pairs (0 where x1 == x2)."""
    first, second = first.to(DTYPE), second.to(DTYPE)
    numerator = vector_norm(network.forward(first) - network.forward(second), norm)
    denominator = vector_norm(first - second, norm)
    return torch.where(denominator > 0, numerator / denominator.clamp_min(1e-300),
                       torch.zeros_like(numerator))


@torch.no_grad()
def certified_ratios(network: Network, first: torch.Tensor, second: torch.Tensor,
                     norm: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(certified, ratio)`` for a batch of pairs: the float64 ratio, and a value proven
    to be at most the exact ratio of the pair (the output difference less the proven
    rounding of both forward passes and of the norms; 0 where nothing is left)."""
    first, second = first.to(DTYPE), second.to(DTYPE)
    y1, e1, total1 = forward_error(network, first)
    y2, e2, total2 = forward_error(network, second)
    difference = (y1 - y2).flatten(1)
    outputs, inputs = difference.shape[1], first[0].numel()
    numerator = vector_norm(difference, norm)
    # ||d_exact|| >= ||fl(y1 - y2)|| (1 - u) - ||e1 + e2||, and the norm's own rounding; the
    # l2 error bounds convert: ||.||_inf <= ||.||_2, ||.||_1 <= sqrt(m) ||.||_2
    elementwise = vector_norm((e1 + e2).flatten(1), norm)
    in_norm = (total1 + total2) * (math.sqrt(outputs) if norm == "1" else 1.0)
    slack = torch.minimum(elementwise, in_norm) * (1 + gamma(outputs + 2))
    low = numerator * (1 - gamma(outputs + 3)) - slack
    separation = vector_norm(first - second, norm)
    high = separation * (1 + gamma(inputs + 3))
    positive = separation > 0
    ratio = torch.where(positive, numerator / separation.clamp_min(1e-300),
                        torch.zeros_like(numerator))
    certified = torch.where(positive & (low > 0), low / high.clamp_min(1e-300),
                            torch.zeros_like(numerator))
    certified = torch.nextafter(certified, torch.zeros_like(certified)).clamp_min(0.0)
    return certified, ratio


_STEPS = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)


def step_pairs(network: Network, x: torch.Tensor, direction: torch.Tensor, norm: str,
               domain=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairs ``(x, x + t v)`` along ``v``: of a few steps ``t`` over six decades, the one
    whose ratio is best once its rounding is subtracted (:func:`certified_ratios`). With a
    local ``domain`` both points stay inside it. Returns the certified values and the
    pairs."""
    direction = direction.reshape(x.shape).to(DTYPE)
    direction = direction / vector_norm(direction, norm).clamp_min(1e-300).reshape(
        -1, *([1] * (x.ndim - 1)))
    x = x.to(DTYPE)
    scale = 1.0 + vector_norm(x, norm).reshape(-1, *([1] * (x.ndim - 1)))
    if domain is not None and not domain.is_global:
        width = float(torch.from_numpy(domain.upper - domain.lower).max())
        scale = torch.full_like(scale, max(width, 1e-300))
    best_ratio = torch.full((x.shape[0],), -1.0, dtype=DTYPE)
    best_second = x.clone()
    for step in _STEPS:
        for sign in (1.0, -1.0):
            second = x + sign * step * scale * direction
            if domain is not None:
                second = domain.project(second)
            ratio, _ = certified_ratios(network, x, second, norm)
            if domain is not None:
                ratio = torch.where(domain.contains(second), ratio, torch.zeros_like(ratio))
            better = ratio > best_ratio
            best_ratio = torch.where(better, ratio, best_ratio)
            best_second[better] = second[better]
    return best_ratio, x, best_second


def random_points(network: Network, count: int, seed: int, domain=None) -> torch.Tensor:
    """Seeded normal points of the network's input shape, at scales 1, 3 and 10 in turn (the
    constant is a supremum over the whole input space, and activation regions far from the
    origin matter as much as those near it); uniform points of a local ``domain``."""
    if domain is not None and not domain.is_global:
        return domain.sample(count, tuple(network.input_shape), seed)
    generator = torch.Generator().manual_seed(seed)
    points = torch.randn(count, *network.input_shape, generator=generator, dtype=DTYPE)
    scales = torch.tensor([1.0, 3.0, 10.0], dtype=DTYPE).repeat(count // 3 + 1)[:count]
    return points * scales.reshape(-1, *([1] * len(network.input_shape)))


def witness_details(first: torch.Tensor, second: torch.Tensor, **extra) -> dict:
    """The witness pair for a Bound's details (inputs without the batch dimension)."""
    return {"witness": {"x1": first.detach(), "x2": second.detach()}, **extra}
