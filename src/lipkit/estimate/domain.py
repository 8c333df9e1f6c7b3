"""The domain of a Lipschitz constant: all of ``R^n`` (global) or a bounded set (local).

``||f||_{L, D} = sup_{x1 != x2 in D} ||f(x1) - f(x2)|| / ||x1 - x2||``. A local domain is a
box ``lower <= x <= upper``, or a ball ``||x - center|| <= radius`` in the l-infinity or l2
norm, optionally intersected with a data domain such as ``[0, 1]^n`` (images). Methods
that bound the constant over a box use :attr:`Domain.lower` / :attr:`Domain.upper`: the
smallest float64 box that contains the domain (its ends rounded outwards, so the real set
is inside it; an upper bound over the box bounds the domain). Lower-bound searches sample
and keep their witnesses inside the domain itself (:meth:`Domain.contains`).

Every number is checked when the domain is built: the center, radius and box ends must be
finite, the box non-empty and of the network's input size, and the center inside the data
domain. Solvers (HiGHS) work with absolute tolerances near ``1e-7``: on a domain whose
coordinates are huge (``|x| > 1e6``) or too narrow for float64 to tell its ends apart from
its center, their answers cannot be trusted, and :meth:`Domain.solver_scale_reason` says so
(the methods that rely on a solver's primal values refuse such a domain by name).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from lipkit.errors import InvalidArgumentError

#: the largest coordinate a solver-based method accepts in a local domain
MAX_SOLVER_COORDINATE = 1e6
#: the smallest box width, relative to its coordinates, a solver-based method accepts
MIN_SOLVER_RELATIVE_WIDTH = 1e-9

#: the keyword arguments that name a domain (estimate's, options_for's)
DOMAIN_KEYS = ("center", "radius", "box", "ball", "data_domain")


def _vector(value, name: str, size: int, where: str) -> np.ndarray:
    try:
        array = torch.as_tensor(value, dtype=torch.float64).reshape(-1).numpy().copy()
    except (TypeError, ValueError, RuntimeError) as error:
        raise InvalidArgumentError(f"{where}: cannot read {name} as numbers ({error})") from None
    if array.size == 1 and size != 1:
        array = np.full(size, float(array[0]))
    if array.shape != (size,):
        raise InvalidArgumentError(
            f"{where}: {name} has {array.size} entries; the network has {size} inputs")
    if not np.all(np.isfinite(array)):
        raise InvalidArgumentError(
            f"{where}: {name} has {int(np.sum(~np.isfinite(array)))} non-finite entries")
    return array


@dataclass(frozen=True, eq=False)
class Domain:
    """All of ``R^n`` (``lower is None``) or a bounded domain and its enclosing float64 box."""

    size: int
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    description: str = "R^n"
    center: np.ndarray | None = None
    radius: float | None = None
    ball: str = "inf"

    @property
    def is_global(self) -> bool:
        return self.lower is None

    @classmethod
    def whole_space(cls, size: int) -> Domain:
        return cls(size)

    @classmethod
    def parse(cls, size: int, center=None, radius=None, box=None, ball="inf",
              data_domain=None, where: str = "estimate") -> Domain:
        """The domain from user options: ``box = (lower, upper)``, or ``center`` and
        ``radius`` (default 1) of a ball in the ``ball`` norm (``"inf"`` or ``"2"``), each
        optionally intersected with ``data_domain = (low, high)`` (scalars or vectors).
        No option at all: the whole space."""
        if box is None and center is None:
            if radius is not None:
                raise InvalidArgumentError(f"{where}: a radius needs a center")
            if data_domain is not None:
                low, high = cls._pair(data_domain, "data_domain", size, where)
                return cls(size, np.nextafter(low, -math.inf), np.nextafter(high, math.inf),
                           f"the data domain [{low.min():g}, {high.max():g}]^n")
            return cls(size)
        if box is not None and center is not None:
            raise InvalidArgumentError(f"{where}: give a box or a center and radius, not both")
        ball = str(ball).lower().replace("l", "") or "inf"
        if ball not in ("inf", "2"):
            raise InvalidArgumentError(f"{where}: ball must be 'inf' or '2', got {ball!r}")
        if box is not None:
            lower, upper = cls._pair(box, "box", size, where)
            middle = None
            description = "box given by its lower and upper ends"
            radius_value = None
        else:
            middle = _vector(center, "center", size, where)
            radius_value = 1.0 if radius is None else radius
            try:
                radius_value = float(radius_value)
            except (TypeError, ValueError):
                raise InvalidArgumentError(
                    f"{where}: radius must be a number, got {radius!r}") from None
            if not (radius_value > 0 and math.isfinite(radius_value)):
                raise InvalidArgumentError(
                    f"{where}: radius must be a finite number > 0, got {radius_value!r}")
            with np.errstate(over="ignore"):  # overflow is refused below
                lower, upper = middle - radius_value, middle + radius_value
            name = "l-inf" if ball == "inf" else "l2"
            description = f"{name} ball of radius {radius_value:g} around the center"
        if data_domain is not None:
            low, high = cls._pair(data_domain, "data_domain", size, where)
            if middle is not None and (np.any(middle < low) or np.any(middle > high)):
                raise InvalidArgumentError(
                    f"{where}: the center lies outside the data domain "
                    f"[{low.min():g}, {high.max():g}]")
            lower, upper = np.maximum(lower, low), np.minimum(upper, high)
            if np.any(lower > upper):
                raise InvalidArgumentError(f"{where}: the box does not meet the data domain")
            description += f", clipped to the data domain [{low.min():g}, {high.max():g}]"
        # rounded outwards: the float64 box contains the real one
        lower, upper = np.nextafter(lower, -math.inf), np.nextafter(upper, math.inf)
        if not (np.all(np.isfinite(lower)) and np.all(np.isfinite(upper))):
            raise InvalidArgumentError(f"{where}: the domain's box overflows float64")
        return cls(size, lower, upper, description, middle, radius_value, ball)

    @staticmethod
    def _pair(value, name: str, size: int, where: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            low_value, high_value = value
        except (TypeError, ValueError):
            raise InvalidArgumentError(f"{where}: {name} must be a pair (lower, upper)") from None
        low = _vector(low_value, f"{name}'s lower end", size, where)
        high = _vector(high_value, f"{name}'s upper end", size, where)
        if np.any(low > high):
            raise InvalidArgumentError(f"{where}: {name} has a lower end above its upper end")
        return low, high

    @classmethod
    def from_options(cls, size: int, keywords: dict, where: str = "estimate") -> Domain:
        """The domain named by ``keywords``' :data:`DOMAIN_KEYS` (the others are ignored)."""
        return cls.parse(size, **{key: keywords[key] for key in DOMAIN_KEYS
                                  if keywords.get(key) is not None}, where=where)

    # -- the domain itself -------------------------------------------------------------
    def contains(self, x: torch.Tensor) -> torch.Tensor:
        """Which points of a batch lie in the domain (the ball itself, not its box)."""
        flat = x.detach().to(torch.float64).reshape(x.shape[0], -1)
        if self.is_global:
            return torch.ones(flat.shape[0], dtype=torch.bool)
        lower, upper = torch.from_numpy(self.lower), torch.from_numpy(self.upper)
        inside = ((flat >= lower) & (flat <= upper)).all(dim=1)
        if self.center is not None and self.ball == "2":
            center = torch.from_numpy(self.center)
            inside &= (flat - center).norm(dim=1) <= self.radius
        return inside

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Points moved into the domain (the box; for an l2 ball, radially first)."""
        if self.is_global:
            return x
        shape, flat = x.shape, x.reshape(x.shape[0], -1).to(torch.float64)
        if self.center is not None and self.ball == "2":
            center = torch.from_numpy(self.center)
            offset = flat - center
            scale = (self.radius / offset.norm(dim=1, keepdim=True).clamp_min(1e-300)).clamp(
                max=1.0) * (1 - 1e-12)
            flat = center + offset * scale
        flat = torch.maximum(torch.minimum(flat, torch.from_numpy(self.upper)),
                             torch.from_numpy(self.lower))
        return flat.reshape(shape)

    def sample(self, count: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
        """Seeded points of the domain (uniform in its box or ball), shaped ``shape``."""
        generator = torch.Generator().manual_seed(seed)
        if self.is_global:
            raise InvalidArgumentError("sample() needs a bounded domain")
        lower, upper = torch.from_numpy(self.lower), torch.from_numpy(self.upper)
        if self.center is not None and self.ball == "2":
            direction = torch.randn(count, self.size, generator=generator, dtype=torch.float64)
            direction /= direction.norm(dim=1, keepdim=True).clamp_min(1e-300)
            length = torch.rand(count, 1, generator=generator, dtype=torch.float64) ** (
                1.0 / self.size)
            points = torch.from_numpy(self.center) + self.radius * length * direction
        else:
            unit = torch.rand(count, self.size, generator=generator, dtype=torch.float64)
            points = lower + (upper - lower) * unit
        return self.project(points).reshape(count, *shape)

    def solver_scale_reason(self) -> str | None:
        """Why a solver working in float64 with absolute tolerances cannot be trusted on
        this domain (coordinates beyond 1e6, or a box narrower than float64 resolves
        around its center), or None."""
        if self.is_global:
            return None
        magnitude = float(max(np.abs(self.lower).max(), np.abs(self.upper).max()))
        if magnitude > MAX_SOLVER_COORDINATE:
            return (f"the domain reaches |x| = {magnitude:.3g}, beyond the "
                    f"{MAX_SOLVER_COORDINATE:g} a float64 solver with absolute tolerances "
                    "can resolve (translate the inputs: move the center into the first "
                    "layer's bias)")
        width = float(np.min(self.upper - self.lower))
        if width <= MIN_SOLVER_RELATIVE_WIDTH * max(magnitude, 1.0):
            return (f"the domain's box is {width:.3g} wide at |x| = {magnitude:.3g}: too narrow "
                    "for float64 to resolve")
        return None

    def to_dict(self) -> dict:
        if self.is_global:
            return {"kind": "global", "description": self.description}
        data = {"kind": "local", "description": self.description,
                "lower": self.lower.tolist(), "upper": self.upper.tolist()}
        if self.center is not None:
            data.update(center=self.center.tolist(), radius=self.radius, ball=self.ball)
        return data


def domain_of(network, options) -> Domain:
    """The domain of a run: ``options.domain``, or all of ``R^n`` when it is None."""
    domain = getattr(options, "domain", None)
    if domain is not None:
        return domain
    return Domain.whole_space(network.in_features)


def solver_box(network, options, method: str, homogeneous_global: bool = True):
    """``(box, homogeneous, description)`` for the box-based solvers (exact-mip,
    exact-bab): a local domain's float64 box, or for the global constant the homogenized
    network ``t f(x / t)`` over ``[-1, 1]^n x [0, 1]`` (which meets every activation region).
    Refuses (NotApplicableError) an l2 ball (an exact value over its box would not be the
    ball's) and a domain the solver cannot resolve in float64."""
    from lipkit.estimate.network import NotApplicableError

    domain = domain_of(network, options)
    if domain.is_global:
        n = network.in_features
        return ((-np.ones(n), np.ones(n)), homogeneous_global,
                "R^n: the homogenized network t f(x/t) over [-1,1]^n x [0,1] meets every "
                "activation region")
    if domain.center is not None and domain.ball == "2":
        raise NotApplicableError(f"{method} bounds boxes; an l2 ball is not a box")
    reason = domain.solver_scale_reason()
    if reason is not None:
        raise NotApplicableError(reason)
    return (domain.lower, domain.upper), False, domain.description
