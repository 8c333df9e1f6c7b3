"""Local robustness certificates: two proofs per image from one bound-propagation engine.

For an input ``x0`` with label ``y`` and the ball ``B = {x : ||x - x0|| <= eps}`` clipped to
the data domain (``[0, 1]`` for images), the prediction is certified at ``eps`` when every
margin ``m_j = f_y - f_j`` stays positive on ``B``. lipkit proves it two ways:

- **local constant** (Lipschitz-margin certificate, Tsuzuku, Sato & Sugiyama, NeurIPS 2018,
  with local instead of global constants as in Jordan & Dimakis, NeurIPS 2020): ``m_j(x0) >
  L_j eps`` with ``L_j`` a proven upper bound on the local constant of ``m_j`` over ``B``
  (:func:`lipkit.estimate.local_crown.local_constants`: bound propagation through the Clarke
  Jacobian, branch and bound until ``L_j < m_j(x0) / eps``), since ``m_j(x) >= m_j(x0) - L_j
  ||x - x0||`` on ``B``;
- **direct bound**: a proven lower bound of ``m_j`` over ``B`` above 0 (CROWN with optimized
  slopes, alpha-CROWN, for the margins and for the hidden neurons' own bounds:
  :func:`lipkit.estimate.engine.spec_lower`, :func:`~lipkit.estimate.engine.layer_bounds`
  with ``slope_steps``, in at most a quarter of the image's time), refined when it is not
  by branch and bound on the neurons' signs with half of the image's remaining time
  (:mod:`lipkit.estimate.engine.branching`: each branch's split rows bound its region, as
  beta-CROWN's do), the rest going to the local constants.

``m_j(x0)`` is the float64 margin less the proven rounding of the forward pass
(:func:`lipkit.estimate.rounding.forward_error`); every bound is rounded outwards, and a
certificate is claimed only when the proven quantity is > 0. An image that is misclassified
is never certified. Each image has a time limit; a proof that did not finish in it counts as
no proof (the image is reported not certified by that column). An l2 ball is bounded through
its enclosing box (sound, looser).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from lipkit.errors import InvalidArgumentError
from lipkit.estimate.domain import Domain
from lipkit.estimate.rounding import UNIT, forward_error, gamma

DEFAULT_TIME_LIMIT = 10.0  # seconds per image and eps
DEFAULT_SLOPE_STEPS = 20
#: slope steps for the hidden layers' own bounds (alpha-CROWN's intermediate bounds)
INTERMEDIATE_SLOPE_STEPS = 10
#: the share of an image's time limit its phases plan for
PLANNED = 0.9


@dataclass
class ImageCertificate:
    """One image at one eps: its margins, local constants and direct bounds per class."""

    index: int
    eps: float
    label: int
    predicted: int
    margins: list[float]  # proven lower bounds of m_j(x0), j != label
    constants: list[float]  # proven upper bounds of L_j over the ball
    direct: list[float]  # proven lower bounds of min m_j over the ball
    certified_by_constant: bool
    certified_directly: bool
    seconds: float
    status: str = "ok"
    branches: int = 1  # of the direct bound's branch and bound (1: the box alone)

    @property
    def certified(self) -> bool:
        return self.certified_by_constant or self.certified_directly

    def to_dict(self) -> dict:
        return {"index": self.index, "eps": self.eps, "label": self.label,
                "predicted": self.predicted, "certified": self.certified,
                "certified_by_local_constant": self.certified_by_constant,
                "certified_by_direct_bound": self.certified_directly,
                "margins": self.margins, "local_constants": self.constants,
                "direct_lower_bounds": self.direct, "direct_branches": self.branches,
                "seconds": self.seconds, "status": self.status}


@dataclass
class LocalCertification:
    """Per-image certificates at each eps, and the counts."""

    eps: list[float]
    norm: str
    domain: str
    images: list[ImageCertificate] = field(default_factory=list)

    def counts(self, eps: float) -> dict:
        rows = [r for r in self.images if r.eps == eps]
        return {"images": len(rows), "certified": sum(r.certified for r in rows),
                "by_local_constant": sum(r.certified_by_constant for r in rows),
                "by_direct_bound": sum(r.certified_directly for r in rows),
                "seconds_per_image": float(np.mean([r.seconds for r in rows])) if rows else 0.0}

    def accuracy(self) -> list[float]:
        return [self.counts(e)["certified"] / max(self.counts(e)["images"], 1)
                for e in self.eps]


def proven_margins(network, x0: torch.Tensor, label: int) -> tuple[np.ndarray, int]:
    """Lower bounds of the exact margins ``f_y(x0) - f_j(x0)`` (all ``j``, 0 at ``y``) and
    the float64 prediction."""
    y, error, total = forward_error(network, x0.reshape(1, *network.input_shape))
    # each output's error is bounded elementwise and by the l2 bound of all of them
    y, error = y.reshape(-1), torch.minimum(error.reshape(-1), total.reshape(()))
    raw = (y[label] - y).numpy()
    slack = (error[label] + error).numpy() * (1 + gamma(4)) + 2 * UNIT * np.abs(raw)
    margins = np.nextafter(raw - slack, -np.inf)
    margins[label] = 0.0
    return margins, int(y.argmax())


def certify_image(network, chain, x0: torch.Tensor, label: int, eps: float, norm: str = "inf",
                  data_domain=None, time_limit: float = DEFAULT_TIME_LIMIT,
                  slope_steps: int = DEFAULT_SLOPE_STEPS, index: int = 0,
                  constants: bool = True, branching: bool = True) -> ImageCertificate:
    """Both certificates of one image at one ``eps`` (module docstring); ``branching``:
    refine the direct bound by branch and bound on the neurons with half the time it
    leaves. Runs on one torch thread when no layer has more than
    :data:`~lipkit.estimate.engine.chain.THREADED_WIDTH` outputs: its passes are many
    small products, and on a busy machine a second thread slows some of them several
    times (784-256-256-10 at load 3.5-3.9, 15 images: slowest 10.9 s of a 10 s limit with
    two threads, 9.2 s with one, the same images certified)."""
    from lipkit.estimate.engine.chain import few_threads

    with few_threads(max(layer.outputs for layer in chain.layers)):
        return _certify_image(network, chain, x0, label, eps, norm, data_domain, time_limit,
                              slope_steps, index, constants, branching)


def _certify_image(network, chain, x0, label, eps, norm, data_domain, time_limit,
                   slope_steps, index, constants, branching) -> ImageCertificate:
    from lipkit.estimate.engine import layer_bounds, spec_lower
    from lipkit.estimate.engine.branching import lower_by_branching
    from lipkit.estimate.local_crown import local_constants

    started = time.perf_counter()
    # the phases share PLANNED of the limit: a pass started just before its deadline ends
    # in the rest (under load a pass takes several times longer than alone)
    budget = time_limit * PLANNED
    if not (isinstance(eps, int | float) and math.isfinite(eps) and eps > 0):
        raise InvalidArgumentError(f"eps must be a finite number > 0, got {eps!r}")
    flat = x0.reshape(-1).to(torch.float64)
    domain = Domain.parse(chain.inputs, center=flat, radius=eps, ball=norm,
                          data_domain=data_domain, where=f"image {index}")
    margins, predicted = proven_margins(network, flat, label)
    classes = chain.outputs
    others = [j for j in range(classes) if j != label]
    spec = torch.zeros(len(others), classes, dtype=torch.float64)
    spec[:, label] = 1.0
    spec[torch.arange(len(others)), others] = -1.0
    margin_rows = margins[others]
    correct = predicted == label and bool(np.all(margin_rows > 0))
    lower = torch.from_numpy(domain.lower)[None]
    upper = torch.from_numpy(domain.upper)[None]
    # the unstable neurons' bounds with alpha-CROWN's slopes, in at most a quarter of the time
    bounds = layer_bounds(chain, lower, upper, slope_steps=INTERMEDIATE_SLOPE_STEPS,
                          deadline=started + budget / 4)
    direct = spec_lower(chain, spec[None], bounds, steps=slope_steps,
                        deadline=started + budget)[0]
    branches = 1
    remaining = budget - (time.perf_counter() - started)
    if correct and not bool((direct > 0).all()) and branching and remaining > 0 and any(
            layer.activation.piecewise_linear for layer in chain.hidden):
        # half of what is left: branch and bound on the neurons for the direct bound
        searched = lower_by_branching(chain, spec, lower[0], upper[0],
                                      deadline=time.perf_counter() + remaining / 2,
                                      root=(bounds, direct))
        direct, branches = torch.from_numpy(searched.lower), searched.branches
    direct = direct.numpy()
    certified_directly = correct and bool(np.all(direct > 0))
    status = "ok"
    constant_values = np.full(len(others), np.inf)
    certified_by_constant = False
    remaining = budget - (time.perf_counter() - started)
    if constants and correct and remaining > 0:
        targets = np.maximum(margin_rows, 0.0) / eps * (1 - 1e-12)
        result = local_constants(network, spec, domain, norm, time_limit=remaining,
                                 targets=targets, witnesses=False, chain=chain,
                                 bounds=bounds)
        constant_values = result.upper
        if result.open_branches:
            status = "time limit reached in the local constants' branch and bound"
        # m_j(x0) - L_j eps > 0, with the product rounded up
        reach = np.nextafter(constant_values * eps * (1 + 2 * UNIT), np.inf)
        certified_by_constant = bool(np.all(margin_rows - reach > 0))
    elif not correct:
        status = "misclassified"
    elif constants:
        status = "time limit reached before the local constants"
    return ImageCertificate(index, float(eps), int(label), predicted, margin_rows.tolist(),
                            constant_values.tolist(), direct.tolist(), certified_by_constant,
                            certified_directly, time.perf_counter() - started, status,
                            branches)


def local_certificates(model, x: torch.Tensor, labels: torch.Tensor, eps, norm="inf",
                       data_domain=(0.0, 1.0), time_limit: float = DEFAULT_TIME_LIMIT,
                       slope_steps: int = DEFAULT_SLOPE_STEPS, constants: bool = True,
                       progress=None, branching: bool = True) -> LocalCertification:
    """Local certificates of every image at every ``eps`` (module docstring).

    Args:
        model: an ``nn.Module`` or an imported :class:`lipkit.estimate.Network` (a dense
            chain of elementwise activations).
        data_domain: ``(low, high)`` the balls are clipped to, or None.
        time_limit: seconds per image and eps.
        branching: refine a direct bound that is not above 0 by branch and bound on the
            neurons (half of the image's remaining time; the rest to the local constants).

    Raises:
        InvalidArgumentError: an eps that is not > 0, an image outside the data domain or
            of the wrong size.
    """
    from lipkit.estimate import Network, load_network
    from lipkit.estimate.engine import DenseChain

    network = model if isinstance(model, Network) else load_network(model)
    chain = DenseChain.of(network)
    eps = [float(e) for e in (eps if isinstance(eps, list | tuple) else [eps])]
    for value in eps:
        if not (math.isfinite(value) and value > 0):
            raise InvalidArgumentError(f"eps must be finite numbers > 0, got {value!r}")
    if x[0].numel() != chain.inputs:
        raise InvalidArgumentError(f"images of {x[0].numel()} values do not fit the model's "
                                   f"{chain.inputs} inputs")
    name = "l-inf" if norm == "inf" else "l2"
    description = f"{name} ball" + ("" if data_domain is None else
                                    f" clipped to [{data_domain[0]:g}, {data_domain[1]:g}]")
    result = LocalCertification(eps, norm, description)
    for index in range(len(x)):
        for value in eps:
            result.images.append(certify_image(
                network, chain, x[index], int(labels[index]), value, norm, data_domain,
                time_limit, slope_steps, index, constants, branching))
            if progress is not None:
                progress(index, len(x))
    return result
