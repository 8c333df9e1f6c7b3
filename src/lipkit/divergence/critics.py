"""Critics of pairs ``(x, y)`` for mutual information, and what "Lipschitz in (x, y)" means.

The norm on pairs is the Euclidean norm of the concatenation,
``||(x, y)|| = sqrt(||x||^2 + ||y||^2)``, so ``||f||_L <= lambda`` reads
``|f(x, y) - f(x', y')| <= lambda sqrt(||x - x'||^2 + ||y - y'||^2)``. Every critic here maps
a batch of concatenated pairs ``z = [x, y]`` to one value per pair (so lipkit.penalty's
penalties apply to it unchanged: the "real" samples are the batch's pairs, the "fake" ones
mismatched pairs) and computes the score matrix ``s_ij = f(x_i, y_j)`` that the MI
estimators use.

- **Joint** (:func:`joint_critic`): an MLP on ``[x, y]``; any lipkit method constrains it as it
  would any critic, and ``lipkit.nn.lipschitz_bound`` certifies constructions. Scores cost
  ``n^2`` evaluations.
- **Separable** (:func:`separable_critic`, Poole et al.'s "separable"): ``f(x, y) = <g(x), h(y)>``,
  ``n`` evaluations of each network and one matrix product. A bilinear form is not Lipschitz
  on all of ``R^d`` (``f(t x, t y) = t^2 f(x, y)`` for linear ``g, h``), whatever ``g`` and ``h``
  are, so a constant needs bounded embeddings: with ``g`` and ``h`` projected onto the ball
  of radius ``r`` (a 1-Lipschitz map),
  ``|f(x, y) - f(x', y')| <= |<g(x) - g(x'), h(y)>| + |<g(x'), h(y) - h(y')>|
  <= r L_g ||x - x'|| + r L_h ||y - y'|| <= r sqrt(L_g^2 + L_h^2) ||(x, y) - (x', y')||``
  (Cauchy-Schwarz twice). A construction method therefore constrains ``g`` and ``h`` each to
  ``lambda / (r sqrt 2)``, so that ``||f||_L <= lambda`` is certified; penalty methods penalize
  ``f`` itself on pairs and need no projection (``radius=None``, the default for them).

Consequences worth knowing. ``||f||_L <= lambda`` on pairs implies ``f(., y)`` and ``f(x, .)``
are each ``lambda``-Lipschitz, not conversely: a critic Lipschitz in x and in y separately
(constants ``a``, ``b``) is ``sqrt(a^2 + b^2)``-Lipschitz on pairs. The penalties see the
pairs the trainer gives them, the batch's ``[x_i, y_i]`` and the mismatched ``[x_i, y_{i+1}]``
(``trainer.mi_step_values``): these differ only in ``y``, so the Lipschitz penalty's difference
quotients (lp) measure the critic along ``y`` only, and the gradient penalties take the full
gradient in ``(x, y)`` but only at points whose ``x`` is a data point; ALP's adversarial
direction searches all of ``(x, y)``. Only a construction certifies the constant on pairs.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lipkit.errors import InvalidArgumentError, check_positive
from lipkit.nn import register_bound_rule
from lipkit.penalty import LipschitzMethod, critic_mlp, lipschitz_method
from lipkit.penalty._samples import critic_values

DEFAULT_RADIUS = 4.0  # separable scores within [-16, 16]: enough for MI of ~10 nats at batch 64
CRITICS = ("joint", "separable")


class SeparableCritic(nn.Module):
    """``f(x, y) = <P_r g(x), P_r h(y)>`` with ``P_r`` the projection onto the ball of radius
    ``r`` (no projection when ``radius`` is None); input ``z = [x, y]``."""

    def __init__(self, g: nn.Module, h: nn.Module, x_features: int,
                 radius: float | None = None):
        super().__init__()
        self.g, self.h, self.x_features = g, h, int(x_features)
        self.radius = None if radius is None else check_positive("separable radius", radius)

    def _project(self, embedding: torch.Tensor) -> torch.Tensor:
        if self.radius is None:
            return embedding
        scale = (embedding.norm(dim=1, keepdim=True) / self.radius).clamp(min=1.0)
        return embedding / scale

    def embeddings(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(P_r g(x), P_r h(y))``."""
        return self._project(self.g(x)), self._project(self.h(y))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        gx, hy = self.embeddings(z[:, : self.x_features], z[:, self.x_features:])
        return (gx * hy).sum(1)

    def scores(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``s_ij = f(x_i, y_j)`` in one matrix product."""
        gx, hy = self.embeddings(x, y)
        return gx @ hy.T


@register_bound_rule(SeparableCritic)
def _separable_bound(module: SeparableCritic, child_bound, input_size) -> float:
    # r sqrt(L_g^2 + L_h^2) (module docstring); unbounded embeddings: no finite constant
    if module.radius is None:
        return math.inf
    return module.radius * math.hypot(child_bound(module.g, "g"), child_bound(module.h, "h"))


def _method(method: LipschitzMethod | str | None) -> LipschitzMethod:
    if isinstance(method, str):
        return lipschitz_method(method)
    return method or lipschitz_method("none")


def joint_critic(x_features: int, y_features: int, hidden: int = 256, depth: int = 2,
                 method: LipschitzMethod | str | None = None) -> nn.Module:
    """An MLP on ``[x, y]`` (``x_features + y_features -> hidden (x depth) -> 1``) prepared for
    ``method``: lipkit.penalty's :func:`~lipkit.penalty.critic_mlp`."""
    return critic_mlp(int(x_features) + int(y_features), hidden, depth, _method(method))


def separable_critic(x_features: int, y_features: int, hidden: int = 256, depth: int = 2,
                     embedding: int = 32, method: LipschitzMethod | str | None = None,
                     radius: float | None = None) -> SeparableCritic:
    """``<g(x), h(y)>`` with MLPs ``g, h: features -> hidden (x depth) -> embedding``.

    For a construction method (clip / spectral / orthogonal) the embeddings are projected
    onto the ball of radius ``radius`` (default :data:`DEFAULT_RADIUS`) and ``g``, ``h`` are
    each constrained to ``lambda / (radius sqrt 2)``, so ``||f||_L <= lambda``
    (``lipkit.nn.lipschitz_bound`` certifies it). Otherwise ``radius`` defaults to None.

    Example:
        >>> from lipkit.nn import lipschitz_bound
        >>> critic = separable_critic(3, 3, hidden=16, method=lipschitz_method("spectral", 2.0))
        >>> round(lipschitz_bound(critic), 3)
        2.0
    """
    method = _method(method)
    if int(embedding) < 1:
        raise InvalidArgumentError(f"separable critic embedding must be >= 1, got {embedding!r}")
    if method.construction and radius is None:
        radius = DEFAULT_RADIUS
    networks = []
    for features in (x_features, y_features):
        network = critic_mlp(int(features), hidden, depth, None)
        network[-1] = nn.Linear(network[-1].in_features, int(embedding))
        if method.activation is not nn.ReLU:
            network = nn.Sequential(*[method.activation() if isinstance(m, nn.ReLU) else m
                                      for m in network])
        if method.construction:
            part = lipschitz_method(method.name, method.lipschitz / (radius * math.sqrt(2.0)),
                                    **method.options)
            part.prepare(network)
        networks.append(network)
    return SeparableCritic(networks[0], networks[1], int(x_features), radius)


def critic_scores(critic: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The matrix ``s_ij = f(x_i, y_j)``: the critic's own ``scores`` when it has one, else
    ``n^2`` evaluations of ``f`` on the concatenated pairs."""
    if hasattr(critic, "scores"):
        return critic.scores(x, y)
    n = x.shape[0]
    pairs = torch.cat([x[:, None, :].expand(n, n, x.shape[1]),
                       y[None, :, :].expand(n, n, y.shape[1])], dim=2)
    return critic_values(critic, pairs.reshape(n * n, -1), "critic_scores").reshape(n, n)

