"""lipkit's ``lp-jacobian`` l-infinity / l1 bound next to the product of induced norms.

For each network and norm: the product of induced norms (``naive``; ``autolip`` merges
consecutive affine maps first), the interval bound on the Jacobian (step 1 of
``lp-jacobian``), the LP bound, and the best lower bound found (``lower-jacobian``,
``lower-adversarial``); ratios to the product and to the lower bound. Networks: random
ReLU MLPs with PyTorch's default initialization (seeded), one with non-negative weights
(no sign cancellations for the LP to use), a 784-100x4-10 LeCun-normal MLP (l-infinity only,
as in the table recorded in BENCHMARKS.md; ``lp-jacobian`` now bounds l1 there too, solving
at most 256 of its 784 LPs by decreasing interval bound: see ``bench_lp_jacobian_local.py``).

Usage:
    python benchmarks/bench_lp_jacobian.py
"""

from __future__ import annotations

import itertools

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from bench_estimate import lecun_normal_mlp
from lipkit.estimate import estimate, load_network


def default_mlp(widths, seed, positive=False):
    torch.manual_seed(seed)
    layers = []
    for index, (a, b) in enumerate(itertools.pairwise(widths)):
        linear = nn.Linear(a, b)
        if positive:
            with torch.no_grad():
                linear.weight.abs_()
        layers.append(linear)
        if index < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).double()


def main() -> None:
    torch.set_num_threads(1)
    networks = {
        "2-8-8-2": default_mlp([2, 8, 8, 2], 0),
        "5-20x3-3": default_mlp([5, 20, 20, 20, 3], 0),
        "64-64x2-10": default_mlp([64, 64, 64, 10], 0),
        "16-32x4-4": default_mlp([16, 32, 32, 32, 32, 4], 0),
        "16-32x4-4 (weights >= 0)": default_mlp([16, 32, 32, 32, 32, 4], 0, positive=True),
        "784-100x4-10": lecun_normal_mlp([784] + [100] * 4 + [10],
                                         torch.Generator().manual_seed(0)),
    }
    table = Table(title="lp-jacobian vs the product of induced norms")
    for column in ("network", "norm", "naive", "autolip", "interval", "lp-jacobian (s)",
                   "best lower", "lp / naive", "lp / interval", "lp / lower"):
        table.add_column(column, justify="left" if column == "network" else "right")
    for name, model in networks.items():
        network = load_network(model)
        for norm in ("inf", "1"):
            if norm == "1" and network.in_features > 256:
                continue
            report = estimate(network, methods=["naive", "autolip", "lp-jacobian",
                                                "lower-jacobian", "lower-adversarial"],
                              norm=norm)
            b = {bound.method: bound for bound in report.bounds}
            lp, naive = b["lp-jacobian"], b["naive"].value
            lower = max(b["lower-jacobian"].value, b["lower-adversarial"].value)
            interval = lp.details["interval_bound"]
            table.add_row(name, norm, f"{naive:.4g}", f"{b['autolip'].value:.4g}",
                          f"{interval:.4g}", f"{lp.value:.4g} ({lp.seconds:.2f})",
                          f"{lower:.4g}", f"{lp.value / naive:.3f}",
                          f"{lp.value / interval:.3f}", f"{lp.value / lower:.2f}")
    Console(width=180).print(table)


if __name__ == "__main__":
    main()
