"""``lipkit demo``: every capability of lipkit on built-in data, in one report.

Each section is a function ``section(out_dir, progress, seed, quick, context) -> Section``
(``context`` carries what one section leaves for the next, e.g. trained models) that trains
or measures something on offline data and returns its markdown, metrics and figures; the
demo writes ``report.md``, ``metrics.json`` and the PNGs into one output folder, each file
atomically. Sections so far:

- **Enforce by construction**: a 1-Lipschitz classifier on scikit-learn's digits, built from
  Björck-orthogonal layers and MaxMin (gradient norm preserving, Anil et al. 2019), next to
  the same network with spectral normalization and ReLU; test accuracy, the guaranteed
  bound, and checks that the bound holds (largest observed ratio and Jacobian norm).
- **Measure**: every estimation method on those two classifiers, and the interval.
- **Exact by MIP and by branch and bound**: the exact l-inf constant of a small ReLU classifier
  on digits (``exact-mip``), globally and around a test image, next to the lower-bound search,
  the product, LP and Shor (SDP) bounds; the exact l-inf and l2 constants of a 2-input MLP by
  input-space branch and bound (``exact-bab``).
- **Use: Wasserstein GANs**: WGAN on 8 Gaussians with the gradient penalty and with the
  adversarial Lipschitz penalty; exact W1 (POT) to the data, the critic's estimate and its
  Lipschitz lower bound, sample plots.
- **Use: divergence and mutual information**: the Moreau-Yosida KL ``D_lambda`` of two
  Gaussians for growing ``lambda`` against its closed form, and MI estimates (InfoNCE, MINE,
  ``D_lambda``) of correlated Gaussians against the truth.
- **Certify**: a Björck + MaxMin classifier trained with the Lipschitz-margin cross-entropy
  (lipkit.certify), its verified robust accuracy against l2 eps next to the accuracy PGD
  leaves, the certificates PGD broke (0), and the same for the first section's model.
- **Model-based RL**: Lipschitz transition models on Pendulum-v1 (Asadi et al., 2018): the
  compounding error against the theorem's bound, value error and MPC return per constant.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from lipkit import __version__
from lipkit.cli import render
from lipkit.cli.console import Progress
from lipkit.data import load_digits
from lipkit.errors import check_seed
from lipkit.io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    claim_output_folder,
    json_safe,
    save_figure,
)
from lipkit.nn import MaxMin, export, lipschitz_bound, make_lipschitz
from lipkit.training import train


@dataclass
class Section:
    """One part of the demo report."""

    title: str
    markdown: str
    metrics: dict = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)


def _train_classifier(model, data, epochs, temperature, seed, advance) -> dict:
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_function = nn.CrossEntropyLoss()
    history = {"loss": [], "train_accuracy": [], "test_accuracy": []}
    n = len(data.y_train)

    def epoch(index: int) -> dict:
        model.train()
        order = torch.randperm(n)
        total, correct = 0.0, 0
        for start in range(0, n, 64):
            batch = order[start : start + 64]
            logits = model(data.x_train[batch])
            loss = loss_function(temperature * logits, data.y_train[batch])
            if not torch.isfinite(loss):  # the loop stops the run
                return {"losses": {"cross-entropy": loss.item()}}
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
            correct += int((logits.argmax(1) == data.y_train[batch]).sum())
        accuracy = _accuracy(model, data.x_test, data.y_test)
        history["loss"].append(total / n)
        history["train_accuracy"].append(correct / n)
        history["test_accuracy"].append(accuracy)
        return {"losses": {"cross-entropy": total / n}, "test_accuracy": accuracy}

    train(epoch, epochs, unit="epoch", context="the demo's classifier",
          progress=lambda event: advance(
              f"test accuracy {event.figures['test_accuracy']:.3f}"))
    model.eval()
    return history


@torch.no_grad()
def _accuracy(model, x, y) -> float:
    was_training = model.training
    model.eval()
    accuracy = float((model(x).argmax(1) == y).float().mean())
    model.train(was_training)
    return accuracy


def _observed_constants(model, x: torch.Tensor, seed: int) -> tuple[float, float, float]:
    """Largest ||f(a)-f(b)||/||a-b|| over random pairs, largest Jacobian norm, mean
    gradient norm of the predicted logit: empirical values the bound must dominate."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        first = x[torch.randint(len(x), (2000,), generator=generator)]
        second = x[torch.randint(len(x), (2000,), generator=generator)]
        keep = (first - second).norm(dim=1) > 0
        ratio = (model(first) - model(second)).norm(dim=1) / (first - second).norm(dim=1)
        largest_ratio = float(ratio[keep].max())
    jacobians = torch.func.vmap(torch.func.jacrev(model))(x[:300]).detach()
    largest_jacobian = float(torch.linalg.matrix_norm(jacobians, ord=2).max())
    predicted = model(x[:300]).argmax(1)
    gradient_rows = jacobians[torch.arange(len(predicted)), predicted]
    mean_gradient = float(gradient_rows.norm(dim=1).mean())
    return largest_ratio, largest_jacobian, mean_gradient


