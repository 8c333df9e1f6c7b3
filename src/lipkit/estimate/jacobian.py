"""Lower bound: the largest local Jacobian norm over data or random points.

Rademacher: ``||f||_L = sup_x ||J_f(x)||`` (the induced norm) for a Lipschitz ``f``, so
every point gives a lower bound. Each candidate is turned into a verified pair
``(x, x + t v)`` along the direction ``v`` its Jacobian stretches most
(:func:`~lipkit.estimate.witness.step_pairs`); the reported value is that pair's ratio less
its proven float64 rounding. With a local domain the points and pairs stay inside it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from lipkit.estimate.bound import Bound
from lipkit.estimate.domain import domain_of
from lipkit.estimate.registry import MethodOptions, Options, register_method
from lipkit.estimate.witness import (
    DeadlineError,
    induced_norms,
    jacobians,
    random_points,
    step_pairs,
    witness_details,
)

_CHUNK = 64
_JACOBIAN_ENTRIES = 4_000_000  # Jacobian numbers computed per chunk of points


def candidate_points(network, options: Options, count: int) -> torch.Tensor:
    """The data points given in ``options.data`` (if any; those inside a local domain), then
    seeded random points (of the domain)."""
    domain = domain_of(network, options)
    points = [random_points(network, count, options.seed, domain)]
    if options.data is not None:
        data = torch.as_tensor(options.data).reshape(-1, *network.input_shape).double()
        data = data[domain.contains(data)]
        points.insert(0, data[: 4 * count])
    return torch.cat(points)


def best_jacobian_points(network, points: torch.Tensor, norm: str, keep: int = 1,
                         deadline: float | None = None):
    """Jacobian norms at ``points``: the ``keep`` best points, norms and directions. Past
    ``deadline`` only the points done so far count (at least one point is tried: if even
    its Jacobian does not finish, its direction is a random one and its norm 0)."""
    values, directions = [], []
    # chunks small enough that one chunk's Jacobians stay near _JACOBIAN_ENTRIES numbers
    size = network.in_features * network.out_features
    chunk = max(1, min(_CHUNK, _JACOBIAN_ENTRIES // max(size, 1)))
    for start in range(0, len(points), chunk):
        try:
            jac = jacobians(network, points[start : start + chunk], deadline=deadline)
        except DeadlineError:
            break
        value, direction = induced_norms(jac, norm)
        values.append(value)
        directions.append(direction)
        if deadline is not None and time.perf_counter() > deadline:
            break
    if not values:
        generator = torch.Generator().manual_seed(0)
        values = [torch.zeros(1, dtype=points.dtype)]
        directions = [torch.randn(1, network.in_features, generator=generator,
                                  dtype=points.dtype)]
    values, directions = torch.cat(values), torch.cat(directions)
    points = points[: len(values)]
    # a point, a norm or a direction that is not finite (an overflow, a NaN from a search)
    # is never a witness
    finite = (torch.isfinite(values) & torch.isfinite(points.flatten(1)).all(dim=1)
              & torch.isfinite(directions.flatten(1)).all(dim=1))
    if not bool(finite.all()):
        values = torch.where(finite, values, torch.full_like(values, -math.inf))
        directions = torch.where(finite.reshape(-1, *([1] * (directions.ndim - 1))),
                                 directions, torch.ones_like(directions))
        points = torch.where(finite.reshape(-1, *([1] * (points.ndim - 1))), points,
                             torch.zeros_like(points))
    order = values.argsort(descending=True)[:keep]
    return points[order], values[order], directions[order]


@dataclass(frozen=True)
class JacobianOptions(MethodOptions):
    """Options of ``lower-jacobian``."""

    points: int = 256  # random points (of the domain) whose Jacobians are computed


@register_method("lower-jacobian", kind="lower", norms=("2", "1", "inf"), local=True,
                 cost="cheap", options=JacobianOptions)
def lower_jacobian(network, options: Options) -> Bound:
    """Largest Jacobian norm over data and 256 random points, verified by a pair."""
    started = time.perf_counter()
    points = candidate_points(network, options, options.own(JacobianOptions).points)
    deadline = None if options.time_limit is None else started + 0.8 * options.time_limit
    best, values, directions = best_jacobian_points(network, points, options.norm, keep=8,
                                                    deadline=deadline)
    ratios, first, second = step_pairs(network, best, directions, options.norm,
                                       domain_of(network, options))
    index = int(ratios.argmax())
    return Bound(
        float(ratios[index]), "lower", options.norm, "lower-jacobian",
        time.perf_counter() - started,
        details=witness_details(first[index], second[index],
                                jacobian_norm=float(values[index]), points=len(points)),
    )
