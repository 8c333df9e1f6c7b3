"""Wasserstein GANs and Lipschitz GANs with any Lipschitz method of lipkit.penalty.

    from lipkit.gan import GanConfig, train_gan
    result = train_gan(GanConfig(data="8gaussians", lipschitz="alp", steps=2000), out="run")
    result.metrics["final"]["w1_exact"]

- :func:`train_gan`, :class:`GanConfig`, :data:`OPTIMIZERS` (the papers' optimizer per
  method), :class:`TrainingDivergedError` (``trainer.py``);
- :data:`LOSSES`, :data:`GENERATOR_OBJECTIVES`, :func:`critic_loss`, :func:`generator_loss`:
  WGAN and the Lipschitz GANs of Zhou et al. 2019 (``losses.py``; their MaxGP penalty is the
  Lipschitz method ``max-gp`` of lipkit.penalty);
- :func:`generator_mlp` (``models.py``); the critic is :func:`lipkit.penalty.critic_mlp`;
- :func:`exact_wasserstein` (POT), :func:`critic_lipschitz_lower`, plots (``metrics.py``);
- :func:`save_checkpoint`, :func:`load_checkpoint` (``lipkit.checkpoint``: checksummed,
  tied to the run's configuration and data).
"""

from lipkit.checkpoint import load_checkpoint, save_checkpoint
from lipkit.gan.losses import GENERATOR_OBJECTIVES, LOSSES, critic_loss, generator_loss
from lipkit.gan.metrics import critic_lipschitz_lower, exact_wasserstein
from lipkit.gan.models import generator_mlp
from lipkit.gan.trainer import (
    DATASETS,
    OPTIMIZERS,
    GanConfig,
    GanResult,
    OptimizerSetting,
    train_gan,
)
from lipkit.training import TrainingDivergedError

__all__ = ["DATASETS", "GENERATOR_OBJECTIVES", "LOSSES", "OPTIMIZERS", "GanConfig", "GanResult",
           "OptimizerSetting", "TrainingDivergedError", "critic_lipschitz_lower", "critic_loss",
           "exact_wasserstein", "generator_loss", "generator_mlp", "load_checkpoint",
           "save_checkpoint", "train_gan"]
