"""Train a generator against a Lipschitz critic: the WGAN family and Lipschitz GANs.

Each generator step follows ``n_critic`` critic steps (5, as in every paper here) that
minimize ``critic_loss + method.penalty`` (``losses.py``; ``lipkit.penalty.lipschitz_method``
for the Lipschitz method), then one generator step on ``generator_loss``. Optimizers follow
the papers (:data:`OPTIMIZERS`). The run writes into its folder, each file atomically:

- ``checkpoint.pt`` every ``checkpoint_every`` generator steps and at the end (models,
  optimizers, the random generator, the history; with a checksum, the configuration and the
  data's fingerprint, :mod:`lipkit.checkpoint`): ``resume=True`` continues from it and,
  all randomness coming from one seeded ``torch.Generator``, reproduces the uninterrupted run;
- ``metrics.json`` (every evaluation: exact W1 by POT, the critic's W1 estimate, its
  largest gradient norm at the evaluation points; at the end the critic's ``||f||_L``
  interval by :func:`lipkit.estimate.estimate`), ``losses.png`` and ``samples.png``.

A non-finite loss or one beyond ``divergence_threshold`` stops the run with
:class:`lipkit.training.TrainingDivergedError`, naming the step and the last good
checkpoint, which is kept. The loop, the checks and the checkpoints are
:func:`lipkit.training.train`'s; this module describes one generator step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from lipkit.checkpoint import data_fingerprint
from lipkit.data import TOYS, load_digits, sample_toy
from lipkit.errors import (
    InvalidArgumentError,
    LipkitError,
    UnknownMethodError,
    check_positive,
    check_seed,
)
from lipkit.gan.losses import GENERATOR_OBJECTIVES, LOSSES, critic_loss, generator_loss
from lipkit.gan.metrics import (
    critic_lipschitz_lower,
    exact_wasserstein,
    plot_samples,
    plot_training,
)
from lipkit.gan.models import generator_mlp
from lipkit.io import atomic_write_json
from lipkit.nn import lipschitz_bound
from lipkit.penalty import LipschitzMethod, critic_mlp, interpolates, lipschitz_method
from lipkit.training import (
    Checkpoint,
    ProgressEvent,
    train,
)


@dataclass(frozen=True)
class OptimizerSetting:
    """One paper's optimizer: Adam (``betas``) or RMSProp, and a linear decay of the rate."""

    optimizer: str
    lr: float
    betas: tuple[float, float] = (0.5, 0.9)
    decay: bool = False
    source: str = ""


_WGAN_GP = OptimizerSetting("adam", 1e-4, (0.5, 0.9), False,
                            "WGAN-GP toy script gan_toy.py (Gulrajani et al. 2017)")
OPTIMIZERS = {
    "gp": _WGAN_GP,
    "gp-one-sided": _WGAN_GP,
    "lp": OptimizerSetting("adam", 1e-4, (0.5, 0.9), False,
                           "WGAN-GP's setting, under which Petzka et al. 2018 compare"),
    "alp": OptimizerSetting("adam", 2e-4, (0.0, 0.9), True,
                            "wgan_alp.py (Terjék 2020): Adam 2e-4, betas (0, 0.9), linear decay"),
    "clip": OptimizerSetting("rmsprop", 5e-5, (0.0, 0.0), False,
                             "WGAN (Arjovsky et al. 2017) and gan_toy.py: RMSProp 5e-5"),
    "spectral": OptimizerSetting("adam", 1e-4, (0.5, 0.9), False,
                                 "Miyato et al. 2018 setting A (WGAN-GP's), n_dis = 5"),
    "orthogonal": OptimizerSetting("adam", 1e-4, (0.5, 0.9), False,
                                   "WGAN-GP's (no toy setting in Anil et al. 2019)"),
    "unconstrained-alpha": OptimizerSetting("adam", 1e-4, (0.5, 0.9), False, "WGAN-GP's"),
    "max-gp": OptimizerSetting("adam", 1e-4, (0.5, 0.9), False,
                               "WGAN-GP's (Zhou et al.'s own toy setting not checked here)"),
    "none": OptimizerSetting("adam", 1e-4, (0.5, 0.9), False, "WGAN-GP's"),
}
# the Lipschitz methods' options a GAN uses unless told otherwise (the papers' values)
GAN_METHOD_OPTIONS = {"clip": {"clip_value": 0.01}}  # WGAN's c = 0.01
DATASETS = (*TOYS, "digits")


