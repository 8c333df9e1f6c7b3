"""Branch and bound on the hidden neurons for lower bounds of ``spec @ f`` over a box.

The direct certificate of :mod:`lipkit.certify.local` is a proven lower bound of each
margin over a ball; when CROWN / alpha-CROWN (:func:`~lipkit.estimate.engine.forward.
spec_lower`) leaves one at or below its target, the box is cut by the sign of an unstable
neuron of a piecewise-linear activation (the kink at 0: ReLU, LeakyReLU, ...): on the branch
``z >= 0`` (``z <= 0``) the neuron is linear, its relaxation exact, and the branch's own
split rows tighten the other neurons' bounds (:func:`~lipkit.estimate.engine.forward.
layer_bounds`, whose minima over a branch's region are taken by Lagrangian duality) or
prove the branch empty; the rows' own lines are minimized over the branch's region the same
way (``spec_lower(..., dual_steps=...)``), so a leaf with every neuron fixed is bounded by
its linear piece over its region, and the search is complete on ReLU chains (up to the
duality's steps). The two branches cover the parent's region, and a branch's bound is
valid on its region only, so

- a child keeps the larger of its own bound and its parent's (its region is inside the
  parent's), and
- the bound of the whole box is the smallest over the leaves (they cover the box), and an
  empty leaf bounds nothing (``+inf``).

Branches are taken worst first (the smallest bound below the target), in batches sized to
the time left (the first one a single branch, to time it); the
neuron split is the unstable, not yet split one with the largest relaxation gap
``u (-l) / (u - l)`` times its reach into the next layer (``sum |W_{k+1}[:, i]|``, the
rows' output weights for the last hidden layer). The search stops when every leaf is above
the target (``complete``), at the deadline, at ``max_branches``, or when a leaf below the
target has nothing left to split (its bound is final: the target cannot be proven this way).
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from lipkit.estimate.engine.chain import DenseChain
from lipkit.estimate.engine.forward import DUAL_STEPS, layer_bounds, spec_lower

#: branches evaluated together
BATCH = 16
#: alpha-CROWN slope steps for a branch (the root takes the caller's)
BRANCH_SLOPE_STEPS = 5


@dataclass
class BranchedLower:
    """Per row the smallest proven lower bound over the leaves, and how the search ended."""

    lower: np.ndarray
    complete: bool  # every leaf above the target (or empty)
    branches: int  # branches evaluated, the root included
    open: int  # leaves below the target when it stopped
    reason: str  # "complete", "time limit", "branch limit" or "nothing left to split"


def children_of(splits: list[torch.Tensor], index: int, widths: list[int]
                ) -> list[list[torch.Tensor]]:
    """The two branches of one branch (``splits``: per hidden layer ``(1, width)``) on
    the neuron at flat ``index`` (layers concatenated): ``z >= 0`` (1), then ``z <= 0``
    (-1)."""
    layer = int(np.searchsorted(np.cumsum(widths), index, side="right"))
    neuron = index - sum(widths[:layer])
    children = []
    for side in (1, -1):
        child = [s.clone() for s in splits]
        child[layer][0, neuron] = side
        children.append(child)
    return children


def _scores(chain: DenseChain, spec: torch.Tensor, bounds, splits) -> torch.Tensor:
    """Per branch, one score per hidden neuron (flattened over layers); 0 for neurons that
    are stable, split, or of an activation without a kink at 0."""
    scores = []
    for k, layer in enumerate(chain.hidden):
        low, high = bounds.lower[k], bounds.upper[k]
        unstable = (low < 0) & (high > 0) & (splits[k] == 0)
        relaxation = layer.activation
        if not relaxation.piecewise_linear or relaxation.below == relaxation.above:
            unstable = torch.zeros_like(unstable)  # no kink at 0 to split on
        width = torch.where(unstable, high - low, torch.ones_like(low))
        gap = torch.where(unstable, high * (-low) / width, torch.zeros_like(low))
        following = chain.layers[k + 1]
        if k + 1 == len(chain.hidden):  # the output layer: the rows' weights
            reach = (spec.abs() @ following.absolute).sum(dim=0)
        else:
            reach = following.absolute.sum(dim=0)
        scores.append(gap * reach)
    return torch.cat(scores, dim=1)


def lower_by_branching(chain: DenseChain, spec: torch.Tensor, lower: torch.Tensor,
                       upper: torch.Tensor, deadline: float = math.inf, target: float = 0.0,
                       root: tuple | None = None, slope_steps: int = BRANCH_SLOPE_STEPS,
                       max_branches: int = 100_000) -> BranchedLower:
    """Proven lower bounds of ``spec @ f(x)`` (``spec``: ``(rows, outputs)``) over the box
    ``lower <= x <= upper`` (``(n,)``), refined by branching until every row is above
    ``target`` on every leaf (module docstring).

    Args:
        root: ``(bounds, values)`` of the whole box already computed (``layer_bounds`` of
            the box, ``spec_lower``'s values ``(rows,)``), else computed here.
        deadline: a ``time.perf_counter()`` instant; a batch started before it finishes.
    """
    spec = torch.as_tensor(spec, dtype=torch.float64)
    rows = spec.shape[0]
    widths = [layer.outputs for layer in chain.hidden]
    if root is None:
        bounds = layer_bounds(chain, lower[None], upper[None])
        values = spec_lower(chain, spec[None], bounds, steps=slope_steps)[0]
    else:
        bounds, values = root
    values = values.numpy().astype(float)
    empty = [torch.zeros(1, w, dtype=torch.int8) for w in widths]
    scores = _scores(chain, spec, bounds, empty)[0]
    heap: list = []  # (smallest value, counter, values, splits, scores)
    final = np.full(rows, math.inf)  # the smallest bound per row over the closed leaves
    counter = 0

    def place(value_row, splits, score) -> bool:
        """Close a leaf above the target, or queue it; False: below it and unsplittable."""
        nonlocal counter
        if np.all(value_row > target):
            np.minimum(final, value_row, out=final)
            return True
        if float(score.max()) <= 0:
            np.minimum(final, value_row, out=final)
            return False
        heapq.heappush(heap, (float(value_row.min()), counter, value_row, splits, score))
        counter += 1
        return True

    branches = 1
    per_child = math.inf  # seconds per child of the last batch: the first batch is one branch
    reason = "complete"
    if not place(values, empty, scores):
        reason = "nothing left to split"
    while heap and reason == "complete":
        if time.perf_counter() >= deadline:
            reason = "time limit"
            break
        if branches >= max_branches:
            reason = "branch limit"
            break
        # a batch must end about on time: sized by the last batch's seconds per child
        left = deadline - time.perf_counter()
        most = BATCH if math.isinf(left) else max(1, min(BATCH, int(left / (
            2 * per_child + 1e-9))))
        taken = [heapq.heappop(heap) for _ in range(min(most, len(heap)))]
        children, parents = [], []
        for _, _, value_row, splits, score in taken:
            children += children_of(splits, int(score.argmax()), widths)
            parents += [value_row, value_row]
        stacked = [torch.cat([c[k] for c in children]) for k in range(len(widths))]
        count = len(children)
        timed = time.perf_counter()
        child_bounds = layer_bounds(chain, lower[None].expand(count, -1),
                                    upper[None].expand(count, -1), stacked, within=bounds)
        child_values = spec_lower(chain, spec[None].expand(count, -1, -1), child_bounds,
                                  steps=slope_steps, dual_steps=DUAL_STEPS,
                                  deadline=deadline).numpy()
        child_scores = _scores(chain, spec, child_bounds, stacked)
        per_child = (time.perf_counter() - timed) / count
        branches += count
        for i, child in enumerate(children):
            value_row = np.maximum(child_values[i], parents[i])
            if not place(value_row, child, child_scores[i]):
                reason = "nothing left to split"
    lowest = final.copy()
    for item in heap:
        np.minimum(lowest, item[2], out=lowest)
    complete = not heap and reason == "complete"
    return BranchedLower(lowest, complete, branches, len(heap), reason)
