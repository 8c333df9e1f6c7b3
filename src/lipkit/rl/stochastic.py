"""A stochastic Lipschitz model class: a mixture of deterministic Lipschitz maps, learned by EM
(Asadi, Misra & Littman, ICML 2018, their stochastic model class).

``T_hat(. | s, a) = sum_i p_i delta_{f_i(s, a)}``: with probability ``p_i`` (not depending on
the state) the next state is ``f_i(s, a)``, each ``f_i`` a :class:`TransitionModel` made
Lipschitz by a lipkit.nn constraint. Such a kernel is ``K = max_i K_i``-Lipschitz in W1:
for two states, couple the two mixtures component by component, so
``W(T_hat(.|s, a), T_hat(.|s', a)) <= sum_i p_i ||f_i(s, a) - f_i(s', a)|| <= K ||s - s'||``;
the compounding bound of :mod:`lipkit.rl.compounding` holds for it with that ``K``
(:func:`mixture_lipschitz_bound`).

EM treats the data as drawn from the mixture blurred by isotropic Gaussian noise of variance
``sigma^2`` (a latent component per transition): the E-step gives each transition's
responsibilities ``r_ni ~ p_i exp(-||s'_n - f_i(s_n, a_n)||^2 / (2 sigma^2))``, the M-step
sets ``p_i = mean_n r_ni`` and ``sigma^2`` to the responsibility-weighted mean squared
residual per state coordinate, and fits each ``f_i`` by a few epochs of Adam on its
responsibility-weighted squared error (a generalized M-step: it decreases, not minimizes,
the weighted error).

:func:`mixture_compounding_error` checks the paper's Theorem 1 for this class on a
deterministic environment, exactly: the model's n-step distribution from a start state is a
mixture over the ``C^n`` component sequences, enumerated (weights ``prod p_i``) while ``C^n``
stays small; the expected distance of its path to the true one is at most
``Delta sum_{i<n} K^i`` with ``Delta`` the worst ``W(T_hat(.|s), delta_T(s)) = sum_i p_i
||f_i(s) - T(s)||`` over the true states reached and ``K = max_i K_i`` (the synchronous
coupling: ``E ||s_hat_n - s_n|| <= K E ||s_hat_{n-1} - s_{n-1}|| + Delta``), and the exact W1
of the two n-step distributions is at most that expected distance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lipkit.errors import InvalidArgumentError
from lipkit.rl.model import (
    TransitionModel,
    Transitions,
    make_transition_model,
    state_lipschitz_bound,
)
from lipkit.training import train


class MixtureTransitionModel(nn.Module):
    """``sum_i p_i delta_{f_i(s, a)}`` (module docstring); ``weights``: the ``p_i``, a
    buffer (EM sets it; it is part of the ``state_dict``)."""

    def __init__(self, components: list[TransitionModel]):
        super().__init__()
        if not components:
            raise InvalidArgumentError("a mixture needs at least one component")
        self.components = nn.ModuleList(components)
        count = len(components)
        self.register_buffer("weights", torch.full((count,), 1.0 / count))
        self.register_buffer("noise_variance", torch.ones(()))
        self.state_dimension = components[0].state_dimension
        self.action_dimension = components[0].action_dimension

    def means(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Every component's next state: ``(components, batch, state_dimension)``."""
        return torch.stack([f(states, actions) for f in self.components])

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The mixture's mean next state (what a planner that wants one state uses)."""
        return torch.einsum("i,ibd->bd", self.weights.to(states.dtype),
                            self.means(states, actions))

    def sample(self, states: torch.Tensor, actions: torch.Tensor,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """One next state per row, its component drawn with probabilities ``p_i``."""
        chosen = torch.multinomial(self.weights.float(), len(states), replacement=True,
                                   generator=generator)
        means = self.means(states, actions)
        return means[chosen, torch.arange(len(states))]


def make_mixture_model(state_dimension: int, action_dimension: int, components: int = 2,
                       method: str = "spectral", lipschitz: float | None = 1.0,
                       hidden: int = 64, depth: int = 2, seed: int = 0
                       ) -> MixtureTransitionModel:
    """A mixture of ``components`` maps, each :func:`make_transition_model` with these
    arguments (seeds ``seed, seed + 1, ...``)."""
    if not (isinstance(components, int) and components >= 1):
        raise InvalidArgumentError(f"components must be an integer >= 1, got {components!r}")
    return MixtureTransitionModel([
        make_transition_model(state_dimension, action_dimension, method, lipschitz, hidden,
                              depth, seed + i) for i in range(components)])


def mixture_lipschitz_bound(model: MixtureTransitionModel) -> float:
    """A proven upper bound on the W1 constant of the mixture's state kernel: the largest
    component's :func:`~lipkit.rl.state_lipschitz_bound` (module docstring)."""
    return max(state_lipschitz_bound(f).value for f in model.components)


@dataclass
class EMHistory:
    """Per EM iteration: the mean log-likelihood of the data under the blurred mixture, the
    weights ``p_i`` and the noise variance."""

    log_likelihood: list[float]
    weights: list[list[float]]
    noise_variance: list[float]


def _log_densities(model: MixtureTransitionModel, data: Transitions) -> torch.Tensor:
    """``log p_i + log N(s'_n; f_i(s_n, a_n), sigma^2 I)``: ``(components, n)``."""
    with torch.no_grad():
        means = model.means(data.states, data.actions).double()
        squared = ((means - data.next_states.double()[None]) ** 2).sum(-1)
        variance = float(model.noise_variance)
        dimension = data.next_states.shape[1]
        return (model.weights.double().log()[:, None] - squared / (2 * variance)
                - 0.5 * dimension * math.log(2 * math.pi * variance))


def fit_mixture_em(model: MixtureTransitionModel, data: Transitions, iterations: int = 10,
                   epochs: int = 5, batch_size: int = 128, learning_rate: float = 3e-3,
                   seed: int = 0, min_variance: float = 1e-8) -> EMHistory:
    """Fit ``model`` to ``data`` by EM (module docstring): ``iterations`` rounds of an E-step
    and an M-step whose regression is ``epochs`` epochs of Adam (each component has its own
    optimizer, kept across rounds); the first round starts from a random hard assignment of
    the transitions to the components instead of an E-step. The initial noise variance is
    the data's mean squared one-step error of the mixture's components; ``min_variance``
    keeps it positive when a component fits its points exactly.

    Raises:
        TrainingDivergedError: a loss or the log-likelihood became NaN or infinite.
    """
    if len(data) == 0:
        raise InvalidArgumentError("fit_mixture_em needs at least one transition")
    for name, value in (("iterations", iterations), ("epochs", epochs),
                        ("batch_size", batch_size)):
        if not (isinstance(value, int) and value >= 1):
            raise InvalidArgumentError(f"{name} must be an integer >= 1, got {value!r}")
    generator = torch.Generator().manual_seed(seed)
    optimizers = [torch.optim.Adam(f.parameters(), lr=learning_rate) for f in model.components]
    with torch.no_grad():
        residual = ((model.means(data.states, data.actions) - data.next_states[None]) ** 2)
        model.noise_variance.fill_(max(float(residual.mean()), min_variance))
    history = EMHistory([], [], [])
    model.train()

    def iteration(index: int) -> dict:
        if index == 1:
            # a random hard assignment: from the E-step of untrained maps every component
            # would get about the same responsibilities and learn the same average map
            chosen = torch.randint(len(model.components), (len(data),), generator=generator)
            responsibilities = nn.functional.one_hot(chosen, len(model.components)).T.float()
        else:  # E-step: responsibilities from the current maps, weights and noise
            log_densities = _log_densities(model, data)
            total = torch.logsumexp(log_densities, dim=0)
            if not torch.isfinite(total).all():
                return {"losses": {"EM log-likelihood": float("nan")}}
            responsibilities = (log_densities - total[None]).exp().float()
        # M-step: the weights, each map by weighted regression, then the noise variance
        model.weights.copy_(responsibilities.mean(1).clamp_min(1e-12)
                            / responsibilities.mean(1).clamp_min(1e-12).sum())
        for i, (component, optimizer) in enumerate(zip(model.components, optimizers,
                                                       strict=True)):
            weight = responsibilities[i]
            for _ in range(epochs):
                order = torch.randperm(len(data), generator=generator)
                for start in range(0, len(data), batch_size):
                    batch = order[start:start + batch_size]
                    prediction = component(data.states[batch], data.actions[batch])
                    error = ((prediction - data.next_states[batch]) ** 2).sum(-1)
                    loss = (weight[batch] * error).sum() / weight.sum().clamp_min(1e-12) \
                        * (len(data) / len(batch))
                    if not torch.isfinite(loss):
                        return {"losses": {f"component {i} loss": loss.item()}}
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
        with torch.no_grad():
            squared = ((model.means(data.states, data.actions) - data.next_states[None]) ** 2
                       ).sum(-1)
            variance = float((responsibilities * squared).sum()
                             / (len(data) * data.next_states.shape[1]))
            model.noise_variance.fill_(max(variance, min_variance))
        likelihood = float(torch.logsumexp(_log_densities(model, data), dim=0).mean())
        history.log_likelihood.append(likelihood)
        history.weights.append(model.weights.tolist())
        history.noise_variance.append(float(model.noise_variance))
        return {"losses": {"EM log-likelihood": likelihood}, "loss": -likelihood}

    train(iteration, iterations, unit="EM iteration", context="mixture transition model")
    model.eval()
    return history


@dataclass
class MixtureCompounding:
    """Theorem 1 for a mixture model, n = 1..steps (index n - 1): the expected path error
    ``E ||s_hat_n - s_n||`` (exact over the component sequences, mean over start states),
    the exact W1 of the n-step distributions (None where it has more atoms than the limit),
    and the bound ``Delta sum_{i<n} K^i``."""

    expected_error: list[float]
    wasserstein: list[float | None]
    bound: list[float]
    delta: float
    lipschitz: float

    @property
    def holds(self) -> bool:
        """Whether W1 <= expected error <= bound at every step (up to float rounding)."""
        tolerance = [b * 1e-9 + 1e-9 for b in self.bound]
        return all(e <= b + t for e, b, t in zip(self.expected_error, self.bound, tolerance,
                                                 strict=True)) and all(
            w is None or w <= e + t for w, e, t in zip(self.wasserstein, self.expected_error,
                                                       tolerance, strict=True))

    def to_dict(self) -> dict:
        return {"expected_error": self.expected_error, "wasserstein": self.wasserstein,
                "bound": self.bound, "delta": self.delta, "lipschitz": self.lipschitz,
                "holds": self.holds}


def mixture_compounding_error(model: MixtureTransitionModel, environment, starts, actions,
                              lipschitz: float, max_paths: int = 4096,
                              max_atoms: int = 20_000) -> MixtureCompounding:
    """Theorem 1 for the mixture ``model`` (module docstring) from the start states
    ``starts`` ``(N, d)`` under the open-loop ``actions`` ``(H, k)``, for as many steps as
    keep ``C^n <= max_paths``; ``lipschitz``: a proven bound on every component's state map
    (:func:`mixture_lipschitz_bound`); W1 exactly (POT) while the model's distribution has at
    most ``max_atoms`` atoms."""
    from lipkit.rl.compounding import model_step, theorem_bound, wasserstein1

    starts = np.asarray(starts, dtype=np.float64)
    actions = np.asarray(actions, dtype=np.float64)
    count, dimension = starts.shape
    components = len(model.components)
    steps = 0
    while steps < len(actions) and components ** (steps + 1) <= max_paths:
        steps += 1
    if steps < 1:
        raise InvalidArgumentError(f"max_paths {max_paths} allows no step with {components} "
                                   "components")
    weights = model.weights.detach().double().numpy()
    weights = weights / weights.sum()  # the distribution sample() draws from
    true = [starts]
    delta = 0.0
    for action in actions[:steps]:
        batch = np.repeat(action[None], count, axis=0)
        following = environment.step(true[-1], batch)
        errors = np.stack([np.linalg.norm(model_step(f, true[-1], batch) - following, axis=1)
                           for f in model.components])
        delta = max(delta, float((weights[:, None] * errors).sum(0).max()))
        true.append(following)
    paths = starts[None]  # (P, N, d): the model's states, one row per component sequence
    path_weights = np.ones(1)
    expected, wasserstein = [], []
    for n, action in enumerate(actions[:steps], start=1):
        flat = paths.reshape(-1, dimension)
        batch = np.repeat(action[None], len(flat), axis=0)
        paths = np.concatenate([model_step(f, flat, batch).reshape(-1, count, dimension)
                                for f in model.components])  # component-major
        path_weights = (weights[:, None] * path_weights[None]).reshape(-1)
        distances = np.linalg.norm(paths - true[n][None], axis=2)  # (P, N)
        expected.append(float((path_weights[:, None] * distances).sum(0).mean()))
        if paths.shape[0] * count <= max_atoms:
            wasserstein.append(wasserstein1(paths.reshape(-1, dimension), true[n],
                                            np.repeat(path_weights, count)))
        else:
            wasserstein.append(None)
    bound = [theorem_bound(delta, lipschitz, n) for n in range(1, steps + 1)]
    return MixtureCompounding(expected, wasserstein, bound, delta, float(lipschitz))


__all__ = ["EMHistory", "MixtureCompounding", "MixtureTransitionModel", "fit_mixture_em",
           "make_mixture_model", "mixture_compounding_error", "mixture_lipschitz_bound"]
