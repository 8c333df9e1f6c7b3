"""Model-predictive control with a learned transition model: random shooting and the
cross-entropy method (CEM).

At every real step the planner scores candidate open-loop action sequences of length
``horizon`` by rolling them out in the model from the current state, with the environment's
known reward and termination (the model learns the dynamics only), executes the first action
of the best one and plans again at the next state. The return of a sequence is
``sum_t alive_t r_t`` where ``alive_t`` is 0 after the first predicted terminal state.
Random shooting draws ``candidates`` uniform sequences; CEM (Rubinstein, 1999; as used for
MPC by Chua et al., 2018) refits a Gaussian (box actions) or per-step Bernoulli (discrete
actions) to the ``elites`` best of ``candidates`` samples for ``iterations`` rounds, warm
started from the previous step's solution shifted by one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lipkit.errors import InvalidArgumentError, check_positive

PLANNERS = ("random-shooting", "cem")


@torch.no_grad()
def sequence_returns(model, environment, state: torch.Tensor, sequences: torch.Tensor
                     ) -> torch.Tensor:
    """Predicted return of each action sequence ``(C, H, k)`` from one state ``(d,)``."""
    states = state.expand(len(sequences), -1)
    total = torch.zeros(len(sequences), dtype=states.dtype)
    alive = torch.ones(len(sequences), dtype=torch.bool)
    for step in range(sequences.shape[1]):
        actions = sequences[:, step]
        total += alive * environment.reward(states, actions)
        states = model(states, actions)
        alive &= ~environment.terminated(states)
    return total


@dataclass
class Planner:
    """MPC by random shooting (``method="random-shooting"``) or CEM (``method="cem"``)."""

    model: torch.nn.Module
    environment: object
    method: str = "cem"
    horizon: int = 15
    candidates: int = 200
    elites: int = 20
    iterations: int = 3
    seed: int = 0

    def __post_init__(self):
        if self.method not in PLANNERS:
            raise InvalidArgumentError(f"unknown planner '{self.method}'; choose from: "
                                       f"{', '.join(PLANNERS)}")
        for name in ("horizon", "candidates", "elites", "iterations"):
            check_positive(name, getattr(self, name))
        if self.elites > self.candidates:
            raise InvalidArgumentError(f"planner elites ({self.elites}) must be at most "
                                       f"candidates ({self.candidates})")
        self.generator = torch.Generator().manual_seed(self.seed)
        self.reset()

    def reset(self) -> None:
        """Forget the warm start (call at the start of an episode)."""
        space = self.environment.action_space
        shape = (self.horizon, space.dimension)
        if space.discrete:
            self._mean = torch.full(shape, 0.5)  # probability of +1
            self._std = None
        else:
            self._mean = torch.full(shape, (space.low + space.high) / 2)
            self._std = torch.full(shape, (space.high - space.low) / 2)

    def _sample(self, count: int, mean: torch.Tensor, std: torch.Tensor | None) -> torch.Tensor:
        space = self.environment.action_space
        if space.discrete:
            draw = torch.rand((count, *mean.shape), generator=self.generator) < mean
            return 2.0 * draw.float() - 1.0
        noise = torch.randn((count, *mean.shape), generator=self.generator)
        return (mean + std * noise).clamp(space.low, space.high)

    def __call__(self, state: np.ndarray) -> np.ndarray:
        """The action (model encoding, shape ``(k,)``) to take in ``state``."""
        state = torch.as_tensor(np.asarray(state), dtype=torch.float32)
        space = self.environment.action_space
        if self.method == "random-shooting":
            uniform_mean = torch.full_like(self._mean, 0.5 if space.discrete else
                                           (space.low + space.high) / 2)
            if space.discrete:
                sequences = self._sample(self.candidates, uniform_mean, None)
            else:
                width = (space.high - space.low) / 2
                noise = torch.rand((self.candidates, *self._mean.shape), generator=self.generator)
                sequences = uniform_mean + width * (2 * noise - 1)
            returns = sequence_returns(self.model, self.environment, state, sequences)
            return sequences[int(returns.argmax())][0].numpy()
        # the mean is warm started; the spread starts wide again at every step
        mean, std = self._mean.clone(), None if self._std is None else self._std
        for _ in range(self.iterations):
            sequences = self._sample(self.candidates, mean, std)
            returns = sequence_returns(self.model, self.environment, state, sequences)
            elite = sequences[returns.topk(self.elites).indices]
            best = sequences[int(returns.argmax())]
            if space.discrete:
                # keep every probability away from 0 and 1, or CEM stops exploring
                mean = ((elite > 0).float().mean(0)).clamp(0.05, 0.95)
            else:
                mean, std = elite.mean(0), elite.std(0).clamp_min(0.05 * (space.high - space.low))
        # warm start: the next plan starts from this one shifted by a step
        self._mean = torch.cat([mean[1:], mean[-1:]])
        return best[0].numpy()


def run_episode(environment, policy, seed: int, max_steps: int | None = None) -> dict:
    """One gymnasium episode from ``reset(seed=seed)``: ``policy(state) -> action`` (model
    encoding), or ``None`` for uniformly random actions; returns return, steps, terminated."""
    env = environment.make()
    generator = np.random.default_rng(seed)
    observation, _ = env.reset(seed=seed)
    if hasattr(policy, "reset"):
        policy.reset()
    total, steps, terminated, truncated = 0.0, 0, False, False
    limit = max_steps or environment.episode_steps
    while not (terminated or truncated) and steps < limit:
        if policy is None:
            action = environment.action_space.sample((), generator)
        else:
            action = policy(np.asarray(observation, dtype=np.float64))
        observation, reward, terminated, truncated, _ = env.step(environment.gym_action(action))
        total += float(reward)
        steps += 1
    env.close()
    return {"return": total, "steps": steps, "terminated": bool(terminated)}
