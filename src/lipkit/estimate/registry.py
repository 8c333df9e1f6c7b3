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

**Options.** What every method reads (the norm, the run's time limit, data, the seed, the
domain) is :class:`Options`; a method's own settings are a frozen dataclass derived from
:class:`MethodOptions`, registered with it (``register_method(..., options=MipOptions)``)
and read as ``options.own(MipOptions)``. Its fields are documented where it is defined;
their types are checked when it is made (an ``int`` field is an integer >= 1 unless its
metadata says ``minimum``, a ``float`` a finite number > 0, a ``Literal`` one of its
choices), and an unknown field is an error naming the method and the field. The same names
mean the same thing in every method: ``time_limit`` (seconds; the smaller of it and the
run's share applies), ``output`` (one output's constant), ``max_branches`` (branches at most
of a branch and bound), ``steps`` / ``learning_rate`` (Adam steps and step size),
``solver``, ``tolerance``, ``points``.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import numbers
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

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


class MethodOptions:
    """Base of every method's frozen options dataclass: checks each field's value against
    the field's type when the options are made (see the module docstring)."""

    def __post_init__(self) -> None:
        for name, kind in option_fields(type(self)).items():
            value = check_option(type(self).__name__, name, kind, getattr(self, name),
                                 _metadata(type(self), name))
            object.__setattr__(self, name, value)  # a NumPy integer becomes an int


@dataclass(frozen=True)
class NoOptions(MethodOptions):
    """The options of a method that has none."""


@dataclass
class Options:
    """What every method may read: the norm, the run's time limit (its share of the budget),
    data points, a seed, progress, the domain, and ``method``: its own options (an instance
    of the dataclass it registered; None: its defaults)."""

    norm: str = "2"
    time_limit: float | None = None
    data: Any = None  # a tensor of inputs (batch, *input_shape), for data-based methods
    seed: int = 0
    progress: Callable[[str], None] | None = None
    domain: Any = None  # a lipkit.estimate.domain.Domain; None: all of R^n
    method: Any = None  # the running method's own options (an instance of its dataclass)

    def own(self, kind: type):
        """The running method's options as ``kind``: those given, else its defaults."""
        if self.method is None:
            return kind()
        if type(self.method) is not kind:
            raise InvalidArgumentError(
                f"a method whose options are {kind.__name__} was given "
                f"{type(self.method).__name__}")
        return self.method

    def limit(self, own: float | None, default: float | None = None) -> float | None:
        """A method's time limit: the smaller of the run's (``time_limit``, its share of the
        budget) and the method's own ``time_limit`` option; ``default`` with neither."""
        limits = [value for value in (self.time_limit, own) if value is not None]
        return min(limits) if limits else default


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
    options: type = NoOptions  # its frozen options dataclass (a MethodOptions)
    needs_domain: bool = False  # bounds local constants only (left out of global runs)

    def make_options(self, given=None):
        """The method's options from ``given``: None (defaults), an instance of its options
        dataclass, or a dict of its fields; an unknown field is an error naming both."""
        kind = self.options
        if given is None:
            given = {}
        if type(given) is kind:
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
        values = {key: coerce(self.name, key, names[key], value)
                  for key, value in given.items()}
        try:
            return kind(**values)
        except InvalidArgumentError as error:  # a value out of its range: name the method
            raise InvalidArgumentError(f"{self.name}: {error}") from None


def option_fields(kind: type) -> dict[str, type]:
    """The fields of an options dataclass and their types (``int``, ``float``, ...)."""
    hints = typing.get_type_hints(kind)
    return {f.name: hints.get(f.name, object) for f in dataclasses.fields(kind)}


def _metadata(kind: type, name: str) -> dict:
    return next(f.metadata for f in dataclasses.fields(kind) if f.name == name)


