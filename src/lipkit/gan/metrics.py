"""Measuring a GAN: exact W1 between sample sets, the critic's constant, plots.

- :func:`exact_wasserstein`: W1 between two equally weighted sample sets, by POT's network
  simplex (``ot.emd2``) on Euclidean costs: exact for the empirical measures.
- :func:`critic_lipschitz_lower`: the largest gradient norm of the critic at given points, a
  lower bound on ``||f||_L`` (Rademacher: ``||f||_L = sup ||grad f||``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lipkit.io import save_figure


def exact_wasserstein(x: torch.Tensor, y: torch.Tensor) -> float:
    """W1 between the uniform measures on the rows of ``x`` and ``y`` (exact, POT).

    Example:
        >>> import torch
        >>> round(exact_wasserstein(torch.zeros(3, 2), torch.ones(3, 2)) ** 2, 6)  # sqrt(2) apart
        2.0
    """
    import ot

    x = x.detach().flatten(1).to("cpu", torch.float64)
    y = y.detach().flatten(1).to("cpu", torch.float64)
    cost = torch.cdist(x, y).numpy()
    a, b = np.full(len(x), 1.0 / len(x)), np.full(len(y), 1.0 / len(y))
    return float(ot.emd2(a, b, cost, numItermax=1_000_000))


def critic_lipschitz_lower(critic, points: torch.Tensor) -> float:
    """``max ||grad f(x)||_2`` over ``points``: a lower bound on the critic's constant."""
    with torch.enable_grad():
        x = points.detach().clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(critic(x).sum(), x)
    return float(gradient.flatten(1).norm(dim=1).max())


def plot_training(history: dict, path: str | Path, title: str = "") -> Path:
    """Loss curves, W1 (exact and the critic's) and the critic's constant over training."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    steps = history["step"]
    axes[0].plot(steps, history["critic_loss"], label="critic loss", lw=0.8)
    axes[0].plot(steps, history["generator_loss"], label="generator loss", lw=0.8)
    axes[0].set_xlabel("generator step")
    axes[0].legend()
    evaluations = history["evaluations"]
    at = [e["step"] for e in evaluations]
    axes[1].plot(at, [e["w1_exact"] for e in evaluations], "o-", label="exact W1 (POT)")
    axes[1].plot(at, [e["w1_critic"] for e in evaluations], "s--", label="critic's estimate")
    axes[1].set_xlabel("generator step")
    axes[1].set_yscale("log")
    axes[1].legend()
    axes[2].plot(at, [e["lipschitz_lower"] for e in evaluations], "o-",
                 label="lower bound (max gradient norm)")
    if evaluations and evaluations[0].get("lipschitz_upper") is not None:
        axes[2].plot(at, [e["lipschitz_upper"] for e in evaluations], "s--",
                     label="guaranteed bound")
    axes[2].set_xlabel("generator step")
    axes[2].set_title("critic's Lipschitz constant")
    axes[2].legend()
    figure.suptitle(title)
    try:
        return save_figure(figure, path)
    finally:
        plt.close(figure)


def plot_samples(real: torch.Tensor, fake: torch.Tensor, path: str | Path, critic=None,
                 title: str = "") -> Path:
    """2-D: real and generated samples over the critic's contours; else an image grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    real, fake = real.detach().cpu(), fake.detach().cpu()
    if real.shape[1] == 2:
        figure, axis = plt.subplots(figsize=(5, 5))
        both = torch.cat([real, fake])
        low, high = both.min(0).values - 0.5, both.max(0).values + 0.5
        if critic is not None:
            xs = torch.linspace(float(low[0]), float(high[0]), 80)
            ys = torch.linspace(float(low[1]), float(high[1]), 80)
            grid = torch.cartesian_prod(xs, ys)
            with torch.no_grad():
                values = critic(grid).reshape(80, 80).T.numpy()
            axis.contour(xs.numpy(), ys.numpy(), values, levels=15, linewidths=0.6)
        axis.scatter(real[:, 0], real[:, 1], s=3, c="tab:orange", label="real")
        axis.scatter(fake[:, 0], fake[:, 1], s=3, c="tab:green", label="generated")
        axis.set_xlim(float(low[0]), float(high[0]))
        axis.set_ylim(float(low[1]), float(high[1]))
        axis.legend(loc="upper right")
        axis.set_title(title)
    else:
        side = round(real.shape[1] ** 0.5)
        count = min(64, len(fake))
        columns = 8
        rows = (count + columns - 1) // columns
        figure, axes = plt.subplots(rows, columns, figsize=(columns, rows))
        for index, axis in enumerate(np.ravel(axes)):
            axis.axis("off")
            if index < count and side * side == fake.shape[1]:
                axis.imshow(fake[index].reshape(side, side).clamp(0, 1).numpy(), cmap="gray")
        figure.suptitle(title)
    try:
        return save_figure(figure, path)
    finally:
        plt.close(figure)
