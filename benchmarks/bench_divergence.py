"""Ground-truth benchmark of lipkit.divergence: MI of correlated Gaussians and KL vs D_lambda.

Part 1 (Poole et al. 2019's protocol, scaled down to a shared 2-core CPU): x, y in R^20,
batch 64, a staircase of true MI 2, 4, 6, 8, 10 nats; each estimator trains its own critic
(separable <g(x), h(y)>, 256 hidden x 2, embedding 32; joint MLP on [x, y]) and reports the
per-step estimate; bias and variance per level over the second half of each level.

Part 2: KL(N(m, s^2) || N(0, 1)) against D_lambda for growing lambda (spectral critics,
certified; batch 1024, Adam 3e-3 min(1, 2 / lambda)), the critic's objective evaluated
exactly by quadrature; equal variances
(D_lambda in closed form) and unequal ones (the log ratio is quadratic, D_lambda < KL).

    python benchmarks/bench_divergence.py --out benchmarks/figures --json divergence.json
    python benchmarks/bench_divergence.py --only none --json kl.json   # part 2 only
    python benchmarks/bench_divergence.py --only DV --only MINE --skip-kl --seed 1  # a subset
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

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
from lipkit.io import atomic_write_json, save_figure
from lipkit.nn import lipschitz_bound

# (title, estimator, lipschitz method, lambda, critic)
MI_RUNS = [
    ("DV", "dv", "none", 1.0, "separable"),
    ("MINE", "mine", "none", 1.0, "separable"),
    ("NWJ", "nwj", "none", 1.0, "separable"),
    ("InfoNCE", "infonce", "none", 1.0, "separable"),
    ("WPC (InfoNCE, 1-sided GP, lambda 8)", "wpc", "gp-one-sided", 8.0, "separable"),
    ("D_lambda (spectral, lambda 8)", "d-lambda", "spectral", 8.0, "separable"),
    ("D_lambda (1-sided GP, lambda 8)", "d-lambda", "gp-one-sided", 8.0, "separable"),
    ("WDM (spectral, lambda 8) [W1 units]", "wdm", "spectral", 8.0, "separable"),
    ("MINE joint", "mine", "none", 1.0, "joint"),
    ("NWJ joint", "nwj", "none", 1.0, "joint"),
    ("InfoNCE joint", "infonce", "none", 1.0, "joint"),
    ("D_lambda joint (spectral, lambda 8)", "d-lambda", "spectral", 8.0, "joint"),
]
LAMBDAS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


def mutual_information_part(args) -> dict:
    runs = {}
    for title, estimator, method, constant, critic in MI_RUNS:
        if args.only and title not in args.only:
            continue
        config = MiConfig(estimator=estimator, lipschitz=method, lipschitz_constant=constant,
                          critic=critic, steps=args.steps, lr=args.lr, seed=args.seed,
                          hidden=256 if critic == "separable" else args.joint_hidden)
        result = train_mutual_information(config)
        metrics = result.metrics
        runs[title] = metrics
        levels = " ".join(f"{row['mean']:6.2f}({row['variance']:.3f})"
                          for row in metrics["levels"])
        print(f"{title:40s} {metrics['seconds']:6.1f} s  mean(variance) per level: {levels}",
              flush=True)
    return runs


def kl_part(args) -> dict:
    rows = {}
    for mean, std in ((2.0, 1.0), (1.0, 2.0)):
        kl, w1 = gaussian_kl([mean], std), gaussian_wasserstein_1d(mean, std)

        def sample_p(n, generator, mean=mean, std=std):
            return mean + std * torch.randn(n, 1, generator=generator)

        def sample_q(n, generator):
            return torch.randn(n, 1, generator=generator)

        key = f"N({mean:g},{std:g}^2) vs N(0,1)"
        rows[key] = {"kl": kl, "w1": w1, "lambdas": []}
        for constant in LAMBDAS:
            started = time.perf_counter()
            # a lambda-scaled critic moves lambda times faster: the rate scales as 1/lambda
            result = train_divergence("d-lambda", sample_p, sample_q, "spectral",
                                      lipschitz_constant=constant, hidden=32, steps=args.kl_steps,
                                      batch_size=1024, lr=3e-3 * min(1.0, 2.0 / constant),
                                      seed=args.seed)
            certified = lipschitz_bound(result.critic)
            value = donsker_varadhan_1d(result.critic, mean, std, lipschitz=certified)
            closed = gaussian_shift_moreau_yosida_kl(mean, constant) if std == 1.0 else None
            rows[key]["lambdas"].append({
                "lambda": constant, "certified": certified, "d_lambda": value,
                "closed_form": closed, "lambda_w1": constant * w1,
                "seconds": time.perf_counter() - started})
            print(f"{key} lambda {constant:5g}: D_lambda {value:.4f} (closed form "
                  f"{closed if closed is None else round(closed, 4)}), KL {kl:.4f}, "
                  f"lambda W1 {constant * w1:.4f}", flush=True)
        result = train_divergence("dv", sample_p, sample_q, "none", hidden=32,
                                  steps=args.kl_steps, batch_size=1024, lr=3e-3, seed=args.seed)
        rows[key]["dv_unconstrained"] = donsker_varadhan_1d(result.critic, mean, std,
                                                            lipschitz=64.0)
    return rows


def plot_kl(rows: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(rows), figsize=(5 * len(rows), 3.6), squeeze=False)
    for axis, (title, row) in zip(axes[0], rows.items(), strict=True):
        lambdas = [r["lambda"] for r in row["lambdas"]]
        axis.plot(lambdas, [r["d_lambda"] for r in row["lambdas"]], "o-",
                  label="D_lambda (trained, exact objective)")
        if row["lambdas"][0]["closed_form"] is not None:
            axis.plot(lambdas, [r["closed_form"] for r in row["lambdas"]], "k--",
                      label="D_lambda closed form")
        axis.plot(lambdas, [min(r["lambda_w1"], 2 * row["kl"]) for r in row["lambdas"]], ":",
                  color="tab:green", label="lambda W1 (clipped)")
        axis.axhline(row["kl"], color="tab:red", label="KL")
        axis.axhline(row["dv_unconstrained"], color="tab:gray", linestyle="-.",
                     label="DV, unconstrained critic")
        axis.set_xscale("log", base=2)
        axis.set_xlabel("lambda")
        axis.set_ylabel("nats")
        axis.set_title(title)
        axis.legend(fontsize=7)
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="steps per MI level (Poole: 4000)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam rate (Poole: 5e-4)")
    parser.add_argument("--joint-hidden", type=int, default=128, help="joint critic width")
    parser.add_argument("--kl-steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", action="append", default=[],
                        help="the title of an MI run to run, repeatable (default: all)")
    parser.add_argument("--skip-kl", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/figures"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    runs = mutual_information_part(args)
    separable = {k: v for k, v in runs.items() if "joint" not in k}
    joint = {k: v for k, v in runs.items() if "joint" in k}
    if separable:
        plot_mutual_information(separable, args.out / "divergence_mi_separable.png", columns=4)
    if joint:
        plot_mutual_information(joint, args.out / "divergence_mi_joint.png", columns=4)
    kl = {} if args.skip_kl else kl_part(args)
    if kl:
        plot_kl(kl, args.out / "divergence_kl_lambda.png")
    seconds = time.perf_counter() - started
    print(f"total {seconds:.0f} s")
    summary = {"seconds": seconds, "args": {k: str(v) for k, v in vars(args).items()},
               "mi": {k: {"levels": v["levels"], "seconds": v["seconds"],
                          "units": v["units"], "log_batch": v["log_batch"]}
                      for k, v in runs.items()},
               "kl": kl}
    if args.json:
        atomic_write_json(args.json, summary)
    print(json.dumps({k: [round(r["mean"], 3) for r in v["levels"]]
                      for k, v in summary["mi"].items()}) if runs else "", flush=True)
    if not math.isfinite(seconds):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
