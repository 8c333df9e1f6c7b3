"""Certified radii from logit margins: no input within the radius changes the prediction.

For logits ``f`` and the predicted class ``y``, a perturbation ``delta`` can only make class
``j`` win when ``(f_y - f_j)(x + delta) <= 0``. If ``f_y - f_j`` is ``L_yj``-Lipschitz in l2,
this needs ``||delta||_2 >= (f_y - f_j)(x) / L_yj``. Three sound choices of ``L_yj``
(Tsuzuku, Sato & Sugiyama, NeurIPS 2018, "Lipschitz-margin training"; Leino et al. 2021):

- ``"global"``: ``f`` is ``L``-Lipschitz as a vector map; ``||e_y - e_j|| = sqrt(2)`` gives
  ``L_yj <= sqrt(2) L`` and the radius ``margin / (sqrt(2) L)``;
- ``"per-logit"``: each logit ``f_i`` is ``L_i``-Lipschitz; ``L_yj <= L_y + L_j``, the radius
  ``min_j (f_y - f_j) / (L_y + L_j)`` (``margin / (2 L)`` when all ``L_i = L``);
- ``"pairwise"``: a bound ``L_yj`` on each difference itself, e.g. ``||w_y - w_j||_2`` times
  the bound of the body when the last layer is linear: ``min_j (f_y - f_j) / L_yj``.

:class:`LogitConstants` holds the three, with the pairwise matrix clipped by the other two so
that the pairwise radius is never smaller than the global or per-logit one. An l-infinity
radius is the l2 radius over ``sqrt(d)`` (``||delta||_2 <= sqrt(d) ||delta||_inf`` for ``d``
input entries).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from lipkit.errors import InvalidArgumentError

FORMS = ("global", "per-logit", "pairwise")


@dataclass
class LogitConstants:
    """Sound l2 Lipschitz constants of a classifier's logits, and where they come from.

    Attributes:
        whole: a bound on ``||f||_L`` (the logit vector).
        per_logit: ``(classes,)`` bounds on each ``||f_i||_L``.
        pairwise: ``(classes, classes)`` bounds on ``||f_i - f_j||_L`` (zero diagonal), never
            above ``sqrt(2) * whole`` nor ``per_logit[i] + per_logit[j]``.
        source: what proved them (``"lipkit.nn.lipschitz_bound"``,
            ``"lipkit.estimate:seqlip"``, ...).
        details: the numbers behind them (body bound, last-layer norms, methods tried).
    """

    whole: float
    per_logit: torch.Tensor
    pairwise: torch.Tensor
    source: str
    details: dict = field(default_factory=dict)

    def __post_init__(self):
        if not (math.isfinite(self.whole) and self.whole > 0):
            raise InvalidArgumentError(
                f"the Lipschitz bound of the logits must be finite and > 0, got {self.whole}"
            )
        self.per_logit = self.per_logit.detach().to(torch.float64).reshape(-1)
        classes = len(self.per_logit)
        pairwise = self.pairwise.detach().to(torch.float64)
        if pairwise.shape != (classes, classes):
            raise InvalidArgumentError(
                f"pairwise constants must be ({classes}, {classes}), got {tuple(pairwise.shape)}"
            )
        # each per-logit bound is also bounded by the whole (a row of an L-Lipschitz map)
        self.per_logit = torch.clamp(self.per_logit, max=self.whole)
        sums = self.per_logit[:, None] + self.per_logit[None, :]
        self.pairwise = torch.minimum(torch.minimum(pairwise, sums),
                                      torch.full_like(pairwise, math.sqrt(2) * self.whole))

    @classmethod
    def from_whole(cls, whole: float, classes: int, source: str) -> LogitConstants:
        """Only ``||f||_L`` is known: every other constant follows from it."""
        full = torch.full((classes,), float(whole), dtype=torch.float64)
        return cls(float(whole), full, torch.full((classes, classes), math.inf), source)

    @classmethod
    def from_last_linear(cls, body: float, weight: torch.Tensor, source: str,
                         whole: float | None = None) -> LogitConstants:
        """``f = W g + b`` with ``g`` ``body``-Lipschitz: ``L_yj = body ||w_y - w_j||_2``,
        ``L_i = body ||w_i||_2``, ``L = body ||W||_2`` (or ``whole`` when smaller)."""
        weight = weight.detach().to(torch.float64)
        rows = weight.norm(dim=1)
        differences = torch.cdist(weight, weight)
        spectral = float(torch.linalg.matrix_norm(weight, ord=2))
        bound = body * spectral if whole is None else min(whole, body * spectral)
        details = {"body": body, "last_layer_spectral_norm": spectral}
        return cls(bound, body * rows, body * differences, source, details)

    def to_dict(self) -> dict:
        return {"whole": self.whole, "per_logit_max": float(self.per_logit.max()),
                "pairwise_max": float(self.pairwise.max()), "source": self.source,
                "details": self.details}


def certified_radius(logits: torch.Tensor, constants: LogitConstants | float,
                     form: str = "pairwise", norm="2", input_dim: int | None = None,
                     labels: torch.Tensor | None = None) -> torch.Tensor:
    """The radius around each input within which the prediction cannot change.

    ``min_{j != y} (f_y - f_j) / L_yj`` with ``L_yj`` of the chosen ``form`` (module
    docstring); ``y`` is the predicted class, or ``labels`` when given (then a misclassified
    input gets radius 0). l-infinity radii divide the l2 radius by ``sqrt(input_dim)``.

    Args:
        logits: ``(batch, classes)``.
        constants: a :class:`LogitConstants`, or a float ``L`` bounding ``||f||_L``.
        form: ``"global"``, ``"per-logit"`` or ``"pairwise"``.
        norm: ``2`` or ``"inf"`` (the perturbation's norm).
        input_dim: number of input entries, needed for ``norm="inf"``.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[3.0, 1.0, 0.0]])
        >>> float(certified_radius(logits, 1.0, form="global")) == 2 / 2 ** 0.5
        True
    """
    if form not in FORMS:
        raise InvalidArgumentError(f"unknown certificate form '{form}'; choose from "
                                   f"{', '.join(FORMS)}")
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise InvalidArgumentError(f"logits must be (batch, classes >= 2), got "
                                   f"{tuple(logits.shape)}")
    classes = logits.shape[1]
    if not isinstance(constants, LogitConstants):
        constants = LogitConstants.from_whole(float(constants), classes, "given")
    if len(constants.per_logit) != classes:
        raise InvalidArgumentError(f"constants for {len(constants.per_logit)} classes, logits "
                                   f"have {classes}")
    logits = logits.detach().to(torch.float64)
    target = logits.argmax(1) if labels is None else labels.to(logits.device).long()
    gaps = logits.gather(1, target[:, None]) - logits  # f_y - f_j
    if form == "global":
        denominator = torch.full_like(gaps, math.sqrt(2) * constants.whole)
    elif form == "per-logit":
        per_logit = constants.per_logit.to(logits.device)
        denominator = per_logit[target][:, None] + per_logit[None, :]
    else:
        denominator = constants.pairwise.to(logits.device)[target]
    ratio = gaps / denominator.clamp_min(1e-300)
    ratio[torch.arange(len(target)), target] = math.inf
    radius = ratio.min(1).values.clamp_min(0.0)
    radius = torch.where(torch.isfinite(radius), radius, torch.zeros_like(radius))
    if _norm(norm) == "inf":
        if input_dim is None:
            raise InvalidArgumentError("an l-infinity radius needs input_dim")
        radius = radius / math.sqrt(input_dim)
    return radius


def _norm(norm) -> str:
    text = str(norm).lower().replace("l", "")
    if text in ("2", "2.0"):
        return "2"
    if text in ("inf", "infinity"):
        return "inf"
    raise InvalidArgumentError(f"unsupported perturbation norm {norm!r}; choose from 2, inf")
