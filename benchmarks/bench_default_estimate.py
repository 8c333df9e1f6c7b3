"""`lipkit estimate NET --json` with no options, on networks of the shapes users share.

For each network (built here, exported to ONNX like the files of verification benchmarks):
the wall time of the whole command (a fresh process, as a user runs it), its interval, gap
and the method behind each end; next to ECLipsE-Fast (eclipse-nn, on the same float64
weights, dense MLPs with elementwise activations only) as the ratio of upper ends. Then the
start-up figure: `lipkit estimate small.mat -m naive` against `python -c "import torch"`,
medians of five runs each, interleaved. With ``--cvxpy-limit S``, the full LipSDP-Neuron by
cvxpy as well (SCS, the whole LMI, no eigenvalue form), on each MLP in a fresh process
under a solver time limit of S seconds: its value (certified by lipkit's float64 proof, or
the reason it is not), wall time and peak memory ("where it finishes").

Networks: 784-256xK-10 ReLU MLPs for K = 2, 4, 6 trained briefly on scikit-learn's digits
upsampled to 28x28; an ACAS-Xu-shaped 5-50x6-5 ReLU MLP (random); a 784-200x9-10 ReLU MLP
behind an input normalization (x - mean) / std (random); a 784-200x6-10 sigmoid MLP (random);
two small CIFAR-shaped convnets and a small ResNet (random).

Run it with the benchmark environment's Python (it has eclipse-nn; see BENCHMARKS.md):

    .bench-venv/bin/python benchmarks/bench_default_estimate.py [--only NAME] [--again]
        [--cvxpy-limit SECONDS]
    python benchmarks/bench_default_estimate.py --startup-only [--startup-runs 5]
        [--startup-baseline OTHER_CHECKOUT/src]

Each finished network is appended to benchmarks/results/default_estimate.jsonl (with the
lipkit revision); networks already there for this revision are skipped.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from revision import lipkit_revision

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "default_estimate.jsonl"
LIPKIT = [sys.executable, "-m", "lipkit.cli"]


class Normalize(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.register_buffer("mean", torch.full((size,), 0.1307))
        self.register_buffer("std", torch.full((size,), 0.3081))

    def forward(self, x):
        return (x - self.mean) / self.std


class Block(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.first = nn.Conv2d(channels, channels, 3, padding=1)
        self.second = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return x + self.second(F.relu(self.first(x)))


def mlp(widths, activation=nn.ReLU, seed=0, head=None):
    torch.manual_seed(seed)
    layers = [] if head is None else [head]
    for index, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b))
        if index < len(widths) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def trained_digits_mlp(depth: int, seed: int = 0, epochs: int = 5):
    """784-256xdepth-10 on digits upsampled to 28x28 (a few epochs of Adam)."""
    from lipkit.data import load_digits

    data = load_digits(seed=seed)
    x = F.interpolate(data.x_train.reshape(-1, 1, 8, 8), size=(28, 28), mode="bilinear",
                      align_corners=False).reshape(-1, 784)
    model = mlp([784] + [256] * depth + [10], seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 64):
            batch = order[start:start + 64]
            optimizer.zero_grad()
            F.cross_entropy(model(x[batch]), data.y_train[batch]).backward()
            optimizer.step()
    return model


def networks():
    """name -> (builder, input shape, ECLipsE-Fast slope range or None)."""
    return {
        "mnist-784-256x2-10": (lambda: trained_digits_mlp(2), (784,), (0.0, 1.0)),
        "mnist-784-256x4-10": (lambda: trained_digits_mlp(4), (784,), (0.0, 1.0)),
        "mnist-784-256x6-10": (lambda: trained_digits_mlp(6), (784,), (0.0, 1.0)),
        "acas-5-50x6-5": (lambda: mlp([5] + [50] * 6 + [5]), (5,), (0.0, 1.0)),
        "normalized-784-200x9-10": (lambda: mlp([784] + [200] * 9 + [10],
                                                head=Normalize(784)), (784,), None),
        "sigmoid-784-200x6-10": (lambda: mlp([784] + [200] * 6 + [10], nn.Sigmoid), (784,),
                                 (0.0, 0.25)),
        "cifar-convnet-small": (lambda: _seeded(lambda: nn.Sequential(
            nn.Conv2d(3, 16, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
            nn.Linear(32 * 8 * 8, 100), nn.ReLU(), nn.Linear(100, 10))), (3, 32, 32), None),
        "cifar-convnet-wide": (lambda: _seeded(lambda: nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 4, stride=2,
                                                                  padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 4, stride=2,
                                                                   padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(64 * 8 * 8, 512), nn.ReLU(), nn.Linear(512, 10))),
            (3, 32, 32), None),
        "cifar-resnet-small": (lambda: _seeded(lambda: nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), Block(16), nn.ReLU(), Block(16),
            nn.ReLU(), nn.AvgPool2d(4), nn.Flatten(), nn.Linear(16 * 8 * 8, 10))),
            (3, 32, 32), None),
    }


def _seeded(build, seed: int = 0):
    torch.manual_seed(seed)
    return build()


def export(model: nn.Module, shape, path: Path) -> None:
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, *shape),), str(path), dynamo=False,
                          input_names=["x"], output_names=["y"])


def run_lipkit(path: Path) -> tuple[dict, float]:
    started = time.perf_counter()
    result = subprocess.run([*LIPKIT, "estimate", str(path), "--json"], capture_output=True,
                            text=True, timeout=600)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        return {"error": result.stderr.strip()[-500:]}, seconds
    return json.loads(result.stdout), seconds


_CVXPY = """
import json, resource, sys, time
from lipkit.estimate import estimate
started = time.perf_counter()
report = estimate(sys.argv[1], methods=["lipsdp-neuron"], budget=None,
                  time_limit=float(sys.argv[2]), options={"lipsdp-neuron": {"solver": "scs"}})
