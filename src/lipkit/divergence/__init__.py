"""Use Lipschitz critics: divergences and mutual information by their variational duals.

Each estimator is a function of critic outputs (an objective to maximize) and the small
trainer maximizes it with any Lipschitz method of lipkit.penalty (``lipschitz_method``)::

    from lipkit.divergence import MiConfig, train_mutual_information
    result = train_mutual_information(MiConfig(estimator="d-lambda", lipschitz="spectral",
                                               lipschitz_constant=4.0), out="run")
    result.metrics["levels"]  # bias and variance per true MI level

- objectives: :func:`kantorovich_rubinstein`, :func:`wasserstein_alpha` (``wasserstein.py``),
  :func:`donsker_varadhan`, :func:`mine_objective` + :class:`MovingAverage` (``mine.py``),
  :func:`nguyen_wainwright_jordan` (``nwj.py``), :func:`info_nce`,
  :func:`wasserstein_dependency` (``dependency.py``), :func:`moreau_yosida_kl` and the
  closed form :func:`gaussian_shift_moreau_yosida_kl` (``moreau_yosida.py``);
- :data:`ESTIMATORS` by name (``estimators.py``: which data, which constraint each needs);
- critics of pairs and what "Lipschitz in (x, y)" means for them: :func:`joint_critic`,
  :func:`separable_critic`, :func:`critic_scores` (``critics.py``);
- ground truth: :func:`sample_correlated_gaussians`, :func:`gaussian_log_ratio`,
  :func:`gaussian_kl`, :func:`gaussian_wasserstein_1d` (``gaussians.py``);
- training: :func:`train_mutual_information`, :class:`MiConfig`, :func:`train_divergence`,
  :func:`evaluate_divergence`, :class:`EstimationDivergedError` (``trainer.py``).
"""

from lipkit.divergence.critics import (
    CRITICS,
    DEFAULT_RADIUS,
    SeparableCritic,
    critic_scores,
    joint_critic,
    separable_critic,
)
from lipkit.divergence.dependency import wasserstein_dependency
from lipkit.divergence.donsker_varadhan import donsker_varadhan
from lipkit.divergence.estimators import (
    DIVERGENCES,
    ESTIMATORS,
    MUTUAL_INFORMATION,
    Estimator,
    get_estimator,
)
from lipkit.divergence.gaussians import (
    correlation,
    donsker_varadhan_1d,
    gaussian_kl,
    gaussian_log_ratio,
    gaussian_wasserstein_1d,
    sample_correlated_gaussians,
)
from lipkit.divergence.infonce import info_nce
from lipkit.divergence.mine import MovingAverage, mine_objective
from lipkit.divergence.moreau_yosida import gaussian_shift_moreau_yosida_kl, moreau_yosida_kl
from lipkit.divergence.nwj import nguyen_wainwright_jordan
from lipkit.divergence.trainer import (
    DivergenceResult,
    EstimationDivergedError,
    MiConfig,
    MiResult,
    Objective,
    evaluate_divergence,
    level_statistics,
    make_mi_critic,
    mi_step_values,
    plot_mutual_information,
    train_divergence,
    train_mutual_information,
)
from lipkit.divergence.wasserstein import kantorovich_rubinstein, wasserstein_alpha

__all__ = [
    "CRITICS", "DEFAULT_RADIUS", "DIVERGENCES", "ESTIMATORS", "MUTUAL_INFORMATION",
    "DivergenceResult", "EstimationDivergedError", "Estimator", "MiConfig", "MiResult",
    "MovingAverage", "Objective", "SeparableCritic", "correlation", "critic_scores",
    "donsker_varadhan", "donsker_varadhan_1d", "evaluate_divergence", "gaussian_kl",
    "gaussian_log_ratio",
    "gaussian_shift_moreau_yosida_kl", "gaussian_wasserstein_1d", "get_estimator", "info_nce",
    "joint_critic", "kantorovich_rubinstein", "level_statistics", "make_mi_critic",
    "mi_step_values", "mine_objective", "moreau_yosida_kl", "nguyen_wainwright_jordan",
    "plot_mutual_information", "sample_correlated_gaussians", "separable_critic",
    "train_divergence", "train_mutual_information", "wasserstein_alpha",
    "wasserstein_dependency",
]