def lipschitz_classifier_section(out_dir: Path, progress: Progress, seed: int,
                                 quick: bool, context: dict) -> Section:
    """Train 1-Lipschitz classifiers on digits: orthogonal + MaxMin vs spectral + ReLU."""
    data = load_digits(seed=seed)
    epochs = 4 if quick else 40
    temperature = 12.0
    variants = {
        "orthogonal + MaxMin (GNP)": ("bjorck", lambda: MaxMin()),
        "spectral + ReLU": ("spectral", lambda: nn.ReLU()),
    }
    rows, metrics, histories = [], {}, {}
    started = time.perf_counter()
    for name, (method, activation) in variants.items():
        torch.manual_seed(seed)
        model = nn.Sequential(
            nn.Linear(64, 256), activation(), nn.Linear(256, 256), activation(),
            nn.Linear(256, 10),
        )
        make_lipschitz(model, method=method, lipschitz=1.0)
        advance = progress.task(f"digits: {name}", epochs)
        variant_start = time.perf_counter()
        history = _train_classifier(model, data, epochs, temperature, seed, advance)
        seconds = time.perf_counter() - variant_start
        layers: dict[str, float] = {}
        bound = lipschitz_bound(model, layers=layers)
        ratio, jacobian, gradient = _observed_constants(model, data.x_test, seed)
        plain = export(model)
        with torch.no_grad():
            export_gap = float((plain(data.x_test) - model(data.x_test)).abs().max())
        key = method
        metrics[key] = {
            "variant": name,
            "test_accuracy": history["test_accuracy"][-1],
            "lipschitz_bound": bound,
            "layer_bounds": layers,
            "largest_observed_ratio": ratio,
            "largest_jacobian_norm": jacobian,
            "mean_gradient_norm_of_predicted_logit": gradient,
            "export_max_abs_difference": export_gap,
            "train_seconds": seconds,
            "epochs": epochs,
        }
        histories[name] = history
        context.setdefault("digits_models", {})[name] = model
        context["digits_data"] = data
        rows.append(
            f"| {name} | {history['test_accuracy'][-1]:.3f} | {bound:.4f} | {ratio:.4f} | "
            f"{jacobian:.4f} | {gradient:.3f} | {seconds:.1f} |"
        )
        if method == "bjorck":
            from safetensors.torch import save

            atomic_write_bytes(out_dir / "digits_orthogonal.safetensors",
                               save({k: v.contiguous() for k, v in plain.state_dict().items()}))
    figure_name = "digits_training.png"
    _plot_histories(histories, out_dir / figure_name)
    sound = all(m["largest_jacobian_norm"] <= m["lipschitz_bound"] * (1 + 1e-4)
                and m["largest_observed_ratio"] <= m["lipschitz_bound"] * (1 + 1e-4)
                for m in metrics.values())
    metrics["bound_dominates_observations"] = sound
    metrics["seconds"] = time.perf_counter() - started
    markdown = "\n".join([
        "Two 64-256-256-10 classifiers on scikit-learn's digits (1,347 train / 450 test "
        f"images, {epochs} epochs, cross-entropy on {temperature:g} x logits), each made "
        "1-Lipschitz by `make_lipschitz`. The bound is `lipschitz_bound(model)`: the product "
        "of the certified layer norms. The observed columns are lower bounds on the true "
        "constant that the bound must dominate: the largest ratio "
        "||f(a)-f(b)||/||a-b|| over 2,000 random test pairs and the largest spectral norm "
        "of the Jacobian at 300 test points. The mean gradient norm of the predicted logit "
        "(at most 1) measures gradient attenuation, which orthogonal layers with MaxMin "
        "are designed to avoid (Anil et al., 2019; here the 64 -> 256 first layer can "
        "only pass the part of a gradient in its 64-dimensional range).",
        "",
        "| network | test accuracy | guaranteed bound | largest observed ratio | "
        "largest Jacobian norm | mean gradient norm | train s |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Bound dominates every observation: **{'yes' if sound else 'NO'}**. "
        "The orthogonal model was exported with `lipkit.nn.export` (plain torch layers, "
        "outputs equal to "
        f"{metrics['bjorck']['export_max_abs_difference']:.1e}) to "
        "`digits_orthogonal.safetensors`.",
        "",
        f"![training curves]({figure_name})",
    ])
    return Section("Enforce by construction: 1-Lipschitz classifiers", markdown, metrics,
                   [figure_name])


