"""Local certificates of one lipkit against another on the same nets and images (run once
per lipkit, ``PYTHONPATH`` pointing at each ``src``): how many of the first test images
``certify_image`` proves at one eps, by the local constants and by the direct bound, and
its seconds per image (10 s limit). The nets are ``bench_local_certify``'s 784-256xK-10 on
digits upsampled to 28x28, trained once and kept in ``--cache``.

    PYTHONPATH=/tmp/old/src python benchmarks/bench_local_certify_compare.py 4 0.03
    PYTHONPATH=src python benchmarks/bench_local_certify_compare.py 4 0.03
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import lipkit
from bench_local_certify import digits_28, trained
from lipkit.certify.local import certify_image
from lipkit.estimate import load_network
from lipkit.estimate.engine import DenseChain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("depth", type=int)
    parser.add_argument("eps", type=float)
    parser.add_argument("--images", type=int, default=15)
    parser.add_argument("--cache", default="/tmp/lipkit-local-certify-nets")
    args = parser.parse_args()
    _, _, x_test, y_test = data = digits_28()
    path = Path(args.cache) / f"784-256x{args.depth}-10.safetensors"
    model = trained(args.depth, data[0], data[1]) if not path.exists() else None
    if model is None:
        from safetensors.torch import load_file

        model = trained(args.depth, data[0][:0], data[1][:0])  # the architecture
        model.load_state_dict(load_file(str(path)))
    else:
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(model.state_dict(), str(path))
    network = load_network(model)
    chain = DenseChain.of(network)
    rows = [certify_image(network, chain, x_test[i].double(), int(y_test[i]), args.eps, "inf",
                          (0.0, 1.0), time_limit=10.0, index=i) for i in range(args.images)]
    print(json.dumps({
        "lipkit": str(Path(lipkit.__file__).parents[1]), "depth": args.depth, "eps": args.eps,
        "images": args.images, "constant": sum(r.certified_by_constant for r in rows),
        "direct": sum(r.certified_directly for r in rows),
        "either": sum(r.certified for r in rows),
        "mean_seconds": round(sum(r.seconds for r in rows) / len(rows), 2),
        "max_seconds": round(max(r.seconds for r in rows), 2),
        "load": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
