"""exact-mip's bracket on the global l-inf constant after a fixed time, one lipkit against
another (run it once per lipkit with ``PYTHONPATH`` pointing at each ``src``).

Random ReLU MLPs (``bench_mip.random_mlp``, seeded) too large to solve in the limit; each
row is the bracket ``[lower, upper]`` exact-mip holds when the limit is hit. Prints one JSON
line (the lipkit file measured and the rows).

    PYTHONPATH=/tmp/old/src python benchmarks/bench_mip_global_brackets.py
    PYTHONPATH=src python benchmarks/bench_mip_global_brackets.py
"""

from __future__ import annotations

import argparse
import json
import time

import lipkit
from bench_mip import random_mlp
from lipkit.estimate import METHODS, load_network, options_for

NETS = [((4, 16, 16, 16, 1), 0), ((4, 24, 24, 24, 1), 1), ((4, 16, 16, 16, 16, 1), 2),
        ((4, 32, 32, 1), 3), ((6, 20, 20, 20, 1), 4)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--time-limit", type=float, default=60.0)
    args = parser.parse_args()
    rows = []
    for widths, seed in NETS:
        network = load_network(random_mlp(list(widths), seed=seed))
        started = time.perf_counter()
        result = METHODS["exact-mip"].function(network, options_for(
            "exact-mip", network, norm="inf", time_limit=args.time_limit))
        result = result[0] if isinstance(result, list) else result
        rows.append({"net": "-".join(map(str, widths)), "seed": seed, "kind": result.kind,
                     "upper": result.value, "lower": result.details.get("lower"),
                     "seconds": round(time.perf_counter() - started, 2)})
    print(json.dumps({"lipkit": lipkit.__file__, "rows": rows}))


if __name__ == "__main__":
    main()
