"""The registry of estimation methods: one entry per method id (kebab-case).

A method is a function ``(network, options) -> Bound`` (or a list of Bounds, e.g. the two
ends of a MIP stopped early) registered with
:func:`register_method`, which records its kind, the norms it supports, and a size test that
says whether it fits a network (``lipkit estimate`` with no ``--method`` runs every method
that fits). Later methods (MIP, fast compositional bounds, ...) register themselves the same
way, without changes elsewhere.

lipkit's own methods are listed in :data:`BUILT_IN` with the module that defines them, and a
module is imported the first time one of its methods is looked up: ``lipkit estimate
model.mat -m naive`` never imports the solvers (cvxpy, HiGHS, scipy.optimize). A method whose
optional dependency is missing (the ``all`` extra) is simply not in :data:`METHODS`.

``cost`` orders a run under a budget (:func:`lipkit.estimate.report.estimate`):
``"instant"`` methods (products of norms) always run; ``"cheap"`` ones get what is left;
``"expensive"`` ones (solvers, searches) share what is left and must stop at their share.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lipkit.errors import InvalidArgumentError, UnknownMethodError

#: lipkit's own methods and the modules (in lipkit.estimate) that register them
BUILT_IN = {  # in the order a run takes them within each cost class (the most telling first)
    "naive": "naive", "autolip": "naive", "lower-jacobian": "jacobian", "seqlip": "seqlip",
    "compositional": "compositional", "exact-bab": "bab", "exact-mip": "mip",
    "local-crown": "local_crown", "lp-jacobian": "lp_jacobian", "shor": "shor",
    "lipsdp-neuron": "lipsdp", "lipsdp-layer": "lipsdp", "lower-gradient": "gradient_ascent",
    "lower-adversarial": "adversarial", "lipsdp-network": "lipsdp",
    "lipsdp-network-rand": "lipsdp",
}
#: the order a run takes its methods in, cheapest first
COSTS = ("instant", "cheap", "expensive")


@dataclass(frozen=True)
class NoOptions:
    """The options of a method that has none."""


@dataclass
class Options:
    """What every method may read: the norm, a time limit, data points, a seed, progress,
    the domain, and ``method``: its own options (the frozen dataclass it registered)."""

    norm: str = "2"
    time_limit: float | None = None
    data: Any = None  # a tensor of inputs (batch, *input_shape), for data-based methods
    seed: int = 0
    progress: Callable[[str], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    domain: Any = None  # a lipkit.estimate.domain.Domain; None: read from extra
    method: Any = None  # the running method's own options (an instance of its dataclass)

    def own(self, kind: type):
        """The running method's options as ``kind``: those ``estimate`` made, else (a method
        called directly) its fields found in ``extra``, else its defaults."""
        if isinstance(self.method, kind):
            return self.method
        fields = option_fields(kind)
        return kind(**{key: coerce(kind.__name__, key, fields[key], value)
                       for key, value in self.extra.items() if key in fields})


@dataclass
class Method:
    """A registered estimation method."""

    name: str
    kind: str
    norms: tuple[str, ...]
    function: Callable
    fits: Callable  # (network) -> str | None: None when it fits, else the reason it does not
    summary: str = ""
    local: bool = False  # bounds the constant over a local domain (else only over R^n)
    cost: str = "expensive"  # "instant", "cheap" or "expensive" (see the module docstring)
    options: type | None = NoOptions  # its frozen options dataclass (None: reads Options.extra)
    needs_domain: bool = False  # bounds local constants only (left out of global runs)

    def make_options(self, given=None):
        """The method's options from ``given``: None (defaults), an instance of its options
        dataclass, or a dict of its fields; an unknown field is an error naming both."""
        kind = self.options
        if kind is None:
            return None
        if given is None:
            return kind()
        if isinstance(given, kind):
            return given
        if not isinstance(given, dict):
            raise InvalidArgumentError(
                f"options of {self.name} must be a {kind.__name__} or a dict, got "
                f"{type(given).__name__}")
        names = option_fields(kind)
        for key in given:
            if key not in names:
                raise InvalidArgumentError(
                    f"{self.name} has no option '{key}'; its options: "
                    f"{', '.join(names) or 'none'}")
        try:
            return kind(**{key: coerce(self.name, key, names[key], value)
                           for key, value in given.items()})
        except TypeError as error:
            raise InvalidArgumentError(f"options of {self.name}: {error}") from None


def option_fields(kind: type) -> dict[str, type]:
    """The fields of an options dataclass and their types (``int``, ``float``, ...)."""
    hints = typing.get_type_hints(kind)
    return {f.name: hints.get(f.name, object) for f in dataclasses.fields(kind)}


def coerce(method: str, name: str, kind, value):
    """``value`` as the field's type (text from the command line included); a value of the
    wrong kind is an error naming the method and the option."""
    origin = typing.get_origin(kind)
    choices = typing.get_args(kind) if origin is not None else (kind,)
    if value is None and type(None) in choices:
        return None
    for choice in choices:
        if choice is type(None):
            continue
        try:
            if choice is bool:
                if isinstance(value, str):
                    if value.lower() in ("true", "1", "yes"):
                        return True
                    if value.lower() in ("false", "0", "no"):
                        return False
                    continue
                return bool(value)
            if choice is int:
                number = float(value) if isinstance(value, str) else value
                if isinstance(number, bool) or int(number) != number:
                    continue
                return int(number)
            if choice is float:
                return float(value)
            if choice is str:
                return str(value)
            return value
        except (TypeError, ValueError, OverflowError):
            continue
    raise InvalidArgumentError(f"{method} option '{name}' must be {kind}, got {value!r}")


class _Registry(dict):
    """The registered methods; built-in ones are imported when first looked up."""

    def _load(self, name: str) -> bool:
        if dict.__contains__(self, name):
            return True
        module = BUILT_IN.get(name)
        if module is None:
            return False
        try:
            importlib.import_module(f"lipkit.estimate.{module}")
        except ImportError as error:  # an optional solver (the "all" extra) is missing
            if getattr(error, "name", "") and str(error.name).startswith("lipkit"):
                raise
            return False
        return dict.__contains__(self, name)

    def _load_all(self) -> None:
        for name in BUILT_IN:
            self._load(name)

    def __getitem__(self, name):
        self._load(name)
        return dict.__getitem__(self, name)

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and self._load(name)

    def get(self, name, default=None):
        return self[name] if name in self else default  # noqa: SIM401 - loads on demand

    def keys(self):
        self._load_all()
        return dict.keys(self)

    def values(self):
        self._load_all()
        return dict.values(self)

    def items(self):
        self._load_all()
        return dict.items(self)

    def __iter__(self):
        self._load_all()
        return dict.__iter__(self)

    def __len__(self) -> int:
        self._load_all()
        return dict.__len__(self)


METHODS: dict[str, Method] = _Registry()


def _always(network) -> None:
    return None


def register_method(name: str, kind: str, norms=("2",), fits: Callable = _always,
                    summary: str = "", local: bool = False, cost: str = "expensive",
                    options: type | None = None, needs_domain: bool = False):
    """Decorator registering ``function(network, options) -> Bound`` under ``name``;
    ``local``: the method reads ``options.domain`` and bounds the constant over it;
    ``cost``: ``"instant"``, ``"cheap"`` or ``"expensive"``; ``options``: the frozen
    dataclass of the method's own options (read as ``options.method``), or None for a
    method that still reads the untyped ``options.extra``."""
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {COSTS}, got {cost!r}")

    def decorate(function):
        METHODS[name] = Method(name, kind, tuple(norms), function, fits,
                               summary or (function.__doc__ or "").strip().splitlines()[0],
                               local, cost, options, needs_domain)
        return function

    return decorate


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise UnknownMethodError("estimation method", name, METHODS)
    return METHODS[name]
