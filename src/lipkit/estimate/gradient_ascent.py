"""Lower bound: gradient ascent on the local Jacobian norm.

Maximizes ``||J_f(x) v||`` over ``x``, with ``v`` the top right singular vector of
``J_f(x)`` kept up to date by power iteration on ``J^T J`` (Jacobian-vector and
vector-Jacobian products by autograd). The Jacobian of a ReLU network is piecewise
constant, so its gradient in ``x`` vanishes; the ascent therefore runs on a smoothed copy
(ReLU -> softplus with a sharpness that grows over the run) and every visited point is
scored on the real network. The result is verified as a pair like every lower bound.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch

from lipkit.estimate.bound import Bound
from lipkit.estimate.domain import domain_of
from lipkit.estimate.jacobian import best_jacobian_points, candidate_points
from lipkit.estimate.network import Activation, Network
from lipkit.estimate.registry import Options, register_method
from lipkit.estimate.witness import step_pairs, witness_details


def _smoothed(network: Network, sharpness: float) -> Network:
    smooth = copy.copy(network)
    smooth.nodes = []
    for node in network.nodes:
        if isinstance(node.op, Activation) and node.op.kind in ("relu", "leaky_relu"):
            node = copy.copy(node)
            negative = node.op.params.get("negative_slope", 0.0)
            node.op = _Softened(negative, sharpness)
        smooth.nodes.append(node)
    return smooth


class _Softened:
    """``a x + (1 - a) softplus_beta(x)``: a smooth ReLU / LeakyReLU."""

    def __init__(self, negative_slope: float, sharpness: float):
        self.negative_slope, self.sharpness = negative_slope, sharpness

    def __call__(self, x):
        soft = torch.nn.functional.softplus(x, beta=self.sharpness)
        return self.negative_slope * x + (1 - self.negative_slope) * soft


@dataclass(frozen=True)
class GradientAscentOptions:
    """Options of ``lower-gradient``."""

    steps: int = 50  # ascent steps
    starts: int = 8  # best random / data points the ascent starts from
    learning_rate: float = 0.05  # Adam's step size on the points


@register_method("lower-gradient", kind="lower", norms=("2",), local=True,
                 options=GradientAscentOptions)
def lower_gradient(network, options: Options) -> Bound:
    """Gradient ascent on ||J(x) v|| from the best random / data points (l2)."""
    started = time.perf_counter()
    domain = domain_of(network, options)
    own = options.own(GradientAscentOptions)
    steps, starts = own.steps, own.starts
    points = candidate_points(network, options, 128)
    x, _, directions = best_jacobian_points(network, points, "2", keep=starts)
    x = x.clone().requires_grad_(True)
    v = directions.reshape(x.shape).clone()
    optimizer = torch.optim.Adam([x], lr=own.learning_rate)
    visited = [x.detach().clone()]
    for step in range(steps):
        if options.time_limit and time.perf_counter() - started > options.time_limit:
            break
        smooth = _smoothed(network, sharpness=2.0 * (1.1 ** step))
        # one power-iteration step on J^T J at x: v <- J^T J v / ||.||
        _, jv = torch.func.jvp(smooth.forward, (x.detach(),), (v,))
        _, vjp = torch.func.vjp(smooth.forward, x.detach())
        (v,) = vjp(jv)
        v = v / v.flatten(1).norm(dim=1).clamp_min(1e-300).reshape(-1, *([1] * (x.ndim - 1)))
        _, stretched = torch.func.jvp(smooth.forward, (x,), (v.detach(),))
        loss = -stretched.flatten(1).norm(dim=1).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if not domain.is_global:
            with torch.no_grad():
                x.copy_(domain.project(x))
        visited.append(x.detach().clone())
    candidates = torch.cat(visited)
    best, values, best_directions = best_jacobian_points(network, candidates, "2", keep=8)
    ratios, first, second = step_pairs(network, best, best_directions, "2", domain)
    index = int(ratios.argmax())
    return Bound(
        float(ratios[index]), "lower", "2", "lower-gradient", time.perf_counter() - started,
        details=witness_details(first[index], second[index],
                                jacobian_norm=float(values[index]), steps=steps, starts=starts),
    )
