"""``lipschitz_bound`` of Prach et al.'s comparison convnets (``lipkit.certify.presets``) at
initialization, with the DFT bound only and with small zero-padded operators materialized.

    python benchmarks/bench_preset_bounds.py [--size small] [--image 32]

Each network is built with ``torch.manual_seed(0)``, run once in training mode (the power
iterations' first step) and bounded in eval mode, both ways in the same process.
"""

from __future__ import annotations

import argparse
import time

import torch

import lipkit.nn.operator_norm as operator_norm
from lipkit.certify.presets import COMPARISON_LAYERS, comparison_convnet
from lipkit.nn import lipschitz_bound


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small")
    parser.add_argument("--image", type=int, default=32)
    args = parser.parse_args()
    defaults = operator_norm.conv_operator_norm_upper.__defaults__
    print("| layer | DFT bound only (s) | with materialized small operators (s) |")
    print("|---|---|---|")
    try:
        for layer in COMPARISON_LAYERS:
            torch.manual_seed(0)
            model = comparison_convnet(3, args.image, 10, size=args.size, layer=layer)
            model(torch.zeros(2, 3, args.image, args.image))
            model.eval()
            cells = []
            for entries in (0, operator_norm.EXACT_ENTRIES):
                operator_norm.conv_operator_norm_upper.__defaults__ = (entries,)
                started = time.perf_counter()
                bound = lipschitz_bound(model)
                cells.append(f"{bound:.4f} ({time.perf_counter() - started:.1f})")
            print(f"| {layer} | {cells[0]} | {cells[1]} |")
    finally:
        operator_norm.conv_operator_norm_upper.__defaults__ = defaults


if __name__ == "__main__":
    main()
