"""Lower bound: gradient ascent on the local Jacobian norm, in the l2, l1 and l-inf norms.

``||f||_L = sup_x ||J_f(x)||`` (the induced norm), so every point's Jacobian norm is a lower
bound, and ascent on it finds better points than sampling. Each norm's induced norm is a
maximum of linear functions of ``J``, ascended with its maximizer held fixed for a step:

- l2: ``||J v||`` with ``v`` the top right singular vector, kept by one power-iteration step
  on ``J^T J`` per ascent step (Jacobian-vector and vector-Jacobian products);
- l-inf: ``max_i ||J_i||_1 = max_i J_i . sign(J_i)``: row ``i`` and the sign pattern are
  those of the best row at the start; the objective is the directional derivative
  ``d f_i / d x`` along the sign vector;
- l1: ``max_j ||J e_j||_1``: column ``j`` and its signs ``u`` fixed, the objective is
  ``u . (J e_j)``.

The Jacobian of a ReLU network is piecewise constant, so its gradient in ``x`` vanishes:
the ascent runs on a smoothed copy (ReLU -> softplus with a sharpness that grows over the
run) and every visited point is scored on the real network. Restarts: rounds of ``steps``
ascent steps from the best not yet used start points (data points first, when given, then
random points of the domain, then the best point found, perturbed), until the method's
time limit (its share of the run's budget) or ``rounds`` rounds, or until the search stalls
(the second half of its refining rounds, those from the best points found once every start
point was used, raised the best value by less than ``stall``, relative: on
small networks the best point is found in seconds, and the rest of a share would buy
1e-5). The result is verified as a pair like every lower bound
(:func:`lipkit.estimate.witness.step_pairs`).
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
from lipkit.estimate.registry import MethodOptions, Options, register_method
from lipkit.estimate.witness import jacobians, step_pairs, witness_details


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
class GradientAscentOptions(MethodOptions):
    """Options of ``lower-gradient``."""

    steps: int = 50  # ascent steps per round
    starts: int = 8  # points ascended together in a round
    rounds: int = 1000  # rounds at most (the time limit usually ends the run first)
    learning_rate: float = 0.05  # Adam's step size on the points, relative to their scale
    #: stop when the second half of the refining rounds so far (those after every start
    #: point was used; at least ``MIN_ROUNDS``) raised the best Jacobian norm by less than
    #: this, relative (None: use the whole time limit)
    stall: float | None = 1e-4


#: refining rounds before a stalled search may stop
MIN_ROUNDS = 16


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.flatten(1).norm(dim=1).clamp_min(1e-300).reshape(-1, *([1] * (v.ndim - 1)))


def _ascend(network: Network, x: torch.Tensor, norm: str, steps: int, learning_rate: float,
            domain, deadline: float | None) -> list[torch.Tensor]:
    """One round: ``steps`` Adam steps on the smoothed Jacobian norm from ``x``; returns the
    visited points."""
    flat_shape = (x.shape[0], -1)
    jac = jacobians(network, x)
    if norm == "2":
        v = torch.randn_like(x)
        fixed = None
    elif norm == "inf":
        rows = jac.abs().sum(dim=2).argmax(dim=1)
        picked = jac[torch.arange(len(x)), rows]
        fixed = (rows, torch.sign(picked).reshape(x.shape))
    else:
        columns = jac.abs().sum(dim=1).argmax(dim=1)
        picked = jac[torch.arange(len(x)), :, columns]
        direction = torch.zeros(len(x), jac.shape[2], dtype=x.dtype)
        direction[torch.arange(len(x)), columns] = 1.0
        fixed = (torch.sign(picked), direction.reshape(x.shape))
    scale = 1.0 + x.detach().flatten(1).abs().max(dim=1).values.mean()
    if not domain.is_global:
        scale = float((domain.upper - domain.lower).max())
    x = x.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=learning_rate * float(scale))
    visited = [x.detach().clone()]
    for step in range(steps):
        if deadline is not None and time.perf_counter() > deadline:
            break
        smooth = _smoothed(network, sharpness=2.0 * (1.1 ** step))
        if norm == "2":  # one power-iteration step on J^T J, then ascent on ||J v||
            _, jv = torch.func.jvp(smooth.forward, (x.detach(),), (v,))
            _, vjp = torch.func.vjp(smooth.forward, x.detach())
            (v,) = vjp(jv)
            v = _unit(v)
            _, stretched = torch.func.jvp(smooth.forward, (x,), (v.detach(),))
            objective = stretched.flatten(1).norm(dim=1)
        elif norm == "inf":
            rows, signs = fixed
            _, derivative = torch.func.jvp(smooth.forward, (x,), (signs,))
            objective = derivative.reshape(flat_shape)[torch.arange(len(x)), rows]
        else:
            signs, direction = fixed
            _, column = torch.func.jvp(smooth.forward, (x,), (direction,))
            objective = (column.reshape(flat_shape) * signs).sum(dim=1)
        optimizer.zero_grad()
        (-objective.sum()).backward()
        previous = x.detach().clone()
        optimizer.step()
        with torch.no_grad():  # a non-finite step (an overflowing second derivative) is undone
            bad = ~torch.isfinite(x.flatten(1)).all(dim=1)
            if bool(bad.any()):
                x[bad] = previous[bad]
        if not domain.is_global:
            with torch.no_grad():
                x.copy_(domain.project(x))
        visited.append(x.detach().clone())
    return visited


@register_method("lower-gradient", kind="lower", norms=("2", "1", "inf"), local=True,
                 options=GradientAscentOptions)
def lower_gradient(network, options: Options) -> Bound:
    """Gradient ascent on the Jacobian norm from data / random points, restarted until the
    time limit (l2, l1, l-inf)."""
    started = time.perf_counter()
    own = options.own(GradientAscentOptions)
    domain = domain_of(network, options)
    norm = options.norm
    deadline = None if options.time_limit is None else started + 0.85 * options.time_limit
    pool = candidate_points(network, options, max(128, 4 * own.starts))
    x, _, _ = best_jacobian_points(network, pool, norm, keep=len(pool), deadline=deadline)
    best_points, best_values = [], []
    used, rounds = 0, 0
    progress: list[float] = []  # the best value after each refining round
    stalled = False
    generator = torch.Generator().manual_seed(options.seed)
    while rounds < own.rounds and (deadline is None or time.perf_counter() < deadline):
        refining = used >= len(x)
        if not refining:
            start = x[used:used + own.starts]
            used += len(start)
        else:  # every start used: perturb the best points found so far
            centres = torch.cat(best_points)[torch.cat(best_values).argsort(
                descending=True)[:own.starts]]
            noise = torch.randn(centres.shape, generator=generator, dtype=centres.dtype)
            spread = 0.1 * (1.0 + centres.flatten(1).abs().max(dim=1).values)
            start = centres + noise * spread.reshape(-1, *([1] * (centres.ndim - 1)))
            start = domain.project(start)
        visited = _ascend(network, start, norm, own.steps, own.learning_rate, domain, deadline)
        found, values, _ = best_jacobian_points(network, torch.cat(visited), norm,
                                                keep=own.starts, deadline=None)
        best_points.append(found)
        best_values.append(values)
        rounds += 1
        best_so_far = max(float(v.max()) for v in best_values)
        if refining:  # from the best points found: is it still paying?
            progress.append(best_so_far)
            if own.stall is not None and len(progress) >= MIN_ROUNDS and \
                    progress[-1] <= progress[len(progress) // 2 - 1] * (1 + own.stall):
                stalled = True
                break
        if deadline is None and rounds >= max(1, own.rounds if options.time_limit else 1):
            break
    if best_points:  # the rounds' best points, already scored: the 8 best are kept
        candidates = torch.cat(best_points)[torch.cat(best_values).argsort(
            descending=True)[:8]]
    else:
        candidates = x[:own.starts]
    best, values, directions = best_jacobian_points(network, candidates, norm, keep=8)
    ratios, first, second = step_pairs(network, best, directions, norm, domain)
    index = int(ratios.argmax())
    return Bound(
        float(ratios[index]), "lower", norm, "lower-gradient", time.perf_counter() - started,
        details=witness_details(first[index], second[index],
                                jacobian_norm=float(values[index]), rounds=rounds,
                                steps=own.steps, starts=own.starts, stalled=stalled),
    )
