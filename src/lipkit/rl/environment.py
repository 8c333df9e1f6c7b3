"""The environments of lipkit.rl: gymnasium's Pendulum-v1 and CartPole-v1, and a linear system.

Each is an :class:`Environment`: the true transition ``s' = f(s, a)`` evaluated on a batch of
states (gymnasium's own ``step``, with the state set on the unwrapped environment and read
back in float64, so nothing is rounded to the float32 observation), the start distribution
``mu`` (the environment's ``reset``), the reward and termination as known functions of the
state (model-based RL learns the dynamics only), and random actions.

States are the observation vectors, in the observation's coordinates: Pendulum-v1
``(cos theta, sin theta, theta_dot)``, CartPole-v1 ``(x, x_dot, theta, theta_dot)``. The
metric on states is the Euclidean one in those coordinates; every constant ``K`` and every
Wasserstein distance of lipkit.rl is measured in it. Actions enter models as float vectors:
Pendulum's torque ``u in [-2, 2]``; CartPole's push ``0 / 1`` as ``-1 / +1``.

CartPole terminates when ``|x| > 2.4`` or ``|theta| > 12 degrees``; its physics is defined
beyond that, and the transition ``f`` here is the physics (termination is a property of the
state, :meth:`Environment.terminated`, not a change of the dynamics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from lipkit.errors import InvalidArgumentError

ENVIRONMENTS = ("Pendulum-v1", "CartPole-v1")


@dataclass
class ActionSpace:
    """``discrete`` actions ``0..n-1`` (encoded as ``2a - 1`` for models), or a box."""

    dimension: int
    low: float = -1.0
    high: float = 1.0
    discrete: bool = False

    def sample(self, shape: tuple[int, ...], generator: np.random.Generator) -> np.ndarray:
        """Uniform random actions of shape ``shape + (dimension,)`` (floats, model encoding)."""
        if self.discrete:
            return 2.0 * generator.integers(0, 2, size=(*shape, self.dimension)) - 1.0
        return generator.uniform(self.low, self.high, size=(*shape, self.dimension))


class Environment:
    """A deterministic environment with batched true transitions (see the module docstring)."""

    id: str
    state_dimension: int
    action_space: ActionSpace
    episode_steps: int

    def step(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """The true next states ``f(s_i, a_i)`` of a batch ``(N, d)`` under actions ``(N, k)``."""
        raise NotImplementedError

    def start_states(self, count: int, seed: int) -> np.ndarray:
        """``count`` samples of the start distribution ``mu``, reproducible by ``seed``."""
        raise NotImplementedError

    def reward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The reward of taking ``actions`` in ``states`` (batched, torch)."""
        raise NotImplementedError

    def terminated(self, states: torch.Tensor) -> torch.Tensor:
        """Whether a state ends the episode (batched, boolean)."""
        return torch.zeros(states.shape[:-1], dtype=torch.bool, device=states.device)

    #: why the environment has no Lipschitz reward (None where it has one)
    no_lipschitz_reward: str | None = "no Lipschitz reward is known for this environment"

    def lipschitz_reward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """A reward equal to :meth:`reward` on the environment's own states (those its
        transition reaches) and Lipschitz in the state on every bounded convex set: the
        hypothesis of Asadi et al.'s Theorem 2, also where a model's prediction leaves the
        states the environment can be in. Raises where there is none
        (:attr:`no_lipschitz_reward` says why)."""
        raise InvalidArgumentError(f"{self.id}: {self.no_lipschitz_reward}")

    def reward_lipschitz_on(self, states: np.ndarray) -> float:
        """A proven constant of :meth:`lipschitz_reward` in the state (Euclidean metric, the
        action fixed) on a convex set holding every row of ``states`` ``(..., d)``."""
        raise InvalidArgumentError(f"{self.id}: {self.no_lipschitz_reward}")

    def gym_action(self, action: np.ndarray):
        """The model encoding of one action -> what ``gymnasium``'s ``step`` takes."""
        return np.asarray(action, dtype=np.float32)

    def make(self):
        """A fresh gymnasium environment (with its time limit), for episodes."""
        import gymnasium

        return gymnasium.make(self.id)


