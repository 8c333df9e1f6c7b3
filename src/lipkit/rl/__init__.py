"""Use: Lipschitz transition models in model-based RL (Asadi, Misra & Littman, ICML 2018).

Learn a transition model whose constant is set by a lipkit.nn constraint
(:func:`make_transition_model`) and prove the constant of its state map
(:func:`state_lipschitz_bound`); measure how its error compounds against the theorem's bound
``Delta * sum_{i<n} K^i`` with exact W1 (:func:`compounding_error`); estimate values
(:func:`value_estimation_error`; Theorem 2's :func:`value_error_bound`, checked per start
state by :func:`value_bound_check` where the environment has a Lipschitz reward) and plan
with it (:class:`Planner`: random shooting or CEM) on
gymnasium's Pendulum-v1 and CartPole-v1; :func:`run_sweep` does it all for a list of
constants (``lipkit rl``). The stochastic model class of the paper, a mixture of Lipschitz
maps learned by EM: :class:`MixtureTransitionModel`, :func:`fit_mixture_em`, and Theorem 1
for it, exactly over the component sequences: :func:`mixture_compounding_error`.
"""

from lipkit.rl.compounding import (
    CompoundingError,
    Rollouts,
    compounding_error,
    rollout,
    theorem_bound,
    wasserstein1,
)
from lipkit.rl.environment import ENVIRONMENTS, Environment, LinearSystem, make_environment
from lipkit.rl.experiment import Settings, parse_constants, run_sweep
from lipkit.rl.model import (
    StateLipschitz,
    TransitionModel,
    Transitions,
    collect_transitions,
    make_transition_model,
    state_lipschitz_bound,
    train_transition_model,
)
from lipkit.rl.planning import PLANNERS, Planner, run_episode
from lipkit.rl.stochastic import (
    EMHistory,
    MixtureCompounding,
    MixtureTransitionModel,
    fit_mixture_em,
    make_mixture_model,
    mixture_compounding_error,
    mixture_lipschitz_bound,
)
from lipkit.rl.value import (
    ValueBoundCheck,
    ValueEstimationError,
    value_bound_check,
    value_error_bound,
    value_estimation_error,
)

__all__ = [
    "ENVIRONMENTS",
    "PLANNERS",
    "CompoundingError",
    "EMHistory",
    "Environment",
    "LinearSystem",
    "MixtureCompounding",
    "MixtureTransitionModel",
    "Planner",
    "Rollouts",
    "Settings",
    "StateLipschitz",
    "TransitionModel",
    "Transitions",
    "ValueBoundCheck",
    "ValueEstimationError",
    "collect_transitions",
    "compounding_error",
    "fit_mixture_em",
    "make_environment",
    "make_mixture_model",
    "make_transition_model",
    "mixture_compounding_error",
    "mixture_lipschitz_bound",
    "parse_constants",
    "rollout",
    "run_episode",
    "run_sweep",
    "state_lipschitz_bound",
    "theorem_bound",
    "train_transition_model",
    "value_bound_check",
    "value_error_bound",
    "value_estimation_error",
    "wasserstein1",
]
