"""The registry of estimation methods: one entry per method id (kebab-case).

A method is a function ``(network, options) -> Bound`` (or a list of Bounds, e.g. the two
ends of a MIP stopped early) registered with
:func:`register_method`, which records its kind, the norms it supports, and a size test that
says whether it fits a network (``lipkit estimate`` with no ``--method`` runs every method
that fits). Later methods (MIP, fast compositional bounds, ...) register themselves the same
way, without changes elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lipkit.errors import UnknownMethodError


@dataclass
class Options:
    """What every method may read: the norm, a time limit, data points, a seed, progress."""

    norm: str = "2"
    time_limit: float | None = None
    data: Any = None  # a tensor of inputs (batch, *input_shape), for data-based methods
    seed: int = 0
    progress: Callable[[str], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    domain: Any = None  # a lipkit.estimate.domain.Domain; None: read from extra


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


METHODS: dict[str, Method] = {}


def _always(network) -> None:
    return None


def register_method(name: str, kind: str, norms=("2",), fits: Callable = _always,
                    summary: str = "", local: bool = False):
    """Decorator registering ``function(network, options) -> Bound`` under ``name``;
    ``local``: the method reads ``options.domain`` and bounds the constant over it."""

    def decorate(function):
        METHODS[name] = Method(name, kind, tuple(norms), function, fits,
                               summary or (function.__doc__ or "").strip().splitlines()[0],
                               local)
        return function

    return decorate


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise UnknownMethodError("estimation method", name, METHODS)
    return METHODS[name]
