"""The ``Bound`` record every estimation method returns.

``kind`` says what the number is, and only what can be proven:

- ``"lower"``: the value attained by a real witness (a point ``x`` whose Jacobian has that
  norm, or a pair ``(x1, x2)`` with that ratio), returned in ``details["witness"]``;
- ``"upper"``: a proven upper bound (a composition of certified norms, or an SDP whose
  certificate was checked in floating point);
- ``"exact"``: both at once (a MIP solved to optimality, a linear network);
- ``"estimate"``: a number with no proof either way (a heuristic, an unverifiable solver
  answer); never used to build an interval.

``status`` is ``"ok"`` or a short reason (``"not applicable: ..."``, ``"uncertified: ..."``,
``"time limit"``, ``"failed: ..."``); a bound whose status is not ``"ok"`` is shown but not
used in the interval. ``"ok: <note>"`` is a proven bound with a note (a MIP stopped at its time
limit: ``"ok: time limit reached, gap 0.08"``), used like ``"ok"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

KINDS = ("lower", "upper", "exact", "estimate")


def norm_name(norm) -> str:
    """'2', '1' or 'inf' for the accepted spellings of a norm."""
    text = str(norm).lower().replace("l", "").strip()
    if text in ("2", "2.0"):
        return "2"
    if text in ("1", "1.0"):
        return "1"
    if text in ("inf", "infinity", "math.inf"):
        return "inf"
    from lipkit.errors import InvalidArgumentError

    raise InvalidArgumentError(f"unsupported norm {norm!r}; choose from 1, 2, inf")


def norm_value(norm) -> float:
    """The numeric p of a norm name (2, 1 or math.inf)."""
    return {"2": 2.0, "1": 1.0, "inf": math.inf}[norm_name(norm)]


@dataclass
class Bound:
    """One method's answer about ``||f||_L`` (see the module docstring)."""

    value: float
    kind: str
    norm: str
    method: str
    seconds: float = 0.0
    status: str = "ok"
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown bound kind '{self.kind}'; choose from {KINDS}")
        self.norm = norm_name(self.norm)
        self.value = float(self.value)

    @property
    def usable(self) -> bool:
        """Whether the bound may enter the interval: status ok and a finite value."""
        proven = self.status == "ok" or self.status.startswith("ok: ")
        return proven and math.isfinite(self.value) and self.kind != "estimate"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: tensors become nested lists, non-finite floats strings."""
        return {
            "method": self.method,
            "kind": self.kind,
            "value": _plain(self.value),
            "norm": self.norm,
            "seconds": self.seconds,
            "status": self.status,
            "details": _plain(self.details),
        }

    @classmethod
    def not_applicable(cls, method: str, kind: str, norm, reason: str) -> Bound:
        return cls(math.nan, kind, norm, method, 0.0, f"not applicable: {reason}")


def _plain(value):
    if isinstance(value, torch.Tensor):
        return _plain(value.detach().cpu().tolist())
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