def _alternatives(kind) -> tuple:
    """The members of a union type (``int | None`` -> ``(int, NoneType)``), else ``(kind,)``."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return typing.get_args(kind)
    return (kind,)


def _describe(kind) -> str:
    names = []
    for choice in _alternatives(kind):
        if typing.get_origin(choice) is Literal:
            names.append("one of " + ", ".join(repr(c) for c in typing.get_args(choice)))
        elif choice is type(None):
            names.append("none")
        else:
            names.append(getattr(choice, "__name__", str(choice)))
    return " or ".join(names)


def coerce(method: str, name: str, kind, value):
    """``value`` as the field's type (text from the command line included: ``"none"`` for
    None, ``"true"`` / ``"false"``, numbers); a value of the wrong kind is an error naming
    the method and the option. Ranges are checked when the options are made."""
    choices = _alternatives(kind)
    text = value.strip() if isinstance(value, str) else None
    if (value is None or (text is not None and text.lower() == "none")) and type(
            None) in choices:
        return None
    for choice in choices:
        if choice is type(None):
            continue
        if typing.get_origin(choice) is Literal:
            if value in typing.get_args(choice) or text in typing.get_args(choice):
                return text if text is not None else value
            continue
        if choice is bool:
            if isinstance(value, bool):
                return value
            if text is not None and text.lower() in ("true", "1", "yes"):
                return True
            if text is not None and text.lower() in ("false", "0", "no"):
                return False
            continue
        if choice is int:
            if isinstance(value, bool):
                continue
            if isinstance(value, numbers.Integral):
                return int(value)
            try:
                number = float(text if text is not None else value)
            except (TypeError, ValueError, OverflowError):
                continue
            if math.isfinite(number) and number == int(number):
                return int(number)
            continue
        if choice is float:
            if isinstance(value, bool):
                continue
            try:
                return float(text if text is not None else value)
            except (TypeError, ValueError, OverflowError):
                continue
        if choice is str:
            if text is not None:
                return text
            continue
        return value  # any other type: the method reads it (a tensor, ...)
    raise InvalidArgumentError(f"{method} option '{name}' must be {_describe(kind)}, got "
                               f"{value!r}")


def check_option(owner: str, name: str, kind, value, metadata=None):
    """``value`` if it is a valid value of a field of type ``kind``, else an
    InvalidArgumentError naming ``owner`` and the field. ``int``: an integer >= 1 (or >=
    ``metadata["minimum"]``); ``float``: a number > 0 (or >= ``minimum``), finite unless
    ``metadata["infinite"]``; ``bool``; a ``Literal``'s choices; None where the type allows
    it; any other type is left to the method."""
    metadata = metadata or {}
    choices = _alternatives(kind)
    if value is None and type(None) in choices:
        return None
    where = f"{owner} option '{name}'"
    for choice in choices:
        if typing.get_origin(choice) is Literal:
            if value in typing.get_args(choice):
                return value
        elif choice is bool:
            if isinstance(value, bool):
                return value
        elif choice is int:
            if isinstance(value, numbers.Integral) and not isinstance(value, bool):
                minimum = metadata.get("minimum", 1)
                if value < minimum:
                    raise InvalidArgumentError(f"{where} must be an integer >= {minimum}, "
                                               f"got {value!r}")
                return int(value)
        elif choice is float:
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                value = float(value)
                minimum = metadata.get("minimum")
                if math.isnan(value) or (math.isinf(value) and not metadata.get("infinite")):
                    raise InvalidArgumentError(f"{where} must be a finite number, got {value!r}")
                if (value < minimum) if minimum is not None else not value > 0:
                    bound = f">= {minimum:g}" if minimum is not None else "> 0"
                    raise InvalidArgumentError(f"{where} must be a number {bound}, got "
                                               f"{value!r}")
                return value
        elif choice is str:
            if isinstance(value, str):
                return value
        elif choice is not type(None):
            return value  # checked by the method
    raise InvalidArgumentError(f"{where} must be {_describe(kind)}, got {value!r}")


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
                    options: type = NoOptions, needs_domain: bool = False):
    """Decorator registering ``function(network, options) -> Bound`` under ``name``;
    ``local``: the method reads ``options.domain`` and bounds the constant over it;
    ``cost``: ``"instant"``, ``"cheap"`` or ``"expensive"``; ``options``: the frozen
    :class:`MethodOptions` dataclass of the method's own options (read as
    ``options.own(kind)``)."""
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {COSTS}, got {cost!r}")
    if not (dataclasses.is_dataclass(options) and issubclass(options, MethodOptions)
            and options.__dataclass_params__.frozen):
        raise TypeError(f"the options of {name} must be a frozen MethodOptions dataclass")

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
