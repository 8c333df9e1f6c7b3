"""The Lipschitz method of a critic, by name: one selector for every Lipschitz-critic user.

``lipschitz_method(name, lipschitz, weight, **options)`` returns a :class:`LipschitzMethod`
that constrains a critic by construction (``prepare``) or penalizes it (``penalty``):

- ``none``: no constraint (a baseline; the KR dual is then unbounded);
- ``clip``: weight clipping (Arjovsky et al. 2017), through lipkit.nn;
- ``spectral``: spectral normalization (Miyato et al. 2018), through lipkit.nn;
- ``orthogonal``: Björck-orthonormal weights with MaxMin activations, the gradient norm
  preserving networks (GNP) of Anil et al. 2019;
- ``gp``, ``gp-one-sided``: the gradient penalty (Gulrajani et al. 2017), weight 10; the
  one-sided form is Petzka et al. 2018's WGAN-LP;
- ``lp``: the seminar's Lipschitz penalty on (real, fake) pairs, weight 10 (Petzka et al.
  2018's WGAN-LP as they train it is ``gp-one-sided``: ``lipschitz.py`` explains);
- ``alp``: the adversarial Lipschitz penalty (Terjék 2020), weight 10;
- ``unconstrained-alpha``: the ``W^alpha`` term, no target constant, weight 1;
- ``max-gp``: Zhou et al. 2019's ``weight * max ||grad f||^2`` at interpolates, no target
  constant, weight 0.1.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch
from torch import nn

from lipkit.errors import InvalidArgumentError, UnknownMethodError, check_positive
from lipkit.nn import MaxMin, lipschitz_bound, make_lipschitz, weight_clip
from lipkit.penalty._samples import check_batches, critic_values
from lipkit.penalty.adversarial import adversarial_lipschitz_penalty
from lipkit.penalty.alpha import alpha_penalty, batch_lipschitz_ratio
from lipkit.penalty.gradient import gradient_norms, gradient_penalty
from lipkit.penalty.lipschitz import lipschitz_penalty
from lipkit.penalty.max_gradient import max_gradient_penalty

# name -> make_lipschitz method
CONSTRUCTIONS = {"clip": "clip", "spectral": "spectral", "orthogonal": "orthogonal"}
# name -> (penalty function, default weight, fixed keyword arguments)
PENALTIES = {
    "gp": (gradient_penalty, 10.0, {}),
    "gp-one-sided": (gradient_penalty, 10.0, {"one_sided": True}),
    "lp": (lipschitz_penalty, 10.0, {}),
    "alp": (adversarial_lipschitz_penalty, 10.0, {}),
    "unconstrained-alpha": (alpha_penalty, 1.0, {}),
    "max-gp": (max_gradient_penalty, 0.1, {}),
}
# penalties without a target constant (``lipschitz`` must stay 1)
_UNTARGETED = ("unconstrained-alpha", "max-gp")
METHODS = ("none", *CONSTRUCTIONS, *PENALTIES)
# penalties that draw random samples of rho (lp's pairs are the batch itself)
_SAMPLING = ("gp", "gp-one-sided", "alp", "unconstrained-alpha", "max-gp")


@dataclass(frozen=True)
class LipschitzMethod:
    """How a critic is kept ``lipschitz``-Lipschitz: built from :func:`lipschitz_method`.

    Attributes:
        name: one of :data:`METHODS`.
        lipschitz: the target constant ``lambda`` (unused by ``none`` and
            ``unconstrained-alpha``, which has no target).
        weight: the penalty multiplier ``l`` (``None`` for construction methods).
        options: keyword arguments of the penalty function (e.g. ALP's ``xi``) or of the
            construction (``clip_value`` for clip; ``make_lipschitz`` options otherwise).
    """

    name: str
    lipschitz: float = 1.0
    weight: float | None = None
    options: dict = field(default_factory=dict)

    @property
    def construction(self) -> bool:
        """True when the constraint is built into the weights (``prepare`` does the work)."""
        return self.name in CONSTRUCTIONS

    @property
    def activation(self) -> type[nn.Module]:
        """The activation a critic for this method should use: MaxMin for GNP, else ReLU."""
        return MaxMin if self.name == "orthogonal" else nn.ReLU

    def prepare(self, critic: nn.Module) -> nn.Module:
        """Constrain ``critic`` in place for construction methods (else unchanged); returns it."""
        if self.name == "clip" and self.options.get("clip_value") is not None:
            for module in critic.modules():
                if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                    weight_clip(module, clip_value=self.options["clip_value"])
        elif self.construction:
            make_lipschitz(critic, method=CONSTRUCTIONS[self.name], lipschitz=self.lipschitz,
                           **self.options)
        return critic

    def penalty(self, critic, real: torch.Tensor, fake: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """The scalar to add to the critic's loss (a zero tensor for construction methods).

        ``generator`` is the random source of ``rho`` for the penalties that sample (gp, alp,
        unconstrained-alpha); a training loop passes its own to be reproducible.
        """
        if self.name not in PENALTIES:
            check_batches(real, fake, f"{self.name} penalty")
            return torch.zeros((), dtype=real.dtype, device=real.device)
        function, _, fixed = PENALTIES[self.name]
        arguments = dict(fixed, **self.options)
        if generator is not None and self.name in _SAMPLING:
            arguments["generator"] = generator
        if self.name not in _UNTARGETED:
            arguments["lipschitz"] = self.lipschitz
        return function(critic, real, fake, weight=self.weight, **arguments)

    def wasserstein(self, critic, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """The critic's estimate of W1(real, fake): the KR dual ``E f(real) - E f(fake)``
        divided by the critic's constant (``lambda``; the batch ratio for
        ``unconstrained-alpha``, for which ``W1 = (||f||_L / alpha)^(1/(alpha-1))`` at the
        optimum is another estimate; the largest gradient norm at the real and fake
        samples and their midpoints for ``max-gp``; the guaranteed bound
        :func:`lipkit.nn.lipschitz_bound` for construction methods, so that it is a lower
        bound on W1 between the two sample sets)."""
        check_batches(real, fake, f"{self.name} wasserstein")
        gap = (critic_values(critic, real, "wasserstein").mean()
               - critic_values(critic, fake, "wasserstein").mean())
        if self.name == "unconstrained-alpha":
            adversarial = {k: v for k, v in self.options.items() if k != "alpha"}
            return gap / batch_lipschitz_ratio(critic, real, fake, **adversarial)
        if self.name == "max-gp":  # the critic's own scale: its largest gradient norm
            with torch.enable_grad():
                points = torch.cat([real, fake, (real[: len(fake)] + fake[: len(real)]) / 2])
                steepest = gradient_norms(critic, points, create_graph=False).max()
            return gap / steepest.clamp(min=1e-12)
        if self.construction:
            return gap / lipschitz_bound(critic)
        return gap / self.lipschitz


def lipschitz_method(name: str, lipschitz: float = 1.0, weight: float | None = None,
                     **options) -> LipschitzMethod:
    """The :class:`LipschitzMethod` called ``name`` (module docstring lists them).

    Args:
        name: one of :data:`METHODS`.
        lipschitz: the target constant ``lambda`` (must be 1 for ``unconstrained-alpha`` and
            ``max-gp``).
        weight: the penalty multiplier; ``None`` takes the paper's default (table above).
        options: passed to the penalty function (checked here) or to the construction.

    Raises:
        UnknownMethodError: ``name`` is not a method (the message lists the choices).
        InvalidArgumentError: a non-positive constant or weight, a weight for a construction
            method, or an option the penalty function does not take.

    Example:
        >>> import torch
        >>> method = lipschitz_method("gp", weight=1.0)
        >>> critic = method.prepare(torch.nn.Linear(2, 1))
        >>> with torch.no_grad():
        ...     _ = critic.weight.copy_(torch.tensor([[0.6, 0.8]]))
        >>> round(method.penalty(critic, torch.randn(4, 2), torch.randn(4, 2)).item(), 4)
        0.0
    """
    if name not in METHODS:
        raise UnknownMethodError("Lipschitz method", name, METHODS)
    lipschitz = check_positive(f"{name} lipschitz", lipschitz)
    if name in PENALTIES:
        function, default, fixed = PENALTIES[name]
        weight = check_positive(f"{name} weight", default if weight is None else weight)
        accepted = set(inspect.signature(function).parameters) - {
            "critic", "real", "fake", "lipschitz", "weight", *fixed}
        if name == "unconstrained-alpha":
            accepted |= set(inspect.signature(adversarial_lipschitz_penalty).parameters) - {
                "critic", "real", "fake", "lipschitz", "weight"}
        if name in _UNTARGETED and lipschitz != 1.0:
            raise InvalidArgumentError(
                f"{name} has no target constant: leave lipschitz at 1")
        accepted.discard("adversarial_options")  # alpha_penalty's **kwargs, named above
        unknown = sorted(set(options) - accepted)
        if unknown:
            raise InvalidArgumentError(f"{name} takes no option {', '.join(unknown)}; "
                                       f"choose from: {', '.join(sorted(accepted))}")
    elif weight is not None:
        raise InvalidArgumentError(f"{name} is not a penalty: it takes no weight")
    return LipschitzMethod(name, lipschitz, weight, dict(options))


def critic_mlp(in_features: int, hidden: int = 64, depth: int = 2,
               method: LipschitzMethod | str | None = None) -> nn.Module:
    """A critic MLP ``in_features -> hidden (x depth) -> 1`` prepared for ``method``.

    The activation is the method's (MaxMin for ``orthogonal``, i.e. a GNP network; ReLU
    otherwise) and construction methods are applied, so the critic is ready to train.

    Example:
        >>> from lipkit.nn import lipschitz_bound
        >>> critic = critic_mlp(2, hidden=16, depth=2, method="orthogonal")
        >>> round(lipschitz_bound(critic), 4)
        1.0
    """
    if isinstance(method, str):
        method = lipschitz_method(method)
    method = method or LipschitzMethod("none")
    if int(in_features) < 1 or int(hidden) < 1 or int(depth) < 1:
        raise InvalidArgumentError(f"critic_mlp needs in_features, hidden and depth >= 1, got "
                                   f"{in_features}, {hidden}, {depth}")
    if method.activation is MaxMin and hidden % 2:
        raise InvalidArgumentError(f"critic_mlp with MaxMin needs an even hidden width, "
                                   f"got {hidden}")
    layers: list[nn.Module] = []
    width = int(in_features)
    for _ in range(int(depth)):
        layers += [nn.Linear(width, int(hidden)), method.activation()]
        width = int(hidden)
    layers.append(nn.Linear(width, 1))
    return method.prepare(nn.Sequential(*layers))