def _plot_histories(histories: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    lowest = 1.0
    for index, (name, history) in enumerate(histories.items()):
        epochs = range(1, len(history["loss"]) + 1)
        color = f"C{index}"
        left.plot(epochs, history["loss"], color=color, label=name)
        right.plot(epochs, history["test_accuracy"], color=color, label=f"{name} (test)")
        right.plot(epochs, history["train_accuracy"], color=color, linestyle="--",
                   label=f"{name} (train)")
        lowest = min(lowest, *history["test_accuracy"], *history["train_accuracy"])
    left.set(xlabel="epoch", ylabel="training loss", title="loss", yscale="log")
    right.set(xlabel="epoch", ylabel="accuracy", title="accuracy",
              ylim=(max(0.0, lowest - 0.02), 1.0))
    left.legend()
    right.legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)


def estimation_section(out_dir: Path, progress: Progress, seed: int, quick: bool,
                       context: dict) -> Section:
    """Bound the l2 constant of the digits classifiers with every estimation method."""
    from lipkit.estimate import METHODS, estimate
    from lipkit.estimate.plot import plot_report

    models = context.get("digits_models", {})
    data = context["digits_data"]
    cheap = ["lower-jacobian", "lower-adversarial", "naive", "autolip", "seqlip",
             "compositional"]
    # LipSDP-Neuron on sub-networks of two layers (one hidden layer each): a product of
    # certified bounds, seconds instead of minutes for the whole 64-256-256-10 network
    expensive = ["lower-gradient", "lipsdp-neuron"]
    methods = [m for m in cheap + ([] if quick else expensive) if m in METHODS]
    sdp_options = {"lipsdp-neuron": {"split": 2}} if "lipsdp-neuron" in methods else {}
    metrics, blocks, figures = {}, [], []
    for name, model in models.items():
        advance = progress.task(f"estimate: {name}", len(methods))

        def report_progress(method, index, count, advance=advance):
            if index:
                advance(method)

        report = estimate(model, methods=methods, data=data.x_test, seed=seed,
                          progress=report_progress, time_limit=60, options=sdp_options)
        advance("done")
        metrics[name] = report.to_dict()
        guaranteed = lipschitz_bound(model)
        figure_name = "estimate_" + re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_") + ".png"
        plot_report(report, out_dir / figure_name, title=f"{name}: {report.network.summary()}")
        figures.append(figure_name)
        blocks += [
            f"**{name}** (`{report.network.summary()}`); the construction guarantees "
            f"{guaranteed:.4f}.",
            "",
            *render.markdown(report),
            f"![bounds and times on {name}]({figure_name})",
            "",
        ]
        metrics[name]["guaranteed"] = guaranteed
    markdown = "\n".join([
        "`lipkit.estimate.estimate` on the two trained classifiers (l2 norm; lower bounds "
        "searched from the 450 test images and random points, each the ratio of a real "
        "pair of inputs; upper bounds proven, LipSDP-Neuron on sub-networks of two layers "
        "with its certificate checked in float64). Methods that do not apply say why "
        "(SeqLip and LipSDP need elementwise activations, so not MaxMin).",
        "",
        *blocks,
    ])
    return Section("Measure: bounds on the trained classifiers", markdown, metrics, figures)


