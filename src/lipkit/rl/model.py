"""Lipschitz transition models (Asadi, Misra & Littman, ICML 2018).

A deterministic model ``s' = f(s, a)``: an MLP on the concatenation ``(s, a)`` that predicts
the next state itself (not a difference ``s' - s``, whose map would be ``1 + ||g||_L``
Lipschitz and could not be made contractive). Its constant is set by a lipkit.nn constraint
(``make_lipschitz``: weight clipping as in the paper, spectral, orthogonal, ...) or left free.

Which constant: the paper's theorems are about the state map ``s -> f(s, a)`` for a fixed
action (one model per action; a fixed open-loop action sequence composes such maps), so
``K = sup_a ||f(., a)||_L`` in the Euclidean metric on states. :func:`state_lipschitz_bound`
proves an upper bound on it: the smaller of the constant of the whole map
``(s, a) -> s'`` (any slice of a map is at most as Lipschitz as the map) and
``||W_s||_2 * ||rest||_L``, the norm of the state columns of the first layer times the bound
of the layers after it (the action only shifts the first layer's bias). A model constrained
to ``K`` therefore has ``K_state <= K``. For an unconstrained model the second factor is the
best proven upper bound of ``lipkit.estimate`` (kinds ``upper`` / ``exact``, status ok).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lipkit.errors import InvalidArgumentError, check_positive
from lipkit.nn import lipschitz_bound, make_lipschitz, weight_clip
from lipkit.nn.make import METHODS
from lipkit.training import ProgressEvent, train

UNCONSTRAINED = "none"
# Asadi et al.'s own parametrization: every weight clipped to [-c, c], the constant c given
CLIP_VALUE = "clip-value"


class TransitionModel(nn.Module):
    """``s' = network(concat(s, a))``: an MLP with ReLU activations."""

    def __init__(self, state_dimension: int, action_dimension: int, hidden: int = 64,
                 depth: int = 2):
        super().__init__()
        self.state_dimension = state_dimension
        self.action_dimension = action_dimension
        sizes = [state_dimension + action_dimension] + [hidden] * depth
        layers: list[nn.Module] = []
        for fan_in, fan_out in itertools.pairwise(sizes):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], state_dimension))
        self.network = nn.Sequential(*layers)

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.network(torch.cat([states, actions], dim=-1))


def make_transition_model(state_dimension: int, action_dimension: int, method: str = "spectral",
                          lipschitz: float | None = 1.0, hidden: int = 64, depth: int = 2,
                          seed: int = 0) -> TransitionModel:
    """A transition model whose map ``(s, a) -> s'`` is ``lipschitz``-Lipschitz by construction.

    Args:
        method: a ``lipkit.nn.make_lipschitz`` method (``"clip"``: weight clipping with the
            clip value set from the target), ``"clip-value"`` (the paper's sweep: every
            weight clipped to ``[-c, c]`` with ``c = lipschitz`` itself, the model's constant
            being whatever that implies, :func:`state_lipschitz_bound`), or ``"none"`` for
            an unconstrained model (``lipschitz`` ignored).
        seed: seeds the initial weights.

    Example:
        >>> model = make_transition_model(3, 1, method="spectral", lipschitz=0.5)
        >>> state_lipschitz_bound(model).value <= 0.5 + 1e-6
        True
    """
    if method not in (UNCONSTRAINED, CLIP_VALUE) and method not in METHODS:
        choices = ", ".join([UNCONSTRAINED, CLIP_VALUE, *sorted(METHODS)])
        raise InvalidArgumentError(f"unknown method '{method}' for a transition model; "
                                   f"choose from: {choices}")
    torch.manual_seed(seed)
    model = TransitionModel(state_dimension, action_dimension, hidden, depth)
    if method == CLIP_VALUE:
        clip_value = check_positive("clip value", lipschitz)
        for module in model.network:
            if isinstance(module, nn.Linear):
                weight_clip(module, clip_value=clip_value)
    elif method != UNCONSTRAINED:
        make_lipschitz(model.network, method=method, lipschitz=check_positive("lipschitz",
                                                                               lipschitz))
    model.method = method
    model.target = lipschitz if method != UNCONSTRAINED else None
    return model


@dataclass
class StateLipschitz:
    """A proven upper bound on ``K = sup_a ||s -> f(s, a)||_L`` and how it was proven."""

    value: float
    whole_map: float     # bound on ||(s, a) -> s'||_L
    state_columns: float  # ||W_s||_2 * bound of the layers after the first
    source: str          # "construction" (lipkit.nn) or the lipkit.estimate method used


