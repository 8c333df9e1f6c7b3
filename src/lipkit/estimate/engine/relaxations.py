"""Per-activation relaxations: every bounding mode of one activation in one object.

For an elementwise activation ``phi`` and a pre-activation ``z`` proven to lie in
``[low, high]`` (per neuron, batched), a relaxation gives

- :meth:`interval`: bounds on ``phi(z)``;
- :meth:`linear`: lines ``lower_slope z + lower_offset <= phi(z) <= upper_slope z +
  upper_offset`` valid on ``[low, high]`` (CROWN / DeepPoly), the lower slope of an unstable
  ReLU optionally chosen by the caller (alpha-CROWN: any value in :meth:`slope_choices`
  keeps the line valid);
- :meth:`derivative_range`: a range ``[alpha, beta]`` holding ``phi'`` at every point of
  ``(low, high)`` where it exists (the Clarke gradient's relaxation of Shi et al.,
  NeurIPS 2022), and every secant slope between two points of ``[low, high]``;
- :meth:`mip_rows`: the exact mixed-integer encoding of ``phi`` on ``[low, high]`` (big-M
  rows with one binary), for the piecewise-linear activations only.

Every line and interval is valid for the float64 numbers returned: ends are moved outwards
by :func:`lipkit.estimate.rounding.gamma` of their magnitude (rounding.py's policy).
"""

from __future__ import annotations

import torch

from lipkit.estimate.network import NotApplicableError
from lipkit.estimate.rounding import UNIT, gamma

_TINY = 1e-300


def outward(low: torch.Tensor, high: torch.Tensor, relative: float):
    """``[low, high]`` widened by ``relative`` of their magnitude and one ulp."""
    low = torch.nextafter(low - relative * low.abs() - _TINY, torch.full_like(low, -torch.inf))
    high = torch.nextafter(high + relative * high.abs() + _TINY,
                           torch.full_like(high, torch.inf))
    return low, high


class Relaxation:
    """The relaxation of an activation that only knows its global slope range."""

    piecewise_linear = False

    def __init__(self, activation):
        self.activation = activation
        self.alpha, self.beta = (float(s) for s in activation.slope)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.activation(z)

    def interval(self, low, high):
        """Bounds on ``phi(z)`` for ``low <= z <= high``: the ends when ``phi`` is
        monotone, else the slope range from either end and ``phi``'s minimum."""
        at_low, at_high = self(low), self(high)
        if self.alpha >= 0:
            out_low, out_high = at_low, at_high
        else:
            width = high - low
            out_low = torch.maximum(at_low + min(self.alpha, 0.0) * width,
                                    at_high - max(self.beta, 0.0) * width)
            out_high = torch.minimum(at_low + max(self.beta, 0.0) * width,
                                     at_high - min(self.alpha, 0.0) * width)
            minimum = self.activation.minimum
            if minimum is not None:
                out_low = out_low.clamp_min(minimum)
                out_high = torch.minimum(out_high, torch.maximum(at_low, at_high))
        # libm-grade evaluation: well inside 1e-10 relative (rounding.TRANSCENDENTAL_ULPS)
        return outward(out_low, out_high, 1e-10)

    def linear(self, low, high, lower_slope=None):
        """Constant lines: the interval bounds (smooth activations)."""
        out_low, out_high = self.interval(low, high)
        zero = torch.zeros_like(low)
        return zero, out_low, zero.clone(), out_high

    def slope_choices(self, low, high):
        """``(unstable, smallest, largest)``: the neurons whose lower line may be chosen and
        the range of its slope (none here)."""
        return torch.zeros_like(low, dtype=torch.bool), None, None

    def derivative_range(self, low, high):
        """The global slope range (the derivative of a smooth activation over an interval
        is not set by its ends)."""
        return (torch.full_like(low, self.alpha), torch.full_like(high, self.beta))

    def mip_rows(self, *args, **kwargs):
        raise NotApplicableError(f"activation {self.activation.kind} is not piecewise linear")


