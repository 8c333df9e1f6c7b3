"""Enforce ``||f||_L <= lambda`` by penalty, and pick a critic's Lipschitz method by name.

Penalties are functions of ``(critic, real, fake, ...)`` returning a scalar tensor to ADD to
the critic's loss (the loss it minimizes; i.e. subtract from the objective it maximizes).
Each builds in the sampling distribution ``rho`` of its paper; ``lipschitz`` is the target
constant ``lambda`` and ``weight`` the multiplier ``l``:

- :func:`gradient_penalty` (``gradient.py``, Gulrajani et al. 2017): ``rho`` = random
  interpolates of paired real and fake samples; two-sided, or ``one_sided=True``.
- :func:`lipschitz_penalty` (``lipschitz.py``, Petzka et al. 2018): one-sided penalty on the
  difference quotient of (real, fake) pairs.
- :func:`adversarial_lipschitz_penalty` (``adversarial.py``, Terjék 2020): ``rho`` = pairs
  ``(x, x + r_adv(x))``, ``x`` from real and fake, ``r_adv`` by power iteration with
  finite-difference (or exact) Hessian-vector products; :func:`adversarial_direction`.
- :func:`max_gradient_penalty` (``max_gradient.py``, Zhou et al. 2019's MaxGP):
  ``weight * max ||grad f||^2`` over WGAN-GP's interpolates, no target constant.
- :func:`alpha_penalty` (``alpha.py``): the unconstrained ``W^alpha`` term
  ``(alpha-1) alpha^(alpha/(1-alpha)) ||f||_L^(alpha/(alpha-1))`` with ``||f||_L`` the batch's
  largest adversarial ratio (:func:`batch_lipschitz_ratio`).

The selector every application of Lipschitz critics uses (``method.py``; lipkit.gan and
lipkit.divergence both code against this contract)::

    from lipkit.penalty import METHODS, lipschitz_method, critic_mlp
    method = lipschitz_method("alp", lipschitz=1.0, weight=None, **options)
    critic = critic_mlp(in_features, hidden=64, depth=2, method=method)  # or:
    critic = method.prepare(my_critic)   # constrains clip / spectral / orthogonal in place
    loss = -(f(real).mean() - f(fake).mean()) + method.penalty(critic, real, fake)
    w1 = method.wasserstein(critic, real, fake)   # the critic's W1 estimate

- ``METHODS``: ``none``, ``clip``, ``spectral``, ``orthogonal``, ``gp``, ``gp-one-sided``,
  ``lp``, ``alp``, ``unconstrained-alpha``, ``max-gp``; an unknown name raises
  ``UnknownMethodError`` listing them; a bad option, weight or constant raises
  ``InvalidArgumentError``.
- ``method.construction``: True for clip / spectral / orthogonal (``penalty`` is then a zero
  tensor); ``method.activation``: the activation class the critic should use (``MaxMin``
  for ``orthogonal``, the GNP networks of Anil et al. 2019; ``nn.ReLU`` otherwise);
  ``method.lipschitz``, ``method.weight`` (the paper's default when ``None`` was given),
  ``method.options``.
- ``weight=None`` takes the default: 10 for gp / gp-one-sided / lp / alp, 1 for
  unconstrained-alpha, 0.1 for max-gp; construction methods take no weight.
- ``max-gp`` has no target constant either (``lipschitz`` must stay 1).
- ``unconstrained-alpha`` has no target constant (``lipschitz`` must stay 1); its option
  ``alpha`` (default 2) and ALP's search options (``xi``, ``epsilon``, ...) apply.
"""

from lipkit.penalty.adversarial import (
    HESSIAN_PRODUCTS,
    adversarial_direction,
    adversarial_lipschitz_penalty,
    adversarial_pairs,
    adversarial_perturbation,
)
from lipkit.penalty.alpha import alpha_coefficient, alpha_penalty, batch_lipschitz_ratio
from lipkit.penalty.gradient import gradient_norms, gradient_penalty, interpolates
from lipkit.penalty.lipschitz import difference_quotients, lipschitz_penalty
from lipkit.penalty.max_gradient import max_gradient_penalty
from lipkit.penalty.method import METHODS, LipschitzMethod, critic_mlp, lipschitz_method

__all__ = [
    "HESSIAN_PRODUCTS",
    "METHODS",
    "LipschitzMethod",
    "adversarial_direction",
    "adversarial_lipschitz_penalty",
    "adversarial_pairs",
    "adversarial_perturbation",
    "alpha_coefficient",
    "alpha_penalty",
    "batch_lipschitz_ratio",
    "critic_mlp",
    "difference_quotients",
    "gradient_norms",
    "gradient_penalty",
    "interpolates",
    "lipschitz_method",
    "lipschitz_penalty",
    "max_gradient_penalty",
]