def state_lipschitz_bound(model: TransitionModel, estimate_methods=None) -> StateLipschitz:
    """A sound upper bound on the constant of the state map of ``model`` (module docstring).

    Args:
        estimate_methods: for an unconstrained model, the lipkit.estimate upper-bound
            methods to run (default ``naive``, ``autolip``, ``seqlip``).
    """
    # the ReLU after the first layer is 1-Lipschitz: the layers after it are network[2:]
    first, rest = model.network[0], model.network[2:]
    with torch.no_grad():
        weight = first.weight.detach().double()
    columns = float(torch.linalg.matrix_norm(weight[:, : model.state_dimension], ord=2))
    if getattr(model, "method", UNCONSTRAINED) != UNCONSTRAINED:
        whole = lipschitz_bound(model.network)
        after = lipschitz_bound(rest)
        source = "construction"
    else:
        whole, method = _proven_upper(model.network, estimate_methods)
        after, _ = _proven_upper(rest, estimate_methods)
        source = method
    # float64 SVD of a float32 weight: a relative slack well above its rounding
    state = columns * after * (1 + 1e-6)
    return StateLipschitz(min(whole, state), whole, state, source)


def _proven_upper(network: nn.Module, methods) -> tuple[float, str]:
    from lipkit.estimate import estimate

    report = estimate(network, methods=list(methods or ("naive", "autolip", "seqlip")))
    upper = report.upper  # only usable bounds of kind upper / exact
    if upper is None:
        return math.inf, "none proven"
    return upper.value, upper.method


@dataclass
class Transitions:
    """Observed transitions ``(s, a, s')`` as float32 tensors."""

    states: torch.Tensor
    actions: torch.Tensor
    next_states: torch.Tensor

    def __len__(self) -> int:
        return len(self.states)


def collect_transitions(environment, count: int, seed: int) -> Transitions:
    """``count`` transitions under uniformly random actions, from episodes started at ``mu``.

    Episodes restart at a fresh start state when they terminate or reach the environment's
    episode length; the true step is :meth:`Environment.step` (float64 states).
    """
    generator = np.random.default_rng(seed)
    length = environment.episode_steps or 50
    episodes = -(-count // length) + 1
    starts = environment.start_states(episodes * 4, seed)
    states, actions, nexts = [], [], []
    state, steps, episode = starts[0], 0, 0
    while len(states) < count:
        action = environment.action_space.sample((1,), generator)
        following = environment.step(state[None], action)[0]
        states.append(state)
        actions.append(action[0])
        nexts.append(following)
        steps += 1
        done = bool(environment.terminated(torch.as_tensor(following)))
        state = following
        if done or steps >= length:
            episode += 1
            state, steps = starts[episode % len(starts)], 0
    as_tensor = lambda rows: torch.as_tensor(np.asarray(rows), dtype=torch.float32)  # noqa: E731
    return Transitions(as_tensor(states), as_tensor(actions), as_tensor(nexts))


def train_transition_model(model: TransitionModel, data: Transitions, epochs: int = 30,
                           batch_size: int = 128, learning_rate: float = 3e-3,
                           seed: int = 0,
                           progress: Callable[[ProgressEvent], None] | None = None
                           ) -> list[float]:
    """Fit ``model`` by mean squared one-step error with Adam; returns the loss per epoch.

    The loop is :func:`lipkit.training.train`, one step per epoch; ``progress`` receives its
    :class:`~lipkit.training.ProgressEvent` (figures: the epoch's ``loss``).

    Raises:
        TrainingDivergedError: the loss became NaN or infinite (names the epoch).
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    history: list[float] = []
    model.train()

    def epoch(index: int) -> dict:
        order = torch.randperm(len(data), generator=generator)
        total = 0.0
        for start in range(0, len(data), batch_size):
            batch = order[start : start + batch_size]
            prediction = model(data.states[batch], data.actions[batch])
            loss = ((prediction - data.next_states[batch]) ** 2).sum(-1).mean()
            if not torch.isfinite(loss):  # the loop stops the run
                return {"losses": {"transition model loss": loss.item()}}
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        schedule.step()
        history.append(total / len(data))
        return {"losses": {"transition model loss": history[-1]}, "loss": history[-1]}

    train(epoch, epochs, progress=progress, unit="epoch", context="transition model")
    model.eval()
    return history
