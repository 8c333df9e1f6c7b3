"""Bounds on a DCGAN-style generator (transposed convolutions), and the Jacobians behind its
lower bound: forward mode (one pass per input) against reverse mode (one per output).

The generator maps a latent vector of ``--latent`` features through four
``nn.ConvTranspose2d`` (with BatchNorm and ReLU) to a 3 x 32 x 32 image, as in DCGAN
(Radford et al., 2016). Its Lipschitz constant is bounded by ``naive`` and ``autolip``
(transposed convolutions as operators, without dense matrices) and from below by
``lower-jacobian``; the dense methods say why they do not apply.

The Jacobians of a batch of points (``lipkit.estimate.witness.jacobians``, which the lower
bounds use) are timed in forward mode (now: ``in_features`` forward-mode passes) and in
reverse mode (before: ``out_features`` backward passes), in the same process, alternating,
and checked to agree.

Usage:
    python benchmarks/bench_conv_transpose.py [--latent 16] [--points 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from lipkit.estimate import estimate, load_network
from lipkit.estimate.network import DTYPE
from lipkit.estimate.witness import jacobians
from revision import lipkit_revision


def generator(latent: int) -> nn.Module:
    """DCGAN's generator at 32 x 32, narrowed (128-64-32 channels)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Unflatten(1, (latent, 1, 1)),
        nn.ConvTranspose2d(latent, 128, 4, 1, 0, bias=False), nn.BatchNorm2d(128), nn.ReLU(),
        nn.ConvTranspose2d(128, 64, 4, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.ConvTranspose2d(64, 32, 4, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.ConvTranspose2d(32, 3, 4, 2, 1, bias=False), nn.Tanh())
    generator_ = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.running_var.uniform_(0.5, 2.0, generator=generator_)
                module.running_mean.normal_(0, 0.1, generator=generator_)
    return model.double().eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latent", type=int, default=16)
    parser.add_argument("--points", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()
    console.print(f"lipkit {lipkit_revision()}, torch {torch.__version__}, "
                  f"{args.threads} thread(s)")
    model = generator(args.latent)
    network = load_network(model, (args.latent,))
    console.print(network.summary())

    report = estimate(network, methods=["naive", "autolip", "seqlip", "compositional",
                                        "lower-jacobian"], points=args.points)
    table = Table(title=f"generator {args.latent} -> 3x32x32, l2")
    for column in ("method", "kind", "value", "seconds", "status"):
        table.add_column(column)
    for bound in report.bounds:
        table.add_row(bound.method, bound.kind, f"{bound.value:.6g}", f"{bound.seconds:.2f}",
                      bound.status[:90])
    console.print(table)

    x = torch.randn(args.points, args.latent, dtype=DTYPE,
                    generator=torch.Generator().manual_seed(2))
    times = {"forward mode (now)": [], "reverse mode (before)": []}
    for _ in range(args.repeats):
        for name, function in (("forward mode (now)", jacobians),
                               ("reverse mode (before)",
                                lambda net, x: jacobians(net, x, mode="reverse"))):
            started = time.perf_counter()
            result = function(network, x)
            times[name].append(time.perf_counter() - started)
            if name.startswith("forward"):
                forward = result
            else:
                torch.testing.assert_close(forward, result, atol=1e-10, rtol=1e-10)
    table = Table(title=f"Jacobians of {args.points} points ({network.out_features} x "
                        f"{network.in_features}), median of {args.repeats}")
    for column in ("mode", "seconds", "ratio to forward mode"):
        table.add_column(column)
    base = statistics.median(times["forward mode (now)"])
    for name, values in times.items():
        median = statistics.median(values)
        table.add_row(name, f"{median:.3f}", f"{median / base:.1f}")
    console.print(table)


if __name__ == "__main__":
    main()
