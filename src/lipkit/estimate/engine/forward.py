"""Bounds on the forward graph: intervals, and linear bounds carried backwards (CROWN).

:func:`layer_bounds` bounds every hidden pre-activation over a batch of boxes, the tighter
of interval arithmetic and of CROWN's backward linear bounds (Zhang et al., NeurIPS 2018:
each neuron's bound as a linear function of the input, the activations relaxed by
:mod:`relaxations`, then minimized over the box), optionally under *splits* (a branch of a
branch and bound: neuron ``j`` of layer ``k`` restricted to ``z >= 0`` or ``z <= 0``). A
branch's splits are also linear inequalities on its inputs, and its minima are taken over
their region by Lagrangian duality (as beta-CROWN does with split constraints: Wang et al.,
NeurIPS 2021): the bounds of the other neurons tighten, and splits that cannot hold
together are found (an empty branch). :func:`spec_lower` bounds linear functions of the
output ``C f(x)`` from below, such as the margins ``f_y - f_j`` of a classifier, with the
lower lines of unstable ReLUs optimized by projected gradient steps (alpha-CROWN: Xu et al.,
ICLR 2021) where asked.

**Rounding.** Every number returned is proven for the float64 weights in exact arithmetic:
a backward step treats its computed coefficients ``Lambda`` as exact and adds what its
products miss, ``gamma(n + 2) (|Lambda| |W|) reach(z)`` for ``Lambda W z`` (``reach``: the
proven bound on ``|z|``) and ``2 u |Lambda'| reach(z_pre)`` for the slopes' products; sums of
constants carry ``gamma(terms)`` of their absolute sums; the final minimum over the box
carries ``gamma(n + 3)`` of ``|M| (|centre| + radius)``, and is rounded down
(:mod:`lipkit.estimate.rounding`'s policy, Higham's Lemma 3.1). A minimum over a region
treats its multipliers ``beta`` as exact numbers (any ``beta >= 0`` gives a valid bound) and
adds what ``M - beta G`` and ``beta h`` miss; a constraint from a later layer's split carries
its lines' slack, rounded up.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from lipkit.estimate.engine.chain import DenseChain
from lipkit.estimate.engine.relaxations import outward
from lipkit.estimate.rounding import UNIT, gamma

_TINY = 1e-300
#: steps on the multipliers of a branch's split constraints (:func:`region_minimum`)
DUAL_STEPS = 10
_DUAL_RATE = 0.5


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
    #: the branches' split rows ``G x + h >= 0`` (``(batch, C, n)``, ``(batch, C)``; padded
    #: with ``0 >= 0``), or None without splits: the region each box's bounds hold on
    constraints: tuple | None = None

    def unstable(self) -> list[torch.Tensor]:
        """Per layer, the neurons whose bounds straddle 0."""
        return [(low < 0) & (high > 0) for low, high in zip(self.lower, self.upper,
                                                             strict=True)]

    def select(self, index) -> LayerBounds:
        return LayerBounds(self.input_lower[index], self.input_upper[index],
                           [v[index] for v in self.lower], [v[index] for v in self.upper],
                           [v[index] for v in self.post_lower],
                           [v[index] for v in self.post_upper], self.feasible[index],
                           None if self.constraints is None else
                           tuple(c[index] for c in self.constraints))


def _multipliers(m: torch.Tensor, centre: torch.Tensor, radius: torch.Tensor,
                 rows: torch.Tensor, offsets: torch.Tensor, steps: int) -> torch.Tensor:
    """Multipliers ``beta >= 0`` (``(batch, R, C)``) for :func:`region_minimum`: Adam's
    steps of projected supergradient ascent on the concave dual function (the supergradient
    is minus the constraints' values at the box minimizer), the rate decaying to 0. Not
    proven: any ``beta >= 0`` gives a valid bound, and the caller proves the one returned."""
    lower, upper = (centre - radius)[:, None, :], (centre + radius)[:, None, :]
    beta = m.new_zeros(m.shape[0], m.shape[1], rows.shape[1])
    # beta's natural scale: the objective's size over the constraint's
    size = rows.abs().sum(-1)[:, None, :]
    scale = torch.where(size > 0, m.abs().sum(-1, keepdim=True) / size.clamp_min(_TINY), 0.0)
    scale = torch.nan_to_num(scale, nan=0.0, posinf=0.0)  # a padding row's beta stays 0
    first, second = torch.zeros_like(beta), torch.zeros_like(beta)
    offsets, transposed = offsets[:, None, :], rows.mT
    for step in range(1, steps + 1):
        point = torch.where(torch.baddbmm(m, beta, rows, alpha=-1) > 0, lower, upper)
        values = torch.baddbmm(offsets, point, transposed)  # the constraints at the minimizer
        first.mul_(0.9).add_(values, alpha=0.1)
        second.mul_(0.999).addcmul_(values, values, value=0.001)
        rate = _DUAL_RATE * (1 - (step - 1) / steps) * math.sqrt(1 - 0.999 ** step) / (
            1 - 0.9 ** step)
        beta.addcdiv_(first * scale, second.sqrt().add_(1e-12), value=-rate).clamp_min_(0.0)
    return beta


def region_minimum(m: torch.Tensor, centre: torch.Tensor, radius: torch.Tensor,
                   constraints=None, steps: int = 0, sound: bool = True,
                   rows: torch.Tensor | None = None):
    """``(value, error)`` with ``min m x >= value - error`` over the points of the box
    ``centre +- radius`` (``(batch, n)``) that satisfy ``constraints``: ``(G, h)``,
    ``(batch, C, n)`` and ``(batch, C)``, each ``G_c x + h_c >= 0`` at every point of the
    region (exact arithmetic on the stored numbers). ``m``: ``(batch, R, n)``; ``rows``:
    ``(batch, R)``, the rows worth the multipliers (default all), the others get the box.

    By weak duality, for every ``beta >= 0`` the box minimum of ``(m - beta G) x - beta h``
    is at most ``m x`` wherever the constraints hold; ``beta`` comes from
    :func:`_multipliers` and the better proven value of it and of ``beta = 0`` (the box) is
    kept per row. ``error`` bounds the rounding of the computed value: ``gamma(n + 3)`` of the
    products' magnitudes for the box, and for ``beta`` also what ``m - beta G`` and
    ``beta h`` miss (``gamma(C + 2)`` of their absolute sums) times the reach
    ``|centre| + radius``."""
    n = m.shape[-1]
    reach = (centre.abs() + radius)[:, None, :]
    value = (m * centre[:, None, :]).sum(-1) - (m.abs() * radius[:, None, :]).sum(-1)
    error = gamma(n + 3) * (m.abs() * reach).sum(-1) if sound else torch.zeros_like(value)
    if constraints is None or constraints[0].shape[1] == 0 or steps <= 0:
        return value, error
    if rows is not None:
        count = int(rows.sum(dim=1).max())
        if count == 0:
            return value, error
        order = torch.argsort(rows.to(torch.int8), dim=1, descending=True,
                              stable=True)[:, :count]
        chosen = torch.gather(rows, 1, order)
        dual, dual_error = region_minimum(
            torch.gather(m, 1, order[..., None].expand(-1, -1, n)), centre, radius,
            constraints, steps, sound)
        old, old_error = torch.gather(value, 1, order), torch.gather(error, 1, order)
        better = chosen & (dual - dual_error > old - old_error)
        return (value.scatter(1, order, torch.where(better, dual, old)),
                error.scatter(1, order, torch.where(better, dual_error, old_error)))
    G, h = constraints
    count = G.shape[1]
    with torch.no_grad():
        beta = _multipliers(m.detach(), centre, radius, G, h, steps)
    combined = m - beta @ G
    shift = (beta * h[:, None, :]).sum(-1)
    dual = (combined * centre[:, None, :]).sum(-1) - (combined.abs() * radius[:, None, :]
                                                       ).sum(-1) - shift
    if not sound:
        return torch.maximum(value, dual), error
    missed = gamma(count + 2) * (m.abs() + beta @ G.abs())
    dual_error = gamma(n + 4) * ((combined.abs() * reach).sum(-1) + shift.abs()) + \
        gamma(count + 2) * (beta * h.abs()[:, None, :]).sum(-1) + (missed * reach).sum(-1)
    better = dual - dual_error > value - error
    return torch.where(better, dual, value), torch.where(better, dual_error, error)


@dataclass(eq=False)
class Lines:
    """A linear lower bound of some rows over a branch: ``rows(x) >= m x + const - slack`` at
    every point ``x`` of it, in exact arithmetic on these float64 numbers (``m``: ``(batch,
    R, n)``, ``const`` and ``slack``: ``(batch, R)``)."""

    m: torch.Tensor
    const: torch.Tensor
    slack: torch.Tensor


def backward_lines(chain: DenseChain, depth: int, spec, bounds: LayerBounds,
                   lower_slopes: list | None = None, sound: bool = True) -> Lines:
    """CROWN's linear lower bound of ``spec @ z_depth`` in the inputs (``z_depth``: the
    output of the affine map of layer ``depth``; ``depth = len(chain.hidden)``: the
    network's output). ``spec``: ``(batch, rows, width)``, or a number ``s`` for the rows of
    ``s I`` (each entry of ``s z_depth``). ``lower_slopes``: per hidden layer before
    ``depth``, ``(batch, rows, width)`` slopes of the unstable neurons' lower lines (alpha),
    or None. ``sound=False`` skips the rounding terms (``slack = 0``, for optimizing the
    slopes)."""
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
            if sound and product is not None:
                reach = _reach(bounds.input_lower, bounds.input_upper)[:, None, :]
                error = error + gamma(layer.outputs + 2) * (product * reach).sum(-1)
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
    if not sound:
        return Lines(m, const, torch.zeros_like(const))
    # what the computed lines miss at each point: the products' and the constants' rounding
    slack = (error + gamma(terms + 4) * magnitude) * (1 + gamma(terms + 8)) + _TINY
    return Lines(m, const, slack)


def lines_lower(lines: Lines, bounds: LayerBounds, constraints=None, dual_steps: int = 0,
                sound: bool = True, rows: torch.Tensor | None = None) -> torch.Tensor:
    """A proven lower bound of the rows of ``lines`` over each branch: the minimum of
    ``m x + const - slack`` over its box (and, with ``constraints``, their region, for the
    ``rows`` given: :func:`region_minimum`), rounded down."""
    centre, radius = box_centre_radius(bounds.input_lower, bounds.input_upper)
    value, error = region_minimum(lines.m, centre, radius, constraints, dual_steps, sound,
                                  rows)
    total = lines.const + value
    if not sound:
        return total
    count = 0 if constraints is None else constraints[0].shape[1]
    error = (lines.slack + error + gamma(4) * (lines.const.abs() + value.abs())) * (
        1 + gamma(lines.m.shape[-1] + count + 8)) + _TINY
    return _down(total - error)


def backward_lower(chain: DenseChain, depth: int, spec, bounds: LayerBounds,
                   lower_slopes: list | None = None, sound: bool = True, constraints=None,
                   dual_steps: int = 0) -> torch.Tensor:
    """A lower bound of ``spec @ z_depth`` over each box by CROWN
    (:func:`backward_lines`, then :func:`lines_lower`)."""
    return lines_lower(backward_lines(chain, depth, spec, bounds, lower_slopes, sound),
                       bounds, constraints, dual_steps, sound)


#: coefficients (per box) of one layer's CROWN pass beyond which, from that layer on, the
#: bounds are interval arithmetic only
MAX_LINEAR_ENTRIES = 4_000_000


def _split_rows(splits: torch.Tensor, rows: torch.Tensor, offsets: torch.Tensor):
    """The constraints ``rows_j x + offsets_j >= 0`` of the split neurons of one layer
    (``splits != 0``), gathered per box: ``(batch, S, n)`` and ``(batch, S)``, padded with
    ``0 >= 0``. ``rows`` / ``offsets``: per box and neuron, ``(batch, width, n)`` /
    ``(batch, width)``, the constraint of the side its split chose."""
    count = int((splits != 0).sum(dim=1).max()) if splits.numel() else 0
    if count == 0:
        return None
    order = torch.argsort((splits != 0).to(torch.int8), dim=1, descending=True,
                          stable=True)[:, :count]
    chosen = torch.gather(splits, 1, order) != 0
    return (torch.gather(rows, 1, order[..., None].expand(-1, -1, rows.shape[-1]))
            * chosen[..., None], torch.gather(offsets, 1, order) * chosen)


def _join(constraints, more):
    if more is None:
        return constraints
    if constraints is None:
        return more
    return torch.cat([constraints[0], more[0]], 1), torch.cat([constraints[1], more[1]], 1)


def _up(value: torch.Tensor) -> torch.Tensor:
    return torch.nextafter(value, torch.full_like(value, torch.inf))


def optimized_slopes(chain: DenseChain, depth: int, spec: torch.Tensor, bounds: LayerBounds,
                     steps: int, learning_rate: float = 0.5, deadline: float = math.inf):
    """Lower slopes of the unstable neurons of the layers before ``depth`` (``(batch, rows,
    width)`` each) after ``steps`` of Adam on CROWN's lower bound of ``spec @ z_depth``
    (alpha-CROWN, Xu et al. 2021), stopping at ``deadline``; projected onto each
    activation's range of valid slopes after every step. Not proven by themselves: any
    slopes in range give a valid bound, which the caller proves."""
    slopes, limits = [], []
    for k, layer in enumerate(chain.hidden[:depth]):
        low, high = bounds.lower[k], bounds.upper[k]
        start = layer.activation._default_lower_slope(low, high) \
            if layer.activation.piecewise_linear else torch.zeros_like(low)
        slopes.append(start[:, None, :].expand(-1, spec.shape[1], -1).clone()
                      .requires_grad_(True))
        limits.append(layer.activation.slope_choices(low, high))
    optimizer = torch.optim.Adam(slopes, lr=learning_rate)
    for _ in range(steps):
        if time.perf_counter() >= deadline:
            break
        optimizer.zero_grad()
        value = backward_lower(chain, depth, spec, bounds, slopes, sound=False)
        (-value.sum()).backward()
        optimizer.step()
        with torch.no_grad():
            for slope, (_, smallest, largest) in zip(slopes, limits, strict=True):
                if smallest is not None:
                    slope.clamp_(smallest, largest)
    return [slope.detach() for slope in slopes]


def _optimized_lines(chain: DenseChain, depth: int, bounds: LayerBounds, low, high,
                     steps: int, deadline: float, learning_rate: float = 0.5):
    """Lines for the neurons of layer ``depth`` that are unstable by ``(low, high)``, with
    the lower lines' slopes of the layers before optimized by ``steps`` projected gradient
    steps (alpha-CROWN for intermediate bounds, Xu et al. 2021), or None when no neuron is
    unstable or nothing can be optimized: ``(rows, below, above)``, ``rows`` the neurons'
    indices and the lines proven (``sound=True``) for the slopes reached."""
    rows = torch.nonzero(((low < 0) & (high > 0)).any(dim=0)).reshape(-1)
    if rows.numel() == 0 or not any(layer.activation.piecewise_linear
                                    for layer in chain.hidden[:depth]):
        return None
    batch, width = low.shape[0], chain.layers[depth].outputs
    spec = torch.zeros(batch, 2 * rows.numel(), width, dtype=torch.float64)
    spec[:, torch.arange(rows.numel()), rows] = 1.0
    spec[:, rows.numel() + torch.arange(rows.numel()), rows] = -1.0
    slopes = optimized_slopes(chain, depth, spec, bounds, steps, learning_rate, deadline)
    with torch.no_grad():
        lines = backward_lines(chain, depth, spec, bounds, slopes)
    half = rows.numel()
    below = Lines(lines.m[:, :half], lines.const[:, :half], lines.slack[:, :half])
    above = Lines(lines.m[:, half:], lines.const[:, half:], lines.slack[:, half:])
    return rows, below, above


def layer_bounds(chain: DenseChain, lower: torch.Tensor, upper: torch.Tensor,
                 splits: list[torch.Tensor] | None = None, linear: bool = True,
                 max_entries: int | None = None, dual_steps: int = DUAL_STEPS,
                 slope_steps: int = 0, deadline: float = math.inf,
                 within: LayerBounds | None = None) -> LayerBounds:
    """Bounds of every hidden pre-activation over each box ``lower <= x <= upper``
    (``(batch, n)``): interval arithmetic, intersected with CROWN's (``linear``) up to the
    first layer whose pass holds more than ``max_entries`` coefficients (default
    :data:`MAX_LINEAR_ENTRIES`). ``splits[k]``: ``(batch, width)`` with 1 (``z >= 0``), -1
    (``z <= 0``) or 0 (free).

    A branch's splits also restrict its inputs: a split ``z >= 0`` of the first layer is the
    inequality ``w x + b >= 0`` (exact), one of a later layer the inequality its linear upper
    bound gives, ``m x + c + slack >= z >= 0`` (``z <= 0``: its lower bound). Each layer's
    lines are minimized over the region of the splits before it (:func:`region_minimum`,
    ``dual_steps`` steps), then again with its own splits added: the bounds of the other
    neurons tighten, and a branch whose splits cannot hold together is found empty.

    ``slope_steps``: on boxes without splits, the unstable neurons of the layers after the
    first are bounded again with the earlier layers' lower slopes optimized for them
    (:func:`_optimized_lines`, alpha-CROWN's intermediate bounds), until ``deadline``; the
    tighter of both is kept. ``within``: bounds already proven over the same boxes (a
    branch's parent, one box broadcast to all), intersected with layer by layer."""
    limit = MAX_LINEAR_ENTRIES if max_entries is None else max_entries
    bounds = LayerBounds(lower, upper)
    batch = lower.shape[0]
    feasible = torch.ones(batch, dtype=torch.bool)
    post = (lower, upper)
    widest = chain.inputs
    constraints = None
    use_splits = splits is not None and dual_steps > 0
    branched = splits is not None and any(bool((split != 0).any()) for split in splits)
    for k, layer in enumerate(chain.hidden):
        low, high = interval_affine(layer.weight, layer.bias, *post)
        if within is not None:
            low = torch.maximum(low, within.lower[k])
            high = torch.minimum(high, within.upper[k])
        widest = max(widest, layer.inputs)
        linear = linear and layer.outputs * widest <= limit
        split = splits[k] if splits is not None else None
        here = use_splits and split is not None and bool((split != 0).any())
        if linear and (k > 0 or here):  # the rows of +-I (exactly w x + b for k = 0)
            below = backward_lines(chain, k, 1.0, bounds)
            above = backward_lines(chain, k, -1.0, bounds)
            low = torch.maximum(low, lines_lower(below, bounds))
            high = torch.minimum(high, -lines_lower(above, bounds))
            if slope_steps > 0 and not branched and k > 0 and \
                    time.perf_counter() < deadline:
                optimized = _optimized_lines(chain, k, bounds, low, high, slope_steps,
                                             deadline)
                if optimized is not None:
                    rows, better_below, better_above = optimized
                    low[:, rows] = torch.maximum(low[:, rows],
                                                 lines_lower(better_below, bounds))
                    high[:, rows] = torch.minimum(high[:, rows],
                                                  -lines_lower(better_above, bounds))
            if here:
                if k == 0:  # exact: the rows and offsets only change sign
                    sign = split.to(torch.float64)
                    more = _split_rows(split, sign[..., None] * layer.weight,
                                       sign * layer.bias)
                else:
                    # z >= 0: -z >= m x + c - slack (its upper bound) gives
                    # -m x + slack - c >= 0; z <= 0: z >= m x + c - slack, the same form
                    upward = split > 0
                    m = torch.where(upward[..., None], above.m, below.m)
                    offset = torch.where(upward, above.slack - above.const,
                                         below.slack - below.const)
                    more = _split_rows(split, -m, _up(offset + 2 * UNIT * offset.abs()))
                constraints = _join(constraints, more)
            if constraints is not None:
                # the rows whose sign is in question, over the region of every split so far
                clamped_low = torch.where(split > 0, low.clamp_min(0.0), low) \
                    if split is not None else low
                clamped_high = torch.where(split < 0, high.clamp_max(0.0), high) \
                    if split is not None else high
                rows = (clamped_low < 0) & (clamped_high >= 0)
                low = torch.maximum(low, lines_lower(below, bounds, constraints, dual_steps,
                                                     rows=rows))
                rows = (clamped_low <= 0) & (clamped_high > 0)
                high = torch.minimum(high, -lines_lower(above, bounds, constraints,
                                                        dual_steps, rows=rows))
        if split is not None:
            low = torch.where(split > 0, low.clamp_min(0.0), low)
            high = torch.where(split < 0, high.clamp_max(0.0), high)
        empty = (low > high).any(dim=1)
        feasible &= ~empty
        high = torch.where(empty[:, None], torch.maximum(low, high), high)  # kept ordered
        bounds.lower.append(low)
        bounds.upper.append(high)
        post = layer.activation.interval(low, high)
        bounds.post_lower.append(post[0])
        bounds.post_upper.append(post[1])
    bounds.feasible = feasible
    bounds.constraints = constraints
    return bounds


def spec_lower(chain: DenseChain, spec: torch.Tensor, bounds: LayerBounds, steps: int = 0,
               learning_rate: float = 0.5, dual_steps: int = 0,
               deadline: float = math.inf) -> torch.Tensor:
    """A proven lower bound of ``spec @ f(x)`` over each box: CROWN, then ``steps``
    projected gradient steps on the lower lines' slopes of the unstable neurons
    (alpha-CROWN), keeping the best; ``-inf`` never, ``+inf`` for empty boxes. With
    ``dual_steps`` and branches (``bounds.constraints``), each box's lines are minimized
    over the region of its splits only (:func:`region_minimum`): the bound of a branch,
    valid on its region. The slope steps stop at ``deadline`` (a ``time.perf_counter()``
    instant; the slopes reached are used)."""
    depth = len(chain.hidden)
    region = {} if bounds.constraints is None or dual_steps <= 0 else {
        "constraints": bounds.constraints, "dual_steps": dual_steps}
    best = backward_lower(chain, depth, spec, bounds, **region)
    if steps > 0 and any(layer.activation.piecewise_linear for layer in chain.hidden):
        fixed = optimized_slopes(chain, depth, spec, bounds, steps, learning_rate, deadline)
        with torch.no_grad():
            best = torch.maximum(best, backward_lower(chain, depth, spec, bounds, fixed,
                                                      **region))
    return torch.where(bounds.feasible[:, None], best, torch.full_like(best, torch.inf))


__all__ = ["LayerBounds", "Lines", "backward_lines", "backward_lower", "box_centre_radius",
           "interval_affine", "layer_bounds", "lines_lower", "outward", "region_minimum",
           "spec_lower"]
