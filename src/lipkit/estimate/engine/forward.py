"""Bounds on the forward graph: intervals, and linear bounds carried backwards (CROWN).

:func:`layer_bounds` bounds every hidden pre-activation over a batch of boxes, the tighter
of interval arithmetic and of CROWN's backward linear bounds (Zhang et al., NeurIPS 2018:
each neuron's bound as a linear function of the input, the activations relaxed by
:mod:`relaxations`, then minimized over the box), optionally under *splits* (a branch of a
branch and bound: neuron ``j`` of layer ``k`` restricted to ``z >= 0`` or ``z <= 0``).
:func:`spec_lower` bounds linear functions of the output ``C f(x)`` from below, such as the
margins ``f_y - f_j`` of a classifier, with the lower lines of unstable ReLUs optimized by
projected gradient steps (alpha-CROWN: Xu et al., ICLR 2021) where asked.

**Rounding.** Every number returned is proven for the float64 weights in exact arithmetic:
a backward step treats its computed coefficients ``Lambda`` as exact and adds what its
products miss, ``gamma(n + 2) (|Lambda| |W|) reach(z)`` for ``Lambda W z`` (``reach``: the
proven bound on ``|z|``) and ``2 u |Lambda'| reach(z_pre)`` for the slopes' products; sums of
constants carry ``gamma(terms)`` of their absolute sums; the final minimum over the box
carries ``gamma(n + 3)`` of ``|M| (|centre| + radius)``, and is rounded down
(:mod:`lipkit.estimate.rounding`'s policy, Higham's Lemma 3.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lipkit.estimate.engine.chain import DenseChain
from lipkit.estimate.engine.relaxations import outward
from lipkit.estimate.rounding import UNIT, gamma

_TINY = 1e-300


def _reach(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    return torch.maximum(low.abs(), high.abs())


def _down(value: torch.Tensor) -> torch.Tensor:
    return torch.nextafter(value, torch.full_like(value, -torch.inf))


def box_centre_radius(lower: torch.Tensor, upper: torch.Tensor):
    """The centre and a radius rounded up: the box lies inside ``centre +- radius``."""
    centre = (lower + upper) / 2
    radius = torch.nextafter(torch.maximum(upper - centre, centre - lower),
                             torch.full_like(centre, torch.inf))
    return centre, radius


def interval_affine(weight, bias, low, high):
    """Proven bounds on ``weight z + bias`` for ``low <= z <= high`` (batched)."""
    centre, radius = box_centre_radius(low, high)
    absolute = weight.abs()
    middle = centre @ weight.T + bias
    spread = radius @ absolute.T
    error = gamma(weight.shape[1] + 3) * ((centre.abs() + radius) @ absolute.T + bias.abs())
    return _down(middle - spread - error), torch.nextafter(
        middle + spread + error, torch.full_like(middle, torch.inf))


@dataclass(eq=False)
class LayerBounds:
    """Pre-activation bounds ``lower[k] <= z_k <= upper[k]`` of every hidden layer over a
    batch of boxes, the bounds of the activations' outputs, and which boxes are not empty
    (a branch whose splits contradict its bounds is empty)."""

    input_lower: torch.Tensor
    input_upper: torch.Tensor
    lower: list[torch.Tensor] = field(default_factory=list)
    upper: list[torch.Tensor] = field(default_factory=list)
    post_lower: list[torch.Tensor] = field(default_factory=list)
    post_upper: list[torch.Tensor] = field(default_factory=list)
    feasible: torch.Tensor | None = None

    def unstable(self) -> list[torch.Tensor]:
        """Per layer, the neurons whose bounds straddle 0."""
        return [(low < 0) & (high > 0) for low, high in zip(self.lower, self.upper,
                                                             strict=True)]

    def select(self, index) -> LayerBounds:
        return LayerBounds(self.input_lower[index], self.input_upper[index],
                           [v[index] for v in self.lower], [v[index] for v in self.upper],
                           [v[index] for v in self.post_lower],
                           [v[index] for v in self.post_upper], self.feasible[index])


def backward_lower(chain: DenseChain, depth: int, spec: torch.Tensor, bounds: LayerBounds,
                   lower_slopes: list | None = None, sound: bool = True) -> torch.Tensor:
    """A lower bound of ``spec @ z_depth`` over each box (``z_depth``: the output of the
    affine map of layer ``depth``; ``depth = len(chain.hidden)``: the network's output),
    by CROWN. ``spec``: ``(batch, rows, width)``, or a number ``s`` for the rows of ``s I``
    (each entry of ``s z_depth``). ``lower_slopes``: per hidden layer before
    ``depth``, ``(batch, rows, width)`` slopes of the unstable neurons' lower lines (alpha),
    or None. ``sound=False`` skips the rounding terms (for optimizing the slopes)."""
    identity = not isinstance(spec, torch.Tensor)  # a number s: the rows of s I
    if identity:
        batch, rows = bounds.input_lower.shape[0], chain.layers[depth].outputs
    else:
        batch, rows = spec.shape[0], spec.shape[1]
    lam = spec
    const = torch.zeros(batch, rows, dtype=torch.float64)
    magnitude = torch.zeros_like(const)
    error = torch.zeros_like(const)
    terms = 0
    for j in range(depth, -1, -1):
        layer = chain.layers[j]
        product = None  # |Lambda| |W|: what Lambda W misses, times reach(z)
        if identity:  # s I W = s W exactly (s a sign): nothing missed
            const = const + lam * layer.bias
            m = (lam * layer.weight).expand(batch, -1, -1)
            if sound:
                magnitude = magnitude + layer.bias.abs()
            identity = False
        else:
            const = const + lam @ layer.bias
            m = lam @ layer.weight
            if sound:
                magnitude = magnitude + lam.abs() @ layer.bias.abs()
                product = lam.abs() @ layer.absolute
        terms += layer.outputs + 1
        if j == 0:
            centre, radius = box_centre_radius(bounds.input_lower, bounds.input_upper)
            value = (m * centre[:, None, :]).sum(-1) - (m.abs() * radius[:, None, :]).sum(-1)
            if sound:
                if product is not None:
                    reach = _reach(bounds.input_lower, bounds.input_upper)[:, None, :]
                    error = error + gamma(layer.outputs + 2) * (product * reach).sum(-1)
                error = error + gamma(layer.inputs + 3) * (
                    m.abs() * (centre.abs() + radius)[:, None, :]).sum(-1)
            break
        previous = chain.layers[j - 1]
        low, high = bounds.lower[j - 1][:, None, :], bounds.upper[j - 1][:, None, :]
        alpha = None if lower_slopes is None else lower_slopes[j - 1]
        lower_slope, lower_offset, upper_slope, upper_offset = previous.activation.linear(
            low, high, alpha)
        positive = m >= 0
        slope = torch.where(positive, lower_slope, upper_slope)
        offset = torch.where(positive, lower_offset, upper_offset)
        shifted = m * offset
        const = const + shifted.sum(-1)
        lam = m * slope
        if sound:
            if product is not None:
                post = _reach(bounds.post_lower[j - 1], bounds.post_upper[j - 1])[:, None, :]
                error = error + gamma(layer.outputs + 2) * (product * post).sum(-1)
            magnitude = magnitude + shifted.abs().sum(-1)
            pre = _reach(bounds.lower[j - 1], bounds.upper[j - 1])[:, None, :]
            error = error + 2 * UNIT * (lam.abs() * pre).sum(-1)
        terms += previous.outputs
    total = const + value
    if not sound:
        return total
    error = error + gamma(terms + 4) * magnitude + gamma(4) * (const.abs() + value.abs())
    error = error * (1 + gamma(terms + 8)) + _TINY  # the error sums' own rounding
    return _down(total - error)


#: coefficients (per box) of one layer's CROWN pass beyond which, from that layer on, the
#: bounds are interval arithmetic only
MAX_LINEAR_ENTRIES = 4_000_000


def layer_bounds(chain: DenseChain, lower: torch.Tensor, upper: torch.Tensor,
                 splits: list[torch.Tensor] | None = None, linear: bool = True,
                 max_entries: int | None = None) -> LayerBounds:
    """Bounds of every hidden pre-activation over each box ``lower <= x <= upper``
    (``(batch, n)``): interval arithmetic, intersected with CROWN's (``linear``) up to the
    first layer whose pass holds more than ``max_entries`` coefficients (default
    :data:`MAX_LINEAR_ENTRIES`). ``splits[k]``: ``(batch, width)`` with 1 (``z >= 0``), -1
    (``z <= 0``) or 0 (free)."""
    limit = MAX_LINEAR_ENTRIES if max_entries is None else max_entries
    bounds = LayerBounds(lower, upper)
    batch = lower.shape[0]
    feasible = torch.ones(batch, dtype=torch.bool)
    post = (lower, upper)
    widest = chain.inputs
    for k, layer in enumerate(chain.hidden):
        low, high = interval_affine(layer.weight, layer.bias, *post)
        widest = max(widest, layer.inputs)
        linear = linear and layer.outputs * widest <= limit
        if linear and k > 0:  # the rows of +-I
            low = torch.maximum(low, backward_lower(chain, k, 1.0, bounds))
            high = torch.minimum(high, -backward_lower(chain, k, -1.0, bounds))
        if splits is not None and splits[k] is not None:
            low = torch.where(splits[k] > 0, low.clamp_min(0.0), low)
            high = torch.where(splits[k] < 0, high.clamp_max(0.0), high)
        empty = (low > high).any(dim=1)
        feasible &= ~empty
        high = torch.where(empty[:, None], torch.maximum(low, high), high)  # kept ordered
        bounds.lower.append(low)
        bounds.upper.append(high)
        post = layer.activation.interval(low, high)
        bounds.post_lower.append(post[0])
        bounds.post_upper.append(post[1])
    bounds.feasible = feasible
    return bounds


def spec_lower(chain: DenseChain, spec: torch.Tensor, bounds: LayerBounds, steps: int = 0,
               learning_rate: float = 0.5) -> torch.Tensor:
    """A proven lower bound of ``spec @ f(x)`` over each box: CROWN, then ``steps``
    projected gradient steps on the lower lines' slopes of the unstable neurons
    (alpha-CROWN), keeping the best; ``-inf`` never, ``+inf`` for empty boxes."""
    depth = len(chain.hidden)
    best = backward_lower(chain, depth, spec, bounds)
    if steps > 0 and any(layer.activation.piecewise_linear for layer in chain.hidden):
        slopes = []
        for k, layer in enumerate(chain.hidden):
            low, high = bounds.lower[k], bounds.upper[k]
            start = layer.activation._default_lower_slope(low, high) \
                if layer.activation.piecewise_linear else torch.zeros_like(low)
            slopes.append(start[:, None, :].expand(-1, spec.shape[1], -1).clone()
                          .requires_grad_(True))
        limits = [layer.activation.slope_choices(bounds.lower[k], bounds.upper[k])
                  for k, layer in enumerate(chain.hidden)]
        optimizer = torch.optim.Adam(slopes, lr=learning_rate)
        for _ in range(steps):
            optimizer.zero_grad()
            value = backward_lower(chain, depth, spec, bounds, slopes, sound=False)
            (-value.sum()).backward()
            optimizer.step()
            with torch.no_grad():
                for slope, (_, smallest, largest) in zip(slopes, limits, strict=True):
                    if smallest is not None:
                        slope.clamp_(smallest, largest)
        with torch.no_grad():
            fixed = [slope.detach() for slope in slopes]
            best = torch.maximum(best, backward_lower(chain, depth, spec, bounds, fixed))
    return torch.where(bounds.feasible[:, None], best, torch.full_like(best, torch.inf))


__all__ = ["LayerBounds", "backward_lower", "box_centre_radius", "interval_affine",
           "layer_bounds", "outward", "spec_lower"]