class PiecewiseLinearRelaxation(Relaxation):
    """ReLU, LeakyReLU and the identity: slope ``p`` below 0 and ``q`` above."""

    piecewise_linear = True

    def __init__(self, activation, below: float, above: float):
        super().__init__(activation)
        self.below, self.above = float(below), float(above)

    def __call__(self, z):
        return torch.where(z >= 0, self.above * z, self.below * z)

    def interval(self, low, high):
        at_low, at_high = self(low), self(high)
        straddles = (low < 0) & (high > 0)
        zero = torch.zeros_like(low)
        out_low = torch.minimum(torch.minimum(at_low, at_high), torch.where(straddles, zero,
                                                                            at_low))
        out_high = torch.maximum(torch.maximum(at_low, at_high), torch.where(straddles, zero,
                                                                             at_high))
        return outward(out_low, out_high, 2 * UNIT)  # one product each

    def _default_lower_slope(self, low, high):
        """The slope of the longer side (DeepPoly's choice): the chord's complement."""
        return torch.where(high >= -low, torch.full_like(low, self.above),
                           torch.full_like(low, self.below))

    def slope_choices(self, low, high):
        unstable = (low < 0) & (high > 0)
        return unstable, min(self.below, self.above), max(self.below, self.above)

    def linear(self, low, high, lower_slope=None):
        """Exact lines on stable neurons; on unstable ones the chord through ``(low,
        phi(low))`` and ``(high, phi(high))`` on the convex side and a line through the
        origin of slope ``lower_slope`` (default: the longer side's) on the other."""
        p, q = self.below, self.above
        straddles = (low < 0) & (high > 0)
        fixed = torch.where(high <= 0, torch.full_like(low, p), torch.full_like(low, q))
        width = torch.where(straddles, high - low, torch.ones_like(low))
        chord = (q * high - p * low) / width
        offset = p * low - chord * low
        # the computed chord misses the exact one by a few roundings of these magnitudes
        margin = gamma(8) * (chord.abs() * (low.abs() + high.abs()) + offset.abs()
                             + abs(p) * low.abs() + abs(q) * high.abs()) + _TINY
        through_origin = self._default_lower_slope(low, high) if lower_slope is None else \
            lower_slope.clamp(min(p, q), max(p, q))
        zero = torch.zeros_like(low)
        if q >= p:  # convex: the chord above, the line through the origin below
            lower_slope_ = torch.where(straddles, through_origin, fixed)
            upper_slope = torch.where(straddles, chord, fixed)
            lower_offset = zero
            upper_offset = torch.where(straddles, offset + margin, zero)
        else:  # concave (LeakyReLU with a slope above 1): the other way round
            lower_slope_ = torch.where(straddles, chord, fixed)
            upper_slope = torch.where(straddles, through_origin, fixed)
            lower_offset = torch.where(straddles, offset - margin, zero)
            upper_offset = zero
        return lower_slope_, lower_offset, upper_slope, upper_offset

    def derivative_range(self, low, high):
        """Side ``p`` where ``high <= 0``, ``q`` where ``low >= 0``, else both."""
        p, q = self.below, self.above
        alpha = torch.where(low >= 0, torch.full_like(low, q),
                            torch.where(high <= 0, torch.full_like(low, p),
                                        torch.full_like(low, min(p, q))))
        beta = torch.where(low >= 0, torch.full_like(low, q),
                           torch.where(high <= 0, torch.full_like(low, p),
                                       torch.full_like(low, max(p, q))))
        return alpha, beta

    def mip_rows(self, model, z, low, high):
        """Variables ``h = phi(z)`` in a MIP over ``z`` in ``[low, high]`` (NumPy bounds):
        ``phi(z) = p z + (q - p) relu(z)``; on unstable neurons ``r = relu(z)`` by one binary
        ``s`` and the rows ``r >= 0, r >= z, r <= high s, r <= z - low (1 - s)`` (exact for
        binary ``s``), on stable ones ``r = z`` or ``r = 0``."""
        import numpy as np

        p, q = self.below, self.above
        width = len(low)
        on, off = low >= 0, high <= 0
        free = ~(on | off)
        r = model.variables(np.where(off, 0.0, np.maximum(low, 0.0)),
                            np.where(off, 0.0, np.maximum(high, 0.0)))
        eye = np.eye(width)
        if on.any():
            model.rows([(eye[on], r), (-eye[on], z)], np.zeros(on.sum()), np.zeros(on.sum()))
        if free.any():
            count = int(free.sum())
            s = model.variables(np.zeros(count), np.ones(count), integer=True)
            pick = eye[free]
            model.rows([(pick, r), (-pick, z)], np.zeros(count), np.full(count, np.inf))
            model.rows([(pick, r), (-np.diag(high[free]), s)], np.full(count, -np.inf),
                       np.zeros(count))
            model.rows([(pick, r), (-pick, z), (-np.diag(low[free]), s)],
                       np.full(count, -np.inf), -low[free])
        if p == 0.0 and q == 1.0:
            return r
        h = model.variables(np.full(width, -np.inf), np.full(width, np.inf))
        model.rows([(eye, h), (-p * eye, z), (-(q - p) * eye, r)], np.zeros(width),
                   np.zeros(width))
        return h


def relaxation_of(activation) -> Relaxation:
    """The relaxation object of an :class:`lipkit.estimate.network.Activation`."""
    if not activation.elementwise:
        raise NotApplicableError(f"activation {activation.kind} is not elementwise")
    if activation.kind == "relu":
        return PiecewiseLinearRelaxation(activation, 0.0, 1.0)
    if activation.kind == "leaky_relu":
        return PiecewiseLinearRelaxation(activation, activation.params["negative_slope"], 1.0)
    if activation.kind == "identity":
        return PiecewiseLinearRelaxation(activation, 1.0, 1.0)
    return Relaxation(activation)