class _Gymnasium(Environment):
    """A gymnasium environment stepped one state at a time through its unwrapped ``step``."""

    def __init__(self):
        self._env = self.make().unwrapped

    def step(self, states, actions):
        out = np.empty(np.shape(states), dtype=np.float64)
        for i, (state, action) in enumerate(zip(states, actions, strict=True)):
            self._load(state)
            self._env.step(self._physics_action(action))
            out[i] = self._observe()
        return out

    def _load(self, state: np.ndarray) -> None:
        raise NotImplementedError

    def _observe(self) -> np.ndarray:
        raise NotImplementedError

    def _physics_action(self, action: np.ndarray):
        return self.gym_action(action)


class Pendulum(_Gymnasium):
    """gymnasium's Pendulum-v1 (swing up; reward ``-(theta^2 + 0.1 theta_dot^2 + 0.001 u^2)``)."""

    id = "Pendulum-v1"
    state_dimension = 3
    action_space = ActionSpace(1, -2.0, 2.0)
    episode_steps = 200

    def _load(self, state):
        self._env.state = np.array([math.atan2(state[1], state[0]), state[2]])

    def _observe(self):
        theta, theta_dot = self._env.state
        return (math.cos(theta), math.sin(theta), theta_dot)

    def _physics_action(self, action):
        return np.asarray(action, dtype=np.float64)  # not rounded to float32

    def start_states(self, count, seed):
        generator = np.random.default_rng(seed)
        theta = generator.uniform(-math.pi, math.pi, count)  # Pendulum-v1's reset
        theta_dot = generator.uniform(-1.0, 1.0, count)
        return np.stack([np.cos(theta), np.sin(theta), theta_dot], axis=1)

    def reward(self, states, actions):
        return self._reward(states, actions, 1.0)

    @staticmethod
    def _reward(states, actions, angle_scale):
        """``-(angle_scale theta^2 + 0.1 theta_dot^2 + 0.001 u^2)``."""
        theta = torch.atan2(states[..., 1], states[..., 0])
        torque = actions[..., 0].clamp(-2.0, 2.0)
        return -(angle_scale * theta**2 + 0.1 * states[..., 2] ** 2 + 0.001 * torque**2)

    no_lipschitz_reward = None

    def lipschitz_reward(self, states, actions):
        """``-(rho^2 theta^2 + 0.1 theta_dot^2 + 0.001 u^2)`` with ``rho^2 = cos^2 + sin^2``:
        the reward on the unit circle, where every true state lies. The reward itself,
        ``theta = atan2(sin, cos)``, is not Lipschitz near the plane's origin, where a model's
        prediction can land (its gradient grows like ``1 / rho``); ``rho^2 theta^2`` is
        continuous across ``theta = +-pi`` and vanishes at the origin."""
        return self._reward(states, actions, states[..., 0] ** 2 + states[..., 1] ** 2)

    def reward_lipschitz_on(self, states):
        """On the cylinder ``rho <= R, |theta_dot| <= B`` (convex) holding ``states``: in polar
        coordinates ``g = rho^2 theta^2`` has ``dg/drho = 2 rho theta^2`` and
        ``(1 / rho) dg/dtheta = 2 rho theta``, so ``|grad g| = 2 rho |theta| sqrt(theta^2 + 1)
        <= 2 pi R sqrt(pi^2 + 1)`` (``g`` is continuous and piecewise smooth, so this bounds
        its constant on segments); the ``theta_dot`` term adds ``0.2 B`` in a second
        coordinate. Rounded up."""
        states = np.asarray(states, dtype=np.float64).reshape(-1, self.state_dimension)
        radius = float(np.sqrt(states[:, 0] ** 2 + states[:, 1] ** 2).max())
        speed = float(np.abs(states[:, 2]).max())
        angle = 2 * math.pi * radius * math.sqrt(math.pi**2 + 1)
        return math.hypot(angle, 0.2 * speed) * (1 + 1e-12)