@dataclass
class GanConfig:
    """Everything that defines a run (saved in its checkpoint and metrics).

    ``data`` is one of :data:`DATASETS`; ``lipschitz`` a method of
    :data:`lipkit.penalty.METHODS` (with ``lipschitz_constant``, ``weight``); ``loss`` one of
    :data:`lipkit.gan.LOSSES` and ``generator_objective`` one of
    :data:`lipkit.gan.GENERATOR_OBJECTIVES` (``linear``: ``psi(x) = -x``); ``steps`` counts
    generator steps; ``hidden``/``depth`` size both networks (the WGAN-GP toy models are
    3 x 512); ``lr``/``betas`` override the method's :data:`OPTIMIZERS` (``lr_decay``: its
    linear decay to 0); ``method_options`` go to :func:`lipkit.penalty.lipschitz_method`.
    """

    data: str = "8gaussians"
    lipschitz: str = "gp"
    loss: str = "wasserstein"
    generator_objective: str = "linear"
    steps: int = 2000
    n_critic: int = 5
    batch_size: int = 256
    hidden: int = 512
    depth: int = 3
    latent: int = 2
    lipschitz_constant: float = 1.0
    weight: float | None = None
    method_options: dict = field(default_factory=dict)
    lr: float | None = None
    betas: tuple[float, float] | None = None
    lr_decay: bool | None = None
    seed: int = 0
    eval_every: int = 100
    eval_samples: int = 1000
    checkpoint_every: int = 100
    divergence_threshold: float = 1e6

    def check(self) -> None:
        """Raise a one-line error for a bad value (unknown names, non-positive sizes)."""
        if self.lipschitz not in OPTIMIZERS:
            raise UnknownMethodError("Lipschitz method", self.lipschitz, OPTIMIZERS)
        if self.loss not in LOSSES:
            raise UnknownMethodError("GAN loss", self.loss, LOSSES)
        if self.generator_objective not in GENERATOR_OBJECTIVES:
            raise UnknownMethodError("generator objective", self.generator_objective,
                                     GENERATOR_OBJECTIVES)
        for name in ("steps", "n_critic", "batch_size", "hidden", "depth", "latent",
                     "eval_every", "eval_samples", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"GAN {name} must be an integer >= 1, got {value!r}")
        check_seed("GAN seed", self.seed)
        check_positive("GAN divergence_threshold", self.divergence_threshold)
        if self.lr is not None:
            check_positive("GAN lr", self.lr)

    def to_dict(self) -> dict:
        """Plain data (JSON and ``weights_only`` checkpoints)."""
        values = asdict(self)
        values["betas"] = list(self.betas) if self.betas is not None else None
        values["method_options"] = {k: list(v) if isinstance(v, tuple) else v
                                    for k, v in self.method_options.items()}
        return values


@dataclass
class GanResult:
    """A finished run: the trained networks, the method, and the metrics written."""

    generator: nn.Module
    critic: nn.Module
    method: LipschitzMethod
    metrics: dict
    out: Path | None


class _RealData:
    """Batches of the real distribution: fresh toy draws or rows of a tensor."""

    def __init__(self, name: str, tensor: torch.Tensor | None):
        if tensor is None and name == "digits":
            tensor = load_digits().x_train
        if tensor is None and name not in TOYS:
            raise UnknownMethodError("GAN data set", name, DATASETS)
        if tensor is not None:
            if tensor.ndim != 2 or len(tensor) < 2 or not tensor.is_floating_point():
                raise InvalidArgumentError(f"GAN real data must be a float tensor (n >= 2, "
                                           f"features), got shape {tuple(tensor.shape)}")
            if not torch.isfinite(tensor).all():
                raise InvalidArgumentError("GAN real data contains NaN or infinite values")
            tensor = tensor.float()
        self.name, self.tensor = name, tensor
        self.features = 2 if tensor is None else tensor.shape[1]

    def fingerprint(self) -> dict:
        """The data set in a checkpoint: a toy's name, or the tensor's shape and hash."""
        if self.tensor is None:
            return data_fingerprint(self.name)
        return data_fingerprint(self.name, real=self.tensor)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if self.tensor is None:
            return sample_toy(self.name, n, generator)
        return self.tensor[torch.randint(len(self.tensor), (n,), generator=generator)]


def _optimizer(setting: OptimizerSetting, parameters, config: GanConfig):
    lr = config.lr if config.lr is not None else setting.lr
    if setting.optimizer == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=lr)
    betas = tuple(config.betas) if config.betas is not None else setting.betas
    return torch.optim.Adam(parameters, lr=lr, betas=betas)


