"""Projected gradient attacks (l2 and l-infinity) that check certificates instead of
trusting them.

A certified radius is a proof; an attack is a test of the proof's implementation. PGD
(Madry et al., ICLR 2018) maximizes the margin violation ``max_{j != y} f_j - f_y`` inside
a ball around each input, from a random start, projecting after each step. A prediction that
changes at a point inside its own certified radius is a *broken certificate*: a bug, never
an acceptable outcome. The accuracy that survives PGD at ``eps`` is an upper bound on the
true robust accuracy, the certified accuracy a lower bound.

The threat model is the certificate's: any input within the ball, intersected with the data
domain ``(low, high)`` when one is given (the local certificates of
:mod:`lipkit.certify.local` are over the ball clipped to ``[0, 1]`` for images; without a
domain, inputs are not clipped).
"""

from __future__ import annotations

import math

import torch

from lipkit.certify.radius import _norm


def _margin_violation(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    true = logits.gather(1, target[:, None]).squeeze(1)
    others = logits.scatter(1, target[:, None], -math.inf)
    return others.max(1).values - true


def _project(delta: torch.Tensor, radius: torch.Tensor, norm: str) -> torch.Tensor:
    shape = (-1,) + (1,) * (delta.ndim - 1)
    if norm == "inf":
        return torch.maximum(torch.minimum(delta, radius.view(shape)), -radius.view(shape))
    lengths = delta.flatten(1).norm(dim=1).clamp_min(1e-30)
    return delta * (radius / lengths).clamp(max=1.0).view(shape)


def _clip(x: torch.Tensor, delta: torch.Tensor, domain) -> torch.Tensor:
    """``delta`` such that ``x + delta`` lies in the data domain ``(low, high)``."""
    if domain is None:
        return delta
    low, high = domain
    return (x + delta).clamp(low, high) - x


def pgd_attack(model, x: torch.Tensor, target: torch.Tensor, radius, norm="2",
               steps: int = 20, restarts: int = 1, seed: int = 0,
               domain=None) -> torch.Tensor:
    """Points within ``radius`` of ``x`` (per input) that try to move the prediction off
    ``target``; each input keeps its best point over the restarts.

    Args:
        model: a differentiable callable ``(batch, *shape) -> (batch, classes)``.
        radius: a float or a ``(batch,)`` tensor of ball radii.
        norm: ``2`` or ``"inf"``.
        steps: gradient steps per restart, of size ``2.5 radius / steps``.
        domain: ``(low, high)`` the points are kept in (clipped after each projection,
            which keeps them in the ball: the ball and the box are both convex and the box
            contains ``x``), or None.
    """
    norm = _norm(norm)
    radius = torch.as_tensor(radius, dtype=x.dtype, device=x.device).expand(len(x)).clone()
    generator = torch.Generator(device="cpu").manual_seed(seed)
    shape = (-1,) + (1,) * (x.ndim - 1)
    best = x.clone()
    best_score = torch.full((len(x),), -math.inf, dtype=x.dtype, device=x.device)
    step = 2.5 * radius / steps
    for _ in range(restarts):
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device) * 2 - 1
        delta = _clip(x, _project(noise * radius.view(shape), radius, norm), domain)
        for _ in range(steps):
            delta.requires_grad_(True)
            with torch.enable_grad():
                score = _margin_violation(model(x + delta), target)
                (gradient,) = torch.autograd.grad(score.sum(), delta)
            with torch.no_grad():
                if norm == "inf":
                    move = gradient.sign()
                else:
                    move = gradient / gradient.flatten(1).norm(dim=1).clamp_min(1e-30).view(shape)
                delta = _clip(x, _project(delta + step.view(shape) * move, radius, norm),
                              domain)
        with torch.no_grad():
            score = _margin_violation(model(x + delta), target)
            better = score > best_score
            best[better] = (x + delta)[better]
            best_score = torch.where(better, score, best_score)
    return best.detach()


@torch.no_grad()
def predictions(model, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """The argmax of the logits, in batches."""
    return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def broken_certificates(model, x: torch.Tensor, radius: torch.Tensor, norm="2",
                        steps: int = 20, restarts: int = 1, seed: int = 0) -> int:
    """How many certified predictions (``radius > 0``) PGD changes inside their radius."""
    certified = radius > 0
    if not certified.any():
        return 0
    x, radius = x[certified], radius[certified].to(x.dtype)
    target = predictions(model, x)
    adversarial = pgd_attack(model, x, target, radius, norm, steps, restarts, seed)
    distance = (adversarial - x).flatten(1).norm(dim=1, p=math.inf if _norm(norm) == "inf" else 2)
    inside = distance <= radius * (1 + 1e-9)
    return int(((predictions(model, adversarial) != target) & inside).sum())


def empirical_robust_accuracy(model, x: torch.Tensor, labels: torch.Tensor, eps: float,
                              norm="2", steps: int = 20, restarts: int = 1,
                              seed: int = 0, domain=None) -> float:
    """Share of inputs still classified correctly after PGD at ``eps``: an upper bound on the
    robust accuracy."""
    if eps == 0:
        return float((predictions(model, x) == labels).float().mean())
    adversarial = pgd_attack(model, x, labels, eps, norm, steps, restarts, seed, domain)
    return float((predictions(model, adversarial) == labels).float().mean())