def exact_mip_section(out_dir: Path, progress: Progress, seed: int, quick: bool,
                      context: dict) -> Section:
    """The exact l-inf constant of a small ReLU classifier on digits, by MIP."""
    from lipkit.estimate import METHODS, estimate

    if "exact-mip" not in METHODS:  # highspy is not installed
        return Section("Exact by MIP", "skipped: `highspy` is not installed.")
    data = context.get("digits_data") or load_digits(seed=seed)
    epochs, width = (10, 8) if quick else (30, 12)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))
    history = _train_classifier(model, data, epochs, 1.0, seed, progress.task(
        f"digits: 64-{width}-10 ReLU for the MIP", epochs))
    center = data.x_test[0].double()
    # the lower-bound searches look everywhere: they bound the global constant, not the local
    domains = {"global (all of R^64)": ({}, ["lower-jacobian", "naive", "autolip", "lp-jacobian",
                                             "shor", "exact-mip"]),
               "local (l-inf ball of radius 0.05 around a test image)":
                   ({"center": center, "radius": 0.05}, ["naive", "exact-mip"])}
    advance = progress.task("exact-mip on the digits MLP", len(domains))
    metrics: dict = {"test_accuracy": history["test_accuracy"][-1], "width": width}
    blocks = []
    for name, (extra, methods) in domains.items():
        report = estimate(model, methods=methods, norm="inf", data=data.x_test, seed=seed,
                          time_limit=10 if quick else 60, **extra)
        advance(name)
        metrics[name] = report.to_dict()
        blocks += [f"**{name}**:", "", *render.markdown(report)]
    # few inputs: exact-bab (input-space branch and bound), in l2 as well
    torch.manual_seed(seed)
    hidden = 16 if quick else 32
    small = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                          nn.Linear(hidden, 1))
    advance = progress.task(f"exact-bab on a 2-{hidden}-{hidden}-1 MLP", 2)
    for norm in ("inf", "2"):
        methods = ["lower-jacobian", "naive", "exact-bab"] + (
            ["exact-mip"] if norm == "inf" else ["lipsdp-neuron"])
        report = estimate(small, methods=methods, norm=norm, seed=seed, time_limit=10)
        advance(norm)
        name = f"2-{hidden}-{hidden}-1, l{norm}"
        metrics[name] = report.to_dict()
        blocks += [f"**{name} (global)**:", "", *render.markdown(report)]
    markdown = "\n".join([
        f"A 64-{width}-10 ReLU MLP trained on digits ({epochs} epochs, test accuracy "
        f"{metrics['test_accuracy']:.3f}); `exact-mip` (LipMIP's formulation, HiGHS) computes "
        "the exact l-inf Lipschitz constant (largest row l1 norm of the Jacobian) and checks "
        "its witness by autograd; `shor` (Shor's SDP relaxation) and `lp-jacobian` are upper "
        "bounds, the lower-jacobian search and the product bounds for comparison (in the local "
        f"table, naive is the global bound, valid a fortiori). Then a random 2-{hidden}-{hidden}-1 "
        "ReLU MLP (seeded): `exact-bab`, branch and bound over input boxes, gives its exact "
        "l-inf and l2 constants (exact-mip, 10 s at most, is exact or brackets it in l-inf; "
        "LipSDP-Neuron is an upper bound in l2).",
        "",
        *blocks,
    ])
    return Section("Exact by MIP and by branch and bound", markdown, metrics)


def reinforcement_learning_section(out_dir: Path, progress: Progress, seed: int, quick: bool,
                                   context: dict) -> Section:
    """Sweep a Pendulum-v1 transition model's constant: compounding error, value, planning."""
    from lipkit.rl.experiment import Settings, report_markdown, run_sweep

    settings = Settings.quick() if quick else Settings(episodes=2)
    metrics = run_sweep("Pendulum-v1", [0.5, 2.0], "spectral", (seed,), settings,
                        out_dir / "rl", progress.events("rl Pendulum-v1"))
    markdown = report_markdown(metrics, ["rl/compounding_error.png", "rl/returns.png"])
    markdown = markdown.split("\n", 2)[2]  # without its own title
    return Section("Use: Lipschitz transition models in model-based RL", markdown,
                   {"summary": metrics["summary"], "seconds": metrics["seconds"]},
                   ["rl/compounding_error.png", "rl/returns.png"])