class CartPole(_Gymnasium):
    """gymnasium's CartPole-v1 (reward 1 per step, including the step that terminates)."""

    id = "CartPole-v1"
    state_dimension = 4
    action_space = ActionSpace(1, discrete=True)
    episode_steps = 500
    x_threshold = 2.4
    theta_threshold = 12 * 2 * math.pi / 360

    def _load(self, state):
        self._env.state = np.asarray(state, dtype=np.float64)
        self._env.steps_beyond_terminated = None  # the physics, not the episode (see module)

    def _observe(self):
        return self._env.state

    def start_states(self, count, seed):
        generator = np.random.default_rng(seed)
        return generator.uniform(-0.05, 0.05, size=(count, 4))  # CartPole-v1's reset

    def reward(self, states, actions):
        return torch.ones(states.shape[:-1], dtype=states.dtype, device=states.device)

    no_lipschitz_reward = ("its reward is 1 per step until termination (|x| > 2.4 or |theta| > "
                           "12 degrees), so the value is not a Lipschitz function of the state; "
                           "without termination it is constant and every value error is 0")

    def terminated(self, states):
        return (states[..., 0].abs() > self.x_threshold) | (
            states[..., 2].abs() > self.theta_threshold
        )

    def gym_action(self, action):
        return int(np.asarray(action).reshape(-1)[0] > 0)


class LinearSystem(Environment):
    """``s' = A s + B a`` with known matrices (reward ``-|s|^2``); its state map has constant
    ``||A||_2`` for every action. Not a gymnasium environment: no episodes."""

    id = "linear"
    episode_steps = 0

    def __init__(self, a: np.ndarray, b: np.ndarray, action_bound: float = 1.0):
        self.a = np.asarray(a, dtype=np.float64)
        self.b = np.asarray(b, dtype=np.float64)
        if self.a.ndim != 2 or self.a.shape[0] != self.a.shape[1] or self.b.shape[0] != len(
            self.a
        ):
            raise InvalidArgumentError(
                f"linear system needs a square A (d, d) and B (d, k); got {self.a.shape}, "
                f"{self.b.shape}"
            )
        self.state_dimension = len(self.a)
        self.action_space = ActionSpace(self.b.shape[1], -action_bound, action_bound)

    @property
    def lipschitz(self) -> float:
        """The exact constant of ``s -> A s + B a``: the largest singular value of A."""
        return float(np.linalg.norm(self.a, ord=2))

    def step(self, states, actions):
        return states @ self.a.T + actions @ self.b.T

    def start_states(self, count, seed):
        return np.random.default_rng(seed).normal(size=(count, self.state_dimension))

    def reward(self, states, actions):
        return -(states**2).sum(-1)

    no_lipschitz_reward = None

    def lipschitz_reward(self, states, actions):
        """The reward itself, ``-|s|^2``: Lipschitz on every ball."""
        return self.reward(states, actions)

    def reward_lipschitz_on(self, states):
        """``2 R`` with ``R`` the largest norm among ``states`` (the ball of radius ``R``)."""
        states = np.asarray(states, dtype=np.float64).reshape(-1, self.state_dimension)
        return self.reward_lipschitz(float(np.linalg.norm(states, axis=1).max())) * (1 + 1e-12)

    @staticmethod
    def reward_lipschitz(radius: float) -> float:
        """The constant of ``s -> -|s|^2`` on the ball of ``radius``: ``2 radius``
        (``| |x|^2 - |y|^2 | = (|x| + |y|) | |x| - |y| | <= 2 radius |x - y|``)."""
        return 2.0 * float(radius)

    def make(self):
        raise InvalidArgumentError("the linear system is not a gymnasium environment")


def make_environment(name: str) -> Environment:
    """The environment called ``name`` (``"Pendulum-v1"`` or ``"CartPole-v1"``).

    Example:
        >>> make_environment("Pendulum-v1").state_dimension
        3
    """
    if name == "Pendulum-v1":
        return Pendulum()
    if name == "CartPole-v1":
        return CartPole()
    raise InvalidArgumentError(
        f"unknown environment '{name}'; choose from: {', '.join(ENVIRONMENTS)}"
    )
