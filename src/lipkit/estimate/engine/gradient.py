"""Bounds on the backward graph of the Clarke Jacobian (Shi, Wang, Zhang, Kolter & Hsieh,
"Efficiently computing local Lipschitz constants of neural networks via bound
propagation", NeurIPS 2022).

For a row ``c`` (an output, or a margin ``e_y - e_j``) the gradient of ``c^T f`` is computed
backwards: ``v_{H-1} = c^T W_H``, then per hidden layer ``u_k = v_k * d_k`` (``d_k`` the
activations' derivatives) and ``v_{k-1} = u_k W_k``; ``v_{-1}`` is the gradient. Over a box,
every ``d_k`` lies in the range the forward bounds allow
(:meth:`Relaxation.derivative_range`: a stable ReLU's slope is fixed), and the local
constant of ``c^T f`` over the box is at most the largest dual norm of ``v_{-1}`` over those
ranges (every Clarke gradient at a point of the box is such a product; for a convex box,
Lebourg's mean value theorem bounds ``|c^T (f(x) - f(y))|`` by one of them times
``||x - y||``; the ranges also hold every secant slope between two points of the box, the
argument of :mod:`lipkit.estimate.lp_jacobian`).

The graph's inputs are the ``d_k`` (a box). Its only nonlinearity is the product ``u = v d``,
relaxed by McCormick's planes over ``[v_low, v_high] x [d_low, d_high]`` (a convex
combination of the two, weight ``theta``, dyadic so that ``1 - theta`` is exact; by default
per entry ``v_high / (v_high - v_low)``, which makes the relaxation, once maximized over
``d``, the chord of ``max_d v d``: of every weight's line, the lowest at every ``v`` of
the range while ``d`` ranges over a box), and the
objective ``sum_i |v_{-1, i}|`` (the l-inf constant) by the chord of ``|.|`` over each
entry's bounds. Linear bounds are carried backwards to the ``d_k`` (CROWN on the backward
graph) and maximized over their box. The bounds on every ``v_k`` come from the same pass
with ``+-I`` rows (or from interval arithmetic when that pass would be too large). The l1
constant is ``max_i |v_{-1, i}|`` and the l2 one ``||max(|low|, |high|)||_2``, both from the
bounds on ``v_{-1}``. With every neuron stable the value is the gradient's norm up to
rounding.

Rounding as in :mod:`lipkit.estimate.engine.forward`: computed coefficients are taken as
exact and what each product misses is added, ``gamma(n + 2)`` of the absolute products
times the reach of the variable, the planes' coefficients with ``gamma(8)`` of theirs.
"""

from __future__ import annotations

import math
import time

import torch

from lipkit.estimate.engine.chain import DenseChain
from lipkit.estimate.engine.forward import LayerBounds
from lipkit.estimate.rounding import UNIT, gamma

#: entries of the coefficient tensor of one bounding pass beyond which the bounds on
#: intermediate gradients come from interval arithmetic instead
MAX_PASS_ENTRIES = 20_000_000
_TINY = 1e-300


def _up(value):
    return torch.nextafter(value, torch.full_like(value, torch.inf))


def _theta(value: float) -> float:
    """A dyadic weight in [0, 1] (``1 - theta`` exact)."""
    return min(max(round(value * 1024) / 1024, 0.0), 1.0)


def chord_weights(v_low: torch.Tensor, v_high: torch.Tensor) -> torch.Tensor:
    """Per entry, the McCormick weight that makes the relaxation of ``u = v d`` the chord
    of ``max_d v d`` over ``[v_low, v_high]``: ``v_high / (v_high - v_low)`` (1 where
    ``v >= 0``, 0 where ``v <= 0``), on a dyadic grid (``1 - theta`` exact)."""
    straddles = (v_low < 0) & (v_high > 0)
    width = torch.where(straddles, v_high - v_low, torch.ones_like(v_low))
    theta = torch.where(straddles, v_high / width, (v_low >= 0).to(v_low.dtype))
    return torch.round(theta.clamp(0.0, 1.0) * 2.0 ** 40) / 2.0 ** 40