def train_gan(config: GanConfig | None = None, out: str | Path | None = None, *,
              real: torch.Tensor | None = None, resume: bool = False,
              progress: Callable[[ProgressEvent], None] | None = None) -> GanResult:
    """Train a GAN with ``config`` and write the run into ``out`` (module docstring).

    Args:
        config: the run; defaults to WGAN-GP on 8 Gaussians.
        out: the run's folder (nothing is written without it).
        real: samples of the real distribution (n, features), e.g. from
            :func:`lipkit.data.load_mnist` flattened; ``config.data`` is then only a label.
        resume: continue from ``out/checkpoint.pt`` when it exists; without it, a folder
            that already holds a checkpoint is refused rather than overwritten.
        progress: called after every generator step with a
            :class:`lipkit.training.ProgressEvent` whose figures are the latest evaluation
            (empty before the first).

    Raises:
        TrainingDivergedError: a loss became NaN/infinite or exceeded the threshold.
        LipkitError: bad configuration, data or checkpoint.
    """
    config = config or GanConfig()
    config.check()
    data = _RealData(config.data, real)
    # the papers' options unless the caller gives any (clip_value=None: clip to lambda)
    options = config.method_options or GAN_METHOD_OPTIONS.get(config.lipschitz, {})
    method = lipschitz_method(config.lipschitz, config.lipschitz_constant, config.weight,
                              **options)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        generator = generator_mlp(config.latent, config.hidden, config.depth, data.features)
        critic = critic_mlp(data.features, config.hidden, config.depth, method)
    setting = OPTIMIZERS[config.lipschitz]
    generator_optimizer = _optimizer(setting, generator.parameters(), config)
    critic_optimizer = _optimizer(setting, critic.parameters(), config)
    rng = torch.Generator().manual_seed(config.seed)
    history = {"step": [], "critic_loss": [], "generator_loss": [], "penalty": [],
               "evaluations": []}
    timing = {"critic_seconds": 0.0, "critic_steps": 0}
    out = Path(out) if out is not None else None
    checkpoint = None
    if out is not None:
        checkpoint = Checkpoint(out / "checkpoint.pt", config.to_dict(), data.fingerprint(),
                                ignore=("steps", "eval_every", "checkpoint_every"))
    evaluation = _Evaluation(data, config, method)
    started = time.perf_counter()
    decay = setting.decay if config.lr_decay is None else config.lr_decay

    def step(index: int) -> dict:
        if decay:
            factor = max(0.0, 1.0 - (index - 1) / config.steps)
            for optimizer in (generator_optimizer, critic_optimizer):
                for group in optimizer.param_groups:
                    group["lr"] = (config.lr or setting.lr) * factor
        tick = time.perf_counter()
        critic_values = []
        for _ in range(config.n_critic):
            real_batch = data.sample(config.batch_size, rng)
            with torch.no_grad():
                fake_batch = generator(torch.randn(config.batch_size, config.latent,
                                                   generator=rng))
            adversarial = critic_loss(config.loss, critic(real_batch).flatten(),
                                      critic(fake_batch).flatten())
            penalty = method.penalty(critic, real_batch, fake_batch, generator=rng)
            loss = adversarial + penalty
            critic_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            critic_optimizer.step()
            critic_values.append(float(loss.detach()))
        timing["critic_seconds"] += time.perf_counter() - tick
        timing["critic_steps"] += config.n_critic
        noise = torch.randn(config.batch_size, config.latent, generator=rng)
        loss = generator_loss(config.loss, critic(generator(noise)).flatten(),
                              config.generator_objective)
        generator_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        generator_optimizer.step()
        generator_value = float(loss.detach())
        history["step"].append(index)
        history["critic_loss"].append(critic_values[-1])
        history["generator_loss"].append(generator_value)
        history["penalty"].append(float(penalty.detach()))
        return {"losses": {"critic loss": critic_values, "generator loss": generator_value}}

    def evaluate(index: int) -> dict:
        history["evaluations"].append(evaluation(index, generator, critic))
        return history["evaluations"][-1]

    def state() -> dict:
        return {"generator": generator.state_dict(), "critic": critic.state_dict(),
                "generator_optimizer": generator_optimizer.state_dict(),
                "critic_optimizer": critic_optimizer.state_dict(), "history": history,
                **timing}

    def restore(saved: dict) -> None:
        generator.load_state_dict(saved["generator"])
        critic.load_state_dict(saved["critic"])
        generator_optimizer.load_state_dict(saved["generator_optimizer"])
        critic_optimizer.load_state_dict(saved["critic_optimizer"])
        history.clear()
        history.update(saved["history"])
        timing.update(critic_seconds=saved["critic_seconds"],
                      critic_steps=saved["critic_steps"])

    def report(event: ProgressEvent) -> None:
        if progress is not None:
            last = history["evaluations"][-1] if history["evaluations"] else {}
            progress(ProgressEvent(event.step, event.total, last))

    run = train(step, config.steps, state=state, restore=restore, generators={"rng": rng},
                checkpoint=checkpoint, checkpoint_every=config.checkpoint_every,
                resume=resume, evaluate=evaluate, evaluate_every=config.eval_every,
                progress=report, threshold=config.divergence_threshold,
                unit="generator step",
                context=f"method {config.lipschitz}, loss {config.loss}")
    critic_seconds, critic_steps = timing["critic_seconds"], timing["critic_steps"]
    resumed_from = run.resumed_from
    checkpoint_path = checkpoint.path if checkpoint is not None else None
    if not history["evaluations"] or history["evaluations"][-1]["step"] != config.steps:
        history["evaluations"].append(evaluation(config.steps, generator, critic))
    metrics = {
        "config": config.to_dict(), "optimizer": asdict(setting),
        "final": history["evaluations"][-1], "evaluations": history["evaluations"],
        "critic_bounds": evaluation.bound_critic(critic, seed=config.seed),
        "seconds": time.perf_counter() - started,
        "seconds_per_critic_step": critic_seconds / max(critic_steps, 1),
        "critic_steps": critic_steps,
        "resumed_from_step": resumed_from,
        "checkpoint": str(checkpoint_path) if checkpoint_path else None,
    }
    if out is not None:
        title = f"{config.data}: {config.loss} GAN, {config.lipschitz}"
        plot_training(history, out / "losses.png", title)
        plot_samples(evaluation.real, evaluation.fake(generator), out / "samples.png",
                     critic if data.features == 2 else None, title)
        atomic_write_json(out / "metrics.json", metrics)
    return GanResult(generator, critic, method, metrics, out)


