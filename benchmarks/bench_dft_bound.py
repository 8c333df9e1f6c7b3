"""Time of ``conv_operator_norm_upper`` (the DFT bound of a zero-padded 3x3 convolution) in
two lipkit source trees, side by side: each tree runs in its own process, in alternating
turns, one torch thread.

    git worktree add /tmp/lipkit-old <revision>
    python benchmarks/bench_dft_bound.py /tmp/lipkit-old/src src --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CASES = ((64, 32), (128, 32), (256, 16))

_CHILD = """
import json, sys, time
sys.path.insert(0, {src!r})
import torch
torch.set_num_threads(1)
from torch import nn
from lipkit.nn.operator_norm import ConvGeometry, conv_operator_norm_upper
out = {{}}
for channels, size in {cases!r}:
    torch.manual_seed(0)
    conv = nn.Conv2d(channels, channels, 3, padding=1)
    geometry = ConvGeometry.of(conv, (size, size))
    start = time.perf_counter()
    bound = conv_operator_norm_upper(conv.weight, geometry)
    out[f"{{channels}} ch, {{size}}x{{size}}"] = [time.perf_counter() - start, bound]
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", help="the src folder of the reference tree")
    parser.add_argument("candidate", help="the src folder of the tree measured against it")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, dict[str, list[float]]] = {"baseline": {}, "candidate": {}}
    bounds: dict[str, dict[str, float]] = {"baseline": {}, "candidate": {}}
    for _ in range(args.rounds):
        for name, src in (("baseline", args.baseline), ("candidate", args.candidate)):
            result = subprocess.run([sys.executable, "-c", _CHILD.format(src=src, cases=CASES)],
                                    capture_output=True, text=True, check=True)
            for case, (seconds, bound) in json.loads(result.stdout).items():
                times[name].setdefault(case, []).append(seconds)
                bounds[name][case] = bound
    print("| case | baseline s (median) | candidate s (median) | candidate / baseline per "
          "round | bounds (baseline, candidate) |")
    print("|---|---|---|---|---|")
    for case in times["baseline"]:
        old, new = times["baseline"][case], times["candidate"][case]
        ratios = ", ".join(f"{b / a:.2f}" for a, b in zip(old, new, strict=True))
        print(f"| {case} | {statistics.median(old):.2f} | {statistics.median(new):.2f} | "
              f"{ratios} | {bounds['baseline'][case]:.12f}, {bounds['candidate'][case]:.12f} |")


if __name__ == "__main__":
    main()
