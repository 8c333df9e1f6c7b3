"""Certify the ONNX export of a trained convnet preset, as `lipkit certify check` does, with the
strided-pooling bound of the network description (2x2 windows of stride 2: ||W_g||_2) and,
side by side, without it (the stride-1 DFT bound only), against the torch model's certificate.

    PYTHONPATH=src python benchmarks/bench_certify_onnx.py --out /tmp/bench-certify-onnx
"""

import argparse
import json
import math
from pathlib import Path

import torch

from lipkit.certify import certified_accuracy, logit_constants
from lipkit.certify.experiment import fit_inputs, load_data, train_and_certify
from lipkit.certify.train import TrainingConfig
from lipkit.estimate import load_network
from lipkit.estimate.network import Convolution


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-certify-onnx"))
    parser.add_argument("--epochs", type=int, default=3)
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    eps = [0.05, 0.1, 0.2]
    metrics = train_and_certify(arguments.out, "digits", "convnet", "small",
                                config=TrainingConfig(epochs=arguments.epochs), eps=eps)
    rows = {"torch model (lipschitz_bound)": (metrics["constants"]["whole"],
                                              list(metrics["certified_accuracy"].values()))}
    data = load_data("digits")
    network = load_network(arguments.out / "model.onnx")
    x = fit_inputs(network, data.x_test)
    disjoint = Convolution._disjoint_windows_norm
    for name, patch in (("ONNX, pooling bound ||W_g||_2", disjoint),
                        ("ONNX, stride-1 DFT bound only", lambda self: math.inf)):
        Convolution._disjoint_windows_norm = patch
        constants = logit_constants(network)
        result = certified_accuracy(network, x, data.y_test, eps, constants=constants,
                                    attack=False)
        rows[name] = (constants.whole, result.certified_accuracy)
    Convolution._disjoint_windows_norm = disjoint
    print(json.dumps({"eps": eps, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