def gan_section(out_dir: Path, progress: Progress, seed: int, quick: bool,
                context: dict) -> Section:
    """WGAN-GP and WGAN-ALP on 8 Gaussians, measured by the exact W1 to the data."""
    from lipkit.data import sample_toy
    from lipkit.gan import GanConfig, exact_wasserstein, train_gan

    steps = 30 if quick else 400
    rows, metrics, figures = [], {}, []
    # W1 between two independent 500-point samples of the data: what a perfect generator scores
    draws = torch.Generator().manual_seed(seed)
    floor = exact_wasserstein(sample_toy("8gaussians", 500, draws),
                              sample_toy("8gaussians", 500, draws))
    for name in ("gp", "alp"):
        advance = progress.task(f"WGAN-{name.upper()} on 8 Gaussians", steps)
        config = GanConfig(data="8gaussians", lipschitz=name, steps=steps, hidden=64, depth=3,
                           batch_size=128, lr=1e-3, seed=seed, eval_every=max(steps // 4, 1),
                           eval_samples=500, checkpoint_every=steps)
        # the demo regenerates its report: the checkpoint of an earlier demo run (the folder
        # holds nothing but the demo's files, lipkit.io.claim_output_folder) is replaced
        (out_dir / f"gan_{name}" / "checkpoint.pt").unlink(missing_ok=True)
        result = train_gan(config, out_dir / f"gan_{name}",
                           progress=lambda event, advance=advance: advance(
                               f"W1 {event.figures['w1_exact']:.3f}" if event.figures else ""))
        final = result.metrics["final"]
        first = result.metrics["evaluations"][0]
        metrics[name] = {"final": final, "first": first,
                         "seconds_per_critic_step": result.metrics["seconds_per_critic_step"]}
        figure = f"gan_{name}/samples.png"
        figures += [figure, f"gan_{name}/losses.png"]
        rows.append(f"| {name} | {first['w1_exact']:.3f} | {final['w1_exact']:.3f} | "
                    f"{final['w1_critic']:.3f} | {final['lipschitz_lower']:.2f} | "
                    f"{1e3 * result.metrics['seconds_per_critic_step']:.1f} | ![]({figure}) |")
    markdown = "\n".join([
        f"`lipkit.gan.train_gan`: {steps} generator steps (5 critic steps each), 3 x 64 "
        "ReLU networks, Adam 1e-3 for a short run (the papers use 1e-4 / 2e-4 over 100k "
        "steps). W1 is exact between 500 generated and 500 real samples (POT); the critic's "
        "estimate is its Kantorovich-Rubinstein objective; its Lipschitz lower bound is its "
        "largest gradient norm at real, generated and interpolated points. Two independent "
        f"500-point samples of the data itself are {floor:.3f} apart in W1 (the noise "
        "floor: what a perfect generator scores); differences between rows of that order "
        "are not a ranking.",
        "",
        f"| penalty | W1 at step {metrics['gp']['first']['step']} | W1 at the end | critic's "
        "W1 | critic's Lipschitz constant >= | ms / critic step | samples |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ])
    return Section("Use: Wasserstein GANs with gradient and adversarial Lipschitz penalties",
                   markdown, metrics, figures)


def divergence_section(out_dir: Path, progress: Progress, seed: int, quick: bool,
                       context: dict) -> Section:
    """KL vs the Moreau-Yosida KL D_lambda, and MI estimates against the truth."""
    from lipkit.divergence import (
        MiConfig,
        donsker_varadhan_1d,
        gaussian_kl,
        gaussian_shift_moreau_yosida_kl,
        gaussian_wasserstein_1d,
        plot_mutual_information,
        train_divergence,
        train_mutual_information,
    )

    started = time.perf_counter()
    steps = 40 if quick else 400
    lambdas = (0.5, 1.0, 2.0, 4.0)
    advance = progress.task("divergence: D_lambda", len(lambdas))
    rows, kl_rows = [], []
    for constant in lambdas:
        result = train_divergence(
            "d-lambda", lambda n, g: 2.0 + torch.randn(n, 1, generator=g),
            lambda n, g: torch.randn(n, 1, generator=g), "spectral",
            lipschitz_constant=constant, hidden=32, steps=steps, batch_size=256, lr=3e-3,
            seed=seed)
        certified = lipschitz_bound(result.critic)
        value = donsker_varadhan_1d(result.critic, 2.0, 1.0, lipschitz=certified)
        closed = gaussian_shift_moreau_yosida_kl(2.0, constant)
        kl_rows.append({"lambda": constant, "certified": certified, "d_lambda": value,
                        "closed_form": closed})
        rows.append(f"| {constant:g} | {certified:.4f} | {value:.4f} | {closed:.4f} | "
                    f"{constant * gaussian_wasserstein_1d(2.0, 1.0):.4f} |")
        advance(f"lambda {constant:g}: {value:.3f}")
    levels = (2.0, 4.0) if quick else (2.0, 4.0, 6.0)
    mi_steps = 30 if quick else 300
    runs, mi_rows = {}, []
    estimators = (("InfoNCE", "infonce", "none"), ("MINE", "mine", "none"),
                  ("D_lambda (spectral, lambda 8)", "d-lambda", "spectral"))
    advance = progress.task("divergence: MI", len(estimators))
    for title, estimator, method in estimators:
        config = MiConfig(estimator=estimator, lipschitz=method, lipschitz_constant=8.0,
                          dim=5, mi=levels, steps=mi_steps, hidden=32 if quick else 64,
                          lr=1e-3, seed=seed)
        metrics = train_mutual_information(config).metrics
        runs[title] = metrics
        cells = " | ".join(f"{row['mean']:.2f} ({row['variance']:.3f})"
                           for row in metrics["levels"])
        mi_rows.append(f"| {title} | {cells} |")
        advance(title)
    figure_name = "divergence_mi.png"
    plot_mutual_information(runs, out_dir / figure_name)
    metrics = {"d_lambda": kl_rows, "kl": gaussian_kl([2.0], 1.0),
               "d_lambda_below_closed_form": all(
                   r["d_lambda"] <= gaussian_shift_moreau_yosida_kl(2.0, r["certified"]) + 1e-6
                   for r in kl_rows),
               "mi": {k: v["levels"] for k, v in runs.items()},
               "seconds": time.perf_counter() - started}
    markdown = "\n".join([
        "`lipkit.divergence`: the Moreau-Yosida KL "
        "D_lambda(mu||nu) = sup over ||f||_L <= lambda of E_mu f - log E_nu e^f, with "
        "mu = N(2, 1), nu = N(0, 1) (KL = 2), a spectral-normalized critic per lambda "
        f"({steps} steps) whose objective is evaluated exactly by quadrature. For any "
        "certified critic it may not exceed the closed form "
        "min(lambda d - lambda^2/2, d^2/2), d = 2, nor lambda W1 = 2 lambda: "
        f"**{'holds' if metrics['d_lambda_below_closed_form'] else 'VIOLATED'}**.",
        "",
        "| lambda | certified bound | D_lambda (trained) | closed form | lambda W1 |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Mutual information of correlated Gaussians (dimension 5, batch 64, {mi_steps} "
        "steps per level; mean (variance) of the per-step estimates over each level's second "
        "half; `lipkit mi` and benchmarks/bench_mi_poole.py run Poole et al.'s protocol):",
        "",
        "| estimator | " + " | ".join(f"I = {level:g}" for level in levels) + " |",
        "|---|" + "---|" * len(levels),
        *mi_rows,
        "",
        f"![MI estimates]({figure_name})",
    ])
    return Section("Use: divergence and mutual information", markdown, metrics, [figure_name])
def certification_section(out_dir: Path, progress: Progress, seed: int, quick: bool,
                          context: dict) -> Section:
    """Train for certified robustness and plot verified robust accuracy against eps."""
    from lipkit.certify import (
        TrainingConfig,
        certified_accuracy,
        lipschitz_mlp,
        plot_certified_accuracy,
        train_certified,
    )

    data = context.get("digits_data") or load_digits(seed=seed)
    epochs = 3 if quick else 40
    eps = [0.0, 0.1, 0.3, 0.5, 0.75, 1.0]
    torch.manual_seed(seed)
    model = lipschitz_mlp(64, 10, (256, 256), layer="bjorck", last="orthonormal")
    advance = progress.task("certified training (margin cross-entropy)", epochs)
    config = TrainingConfig("margin-ce", {"offset": 2.12, "temperature": 0.25}, epochs,
                            seed=seed)
    history = train_certified(model, data.x_train, data.y_train, config,
                              progress=lambda event: advance(
                                  f"loss {event.figures['loss']:.3f}"))
    models = {"Björck + MaxMin, margin-CE": model}
    first = context.get("digits_models", {}).get("orthogonal + MaxMin (GNP)")
    if first is not None:
        models["first section's model (plain CE)"] = first
    results, rows, metrics = {}, [], {"train_seconds": history["seconds"], "epochs": epochs}
    for name, classifier in models.items():
        result = certified_accuracy(classifier, data.x_test, data.y_test, eps,
                                    steps=5 if quick else 20, seed=seed)
        results[name] = result
        metrics[name] = result.to_dict()
        rows.append(f"| {name} | {result.clean_accuracy:.3f} | "
                    + " | ".join(f"{v:.3f} / {p:.3f}" for v, p in zip(
                        result.certified_accuracy[1:], result.pgd_accuracy[1:], strict=True))
                    + f" | {result.broken['2'] + result.broken['inf']} |")
    figure_name = "certified_accuracy.png"
    plot_certified_accuracy(results, out_dir / figure_name, "digits: certified vs PGD accuracy")
    metrics["broken_certificates"] = sum(r.broken["2"] + r.broken["inf"]
                                         for r in results.values())
    constants = results["Björck + MaxMin, margin-CE"].constants
    markdown = "\n".join([
        f"A 64-256-256-10 Björck + MaxMin network trained {epochs} epochs with the "
        "Lipschitz-margin cross-entropy (offset 2.12, temperature 0.25), certified by "
        "`lipkit.certify.certified_accuracy`: the pairwise certificate min_j (f_y - f_j) / "
        f"L_yj with constants from `{constants.source}` (||f||_L <= {constants.whole:.4f}). "
        "Each cell is certified accuracy (a lower bound on robust accuracy) / the accuracy "
        "l2 PGD leaves (an upper bound). PGD also ran inside every certified radius, in l2 "
        "and l-infinity: the last column counts the certificates it broke (0 when sound).",
        "",
        "| model | clean | " + " | ".join(f"eps {e:g}" for e in eps[1:]) + " | broken |",
        "|---|---|" + "---|" * (len(eps) - 1) + "---|",
        *rows,
        "",
        f"![certified accuracy]({figure_name})",
    ])
    return Section("Certify: robustness certificates", markdown, metrics, [figure_name])


SECTIONS: list[Callable[..., Section]] = [
    lipschitz_classifier_section,
    estimation_section,
    exact_mip_section,
    certification_section,
    gan_section,
    divergence_section,
    reinforcement_learning_section,
]


def run_demo(out_dir: str | Path = "lipkit-demo", seed: int = 0, quick: bool = False,
             progress: bool = True) -> dict:
    """Run every demo section and write the report folder; returns the metrics."""
    out_dir = Path(out_dir)
    check_seed("seed", seed)
    # a new or empty folder, or the report folder of an earlier demo: nothing else is touched
    finish = claim_output_folder(out_dir, "demo")
    try:
        torch.manual_seed(seed)
        started = time.perf_counter()
        sections = []
        context: dict = {}  # what one section leaves for the next (trained models, data)
        with Progress(progress) as bar:
            for section in SECTIONS:
                sections.append(section(out_dir, bar, seed, quick, context))
        return _write_report(out_dir, sections, seed, quick, time.perf_counter() - started)
    finally:
        finish()


def _write_report(out_dir: Path, sections: list, seed: int, quick: bool, seconds: float) -> dict:
    metrics = {
        "lipkit_version": __version__,
        "seed": seed,
        "quick": quick,
        "seconds": seconds,
        "sections": {s.title: s.metrics for s in sections},
    }
    lines = [
        "# lipkit demo report",
        "",
        f"lipkit {__version__}, torch {torch.__version__}, seed {seed}"
        f"{', quick mode' if quick else ''}; {seconds:.1f} s in all. "
        "Every number below was computed by this run.",
        "",
    ]
    for section in sections:
        lines += [f"## {section.title}", "", section.markdown, ""]
    atomic_write_text(out_dir / "report.md", "\n".join(lines))
    atomic_write_json(out_dir / "metrics.json", json_safe(metrics))
    return metrics