class GradientBounds:
    """Bounds on the backward graph of ``spec @ f`` over a batch of boxes."""

    def __init__(self, chain: DenseChain, spec: torch.Tensor, bounds: LayerBounds,
                 theta: float | None = None, linear: bool = True, deadline: float = math.inf):
        """``deadline`` (a ``time.perf_counter()`` instant): a linear pass predicted to end
        after it is replaced by interval arithmetic (sound, looser), so the bounds arrive
        about on time however large the network."""
        self.chain, self.spec, self.bounds = chain, spec, bounds
        self.deadline = deadline
        self._seconds_per_entry = 0.0  # of the last linear pass: predicts the next one
        self.theta = None if theta is None else _theta(theta)
        self._chords: dict[int, torch.Tensor] = {}
        self.hidden = len(chain.hidden)
        # derivative ranges (batch, 1, width) per hidden layer
        self.ranges = []
        for k, layer in enumerate(chain.hidden):
            low, high = layer.activation.derivative_range(bounds.lower[k], bounds.upper[k])
            self.ranges.append((low[:, None, :], high[:, None, :]))
        output = chain.layers[-1]
        self.top = spec @ output.weight  # v_{H-1}: (batch, rows, width)
        # |true v_{H-1} - computed| <= top_error
        self.top_error = gamma(output.outputs + 2) * (spec.abs() @ output.absolute) + _TINY
        # bounds on v_k for k = H-2 .. -1 (index k + 1 in the list; the last is the input)
        self.v_bounds: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        if self.hidden:
            self.v_bounds[self.hidden - 1] = (self.top - self.top_error,
                                              self.top + self.top_error)
        for k in range(self.hidden - 2, -2, -1):
            self.v_bounds[k] = self._bounds_of(k, linear)

    # -- one pass -----------------------------------------------------------------------
    def upper(self, k: int, lam: torch.Tensor | float, constant: torch.Tensor | None = None
              ) -> torch.Tensor:
        """A proven upper bound of ``lam . v_k + constant`` over the graph, ``lam``:
        ``(batch, rows, q, width_k)``, or a number ``s`` for ``s I`` (every entry of
        ``s v_k``; ``q = width_k``), ``k < H - 1``. Returns ``(batch, rows, q)``."""
        scaled_identity = not isinstance(lam, torch.Tensor)
        if scaled_identity:
            batch, rows = self.spec.shape[:2]
            q = self.chain.layers[k + 1].inputs
        else:
            batch, rows, q = lam.shape[:3]
        dtype = torch.float64
        const = torch.zeros(batch, rows, q, dtype=dtype) if constant is None \
            else constant.clone()
        magnitude = const.abs()
        error = torch.zeros_like(const)
        total = torch.zeros_like(const)  # the d's contributions, maximized over their box
        terms = 1
        while True:
            layer = self.chain.layers[k + 1]  # v_k = u_{k+1} W_{k+1}
            d_low, d_high = (r[:, :, None, :] for r in self.ranges[k + 1])
            d_reach = torch.maximum(d_low.abs(), d_high.abs())
            v_low, v_high = (b[:, :, None, :] for b in self.v_bounds[k + 1])
            v_reach = torch.maximum(v_low.abs(), v_high.abs())
            if scaled_identity:  # s I W^T = s W^T exactly (a sign, or a power of two)
                m = (lam * layer.weight.T).expand(batch, rows, q, -1)
                scaled_identity = False
            else:
                m = lam @ layer.weight.T  # on u_{k+1}: (..., width_{k+1})
                error = error + gamma(layer.inputs + 2) * (
                    (lam.abs() @ layer.absolute.T) * d_reach * v_reach).sum(-1)
            if k + 1 == self.hidden - 1:  # v_{H-1} is known (to top_error)
                top = self.top[:, :, None, :]
                coefficient = m * top
                error = error + (m.abs() * self.top_error[:, :, None, :] * d_reach).sum(-1)
                error = error + 2 * UNIT * (coefficient.abs() * d_reach).sum(-1)
                total = total + torch.maximum(coefficient * d_low, coefficient * d_high).sum(-1)
                terms += m.shape[-1]
                break
            theta = self.theta if self.theta is not None else self._chord(k + 1)
            positive = m >= 0
            # upper planes where m >= 0, lower planes where m < 0 (McCormick), mixed by theta
            first_d = torch.where(positive, d_high, d_low)
            second_d = torch.where(positive, d_low, d_high)
            first_v = v_low
            second_v = v_high
            a = theta * first_d + (1 - theta) * second_d  # on v
            b = theta * first_v + (1 - theta) * second_v  # on d
            c = -(theta * first_d * first_v + (1 - theta) * second_d * second_v)
            # the planes' float coefficients miss the exact ones by a few roundings
            slack = gamma(8) * (a.abs() * v_reach + b.abs() * d_reach + c.abs())
            shifted = m * c
            const = const + shifted.sum(-1)
            magnitude = magnitude + shifted.abs().sum(-1)
            error = error + (m.abs() * slack).sum(-1)
            on_d = m * b
            error = error + 2 * UNIT * (on_d.abs() * d_reach).sum(-1)
            total = total + torch.maximum(on_d * d_low, on_d * d_high).sum(-1)
            lam = m * a
            error = error + 2 * UNIT * (lam.abs() * v_reach).sum(-1)
            terms += 2 * m.shape[-1]
            k += 1
        value = const + total
        error = error + gamma(terms + 4) * (magnitude + total.abs()) + \
            gamma(4) * value.abs()
        return _up(value + error * (1 + gamma(terms + 8)) + _TINY)

    def _chord(self, k: int) -> torch.Tensor:
        """The chord's McCormick weights of layer ``k``'s products, ``(batch, rows, 1,
        width)`` (computed once per layer)."""
        if k not in self._chords:
            self._chords[k] = chord_weights(*self.v_bounds[k])[:, :, None, :]
        return self._chords[k]

    def _bounds_of(self, k: int, linear: bool):
        """Bounds on ``v_k`` (``k = -1``: the gradient), by a pass with ``+-I`` rows, or
        by interval arithmetic from ``v_{k+1}`` when the pass would be too large."""
        width = self.chain.layers[k + 1].inputs
        batch, rows = self.spec.shape[:2]
        entries = batch * rows * width * max(self.chain.layers[k + 1].outputs, width)
        if linear and entries <= MAX_PASS_ENTRIES and self._fits(k, width):
            started = time.perf_counter()
            found = -self.upper(k, -1.0), self.upper(k, 1.0)
            self._seconds_per_entry = (time.perf_counter() - started) / self._work(k, width)
            return found
        layer = self.chain.layers[k + 1]
        v_low, v_high = self.v_bounds[k + 1]
        d_low, d_high = self.ranges[k + 1]
        corners = torch.stack([v_low * d_low, v_low * d_high, v_high * d_low, v_high * d_high])
        u_low, u_high = corners.min(0).values, corners.max(0).values
        centre, radius = (u_low + u_high) / 2, (u_high - u_low) / 2
        middle = centre @ layer.weight
        spread = radius @ layer.absolute
        error = gamma(layer.outputs + 4) * ((centre.abs() + radius) @ layer.absolute) + \
            2 * UNIT * torch.maximum(u_low.abs(), u_high.abs()) @ layer.absolute + _TINY
        return -_up(-(middle - spread - error)), _up(middle + spread + error)

    def _work(self, k: int, q: int) -> int:
        """Entries a pass from ``v_k`` with ``q`` rows per spec row goes through (its
        cost)."""
        batch, rows = self.spec.shape[:2]
        return batch * rows * q * sum(layer.inputs for layer in self.chain.layers[k + 2:]) or 1

    def _fits(self, k: int, q: int) -> bool:
        """Whether a pass from ``v_k`` with ``q`` rows should end before the deadline."""
        if math.isinf(self.deadline):
            return True
        return time.perf_counter() + self._seconds_per_entry * self._work(k, q) < self.deadline

    # -- the norms ----------------------------------------------------------------------
    def gradient_bounds(self):
        """``(low, high)``: bounds on the gradient ``v_{-1}`` (batch, rows, inputs)."""
        if not self.hidden:
            return self.top - self.top_error, self.top + self.top_error
        return self.v_bounds[-1]

    def norm_upper(self, norm: str) -> torch.Tensor:
        """A proven upper bound on the dual norm of the gradient of each row over each box
        (``norm``: the input norm; ``"inf"`` gives the l1 norm of the gradient)."""
        low, high = self.gradient_bounds()
        reach = torch.maximum(low.abs(), high.abs())
        n = reach.shape[-1]
        if norm == "1":
            return reach.max(dim=-1).values
        if norm == "2":
            return _up(reach.pow(2).sum(-1).sqrt() * (1 + gamma(n + 4)))
        interval = _up(reach.sum(-1) * (1 + gamma(n + 2)))
        if not self.hidden or not self._fits(-1, 1):
            return interval
        # |v| <= chord over [low, high]: the objective's linear upper bound on v_{-1}
        straddles = (low < 0) & (high > 0)
        width = torch.where(straddles, high - low, torch.ones_like(low))
        slope = torch.where(straddles, (high + low) / width,
                            torch.where(low >= 0, torch.ones_like(low), -torch.ones_like(low)))
        offset = torch.where(straddles, -low - slope * low, torch.zeros_like(low))
        offset = offset + gamma(6) * (slope.abs() * reach + offset.abs()) + _TINY
        chord = self.upper(-1, slope[:, :, None, :], offset.sum(-1, keepdim=True)[..., None]
                           .squeeze(-1) * (1 + gamma(n + 2)))
        return torch.minimum(interval, chord[:, :, 0])

    def split_scores(self) -> list[torch.Tensor]:
        """Per hidden layer ``(batch, width)``: how much the derivative range of each
        neuron can move the gradient (0 for fixed ones), to choose a branching neuron."""
        scores = []
        for k in range(self.hidden):
            d_low, d_high = self.ranges[k]
            v_low, v_high = self.v_bounds[k]
            reach = torch.maximum(v_low.abs(), v_high.abs()).amax(dim=1)  # over rows
            weight = self.chain.layers[k].absolute.sum(dim=1)
            # earlier layers first: their splits also tighten every later forward bound
            depth_weight = 10.0 ** (self.hidden - k)
            scores.append(reach * (d_high - d_low)[:, 0, :] * weight * depth_weight)
        return scores
