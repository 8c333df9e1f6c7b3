"""The random-label experiment of Bartlett, Foster & Telgarsky (NeurIPS 2017, Figure 1):
margin-normalized spectral complexity against the generalization gap.

On digits with 0 %, 50 % and 100 % of the training labels replaced by random ones, a network
is trained to fit them; :func:`lipkit.certify.spectral_complexity` (against the initial
weights) divided by a margin ``gamma`` should grow with the gap between train and test
accuracy (test labels are never randomized). ``gamma`` is the 10th percentile of the margins
``f_y - max_{j != y} f_j`` of the correctly classified training inputs (their bound holds for
every ``gamma``; the percentile of correct points keeps it positive when random labels are
only partly fit). Run for an unconstrained ReLU network and a 1-Lipschitz Björck + MaxMin
network of the same widths.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn

from lipkit.certify.complexity import margins, spectral_complexity
from lipkit.certify.presets import lipschitz_mlp
from lipkit.training import ProgressEvent, train

NETWORKS = ("unconstrained", "lipschitz")


def _network(kind: str, hidden) -> nn.Sequential:
    if kind == "lipschitz":
        return lipschitz_mlp(64, 10, hidden, layer="bjorck", last="orthonormal")
    modules: list[nn.Module] = []
    width = 64
    for size in hidden:
        modules += [nn.Linear(width, size), nn.ReLU()]
        width = size
    return nn.Sequential(*modules, nn.Linear(width, 10))


def label_noise_experiment(noise=(0.0, 0.5, 1.0), networks=NETWORKS, epochs: int = 100,
                           hidden=(256, 256), seed: int = 0,
                           progress: Callable[[ProgressEvent], None] | None = None
                           ) -> list[dict]:
    """Train each network on digits with each share of random labels; one row per run.

    ``progress`` receives a :class:`lipkit.training.ProgressEvent` after each run (figures:
    the row and a ``status`` line)."""
    from lipkit.data import load_digits

    data = load_digits(test_fraction=0.2, seed=0)
    rows = []
    for kind in networks:
        for share in noise:
            generator = torch.Generator().manual_seed(seed)
            labels = data.y_train.clone()
            chosen = torch.rand(len(labels), generator=generator) < share
            labels[chosen] = torch.randint(10, (int(chosen.sum()),), generator=generator)
            torch.manual_seed(seed)
            model = _network(kind, hidden)
            initial = copy.deepcopy(model).eval()
            # a 1-Lipschitz network's logits move little: a temperature lets CE fit them
            scale = 16.0 if kind == "lipschitz" else 1.0
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

            def epoch(index, model=model, optimizer=optimizer, labels=labels, scale=scale,
                      generator=generator) -> dict:
                model.train()
                order = torch.randperm(len(labels), generator=generator)
                for first in range(0, len(order), 64):
                    batch = order[first:first + 64]
                    loss = nn.functional.cross_entropy(scale * model(data.x_train[batch]),
                                                       labels[batch])
                    if not torch.isfinite(loss):  # the loop stops the run
                        break
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                return {"losses": {"cross-entropy": loss.item()}}

            train(epoch, epochs, unit="epoch", context=f"{kind}, {share:.0%} random labels")
            model.eval()
            with torch.no_grad():
                train_logits, test_logits = model(data.x_train), model(data.x_test)
            train_margins = margins(train_logits, labels)
            correct = train_margins > 0
            gamma = float(torch.quantile(train_margins[correct], 0.1)) if correct.any() else 0.0
            complexity = spectral_complexity(model, initial)
            train_accuracy = float(correct.float().mean())
            test_accuracy = float((test_logits.argmax(1) == data.y_test).float().mean())
            rows.append({
                "network": kind, "random_labels": share, "epochs": epochs,
                "train_accuracy": train_accuracy, "test_accuracy": test_accuracy,
                "generalization_gap": train_accuracy - test_accuracy,
                "spectral_complexity": complexity.value, "margin": gamma,
                "normalized_complexity": complexity.normalized(gamma),
                "normalized_margins": (train_margins[correct] / complexity.value).tolist(),
            })
            if progress is not None:
                gap = rows[-1]["generalization_gap"]
                progress(ProgressEvent(len(rows), len(networks) * len(noise), {
                    **rows[-1], "status": f"{kind}, {share:.0%} random labels: gap {gap:.3f}"}))
    return rows


def plot_label_noise(rows: list[dict], path) -> None:
    """Left: densities of margins / R_A per run; right: R_A / gamma against the gap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lipkit.io import save_figure

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    markers = {"unconstrained": "o", "lipschitz": "s"}
    for index, row in enumerate(rows):
        label = f"{row['network']}, {row['random_labels']:.0%} random"
        values = torch.tensor(row["normalized_margins"])
        if len(values) > 1:
            left.hist(values.numpy(), bins=40, density=True, histtype="step",
                      color=f"C{index}", label=label)
        if math.isfinite(row["normalized_complexity"]):
            right.scatter(row["generalization_gap"], row["normalized_complexity"],
                          marker=markers.get(row["network"], "o"), color=f"C{index}",
                          label=label, s=50)
    left.set(xlabel="margin / R_A (correct training points)", ylabel="density",
             title="normalized margins")
    right.set(xlabel="generalization gap (train - test accuracy)", ylabel="R_A / gamma",
              yscale="log", title="margin-normalized spectral complexity")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)
