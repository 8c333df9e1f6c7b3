"""``estimate(model_or_path, ...)``: run methods, collect Bounds, report the interval.

The interval is ``[best lower, best upper]``: the largest value attained by a witness and
the smallest proven upper bound (an ``exact`` value counts as both). Bounds that are not
proven (kind ``estimate``) or whose status is not ``ok`` are listed but never used. A best
lower above the best upper would mean a bug in one of them: the report says so instead of
printing an empty interval.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import torch

from lipkit.errors import InvalidArgumentError, LipkitError, check_seed, check_time_limit
from lipkit.estimate.bound import Bound, norm_name
from lipkit.estimate.domain import DOMAIN_KEYS, Domain
from lipkit.estimate.importers import load_network
from lipkit.estimate.network import Network, NotApplicableError
from lipkit.estimate.reference import ModelReference
from lipkit.estimate.registry import COSTS, METHODS, Options, get_method, option_fields

#: the default wall-clock budget of a run, in seconds (a 2-core machine answers within it)
DEFAULT_BUDGET = 60.0


@dataclass
class Report:
    """The bounds of every method run, and the interval they prove."""

    network: Network
    norm: str
    bounds: list[Bound] = field(default_factory=list)
    domain: Domain | None = None  # None or global: the constant over R^n
    budget: float | None = None  # the run's wall-clock budget in seconds (None: unlimited)
    seconds: float = 0.0  # the run's wall-clock time
    interrupted: bool = False  # stopped by Ctrl-C: the interval is the best found until then

    @property
    def lower(self) -> Bound | None:
        """The best usable lower (or exact) bound."""
        usable = [b for b in self.bounds if b.usable and b.kind in ("lower", "exact")]
        return max(usable, key=lambda b: b.value, default=None)

    @property
    def upper(self) -> Bound | None:
        """The best usable upper (or exact) bound."""
        usable = [b for b in self.bounds if b.usable and b.kind in ("upper", "exact")]
        return min(usable, key=lambda b: b.value, default=None)

    @property
    def interval(self) -> tuple[float, float]:
        lower, upper = self.lower, self.upper
        return (lower.value if lower else 0.0, upper.value if upper else math.inf)

    @property
    def consistent(self) -> bool:
        """False when a lower bound exceeds an upper bound (beyond rounding): a bug."""
        low, high = self.interval
        return low <= high * (1 + 1e-6) + 1e-12

    @property
    def gap(self) -> float:
        """upper / lower (inf when either is missing)."""
        low, high = self.interval
        return high / low if low > 0 and math.isfinite(high) else math.inf

    def to_dict(self) -> dict:
        low, high = self.interval
        domain = self.domain or Domain.whole_space(self.network.in_features)
        return {
            "network": self.network.summary(),
            "norm": self.norm,
            "domain": domain.to_dict(),
            "budget": self.budget if self.budget is not None else "none",
            "seconds": self.seconds,
            "interrupted": self.interrupted,
            "interval": {
                "lower": low, "upper": high if math.isfinite(high) else "inf",
                "lower_method": self.lower.method if self.lower else None,
                "upper_method": self.upper.method if self.upper else None,
                "gap": self.gap if math.isfinite(self.gap) else "inf",
                "consistent": self.consistent,
            },
            "bounds": [b.to_dict() for b in self.bounds],
        }


def default_methods(network: Network, norm: str, local: bool = False) -> list[str]:
    """Every registered method that supports ``norm``, fits the network and can prove
    something (not the ``estimate`` kind, which never enters an interval; ask for those by
    name); for a local domain, those that bound the local constant and the global upper
    bounds, which bound it too."""
    return [name for name, method in METHODS.items()
            if norm in method.norms and method.kind != "estimate"
            and method.fits(network) is None and (local or not method.needs_domain)
            and (not local or method.local or method.kind == "upper")]


def _global_reason(method) -> str | None:
    """Why a method cannot run on a local domain (a global lower bound or exact value is
    not one of the local constant), or None. A global upper bound bounds every domain."""
    if method.local or method.kind == "upper":
        return None
    return "computes the global constant only; this run is over a local domain"


def run_method(name: str, network: Network, options: Options) -> Bound | list[Bound]:
    """Run one method; a method that does not apply or fails gives a Bound saying so. A
    method may return several Bounds (a MIP stopped early: its upper bound and its witness)."""
    method = get_method(name)
    if options.norm not in method.norms:
        return Bound.not_applicable(name, method.kind, options.norm,
                                    f"supports the {', '.join(method.norms)} norm(s)")
    if options.domain is not None and not options.domain.is_global:
        reason = _global_reason(method)
        if reason is not None:
            return Bound.not_applicable(name, method.kind, options.norm, reason)
    reason = method.fits(network)
    if reason is not None:
        return Bound.not_applicable(name, method.kind, options.norm, reason)
    started = time.perf_counter()
    try:
        bound = method.function(network, options)
    except NotApplicableError as error:
        return Bound.not_applicable(name, method.kind, options.norm, str(error))
    except (LipkitError, ArithmeticError, RuntimeError, ValueError, IndexError,
            torch.linalg.LinAlgError) as error:  # a method's bug fails its bound, not the run
        return Bound(math.nan, method.kind, options.norm, name, time.perf_counter() - started,
                     f"failed: {type(error).__name__}: {error}")
    if options.domain is not None and not options.domain.is_global and not method.local:
        for result in bound if isinstance(bound, list) else [bound]:
            result.details.setdefault("domain", "R^n (a global upper bound bounds every "
                                                "domain)")
    return bound


def check_budget(name: str, budget) -> float | None:
    """``None`` (also ``"none"``): unlimited; else a finite number of seconds > 0."""
    if budget is None or (isinstance(budget, str) and budget.strip().lower() == "none"):
        return None
    return check_time_limit(name, budget)


def _schedule(names: list[str]) -> list[str]:
    """The methods cheapest first (instant, cheap, expensive), in their order otherwise."""
    return sorted(names, key=lambda name: COSTS.index(get_method(name).cost))


def _share(method, remaining: float, expensive_left: int, time_limit: float | None):
    """A method's time limit under the budget: instant methods run unlimited, a cheap one
    may take half of what is left, each expensive one an equal share of it."""
    if method.cost == "instant":
        return time_limit
    share = remaining / 2 if method.cost == "cheap" else remaining / max(expensive_left, 1)
    return share if time_limit is None else min(time_limit, share)


def _method_options(names: list[str], given: dict | None, shared: dict,
                    chosen: bool = True) -> dict:
    """Each method's typed options: its entry of ``given`` with the keyword options of the
    run that it has. A keyword no registered method has, or (``chosen``: the caller named
    the methods) none of the run's, is an error naming it; so is an entry for a method not
    in the run, unless the methods were picked by what fits (a method that does not fit
    this network is left out, its entry only checked)."""
    given = dict(given or {})
    for name, entry in given.items():
        if name not in names:
            method = get_method(name)  # an unknown id lists the choices
            if chosen:
                raise InvalidArgumentError(f"options are given for {name}, which this run "
                                           f"does not use (methods: {', '.join(names)})")
            method.make_options(entry)  # its fields are still checked
    claimed: set[str] = set()
    typed = {}
    for name in names:
        method = get_method(name)
        fields = option_fields(method.options)
        own = {key: value for key, value in shared.items() if key in fields}
        claimed |= set(own)
        entry = given.get(name)  # the method's own entry wins over a run-wide keyword
        if type(entry) is method.options:
            typed[name] = entry
        else:
            typed[name] = method.make_options({**own, **(entry or {})})
    for key in shared:
        if key in claimed:
            continue
        known = [name for name, method in METHODS.items()
                 if key in option_fields(method.options)]
        if chosen or not known:
            choices = {name: ", ".join(option_fields(get_method(name).options)) or "none"
                       for name in names}
            raise InvalidArgumentError(
                f"unknown option '{key}': no method of this run has it"
                + (f" (it is an option of {', '.join(known)})" if known else "")
                + " (their options: "
                + "; ".join(f"{name}: {fields}" for name, fields in choices.items()) + ")")
    return typed


def options_for(name: str, network: Network, *, norm="2", time_limit: float | None = None,
                data: torch.Tensor | None = None, seed: int = 0,
                progress: Callable[[str], None] | None = None, **keywords) -> Options:
    """The :class:`Options` of one method called directly (``METHODS[name].function(network,
    options)``): the run's settings, the domain (``center``, ``radius``, ``box``, ``ball``,
    ``data_domain``: see :func:`estimate`) and the method's own fields; a keyword that is
    neither is an error naming the method and the keyword.

    Example:
        >>> import torch
        >>> from lipkit.estimate import METHODS, load_network, options_for
        >>> network = load_network(torch.nn.Linear(3, 2))
        >>> options = options_for("lower-jacobian", network, points=16)
        >>> METHODS["lower-jacobian"].function(network, options).details["points"]
        16
    """
    method = get_method(name)
    domain = {key: keywords.pop(key) for key in DOMAIN_KEYS if key in keywords}
    return Options(norm=norm_name(norm), time_limit=check_time_limit("time_limit", time_limit),
                   data=data, seed=check_seed("seed", seed), progress=progress,
                   domain=Domain.from_options(network.in_features, domain, where=name),
                   method=method.make_options(keywords))


def check_witnesses(bounds: list[Bound], reference: ModelReference | None) -> None:
    """Mark ``failed`` every lower bound whose witness pair does not attain its value on the
    user's own model (:mod:`lipkit.estimate.reference`)."""
    if reference is None:
        return
    for bound in bounds:
        witness = bound.details.get("witness") if isinstance(bound.details, dict) else None
        if bound.kind not in ("lower", "exact") or not bound.usable or not isinstance(
                witness, dict) or "x1" not in witness:
            continue
        reason, value = reference.attained(witness["x1"], witness["x2"], bound.value,
                                           bound.norm)
        if reason is not None:
            bound.status = f"failed: {reason}"
        elif bound.kind == "lower" and value < bound.value:  # what the user's model attains
            bound.details["imported_value"] = bound.value
            bound.value = value