bound = report.bounds[0]
print(json.dumps({"value": bound.value, "kind": bound.kind, "status": bound.status,
                  "seconds": time.perf_counter() - started,
                  "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}))
"""


def full_lipsdp(path: Path, limit: float) -> dict:
    """LipSDP-Neuron by cvxpy + SCS on the whole LMI, in a fresh process (its peak memory
    is that process's), under a solver time limit; a hard stop at twice the limit + 120 s."""
    started = time.perf_counter()
    try:
        result = subprocess.run([sys.executable, "-c", _CVXPY, str(path), str(limit)],
                                capture_output=True, text=True, timeout=2 * limit + 120)
    except subprocess.TimeoutExpired:
        return {"status": f"killed after {2 * limit + 120:.0f} s", "kind": None,
                "value": None, "seconds": time.perf_counter() - started}
    if result.returncode != 0:
        return {"status": "error: " + (result.stderr.strip().splitlines() or ["?"])[-1][:300],
                "kind": None, "value": None, "seconds": time.perf_counter() - started}
    return json.loads(result.stdout.strip().splitlines()[-1])


def eclipse_fast(model: nn.Module, slopes) -> tuple[float, float] | tuple[None, None]:
    try:
        from eclipse_nn import ECLipsE_Fast
    except ImportError:
        return None, None
    weights = [m.weight.detach().double() for m in model.modules() if isinstance(m, nn.Linear)]
    count = len(weights) - 1
    started = time.perf_counter()
    value = float(ECLipsE_Fast(weights, [slopes[0]] * count, [slopes[1]] * count))
    return value, time.perf_counter() - started


def startup(folder: Path, runs: int = 5, bytecode: bool = False,
            baseline: Path | None = None) -> dict:
    """Medians of ``runs`` interleaved runs (wall clock, and user + system time):
    `lipkit estimate small.mat -m naive`, `python -c "import torch"` and `lipkit --help`,
    with this checkout's lipkit (PYTHONPATH), and the load average around them.
    ``bytecode``: with a bytecode cache of lipkit's modules (in ``folder``, written by a
    first run), as an installed package has; else as the environment says
    (``PYTHONDONTWRITEBYTECODE=1`` here: every start compiles lipkit's modules).
    ``baseline``: another checkout's ``src`` folder, whose naive estimate runs interleaved
    with the others (a before / after in one run)."""
    from scipy.io import savemat

    small = folder / "small.mat"
    torch.manual_seed(0)
    savemat(small, {"weights": [torch.randn(16, 8).double().numpy(),
                                torch.randn(4, 16).double().numpy()]})
    script = Path(sys.executable).parent / "lipkit"
    lipkit = [str(script)] if script.exists() else LIPKIT
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    if bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(folder / "bytecode")
    commands = {"import torch": [sys.executable, "-c", "import torch"],
                "lipkit estimate small.mat -m naive": [*lipkit, "estimate", str(small), "-m",
                                                       "naive"],
                "lipkit --help": [*lipkit, "--help"]}
    environments = {name: env for name in commands}
    if baseline is not None:
        commands["baseline: lipkit estimate small.mat -m naive"] = commands[
            "lipkit estimate small.mat -m naive"]
        environments["baseline: lipkit estimate small.mat -m naive"] = dict(
            env, PYTHONPATH=str(baseline))
    if bytecode:  # the cache is written by a first run
        for name, command in commands.items():
            subprocess.run(command, env=environments[name], capture_output=True, check=True)
    import resource

    times: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    load_before = os.getloadavg()[0]
    for _ in range(runs):
        for name, command in commands.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            subprocess.run(command, capture_output=True, check=True, env=environments[name])
            times[name].append(time.perf_counter() - started)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[name].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    naive = "lipkit estimate small.mat -m naive"
    medians: dict = {name: statistics.median(values) for name, values in times.items()}
    medians["lipkit above import torch"] = medians[naive] - medians["import torch"]
    medians["ratio to import torch"] = medians[naive] / medians["import torch"]
    # user + system time: on a loaded machine less noisy than the wall clock
    for name, values in cpu.items():
        medians[f"cpu {name}"] = statistics.median(values)
    medians["cpu lipkit above import torch"] = (medians[f"cpu {naive}"]
                                                - medians["cpu import torch"])
    if baseline is not None:
        medians["baseline above import torch"] = (
            medians[f"baseline: {naive}"] - medians["import torch"])
        medians["cpu baseline above import torch"] = (
            medians[f"cpu baseline: {naive}"] - medians["cpu import torch"])
        medians["baseline"] = str(baseline)
    medians.update(bytecode=bytecode, runs=runs, load_before=load_before,
                   load_after=os.getloadavg()[0])
    return medians


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="network name (repeatable)")
    parser.add_argument("--again", action="store_true", help="rerun networks already done")
    parser.add_argument("--skip-startup", action="store_true")
    parser.add_argument("--startup-only", action="store_true",
                        help="only the start-up figure (both bytecode settings)")
    parser.add_argument("--startup-runs", type=int, default=5)
    parser.add_argument("--startup-baseline", type=Path,
                        help="another checkout's src folder, run side by side")
    parser.add_argument("--cvxpy-limit", type=float, default=None,
                        help="also run the full LipSDP-Neuron by cvxpy (SCS) on each MLP "
                             "with this solver time limit in seconds")
    args = parser.parse_args(argv)
    revision = lipkit_revision()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if RESULTS.exists() and not args.again:
        for line in RESULTS.read_text().splitlines():
            row = json.loads(line)
            if row.get("revision") == revision:
                done.add(row["name"])
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for name, (build, shape, slopes) in networks().items():
            if (args.only and name not in args.only) or args.startup_only:
                continue
            wants_cvxpy = args.cvxpy_limit is not None and slopes is not None
            if name in done and (not wants_cvxpy or f"{name}/cvxpy" in done):
                continue
            model = build()
            path = folder / f"{name}.onnx"
            export(model, shape, path)
            if wants_cvxpy and f"{name}/cvxpy" not in done:
                row = {"name": f"{name}/cvxpy", "revision": revision,
                       "limit": args.cvxpy_limit, **full_lipsdp(path, args.cvxpy_limit)}
                with RESULTS.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")
                print(json.dumps(row))
            if name in done:
                continue
            report, seconds = run_lipkit(path)
            fast, fast_seconds = eclipse_fast(model, slopes) if slopes else (None, None)
            interval = report.get("interval", {})
            row = {"name": name, "revision": revision, "seconds": seconds,
                   "lower": interval.get("lower"), "upper": interval.get("upper"),
                   "lower_method": interval.get("lower_method"),
                   "upper_method": interval.get("upper_method"), "gap": interval.get("gap"),
                   "consistent": interval.get("consistent"), "error": report.get("error"),
                   "skipped": [b["method"] for b in report.get("bounds", [])
                               if str(b["status"]).startswith(("skipped", "not applicable"))],
                   "eclipse_fast": fast, "eclipse_fast_seconds": fast_seconds}
            with RESULTS.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            print(json.dumps(row))
        if not args.skip_startup and ("startup" not in done or args.startup_only):
            for bytecode in (False, True) if args.startup_only else (False,):
                row = {"name": "startup", "revision": revision,
                       **startup(folder, args.startup_runs, bytecode,
                                 args.startup_baseline)}
                with RESULTS.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")
                print(json.dumps(row))
    print_table(revision)


def print_table(revision) -> None:
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines()]
    rows = [row for row in rows if row.get("revision") == revision]
    print(f"\nlipkit {revision}: `lipkit estimate NET --json`, no options (budget 60 s)\n")
    full = {row["name"].split("/")[0]: row for row in rows if row["name"].endswith("/cvxpy")}
    print("| network | wall s | interval | gap | lower / upper method | ECLipsE-Fast | "
          "upper / ECLipsE-Fast | full LipSDP-Neuron, cvxpy + SCS (s, peak GB) | "
          "upper / full LipSDP |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        if row["name"] == "startup" or row["name"].endswith("/cvxpy"):
            continue
        fast = row.get("eclipse_fast")
        upper = row.get("upper")
        ratio = (f"{upper / fast:.3f}" if fast and isinstance(upper, float) else "-")
        interval = (f"[{row['lower']:.4g}, {upper:.4g}]" if isinstance(upper, float)
                    and row.get("lower") is not None else row.get("error") or "-")
        gap = row.get("gap")
        print(f"| {row['name']} | {row['seconds']:.1f} | {interval} | "
              f"{gap if isinstance(gap, str) else f'{gap:.3g}'} | "
              f"{row.get('lower_method')} / {row.get('upper_method')} | "
              f"{'-' if fast is None else f'{fast:.4g}'} | {ratio} | "
              f"{_full_cell(full.get(row['name']))} | "
              f"{_full_ratio(upper, full.get(row['name']))} |")
    for row in rows:
        if row["name"] == "startup":
            print(f"\nstart-up (medians of {row.get('runs', 5)}, bytecode cache "
                  f"{'on' if row.get('bytecode') else 'as the environment says'}): "
                  + ", ".join(f"{key} {value:.2f}" for key, value in row.items()
                              if isinstance(value, float)))


def _full_cell(row) -> str:
    if row is None:
        return "-"
    if row.get("kind") == "upper":
        return f"{row['value']:.4g} ({row['seconds']:.0f} s, {row.get('peak_gb', 0):.2f} GB)"
    return (f"not finished within {row['limit']:.0f} s: {row['status'][:80]} "
            f"({row['seconds']:.0f} s)")


def _full_ratio(upper, row) -> str:
    if row is None or row.get("kind") != "upper" or not isinstance(upper, float):
        return "-"
    return f"{upper / row['value']:.4f}"


if __name__ == "__main__":
    main()
