"""Losses for certified robustness of Lipschitz classifiers.

Every loss takes logits ``(batch, classes)`` and integer labels and returns the batch mean.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lipkit.errors import InvalidArgumentError, UnknownMethodError, check_positive


def margin_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, offset: float = 2.12,
                         temperature: float = 0.25) -> torch.Tensor:
    """Lipschitz-margin cross-entropy: ``t * CE((f - offset e_y) / t, y)``.

    The true logit is lowered by ``offset`` before the softmax, so the loss keeps pushing
    until the margin exceeds it (Tsuzuku et al., NeurIPS 2018, with ``offset = sqrt(2) L
    eps``); the temperature ``t`` sets how soft the penalty is and rescales the loss so that
    its gradient does not vanish for small ``t`` (Prach & Lampert's offset cross-entropy,
    "1-Lipschitz Layers Compared", CVPR 2024).
    """
    temperature = check_positive("temperature", temperature)
    shifted = logits - offset * F.one_hot(labels, logits.shape[1]).to(logits.dtype)
    return temperature * F.cross_entropy(shifted / temperature, labels)


def _signs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """+1 at the true class, -1 elsewhere."""
    return 2.0 * F.one_hot(labels, logits.shape[1]).to(logits.dtype) - 1.0


def multiclass_hinge(logits: torch.Tensor, labels: torch.Tensor,
                     min_margin: float = 1.0) -> torch.Tensor:
    """One-vs-all hinge: ``sum_k relu(min_margin / 2 - s_k f_k)``, ``s_y = 1``, else -1.

    Each logit is a binary one-vs-all classifier that must clear ``min_margin / 2`` on its
    side (Serrurier et al., CVPR 2021, "Achieving robustness in classification using optimal
    transport with hinge regularization").
    """
    return F.relu(min_margin / 2 - _signs(logits, labels) * logits).sum(1).mean()


def multiclass_kantorovich_rubinstein(logits: torch.Tensor,
                                      labels: torch.Tensor) -> torch.Tensor:
    """The one-vs-all Kantorovich-Rubinstein dual, averaged over classes present.

    For class ``k``: ``E[f_k | y = k] - E[f_k | y != k]``, the Wasserstein-1 estimate between
    the class and the rest when ``f_k`` is 1-Lipschitz (Serrurier et al. 2021).
    """
    one_hot = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
    inside, outside = one_hot.sum(0), (1 - one_hot).sum(0)
    present = (inside > 0) & (outside > 0)
    gaps = (logits * one_hot).sum(0) / inside.clamp_min(1) - (
        (logits * (1 - one_hot)).sum(0) / outside.clamp_min(1))
    return gaps[present].mean() if present.any() else logits.sum() * 0


def hkr(logits: torch.Tensor, labels: torch.Tensor, alpha: float = 50.0,
        min_margin: float = 1.0) -> torch.Tensor:
    """HKR: ``alpha * hinge - KR`` (Serrurier et al., CVPR 2021).

    The hinge term asks for a margin, the Kantorovich-Rubinstein term spreads the classes
    apart as far as a 1-Lipschitz function allows; ``alpha`` trades accuracy for margin.
    """
    return alpha * multiclass_hinge(logits, labels, min_margin) - (
        multiclass_kantorovich_rubinstein(logits, labels))


def gloro_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, eps: float,
                        lipschitz: float | torch.Tensor = 1.0) -> torch.Tensor:
    """GloRo: cross-entropy over the classes and a bottom class ``f_bot`` (Leino, Wang &
    Fredrikson, ICML 2021, "Globally-Robust Neural Networks").

    ``f_bot = max_{j != yhat} f_j + eps K_{yhat j}`` with ``yhat`` the predicted class and
    ``K_ij`` a bound on ``||f_i - f_j||_L``: ``sqrt(2) * lipschitz`` for a scalar
    ``lipschitz`` bounding ``||f||_L``, or ``lipschitz[i, j]`` when a matrix is given (it may
    carry gradients). The bottom class wins exactly when the prediction is not certified at
    ``eps``, so minimizing the loss trains for certified predictions.
    """
    classes = logits.shape[1]
    if isinstance(lipschitz, torch.Tensor) and lipschitz.ndim == 2:
        pairwise = lipschitz.to(logits.dtype)
    else:
        pairwise = torch.full((classes, classes), math.sqrt(2) * float(lipschitz),
                              dtype=logits.dtype, device=logits.device)
    predicted = logits.detach().argmax(1)
    raised = logits + eps * pairwise[predicted]
    raised = raised.masked_fill(F.one_hot(predicted, classes).bool(), -math.inf)
    bottom = raised.max(1, keepdim=True).values
    return F.cross_entropy(torch.cat([logits, bottom], dim=1), labels)


LOSSES = {
    "margin-ce": margin_cross_entropy,
    "hinge": multiclass_hinge,
    "hkr": hkr,
    "gloro": gloro_cross_entropy,
    "ce": lambda logits, labels: F.cross_entropy(logits, labels),
}


# each loss's options and their domains: (lowest value, whether the lowest is allowed)
OPTION_DOMAINS = {
    "margin-ce": {"offset": (0.0, True), "temperature": (0.0, False)},
    "hinge": {"min_margin": (0.0, False)},
    "hkr": {"alpha": (0.0, True), "min_margin": (0.0, False)},  # Serrurier et al.: alpha >= 0
    "gloro": {"eps": (0.0, True), "lipschitz": (0.0, False)},
    "ce": {},
}


def get_loss(name: str, **options):
    """The loss ``name`` with ``options`` bound: ``(logits, labels) -> scalar``.

    Raises:
        UnknownMethodError: an unknown loss or option name.
        InvalidArgumentError: an option outside its domain (:data:`OPTION_DOMAINS`).
    """
    if name not in LOSSES:
        raise UnknownMethodError("loss", name, LOSSES)
    domains = OPTION_DOMAINS[name]
    for option, value in options.items():
        if option not in domains:
            raise UnknownMethodError(f"option of the {name} loss", option, domains)
        lowest, allowed = domains[option]
        if isinstance(value, torch.Tensor):
            continue  # gloro's matrix of pairwise constants
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InvalidArgumentError(f"{name} loss: {option} must be a number, got "
                                       f"{value!r}") from None
        if not math.isfinite(number) or number < lowest or (number == lowest and not allowed):
            relation = ">=" if allowed else ">"
            raise InvalidArgumentError(f"{name} loss: {option} must be a finite number "
                                       f"{relation} {lowest:g}, got {value!r}")
    function = LOSSES[name]
    return lambda logits, labels: function(logits, labels, **options)