_CRITIC_BOUNDS = ("lower-gradient", "lower-adversarial", "naive", "seqlip")


class _Evaluation:
    """Fixed evaluation samples (their own seed, so evaluating changes no training draw)."""

    def __init__(self, data: _RealData, config: GanConfig, method: LipschitzMethod):
        generator = torch.Generator().manual_seed(config.seed + 1_000_003)
        self.real = data.sample(config.eval_samples, generator)
        self.noise = torch.randn(config.eval_samples, config.latent, generator=generator)
        self.mixing = interpolates(self.real, self.real.flip(0), generator)
        self.t = torch.rand(config.eval_samples, 1, generator=generator)
        self.method, self.started = method, time.perf_counter()

    def bound_critic(self, critic: nn.Module, seed: int) -> dict:
        """The trained critic's ``||f||_L`` interval by lipkit.estimate (attack lower bounds
        from the evaluation samples; naive and SeqLip upper bounds)."""
        from lipkit.estimate import estimate

        training = critic.training
        critic.eval()
        try:
            with torch.random.fork_rng(devices=[]):
                report = estimate(critic, methods=_CRITIC_BOUNDS, data=self.real, seed=seed,
                                  time_limit=10)
        except LipkitError as error:  # a critic estimate cannot import: say so, go on
            return {"error": str(error)}
        finally:
            critic.train(training)
        lower, upper = report.interval
        return {"lower": lower, "upper": upper if math.isfinite(upper) else None,
                "lower_method": report.lower.method if report.lower else None,
                "upper_method": report.upper.method if report.upper else None}

    def fake(self, generator: nn.Module) -> torch.Tensor:
        with torch.no_grad():
            return generator(self.noise)

    def __call__(self, step: int, generator: nn.Module, critic: nn.Module) -> dict:
        fake = self.fake(generator)
        training = critic.training
        critic.eval()  # no power-iteration update of spectral normalization while measuring
        try:
            between = self.t * self.real + (1 - self.t) * fake  # WGAN-GP's rho
            points = torch.cat([self.real, fake, between, self.mixing])
            lower = critic_lipschitz_lower(critic, points)
            with torch.no_grad():
                estimate = float(self.method.wasserstein(critic, self.real, fake))
        finally:
            critic.train(training)
        upper = lipschitz_bound(critic) if self.method.construction else None
        return {"step": step, "w1_exact": exact_wasserstein(fake, self.real),
                "w1_critic": estimate, "lipschitz_lower": lower, "lipschitz_upper": upper,
                "seconds": time.perf_counter() - self.started}
