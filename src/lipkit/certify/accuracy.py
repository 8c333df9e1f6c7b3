"""``certified_accuracy(model, x, y, eps)``: verified robust accuracy (VRA) with its checks.

VRA at ``eps`` is the share of inputs classified correctly *and* with a certified radius
above ``eps``: a lower bound on the robust accuracy. Beside it, the accuracy PGD leaves at
``eps`` (an upper bound), and the count of certificates PGD broke inside each certified
radius, in l2 and l-infinity (always 0 for a sound certificate).

The model is evaluated in float64 (a lipkit model through :func:`lipkit.nn.export` and
``.double()``, with the same weights it was bounded with), so that float32 rounding of the
logits cannot move a margin past its certificate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from lipkit.certify.attack import broken_certificates, empirical_robust_accuracy
from lipkit.certify.constants import logit_constants
from lipkit.certify.local import DEFAULT_TIME_LIMIT, LocalCertification, local_certificates
from lipkit.certify.radius import FORMS, LogitConstants, _norm, certified_radius
from lipkit.errors import (
    InvalidArgumentError,
    check_finite_tensor,
    check_labels,
    check_positive_integer,
    check_radii,
    check_seed,
)


@dataclass
class Certification:
    """Clean accuracy, VRA and PGD accuracy at each eps, broken certificates, and the
    constants (with their source) every radius was computed from."""

    eps: list[float]
    norm: str
    form: str
    clean_accuracy: float
    certified_accuracy: list[float]
    pgd_accuracy: list[float] | None
    broken: dict[str, int] | None
    constants: LogitConstants
    radius: torch.Tensor = field(repr=False)
    radius_by_form: dict[str, float] = field(default_factory=dict)
    local: LocalCertification | None = None  # the local certificates (local=True)
    global_certified_accuracy: list[float] | None = None  # by the global constants
    domain: str = "R^n (inputs not clipped)"

    def to_dict(self) -> dict:
        extra = {}
        if self.local is not None:
            extra = {
                "local": {str(e): self.local.counts(e) for e in self.eps},
                "global_certified_accuracy": dict(zip(map(str, self.eps),
                                                      self.global_certified_accuracy,
                                                      strict=True)),
                "images": [image.to_dict() for image in self.local.images],
            }
        return {
            "domain": self.domain,
            "eps": self.eps, "norm": self.norm, "form": self.form,
            "clean_accuracy": self.clean_accuracy,
            "certified_accuracy": dict(zip(map(str, self.eps), self.certified_accuracy,
                                           strict=True)),
            "pgd_accuracy": None if self.pgd_accuracy is None else dict(
                zip(map(str, self.eps), self.pgd_accuracy, strict=True)),
            "broken_certificates": self.broken,
            "median_radius_by_form": self.radius_by_form,
            "constants": self.constants.to_dict(), **extra,
        }


def evaluation_model(model):
    """A float64 callable computing ``model`` in inference mode."""
    from lipkit.estimate import Network

    if isinstance(model, Network):
        return model
    if isinstance(model, nn.Module):
        from lipkit.nn import export

        return export(model).double().eval()
    raise InvalidArgumentError(f"cannot evaluate a {type(model).__name__} as a classifier")


def certified_accuracy(model, x: torch.Tensor, labels: torch.Tensor, eps, norm="2",
                       form: str = "pairwise", constants: LogitConstants | None = None,
                       attack: bool = True, steps: int = 20, seed: int = 0,
                       local: bool = False, data_domain=None,
                       time_limit: float = DEFAULT_TIME_LIMIT, restarts: int = 1,
                       progress=None) -> Certification:
    """VRA of ``model`` on ``(x, labels)`` at each ``eps`` (module docstring).

    Args:
        model: an ``nn.Module`` or an imported :class:`lipkit.estimate.Network`.
        eps: a radius or a list of radii (in ``norm``).
        norm: ``2`` or ``"inf"``.
        form: the certificate (``"global"``, ``"per-logit"``, ``"pairwise"``).
        constants: the logits' constants; default :func:`logit_constants` of the model.
        attack: also run PGD (robust accuracy and the soundness check).
        steps: PGD steps (>= 1).
        local: certify each input with local constants and the direct bound over its ball
            clipped to ``data_domain`` (:mod:`lipkit.certify.local`); the VRA is then theirs
            (the global form's is kept in ``global_certified_accuracy``), and PGD runs in
            the same clipped balls.
        data_domain: ``(low, high)`` of the inputs (``(0, 1)`` for images), or None.
        time_limit: seconds per input and eps for the local certificates.
        restarts: PGD restarts.

    Raises:
        InvalidArgumentError: no or negative or non-finite ``eps``, ``steps < 1``, an empty
            or non-finite ``x``, inputs that do not fit the model, labels that are not one
            integer per input in ``[0, number of logits)``.

    Example:
        >>> import torch
        >>> from lipkit.certify import lipschitz_mlp
        >>> model = lipschitz_mlp(4, 3, hidden=(8,)).eval()
        >>> x, y = torch.rand(20, 4), torch.randint(3, (20,))
        >>> result = certified_accuracy(model, x, y, eps=[0.0, 0.1], steps=5)
        >>> result.broken, result.certified_accuracy[1] <= result.clean_accuracy
        ({'2': 0, 'inf': 0}, True)
    """
    eps = check_radii("eps", eps)
    check_positive_integer("steps", steps)
    check_seed("seed", seed)
    norm = _norm(norm)
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or len(x) == 0:
        raise InvalidArgumentError("x must be a non-empty batch of inputs (n, ...), got "
                                   f"{tuple(x.shape) if isinstance(x, torch.Tensor) else x!r}")
    check_finite_tensor("x", x)
    if constants is None:
        constants = logit_constants(model, example_input=x[:1] if x.ndim > 2 else None)
    evaluate = evaluation_model(model)
    x = x.to(torch.float64)
    try:
        with torch.no_grad():
            logits = torch.cat([evaluate(x[i:i + 1024]) for i in range(0, len(x), 1024)])
    except (RuntimeError, ValueError) as error:
        raise InvalidArgumentError(f"x of shape {tuple(x.shape)} does not fit the model: "
                                   f"{' '.join(str(error).split())[:200]}") from None
    check_finite_tensor("the model's logits", logits)
    labels = check_labels("labels", labels, logits.shape[-1], len(x))
    input_dim = x[0].numel()
    predicted = logits.argmax(1)
    correct = predicted == labels
    radius = certified_radius(logits, constants, form, norm, input_dim)
    by_form = {f: float(certified_radius(logits, constants, f, norm, input_dim)[correct]
                        .median()) if correct.any() else 0.0 for f in FORMS}
    vra = [float((correct & (radius > e)).float().mean()) for e in eps]
    local_result, global_vra = None, None
    domain_text = "R^n (inputs not clipped)"
    if data_domain is not None:
        data_domain = (float(data_domain[0]), float(data_domain[1]))
        domain_text = f"the ball clipped to [{data_domain[0]:g}, {data_domain[1]:g}]"
    if local:
        if any(e <= 0 for e in eps):
            raise InvalidArgumentError(f"local certificates need eps > 0, got {eps}")
        local_result = local_certificates(model, x, labels, eps, norm, data_domain, time_limit,
                                          progress=progress)
        global_vra, vra = vra, local_result.accuracy()
    pgd, broken = None, None
    if attack:
        pgd = [empirical_robust_accuracy(evaluate, x, labels, e, norm, steps, restarts, seed,
                                         data_domain) for e in eps]
        radius_l2 = certified_radius(logits, constants, form, "2", input_dim)
        radius_inf = certified_radius(logits, constants, form, "inf", input_dim)
        broken = {"2": broken_certificates(evaluate, x, radius_l2, "2", steps, seed=seed),
                  "inf": broken_certificates(evaluate, x, radius_inf, "inf", steps, seed=seed)}
        if local_result is not None:
            broken["local"] = _broken_local(evaluate, x, labels, local_result, norm, steps,
                                            max(restarts, 4), seed, data_domain)
    return Certification(eps, norm, form, float(correct.float().mean()), vra, pgd, broken,
                         constants, radius, by_form, local_result, global_vra, domain_text)


def _broken_local(evaluate, x, labels, local_result, norm, steps, restarts, seed, domain):
    """How many local certificates PGD breaks inside their own clipped balls (0 if sound)."""
    from lipkit.certify.attack import pgd_attack, predictions

    broken = 0
    for value in local_result.eps:
        index = [r.index for r in local_result.images if r.eps == value and r.certified]
        if not index:
            continue
        chosen = x[index]
        adversarial = pgd_attack(evaluate, chosen, labels[index], value, norm, steps,
                                 restarts, seed, domain)
        broken += int((predictions(evaluate, adversarial) != labels[index]).sum())
    return broken


def plot_certified_accuracy(results: dict[str, Certification], path, title: str = "") -> None:
    """VRA (solid), PGD accuracy (dashed) and clean accuracy (dotted) against eps, one
    color per model; a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lipkit.io import save_figure

    figure, axes = plt.subplots(figsize=(5.5, 3.8))
    for index, (name, result) in enumerate(results.items()):
        color = f"C{index}"
        axes.plot(result.eps, result.certified_accuracy, "o-", color=color,
                  label=f"{name}: certified (VRA)")
        if result.pgd_accuracy is not None:
            axes.plot(result.eps, result.pgd_accuracy, "s--", color=color, alpha=0.7,
                      label=f"{name}: PGD (upper bound)")
        axes.axhline(result.clean_accuracy, color=color, linestyle=":", alpha=0.7,
                     label=f"{name}: clean {result.clean_accuracy:.3f}")
    axes.set(xlabel=f"eps (l{'∞' if next(iter(results.values())).norm == 'inf' else '2'})",
             ylabel="accuracy", ylim=(0, 1.02), title=title or "certified accuracy vs eps")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)
