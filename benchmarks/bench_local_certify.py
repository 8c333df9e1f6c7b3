"""Local constants and local certificates (issue 16), measured side by side in one run.

Part ``constants``: random ReLU MLPs (PyTorch's default initialization) around a standard
normal centre, l-inf balls: ``local-crown`` (bound propagation through the Clarke Jacobian
with branch and bound, time limits 2 s and 10 s, or with ``--fractions 0.1,0.2`` those
fractions of the exact method's seconds measured just before in the same process) against
``exact-mip``'s exact local constant (output 0), the local ``lp-jacobian`` bound and the
naive local interval bound (interval pre-activations, interval Jacobian), as ratios to the
exact value, with seconds. 2-input nets also against ``exact-bab`` in the l2 norm. Each row
records the lipkit it ran (``--tag``, e.g. a commit: the same script runs an older lipkit
through ``PYTHONPATH``) and the load average.

Part ``certify``: normally trained 784-256xK-10 ReLU MLPs (K = 2, 4, 6; Adam on
cross-entropy, 30 epochs) on the scikit-learn digits upsampled to 28x28 (bilinear, pixels
in [0, 1]); test images, l-inf eps 0.01 / 0.03 / 0.05 clipped to [0, 1]: certified by the
local constants, by the direct (alpha-CROWN) bound, by the global pairwise form; PGD
counterexamples (40 steps, 10 restarts, in the clipped ball); and the truth from the margin
MIP (:mod:`lipkit.estimate.engine.margin_mip`, 30 s per margin) where neither a certificate
nor PGD settles the image.

Results are appended to ``benchmarks/results/local_certify.jsonl``; runs already there are
skipped. Usage:
    python benchmarks/bench_local_certify.py constants [--fractions 0.1,0.2 --tag NAME]
    python benchmarks/bench_local_certify.py certify [--images 15] [--depths 2,4,6]
    python benchmarks/bench_local_certify.py table
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

RESULTS = Path(__file__).parent / "results" / "local_certify.jsonl"


def done() -> set:
    if not RESULTS.exists():
        return set()
    return {json.loads(line)["key"] for line in RESULTS.read_text().splitlines() if line}


def record(row: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as stream:
        stream.write(json.dumps(row) + "\n")
    print(json.dumps(row))


def default_mlp(widths, seed):
    torch.manual_seed(seed)
    layers = []
    for index, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b))
        if index < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).double()


def run(name, network, norm, time_limit, **keywords):
    from lipkit.estimate import METHODS, options_for

    started = time.perf_counter()
    result = METHODS[name].function(network, options_for(name, network, norm=norm,
                                                         time_limit=time_limit, **keywords))
    seconds = time.perf_counter() - started
    result = result if isinstance(result, list) else [result]
    upper = min(b.value for b in result if b.kind in ("upper", "exact"))
    lower = max([b.value for b in result if b.kind in ("lower", "exact")], default=0.0)
    return {"upper": upper, "lower": lower, "exact": result[0].kind == "exact",
            "seconds": seconds}


def naive_interval(network, center, radius, norm):
    from lipkit.estimate.domain import Domain
    from lipkit.estimate.engine import DenseChain, GradientBounds, layer_bounds

    started = time.perf_counter()
    chain = DenseChain.of(network)
    domain = Domain.parse(chain.inputs, center=center, radius=radius)
    bounds = layer_bounds(chain, torch.from_numpy(domain.lower)[None],
                          torch.from_numpy(domain.upper)[None], linear=False)
    gradient = GradientBounds(chain, torch.eye(1, chain.outputs, dtype=torch.float64)[None],
                              bounds, linear=False)
    low, high = gradient.gradient_bounds()
    reach = torch.maximum(low.abs(), high.abs())
    value = float(reach.sum()) if norm == "inf" else float(reach.pow(2).sum().sqrt())
    return {"upper": value, "seconds": time.perf_counter() - started}


def constants(fractions=None, tag=None) -> None:
    import lipkit
    from lipkit.estimate import load_network

    finished = done()
    cases = [([10, 50, 50, 1], 0.1, seed, "inf") for seed in range(4)]
    cases += [([2, 20, 20, 1], 0.5, seed, "2") for seed in range(2)]
    for widths, radius, seed, norm in cases:
        key = f"constants/{'-'.join(map(str, widths))}/r{radius}/s{seed}/{norm}"
        if tag is not None:
            key += f"/{tag}"
        if key in finished:
            continue
        network = load_network(default_mlp(widths, seed))
        center = torch.randn(widths[0], generator=torch.Generator().manual_seed(seed),
                             dtype=torch.float64)
        keywords = {"center": center, "radius": radius, "output": 0}
        row = {"key": key, "widths": widths, "radius": radius, "seed": seed, "norm": norm,
               "lipkit": tag or "", "lipkit_path": str(Path(lipkit.__file__).parent)}
        exact_method = "exact-mip" if norm == "inf" else "exact-bab"
        row["load_before"] = os.getloadavg()[0]
        row["exact"] = run(exact_method, network, norm, 120, **keywords)
        if fractions is None:
            row["local_crown_2s"] = run("local-crown", network, norm, 2, **keywords)
            row["local_crown_10s"] = run("local-crown", network, norm, 10, **keywords)
        else:
            row["fractions"] = fractions
            for fraction in fractions:
                row[f"local_crown_{fraction}"] = run(
                    "local-crown", network, norm, fraction * row["exact"]["seconds"],
                    **keywords)
        row["load_after"] = os.getloadavg()[0]
        if norm == "inf":
            row["lp_jacobian"] = run("lp-jacobian", network, norm, 60, center=center,
                                     radius=radius)
        row["naive_interval"] = naive_interval(network, center, radius, norm)
        record(row)


def digits_28():
    from lipkit.data import load_digits

    data = load_digits(test_fraction=0.2, flat=False)

    def grow(x):
        return nn.functional.interpolate(x, size=(28, 28), mode="bilinear",
                                         align_corners=False).clamp(0, 1).flatten(1)

    return grow(data.x_train), data.y_train, grow(data.x_test), data.y_test


def trained(depth: int, x, y, seed: int = 0):
    torch.manual_seed(seed)
    layers, width = [], 784
    for _ in range(depth):
        layers += [nn.Linear(width, 256), nn.ReLU()]
        width = 256
    model = nn.Sequential(*layers, nn.Linear(width, 10))
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(30):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 64):
            batch = order[start:start + 64]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return model.double().eval()


def certify(images: int, depths: list[int], eps_list=(0.01, 0.03, 0.05),
            tag: str | None = None) -> None:
    from lipkit.certify import logit_constants
    from lipkit.certify.attack import pgd_attack
    from lipkit.certify.local import certify_image
    from lipkit.certify.radius import certified_radius
    from lipkit.estimate import load_network
    from lipkit.estimate.domain import Domain
    from lipkit.estimate.engine import DenseChain, layer_bounds
    from lipkit.estimate.engine.margin_mip import minimize

    finished = done()
    x_train, y_train, x_test, y_test = digits_28()
    for depth in depths:
        model = trained(depth, x_train, y_train)
        accuracy = float((model(x_test.double()).argmax(1) == y_test).float().mean())
        network = load_network(model)
        chain = DenseChain.of(network)
        constants = logit_constants(network)
        x = x_test[:images].double()
        with torch.no_grad():
            logits = model(x)
        global_radius = certified_radius(logits, constants, "pairwise", "inf", 784)
        for eps in eps_list:
            for index in range(images):
                key = (f"certify/{tag + '/' if tag else ''}784-256x{depth}-10/eps{eps}/"
                       f"image{index}")
                if key in finished:
                    continue
                label = int(y_test[index])
                image = certify_image(network, chain, x[index], label, eps, "inf",
                                      (0.0, 1.0), time_limit=10.0, index=index)
                adversarial = pgd_attack(model, x[index][None].repeat(10, 1),
                                         torch.full((10,), label), eps, "inf", steps=40,
                                         restarts=10, seed=index, domain=(0.0, 1.0))
                with torch.no_grad():
                    attacked = bool((model(adversarial).argmax(1) != label).any())
                truth, mip_seconds = None, 0.0
                if image.predicted != label or attacked:
                    truth = "not robust"
                elif image.certified:
                    truth = "robust"
                else:  # the margin MIP settles it
                    domain = Domain.parse(784, center=x[index], radius=eps, ball="inf",
                                          data_domain=(0.0, 1.0))
                    bounds = layer_bounds(chain, torch.from_numpy(domain.lower)[None],
                                          torch.from_numpy(domain.upper)[None])
                    truth = "robust"
                    for j in range(10):
                        if j == label:
                            continue
                        row = np.zeros(10)
                        row[label], row[j] = 1.0, -1.0
                        found = minimize(chain, row, bounds, time_limit=30.0)
                        mip_seconds += found.seconds
                        if found.value < 0:
                            truth = "not robust (MIP)"
                            break
                        if not (found.optimal and found.lower > 0):
                            truth = "unknown"
                record({"key": key, "depth": depth, "eps": eps, "index": index,
                        "test_accuracy": accuracy, "label": label,
                        "predicted": image.predicted, "local_constant": image.
                        certified_by_constant, "direct": image.certified_directly,
                        "global": bool(global_radius[index] > eps and image.predicted == label),
                        "pgd_counterexample": attacked, "truth": truth,
                        "seconds": image.seconds, "mip_seconds": mip_seconds,
                        "status": image.status, "lipkit": tag or "",
                        "load": os.getloadavg()[0]})


def fractions_table(rows) -> None:
    """The rows with local-crown at fractions of the exact method's time, per lipkit."""
    rows = [r for r in rows if r["key"].startswith("constants/") and "fractions" in r]
    if not rows:
        return
    fractions = sorted({k[len("local_crown_"):] for r in rows for k in r
                        if k.startswith("local_crown_")}, key=float)
    print("| lipkit | net | radius | norm | exact (s) | " + " | ".join(
        f"local-crown at {f} of its time" for f in fractions) + " | lp-jacobian |"
        " naive interval | load |")
    print("|---" * (8 + len(fractions)) + "|")
    for row in rows:
        exact = row["exact"]["lower"] if row["exact"]["exact"] else row["exact"]["upper"]

        def cell(entry, exact=exact):
            return f"{entry['upper'] / exact:.3f}x ({entry['seconds']:.2f} s)"

        lp = cell(row["lp_jacobian"]) if "lp_jacobian" in row else "-"
        print(f"| {row['lipkit']} | {'-'.join(map(str, row['widths']))} s{row['seed']} | "
              f"{row['radius']} | {row['norm']} | {exact:.4f} ({row['exact']['seconds']:.1f} s"
              f"{'' if row['exact']['exact'] else ', bracket'}) | " + " | ".join(
                  cell(row[f"local_crown_{f}"]) for f in fractions) +
              f" | {lp} | {cell(row['naive_interval'])} | "
              f"{row['load_before']:.1f}-{row['load_after']:.1f} |")
    print()


