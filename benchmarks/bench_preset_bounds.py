"""``lipschitz_bound`` of Prach et al.'s comparison convnets (``lipkit.certify.presets``) at
initialization, with the DFT bound only, with small zero-padded operators materialized
(the default, up to 2^22 entries) and with ``exact_entries=2**24`` (the 8x8 maps of
64-channel layers).

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
    parser.add_argument("--layers", nargs="*", default=list(COMPARISON_LAYERS))
    args = parser.parse_args()
    print("| layer | DFT bound only (s) | default: up to 2^22 entries materialized (s) | "
          "exact_entries=2^24 (s) |")
    print("|---|---|---|---|")
    for layer in args.layers:
        torch.manual_seed(0)
        model = comparison_convnet(3, args.image, 10, size=args.size, layer=layer)
        model(torch.zeros(2, 3, args.image, args.image))
        model.eval()
        cells = []
        for entries in (0, operator_norm.EXACT_ENTRIES, 1 << 24):
            started = time.perf_counter()
            bound = lipschitz_bound(model, exact_entries=entries)
            cells.append(f"{bound:.4f} ({time.perf_counter() - started:.1f})")
        print(f"| {layer} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
