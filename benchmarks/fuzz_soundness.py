"""The soundness fuzzer's long run: thousands of random torch models, every method that fits,
the l2, l1 and l-inf norms, globally and over a random local box, and the LipSDP reference
networks, each bound checked against oracles computed on the torch module itself (see
``tests/estimate/soundness.py``: an independent float64 pair search and Jacobian norms,
witnesses recomputed, lower <= upper, exact constants of linear nets).

Each finished network is appended as one JSON line to the results file and seeds already there
are skipped, so the run can go on in the background and continue later. The summary table
counts networks, bounds checked, false upper bounds, lower > upper, unattained witnesses (and
the other failure categories), refusals by reason and exceptions by type.

Usage:
    python benchmarks/fuzz_soundness.py [--networks 2000] [--start 0] [--results PATH]
        [--no-reference] [--summary]      # --summary: only print the table of the results
    python benchmarks/fuzz_soundness.py --seed 123   # one network, its failures in full
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy.io
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "estimate"))

import soundness  # noqa: E402 - the fuzzer lives next to the test that runs a minute of it

from revision import lipkit_revision  # noqa: E402

REFERENCE = ROOT / "tests" / "reference" / "lipsdp"
DEFAULT_RESULTS = ROOT / "benchmarks" / "fuzz_soundness.jsonl"


def reference_model(path: Path) -> nn.Module:
    """The LipSDP format's network ``W_L relu(... relu(W_1 x))`` as a torch module, built from
    the .mat file's weights with scipy (not with lipkit's importer)."""
    weights = [np.asarray(w, dtype=np.float64) for w in scipy.io.loadmat(path)["weights"].ravel()]
    layers: list[nn.Module] = []
    for index, weight in enumerate(weights):
        layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False).double()
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(weight))
        layers.append(layer)
        if index < len(weights) - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).eval()


def check_reference(path: Path, time_limit: float) -> soundness.Result:
    """Every method that fits on a reference network (lipkit reads the .mat file), checked
    against the oracle on the torch module built from the same weights."""
    started = time.perf_counter()
    model = reference_model(path)
    shape = (model[0].in_features,)
    result = soundness.Result(-1, f"reference {path.name}: {shape[0]} inputs, ReLU")
    oracle = soundness.Oracle(model, shape)
    soundness.check_source(str(path), oracle, shape, result, seed=0, time_limit=time_limit)
    result.seconds = time.perf_counter() - started
    return result


def known_failures():
    """``known(model, failure)`` of the test's KNOWN_FAILURES (the issues being fixed)."""
    path = ROOT / "tests" / "estimate" / "test_estimate_soundness_fuzz.py"
    spec = importlib.util.spec_from_file_location("test_estimate_soundness_fuzz", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.known


def classify(records: list[dict]) -> collections.Counter:
    """Failures by the known issue they match ("unknown" for none)."""
    known = known_failures()
    references = {-1 - i: reference_model(REFERENCE / name)
                  for i, name in enumerate(("random_weights.mat", "mnist_weights.mat"))}
    counts = collections.Counter()
    for record in records:
        if not record["failures"]:
            continue
        model = (references.get(record["seed"]) if record["seed"] < 0
                 else soundness.random_case(record["seed"]).model)
        for failure in record["failures"]:
            entry = known(model, soundness.Failure(**failure))
            counts[entry.name if entry else "unknown (not in KNOWN_FAILURES)"] += 1
    return counts


def summary(records: list[dict], console: Console) -> None:
    networks = [r for r in records if r["seed"] >= 0]
    failures = collections.Counter()
    by_method = collections.Counter()
    refusals = collections.Counter()
    exceptions = collections.Counter()
    for record in records:
        for failure in record["failures"]:
            failures[failure["category"]] += 1
            by_method[(failure["category"], failure["method"], failure["norm"])] += 1
            if failure["category"] == "exception":
                exceptions[failure["detail"].split(":")[0][:60]] += 1
        if record["refusal"]:
            reason = record["refusal"].split("'")
            kind = record["refusal"].split(" of type ")[-1].split(":")[0] if len(reason) > 2 \
                else record["refusal"][:60]
            refusals[kind] += 1
    table = Table(title="soundness fuzzer")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("networks (seeded)", str(len(networks)))
    table.add_row("reference networks", str(len(records) - len(networks)))
    table.add_row("networks with a failure", str(sum(bool(r["failures"]) for r in records)))
    table.add_row("refused (named one-line error)", str(sum(bool(r["refusal"]) for r in records)))
    table.add_row("bounds checked", str(sum(r["checks"] for r in records)))
    for category in soundness.CATEGORIES:
        table.add_row(category, str(failures.get(category, 0)))
    table.add_row("seconds (sum)", f"{sum(r['seconds'] for r in records):.0f}")
    for revision, count in collections.Counter(r.get("revision") for r in records).items():
        table.add_row(f"networks run on lipkit {revision}", str(count))
    console.print(table)
    if by_method:
        detail = Table(title="failures by category, method and norm")
        for column in ("category", "method", "norm", "count", "networks (first seeds)"):
            detail.add_column(column)
        for (category, method, norm), count in sorted(by_method.items()):
            seeds = sorted({r["seed"] for r in records for f in r["failures"]
                            if (f["category"], f["method"], f["norm"]) == (category, method,
                                                                           norm)})
            detail.add_row(category, method, norm, str(count),
                           ", ".join(map(str, seeds[:6])) + (" ..." if len(seeds) > 6 else ""))
        console.print(detail)
    if failures:
        table = Table(title="failures by known issue (tests/estimate/"
                            "test_estimate_soundness_fuzz.py: KNOWN_FAILURES)")
        table.add_column("issue")
        table.add_column("failures", justify="right")
        for name, count in classify(records).most_common():
            table.add_row(name, str(count))
        console.print(table)
    statuses = collections.Counter()
    for record in records:
        for key, count in record["statuses"].items():
            if ": failed" in key or ": skipped" in key:
                statuses[key] += count
    if statuses:
        table = Table(title="methods that failed or were skipped (status, never used)")
        table.add_column("method: status")
        table.add_column("runs", justify="right")
        for key, count in statuses.most_common():
            table.add_row(key, str(count))
        console.print(table)
    if refusals:
        table = Table(title="refusals by module type")
        table.add_column("module")
        table.add_column("networks", justify="right")
        for kind, count in refusals.most_common():
            table.add_row(kind, str(count))
        console.print(table)
    if exceptions:
        table = Table(title="exceptions by type")
        table.add_column("exception")
        table.add_column("count", justify="right")
        for kind, count in exceptions.most_common():
            table.add_row(kind, str(count))
        console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=int, default=2000)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--time-limit", type=float, default=soundness.TIME_LIMIT)
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--summary", action="store_true")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--rerun", metavar="TEXT", default=None,
                        help="run only the seeds whose record in --rerun-from has TEXT in "
                             "its description, statuses or failures (e.g. 'local-crown: "
                             "failed', 'huge weights')")
    parser.add_argument("--limit", type=int, default=None,
                        help="with --rerun: the first LIMIT such seeds")
    parser.add_argument("--rerun-from", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    console = Console()
    if args.seed is not None:
        case = soundness.random_case(args.seed)
        console.print(case.description)
        console.print(repr(case.model))
        result = soundness.check_case(case, time_limit=args.time_limit)
        console.print(f"refusal: {result.refusal}" if result.refusal else
                      f"{result.checks} bounds checked in {result.seconds:.1f} s")
        for failure in result.failures:
            console.print(str(failure), markup=False)
        return
    records = []
    if args.results.exists():
        records = [json.loads(line) for line in args.results.read_text().splitlines() if line]
    if not args.summary:
        revision = lipkit_revision()
        console.print(f"lipkit {revision}, torch {torch.__version__}, "
                      f"{platform.processor() or platform.machine()}, 1 thread")
        done = {r["seed"] for r in records}
        with args.results.open("a") as out:
            if not args.no_reference:
                for index, name in enumerate(("random_weights.mat", "mnist_weights.mat")):
                    if -1 - index in done:
                        continue
                    result = check_reference(REFERENCE / name, 10 * args.time_limit)
                    record = dict(result.to_dict(), seed=-1 - index, revision=revision)
                    out.write(json.dumps(record) + "\n")
                    out.flush()
                    records.append(record)
                    console.print(f"{name}: {result.checks} checks, "
                                  f"{len(result.failures)} failures", markup=False)
            seeds = range(args.start, args.start + args.networks)
            if args.rerun is not None:
                if args.rerun_from is None:
                    parser.error("--rerun needs --rerun-from FILE")
                seeds = sorted(
                    record["seed"] for record in map(json.loads, filter(
                        None, args.rerun_from.read_text().splitlines()))
                    if record["seed"] >= 0 and args.rerun in json.dumps(
                        [record.get("description"), record.get("statuses"),
                         record.get("failures")]))[:args.limit]
                console.print(f"{len(seeds)} seeds of {args.rerun_from} with {args.rerun!r}")
            for seed in seeds:
                if seed in done:
                    continue
                try:
                    result = soundness.check_case(soundness.random_case(seed),
                                                  time_limit=args.time_limit)
                except Exception as error:  # a bug of the fuzzer itself: recorded, not fatal
                    result = soundness.Result(seed, f"seed {seed}")
                    result.failures.append(soundness.Failure(
                        "fuzzer error", "-", "-", "-", float("nan"), float("nan"),
                        f"{type(error).__name__}: {error}"))
                record = dict(result.to_dict(), revision=revision)
                out.write(json.dumps(record) + "\n")
                out.flush()
                records.append(record)
                if result.failures:
                    console.print(f"seed {seed}: {len(result.failures)} failures "
                                  f"({result.failures[0].category}, "
                                  f"{result.failures[0].method})", markup=False)
    summary(records, console)


if __name__ == "__main__":
    main()