def table() -> None:
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines() if line]
    fractions_table(rows)
    print("| net | radius | norm | exact | local-crown 2 s | local-crown 10 s | lp-jacobian |"
          " naive interval |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        if not row["key"].startswith("constants/") or "fractions" in row:
            continue
        exact = row["exact"]["lower"] if row["exact"]["exact"] else row["exact"]["upper"]

        def cell(entry, exact=exact):
            return f"{entry['upper'] / exact:.3f}x ({entry['seconds']:.2f} s)"

        lp = cell(row["lp_jacobian"]) if "lp_jacobian" in row else "-"
        print(f"| {'-'.join(map(str, row['widths']))} s{row['seed']} | {row['radius']} | "
              f"{row['norm']} | {exact:.4f} ({row['exact']['seconds']:.1f} s"
              f"{'' if row['exact']['exact'] else ', bracket'}) | {cell(row['local_crown_2s'])}"
              f" | {cell(row['local_crown_10s'])} | {lp} | {cell(row['naive_interval'])} |")
    print()
    print("| net | eps | images | robust (truth) | not robust | unknown | local constant |"
          " direct | either | global | certified with a counterexample | s / image (max) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    groups: dict = {}
    for row in rows:
        if row["key"].startswith("certify/"):
            groups.setdefault((row.get("lipkit", ""), row["depth"], row["eps"]), []).append(row)
    for (tag, depth, eps), group in sorted(groups.items()):
        robust = sum(r["truth"] == "robust" for r in group)
        broken = sum(r["truth"].startswith("not robust") for r in group)
        unknown = sum(r["truth"] == "unknown" for r in group)
        either = sum(r["local_constant"] or r["direct"] for r in group)
        wrong = sum((r["local_constant"] or r["direct"]) and r["truth"].startswith("not")
                    for r in group)
        print(f"| {tag + ': ' if tag else ''}784-256x{depth}-10 "
              f"(acc {group[0]['test_accuracy']:.3f}) | {eps} | "
              f"{len(group)} | {robust} | {broken} | {unknown} | "
              f"{sum(r['local_constant'] for r in group)} | {sum(r['direct'] for r in group)} | "
              f"{either} ({either / max(robust, 1):.0%} of robust) | "
              f"{sum(r['global'] for r in group)} | {wrong} | "
              f"{np.mean([r['seconds'] for r in group]):.2f} "
              f"({max(r['seconds'] for r in group):.1f}) |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("part", choices=["constants", "certify", "table"])
    parser.add_argument("--images", type=int, default=15)
    parser.add_argument("--depths", default="2,4,6")
    parser.add_argument("--fractions", default=None,
                        help="local-crown's time limits as fractions of the exact method's "
                             "seconds, e.g. 0.1,0.2 (default: 2 s and 10 s)")
    parser.add_argument("--eps", default=None, help="certify: e.g. 0.03,0.05 (default "
                        "0.01,0.03,0.05)")
    parser.add_argument("--tag", default=None, help="the lipkit measured (a name for the "
                        "rows; the script runs whichever lipkit PYTHONPATH gives)")
    arguments = parser.parse_args()
    if arguments.part == "constants":
        constants(None if arguments.fractions is None else
                  [float(f) for f in arguments.fractions.split(",")], arguments.tag)
    elif arguments.part == "certify":
        eps_list = (0.01, 0.03, 0.05) if arguments.eps is None else tuple(
            float(e) for e in arguments.eps.split(","))
        certify(arguments.images, [int(d) for d in arguments.depths.split(",")], eps_list,
                arguments.tag)
    else:
        table()