def estimate(
    source,
    methods: Iterable[str] | None = None,
    norm="2",
    input_shape=None,
    time_limit: float | None = None,
    data: torch.Tensor | None = None,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
    status: Callable[[str], None] | None = None,
    budget: float | None = DEFAULT_BUDGET,
    update: Callable[[Report], None] | None = None,
    options: dict | None = None,
    **extra,
) -> Report:
    """Bound ``||f||_L`` of a model (nn.Module, .onnx / .mat path, or Network).

    Args:
        source: the model.
        methods: method ids (see ``lipkit.estimate.METHODS``); default every method that
            supports the norm and fits the network's size.
        norm: ``2``, ``1`` or ``"inf"`` (the same norm on inputs and outputs).
        input_shape: the input's shape without the batch dimension, when the model does not
            tell (convolutional torch models).
        time_limit: seconds per method, for the methods that can stop early.
        seed: the seed of the random searches (0 <= seed < 2**63).
        data: input points for data-based lower bounds (random points otherwise).
        progress: called as ``progress(method, index, count)`` before each method.
        status: called with a method's messages while it runs (e.g. LipSDP's sub-networks).
        budget: the run's wall-clock seconds (default 60; ``None`` or ``"none"``:
            unlimited). Methods run cheapest first; instant ones (products of norms) always
            run, cheap ones may take half of what is left and expensive ones share it
            equally, each stopping at its share (``time_limit`` caps every share); a method
            with no time left is listed as skipped. Ctrl-C ends the run early with the
            bounds found so far (``report.interrupted``).
        update: called with the report after each method (a live display).
        options: each method's own options, ``{method id: its options dataclass or a dict of
            its fields}`` (e.g. ``{"exact-mip": MipOptions(time_limit=5)}``,
            ``{"lower-jacobian": {"points": 1024}}``); a field the method does not have is
            an error naming the method and the field.
        extra: options given to every method of the run that has a field of that name
            (e.g. ``points=512``, ``output=0``; a name no method of the run has is an
            error), and the domain of a local constant: ``center`` and ``radius`` (a ball
            in the ``ball`` norm, ``"inf"`` by default, or ``"2"``) or ``box=(lower, upper)``, each
            optionally intersected with ``data_domain=(low, high)``
            (:class:`lipkit.estimate.domain.Domain`). With a local domain, the lower
            bounds and exact values are local ones; global upper bounds still bound it.

    Example:
        >>> import torch
        >>> from lipkit.estimate import estimate
        >>> layer = torch.nn.Linear(3, 2)
        >>> report = estimate(layer, methods=["naive", "lower-jacobian"])
        >>> low, high = report.interval
        >>> abs(low - high) / high < 1e-5   # a linear map: both ends are its norm
        True
    """
    started = time.perf_counter()
    norm = norm_name(norm)
    time_limit = check_time_limit("time_limit", time_limit)
    budget = check_budget("budget", budget)
    seed = check_seed("seed", seed)
    network = load_network(source, input_shape)
    domain = Domain.from_options(network.in_features, extra)
    shared = {key: value for key, value in extra.items() if key not in DOMAIN_KEYS}
    skipped: list[Bound] = []
    if methods is not None:
        names = list(methods)
    else:
        names = default_methods(network, norm, local=not domain.is_global)
        for name, method in METHODS.items():  # say what does not fit, and why
            if (name not in names and norm in method.norms and method.kind != "estimate"
                    and (not domain.is_global or not method.needs_domain)):
                reason = method.fits(network) or _global_reason(method)
                if reason is not None:
                    skipped.append(Bound.not_applicable(name, method.kind, norm, reason))
    for name in names:
        get_method(name)  # unknown names fail before anything runs
    given = {name: position for position, name in enumerate(names)}
    names = _schedule(names)
    typed = _method_options(names, options, shared, chosen=methods is not None)
    options = Options(norm=norm, time_limit=time_limit, data=data, seed=seed,
                      progress=status, domain=domain)
    reference = None if isinstance(source, Network) else ModelReference(source, network)
    report = Report(network, norm, domain=domain, budget=budget)
    # the methods share 85 % of the budget: the rest is the run's own work around them
    # (witness checks on the user's model, the report)
    deadline = math.inf if budget is None else started + 0.85 * budget
    expensive_left = sum(get_method(name).cost == "expensive" for name in names)
    for index, name in enumerate(names):
        method = get_method(name)
        expensive_left -= method.cost == "expensive"
        remaining = deadline - time.perf_counter()
        if method.cost != "instant" and remaining <= 0:
            report.bounds.append(Bound(math.nan, method.kind, norm, name, 0.0,
                                       f"skipped: the budget of {budget:g} s is spent"))
            continue
        limit = _share(method, remaining, expensive_left + (method.cost == "expensive"),
                       time_limit)
        if progress is not None:
            progress(name, index, len(names))
        try:
            result = run_method(name, network, replace(options, time_limit=limit,
                                                       method=typed[name]))
        except KeyboardInterrupt:
            report.interrupted = True
            for rest in names[index:]:
                report.bounds.append(Bound(math.nan, get_method(rest).kind, norm, rest, 0.0,
                                           "skipped: interrupted"))
            break
        results = result if isinstance(result, list) else [result]
        check_witnesses(results, reference)
        report.bounds.extend(results)
        report.seconds = time.perf_counter() - started
        if update is not None:
            update(report)
    # shown in the order asked for (run cheapest first)
    report.bounds.sort(key=lambda bound: given.get(bound.method, len(given)))
    report.bounds.extend(skipped)
    report.seconds = time.perf_counter() - started
    return report
