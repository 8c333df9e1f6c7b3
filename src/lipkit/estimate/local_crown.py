"""Local Lipschitz constants by linear bound propagation through the Clarke Jacobian, refined
by branch and bound on unstable neurons (Shi, Wang, Zhang, Kolter & Hsieh, NeurIPS 2022).

For each row ``c`` of a specification (an output, or a margin ``f_y - f_j``), the local
constant of ``c^T f`` over a box ``D`` is at most the largest dual norm of its gradient over
the derivative ranges the forward bounds allow (:mod:`lipkit.estimate.engine.gradient`; the
product of a derivative and a backward weight relaxed by the chord of its McCormick planes).
Branch and bound refines it: a branch fixes the sign of some unstable pre-activations
(``z >= 0`` or ``z <= 0``), which fixes their derivatives and tightens every later bound
(:func:`lipkit.estimate.engine.layer_bounds` with splits). The splits are also linear
constraints on the inputs (exact for the first layer, through the linear bounds for later
ones), and every minimum over the box is taken over their region by Lagrangian duality:
the other neurons' bounds of every layer tighten (the derivatives are linked to the forward
pre-activations), and a branch whose splits cannot hold together is found empty (on random
10-50-50-1 nets at l-inf radius 0.1, only 13-38 of the 256-1024 sign patterns of the first
layer's unstable neurons occur in the box). The branches cover ``D``, and every gradient at a
point of ``D`` where no pre-activation is 0 is one of a branch's; Clarke's gradients are
convex hulls of limits of those, so the largest branch bound bounds the local constant.
Branches are taken by largest bound first, batched, split on the neuron whose derivative
range moves the gradient most, earlier layers first (:meth:`GradientBounds.split_scores`),
and closed when their bound is at most the level sought: the best witness (``1 + 1e-9``),
or a caller's target (a certificate only needs ``L < margin / eps``). A branch with nothing
left to split is a leaf: its bound is final once more steps on its multipliers have had a
chance to find it empty.

The lower end is a witness: the largest gradient norm over seeded points of ``D`` (its
centre, uniform points, and the vertices the best gradients point to) and over the leaves
of the branch and bound above it (the point deepest inside a leaf's activation region, by a
margin LP: :meth:`DenseChain.interior_point`; a leaf's bound is its pattern's gradient
norm, so the best leaf's point attains the constant), turned into a pair of points of ``D``
whose ratio is proven in float64 (:func:`lipkit.estimate.witness.step_pairs`, along the
direction the gradient stretches most).
When every branch is closed by the witness the two ends meet (to ``1e-9`` relative, plus the
witness's proven rounding margin); they stay two bounds, each with its own proof.

Piecewise-linear activations (ReLU, LeakyReLU, the identity) only for the branch and bound;
smooth ones get the single bound. The norms: ``inf`` (l-inf inputs; the l1 norm of the
gradient), ``1`` and ``2`` (from the bounds on each gradient entry, looser). For a network
with several outputs and no option ``output`` / ``spec`` (:class:`LocalCrownOptions`), the
value is the
largest row's (l-inf), the sum of the rows' (l1) or their root sum of squares (l2): upper
bounds on the induced norm of the Jacobian.
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from lipkit.errors import InvalidArgumentError, LipkitError, check_finite_tensor
from lipkit.estimate.bound import Bound, norm_name
from lipkit.estimate.domain import Domain, domain_of
from lipkit.estimate.engine import DenseChain, GradientBounds, layer_bounds
from lipkit.estimate.engine.branching import children_of
from lipkit.estimate.engine.forward import DUAL_STEPS
from lipkit.estimate.network import Affine, Matrix, Network, Node, NotApplicableError
from lipkit.estimate.registry import MethodOptions, Options, register_method

DEFAULT_TIME_LIMIT = 30.0
DEFAULT_MAX_BRANCHES = 20_000
_TOLERANCE = 1e-9
_BATCH = 16
_SAMPLES = 512
_LEAF_DUAL_STEPS = 30  # a leaf's last chance to be found empty
_LEAF_WITNESSES = 4  # leaves per batch whose region is searched for a witness


@dataclass
class LocalConstants:
    """Per row: the proven upper bound, the witnessed lower bound and its pair of points."""

    upper: np.ndarray
    lower: np.ndarray
    pairs: list[tuple[torch.Tensor, torch.Tensor] | None]
    branches: int = 0
    open_branches: int = 0
    complete: bool = False
    seconds: float = 0.0
    status: str = "ok"
    details: dict = field(default_factory=dict)


def _fits(network: Network) -> str | None:
    try:
        DenseChain.of(network)
    except NotApplicableError as error:
        return str(error)
    return None


def _row_network(network: Network, row: torch.Tensor) -> Network:
    """``x -> row . f(x)`` as a Network (for the witness's proven pair ratio)."""
    last = len(network.nodes) - 1
    node = Node("specification", Affine(Matrix(row[None, :].to(torch.float64))), [last])
    return Network(network.input_shape, [*network.nodes, node], network.source)


def _dual(gradients: torch.Tensor, norm: str) -> torch.Tensor:
    p = {"inf": 1, "1": math.inf, "2": 2}[norm]
    return torch.linalg.vector_norm(gradients, ord=p, dim=-1)


def _direction(gradients: torch.Tensor, norm: str) -> torch.Tensor:
    """Per gradient (rows of ``(k, n)``), the input direction of unit ``norm`` along which
    it stretches most: its signs (l-inf; a zero entry's sign taken as +1), its largest
    entry's coordinate (l1), itself (l2)."""
    if norm == "inf":
        direction = torch.sign(gradients)
        direction[direction == 0] = 1.0
        return direction
    if norm == "1":
        direction = torch.zeros_like(gradients)
        rows, largest = torch.arange(len(gradients)), gradients.abs().argmax(dim=1)
        direction[rows, largest] = torch.where(gradients[rows, largest] < 0, -1.0, 1.0).to(
            gradients.dtype)
        return direction
    return torch.where((gradients == 0).all(dim=1, keepdim=True),
                       torch.ones_like(gradients), gradients)


def _whole_output_witness(network, chain, domain: Domain, norm: str, seed: int, pairs):
    """A pair for the norm of the whole output (l1, l2: the rows' own pairs only bound one
    output each): at the domain's centre, random points and the rows' witness points, the
    direction the point's Jacobian stretches most (its top right singular vector in l2, its
    largest column's coordinate in l1), its ratio certified. ``(ratio, x1, x2)`` or None."""
    from lipkit.estimate.witness import jacobians, step_pairs

    n = chain.inputs
    points = [torch.from_numpy((domain.lower + domain.upper) / 2)[None],
              domain.sample(_SAMPLES, (n,), seed + 1).reshape(-1, n)]
    points += [pair[0].reshape(1, n).to(torch.float64) for pair in pairs if pair is not None]
    x = domain.project(torch.cat(points))
    jac = jacobians(network, x.reshape(-1, *network.input_shape))  # (points, outputs, n)
    if norm == "2":
        _, singular, vh = torch.linalg.svd(jac)
        stretch, direction = singular[:, 0], vh[:, 0, :]
    else:
        columns = jac.abs().sum(dim=1)  # (points, n)
        stretch, largest = columns.max(dim=1)
        direction = torch.zeros_like(columns)
        direction[torch.arange(len(x)), largest] = 1.0
    order = torch.argsort(stretch, descending=True)[:4]
    ratio, first, second = step_pairs(network, x[order].reshape(
        -1, *network.input_shape), direction[order], norm, domain)
    best = int(ratio.argmax())
    if not float(ratio[best]) > 0:
        return None
    return float(ratio[best]), first[best].detach(), second[best].detach()


def _witnesses(network, chain, spec, domain: Domain, norm: str, seed: int, extra_points=None):
    """Per row, the best witnessed lower bound and its pair (module docstring)."""
    n = chain.inputs
    points = [torch.from_numpy((domain.lower + domain.upper) / 2)[None]]
    points.append(domain.sample(_SAMPLES, (n,), seed).reshape(-1, n))
    if extra_points is not None:
        points.append(extra_points.reshape(-1, n))
    x = domain.project(torch.cat(points))
    with torch.enable_grad():
        x = x.clone().requires_grad_(True)
        out = chain.forward(x) @ spec.T
        grads = torch.stack([torch.autograd.grad(out[:, r].sum(), x, retain_graph=True)[0]
                             for r in range(spec.shape[0])], dim=1)  # (points, rows, n)
    # the vertices the gradients point to (l-inf): a second round of points
    if domain.center is None or domain.ball == "inf":
        best = _dual(grads, norm).argmax(dim=0)
        signs = torch.sign(grads[best, torch.arange(spec.shape[0])])
        centre = torch.from_numpy((domain.lower + domain.upper) / 2)
        half = torch.from_numpy((domain.upper - domain.lower) / 2)
        vertices = domain.project(centre + signs * half * (1 - 1e-9))
        x2 = vertices.clone().requires_grad_(True)
        with torch.enable_grad():
            out = chain.forward(x2) @ spec.T
            more = torch.stack([torch.autograd.grad(out[:, r].sum(), x2, retain_graph=True)[0]
                                for r in range(spec.shape[0])], dim=1)
        x = torch.cat([x.detach(), vertices])
        grads = torch.cat([grads, more])
    from lipkit.estimate.witness import step_pairs

    values = _dual(grads, norm)  # (points, rows)
    lower = np.zeros(spec.shape[0])
    pairs: list = [None] * spec.shape[0]
    for r in range(spec.shape[0]):
        order = torch.argsort(values[:, r], descending=True)[:4]
        row_net = _row_network(network, spec[r])
        ratio, first, second = step_pairs(row_net, x[order].detach().reshape(
            -1, *network.input_shape), _direction(grads[order, r], norm), norm, domain)
        best = int(ratio.argmax())
        if float(ratio[best]) > 0:
            lower[r] = float(ratio[best])
            pairs[r] = (first[best].detach(), second[best].detach())
    return lower, pairs


def _leaf_witness(network, chain, spec, domain, norm, bounds, index, values, lower, pairs):
    """A witness from a leaf of the branch and bound: the point deepest inside its pattern's
    region (:meth:`DenseChain.interior_point`), and a pair from it along the direction its
    gradient stretches most (its ratio certified); raises ``lower`` / ``pairs`` in place for
    the rows it beats."""
    from lipkit.estimate.witness import step_pairs

    signs = []
    for low, high in zip(bounds.lower, bounds.upper, strict=True):
        low, high = low[index], high[index]
        signs.append(torch.where(low >= 0, 1, torch.where(high <= 0, -1, torch.where(
            high >= -low, 1, -1))))
    try:
        found = chain.interior_point(signs, domain.lower, domain.upper)
    except LipkitError:
        return
    if found is None or not bool(domain.contains(found[0][None])[0]):
        return
    point = found[0][None]
    gradient = chain.pattern_gradient(point, spec[None])[0]  # (rows, n)
    for r in np.flatnonzero(values > lower * (1 + _TOLERANCE)):
        ratio, first, second = step_pairs(_row_network(network, spec[r]), point.reshape(
            1, *network.input_shape), _direction(gradient[r][None], norm), norm, domain)
        if float(ratio[0]) > lower[r]:
            lower[r] = float(ratio[0])
            pairs[r] = (first[0].detach(), second[0].detach())


def local_constants(network: Network, spec: torch.Tensor | None, domain: Domain, norm="inf",
                    time_limit: float | None = DEFAULT_TIME_LIMIT, targets=None, seed: int = 0,
                    max_branches: int = DEFAULT_MAX_BRANCHES, chain: DenseChain | None = None,
                    witnesses: bool = True, bounds=None) -> LocalConstants:
    """The local constants of ``spec @ f`` (rows; default every output) over ``domain``.

    Args:
        targets: per row, a level below which the upper bound need not go (closing a
            branch at it; a certificate's ``margin / eps``); default: the witnesses.
        witnesses: search the witnessed lower bounds (else 0).
        bounds: :class:`~lipkit.estimate.engine.LayerBounds` already proven over the
            domain's box (one box), which every branch's bounds are intersected with.
    """
    started = time.perf_counter()
    norm = norm_name(norm)
    if domain.is_global:
        raise NotApplicableError("local-crown bounds local constants: give a box or a "
                                 "center and radius")
    chain = chain or DenseChain.of(network)
    with chain.threads():
        return _local_constants(network, spec, domain, norm, time_limit, targets, seed,
                                max_branches, chain, witnesses, started, bounds)


def _local_constants(network, spec, domain, norm, time_limit, targets, seed, max_branches,
                     chain, witnesses, started, known=None) -> LocalConstants:
    if spec is None:
        spec = torch.eye(chain.outputs, dtype=torch.float64)
    spec = torch.as_tensor(spec, dtype=torch.float64).reshape(-1, chain.outputs)
    rows = spec.shape[0]
    deadline = math.inf if time_limit is None else started + float(time_limit)
    lower_box = torch.from_numpy(domain.lower)[None]
    upper_box = torch.from_numpy(domain.upper)[None]
    if witnesses:
        lower, pairs = _witnesses(network, chain, spec, domain, norm, seed)
    else:
        lower, pairs = np.zeros(rows), [None] * rows
    target = np.zeros(rows) if targets is None else np.asarray(targets, dtype=float)

    def level():
        return np.maximum(lower * (1 + _TOLERANCE), target)

    def evaluate(splits, dual_steps=DUAL_STEPS):
        batch = splits[0].shape[0] if splits else 1
        bounds = layer_bounds(chain, lower_box.expand(batch, -1), upper_box.expand(batch, -1),
                              splits, dual_steps=dual_steps, within=known)
        gradient = GradientBounds(chain, spec[None].expand(batch, -1, -1), bounds,
                                  deadline=deadline)
        values = gradient.norm_upper(norm)
        values = torch.where(bounds.feasible[:, None], values,
                             torch.full_like(values, -math.inf))
        return values.numpy(), gradient.split_scores(), bounds

    widths = [layer.outputs for layer in chain.hidden]
    root = [torch.zeros(1, w, dtype=torch.int8) for w in widths]
    timed = time.perf_counter()
    values, scores, _ = evaluate(root)
    per_child = time.perf_counter() - timed  # seconds: a batch must fit in the time left
    heap = []  # (-priority, counter, values (rows,), splits, scores)
    closed = np.full(rows, -math.inf)
    counter = 0
    branches = 1

    def push(value_row, splits, score):
        nonlocal counter, closed
        over = value_row > level()
        if not over.any() or not chain.piecewise_linear:
            closed = np.maximum(closed, value_row)
            if over.any():  # no branching: stays open, as its own bound
                heapq.heappush(heap, (-1.0, counter, value_row, splits, score))
                counter += 1
            return
        priority = float(np.max((value_row - level()) / np.maximum(level(), 1e-300)))
        heapq.heappush(heap, (-priority, counter, value_row, splits, score))
        counter += 1

    push(values[0], root, [s[0] for s in scores])
    out_of_time = False
    if chain.piecewise_linear:
        while heap and time.perf_counter() < deadline and branches < max_branches:
            taken = []
            left = deadline - time.perf_counter()
            most = _BATCH if math.isinf(left) else min(_BATCH, int(left / (2 * per_child
                                                                            + 1e-9)))
            if most == 0:  # not even one branching fits: stop on time
                out_of_time = True
                break
            while heap and len(taken) < most:
                item = heapq.heappop(heap)
                if (item[2] > level()).any():
                    taken.append(item)
                else:
                    closed = np.maximum(closed, item[2])
            if not taken:
                break
            children, parents, leaves = [], [], []
            for _, _, value_row, splits, score in taken:
                flat = torch.cat([s.double() * (split[0] == 0) for s, split in
                                  zip(score, splits, strict=True)]
                                 or [torch.zeros(1, dtype=torch.float64)])
                if float(flat.max()) <= 0:  # nothing left to split (no hidden unit): a leaf
                    leaves.append((value_row, splits))
                    continue
                children += children_of(splits, int(flat.argmax()), widths)
                parents += [value_row, value_row]
            if leaves:
                # a leaf's bound is final: its pattern's gradient, unless its region is
                # empty, which more steps on the multipliers may prove
                stacked = [torch.cat([leaf[1][k] for leaf in leaves])
                           for k in range(len(widths))]
                values, _, bounds = evaluate(stacked, _LEAF_DUAL_STEPS)
                final = np.minimum(np.stack([leaf[0] for leaf in leaves]), values)
                closed = np.maximum(closed, final.max(axis=0))
                if witnesses:  # a leaf above the witness: its pattern may be attained
                    for index in np.argsort(-(final / np.maximum(lower, 1e-300)).max(
                            axis=1))[:_LEAF_WITNESSES]:
                        if (final[index] > lower * (1 + _TOLERANCE)).any():
                            _leaf_witness(network, chain, spec, domain, norm, bounds,
                                          int(index), final[index], lower, pairs)
            if not children:
                continue
            stacked = [torch.cat([c[k] for c in children]) for k in range(len(widths))]
            timed = time.perf_counter()
            values, scores, _ = evaluate(stacked)
            per_child = (time.perf_counter() - timed) / len(children)
            branches += len(children)
            for i, child in enumerate(children):
                value_row = np.minimum(values[i], parents[i])
                if np.all(value_row == -math.inf):
                    continue  # an empty branch
                push(value_row, child, [s[i] for s in scores])
    open_values = np.max([item[2] for item in heap], axis=0) if heap else np.full(
        rows, -math.inf)
    upper = np.maximum(closed, open_values)
    upper = np.maximum(upper, 0.0)
    complete = not heap
    seconds = time.perf_counter() - started
    status = "ok"
    if heap:
        reason = "time limit" if out_of_time or time.perf_counter() >= deadline else (
            f"{max_branches} branches" if branches >= max_branches else "no branching")
        status = f"ok: {reason} reached, {len(heap)} branches open"
    return LocalConstants(upper, lower, pairs, branches, len(heap), complete, seconds, status)


@dataclass(frozen=True)
class LocalCrownOptions(MethodOptions):
    """Options of ``local-crown``."""

    #: seconds at most (None: the run's share, else 30 s)
    time_limit: float | None = None
    #: branches at most of the branch and bound
    max_branches: int = DEFAULT_MAX_BRANCHES
    #: one output's constant, by its index (None: every output's, see the module docstring)
    output: int | None = field(default=None, metadata={"minimum": 0})
    #: rows ``c`` whose ``c^T f`` are bounded (a (rows, outputs) tensor; e.g. margins)
    spec: torch.Tensor | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.spec is not None:
            try:
                spec = torch.as_tensor(self.spec, dtype=torch.float64)
            except (TypeError, ValueError, RuntimeError):
                raise InvalidArgumentError(f"LocalCrownOptions option 'spec' must be a matrix "
                                           f"of numbers, got {self.spec!r}") from None
            if spec.ndim not in (1, 2) or spec.numel() == 0:
                raise InvalidArgumentError(f"LocalCrownOptions option 'spec' must be a "
                                           f"(rows, outputs) matrix, got shape "
                                           f"{tuple(spec.shape)}")
            object.__setattr__(self, "spec", check_finite_tensor(
                "LocalCrownOptions option 'spec'", spec))
        if self.spec is not None and self.output is not None:
            raise InvalidArgumentError("LocalCrownOptions: give 'output' or 'spec', not both")


@register_method("local-crown", kind="upper", norms=("inf", "1", "2"), fits=_fits, local=True,
                 cost="cheap", needs_domain=True, options=LocalCrownOptions)
def local_crown(network: Network, options: Options) -> Bound | list[Bound]:
    """Local constant over a box or ball by bound propagation through the Clarke Jacobian
    with branch and bound (Shi et al. 2022); a witnessed lower bound beside it."""
    norm = norm_name(options.norm)
    domain = domain_of(network, options)
    own = options.own(LocalCrownOptions)
    spec, row = own.spec, own.output
    chain = DenseChain.of(network)
    if spec is not None and spec.reshape(-1).numel() % chain.outputs:
        raise InvalidArgumentError(f"local-crown: spec has {spec.numel()} entries, not rows "
                                   f"of the network's {chain.outputs} outputs")
    if row is not None:
        if not row < chain.outputs:
            raise InvalidArgumentError(
                f"local-crown: output {row} out of range (the network has {chain.outputs})")
        spec = torch.eye(chain.outputs, dtype=torch.float64)[row:row + 1]
    time_limit = options.limit(own.time_limit, DEFAULT_TIME_LIMIT)
    result = local_constants(network, spec, domain, norm, time_limit, seed=options.seed,
                             max_branches=own.max_branches, chain=chain)
    rows = len(result.upper)
    if rows == 1 or norm == "inf":
        upper, lower = float(result.upper.max()), float(result.lower.max())
    elif norm == "1":
        upper, lower = float(np.nextafter(result.upper.sum() * (1 + 1e-12), np.inf)), \
            float(result.lower.max())
    else:
        upper = float(np.nextafter(np.sqrt((result.upper ** 2).sum()) * (1 + 1e-12), np.inf))
        lower = float(result.lower.max())
    whole = None
    if rows > 1 and norm != "inf" and own.spec is None and row is None:
        whole = _whole_output_witness(network, chain, domain, norm, options.seed, result.pairs)
        if whole is not None and whole[0] > lower:
            lower = whole[0]
        else:
            whole = None
    details = {"domain": domain.description, "branches": result.branches,
               "open_branches": result.open_branches, "rows_upper": result.upper.tolist(),
               "rows_lower": result.lower.tolist(), "output": row}
    best = int(np.argmax(result.lower))
    if whole is not None:
        details["witness"] = {"x1": whole[1].reshape(network.input_shape),
                              "x2": whole[2].reshape(network.input_shape)}
    elif result.pairs[best] is not None:
        first, second = result.pairs[best]
        # a pair of the whole output's norm is checked against the model as a witness
        key = "witness" if own.spec is None and row is None else "pair"
        details[key] = {"x1": first.reshape(network.input_shape),
                        "x2": second.reshape(network.input_shape)}
    seconds = result.seconds
    # Never one "exact" number: the witness's ratio is proven below its true value (its
    # rounding bound is subtracted), so when the branch and bound closes at the witness the
    # two ends differ by that margin, and each keeps its own proof.
    status = result.status
    if result.complete and lower > 0 and upper <= lower * (1 + 1e-6):
        status = "ok: complete, the upper end meets the witness"
    bounds = [Bound(upper, "upper", norm, "local-crown", seconds, status, details)]
    if lower > 0:
        bounds.append(Bound(lower, "lower", norm, "local-crown", seconds, result.status,
                            details))
    return bounds
