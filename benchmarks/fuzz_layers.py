"""The layer fuzzer's long run: random models of lipkit's own layers (constrained dense and
convolutional layers, CPL / SLL / SOC / Cayley blocks, residuals, pooling, BatchNorm), each
``lipschitz_bound`` checked against the model's own pair ratios (``tests/nn/layer_fuzz.py``;
24 draws of it run in the suite).

Each draw is appended as one JSON line to the results file and seeds already there are
skipped, so the run can go on in the background and continue later:

    python benchmarks/fuzz_layers.py --networks 2000 [--start 0] [--results PATH]
    python benchmarks/fuzz_layers.py --summary
    python benchmarks/fuzz_layers.py --seed 123        # one draw, printed in full
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import sys
import time
from pathlib import Path

import torch

from _results import append_row, read_rows
from revision import lipkit_revision

ROOT = Path(__file__).resolve().parents[1]
_SPEC = importlib.util.spec_from_file_location("layer_fuzz", ROOT / "tests" / "nn" /
                                               "layer_fuzz.py")
layer_fuzz = importlib.util.module_from_spec(_SPEC)
sys.modules.setdefault("layer_fuzz", layer_fuzz)
_SPEC.loader.exec_module(layer_fuzz)

DEFAULT_RESULTS = ROOT / "benchmarks" / "results" / "fuzz_layers.jsonl"


def summary(path: Path) -> None:
    """The table of every kind of draw in the file (older draw versions too)."""
    every = read_rows(path)
    for version in sorted({r.get("version", 1) for r in every}):
        _summary(path, version, [r for r in every if r.get("version", 1) == version])


def _summary(path: Path, version: int, rows: list[dict]) -> None:
    checked = [r for r in rows if "bound" in r]
    failures = [r for r in rows if r.get("failures")]
    refused = collections.Counter(r["refused"].split(":")[0] for r in rows if r.get("refused"))
    regimes = collections.Counter(r.get("regime") for r in checked)
    revisions = sorted({r.get("lipkit", "?") for r in rows})
    tight = [r["lower"] / r["bound"] for r in checked if r["bound"] > 0 and r.get("lower", 0) > 0]
    print(f"{path}: {len(rows)} draws of version {version} (lipkit {', '.join(revisions)}), "
          f"{len(checked)} bounds checked twice (model and exported form), "
          f"{len(failures)} with failures, "
          f"{sum(refused.values())} named refusals, "
          f"{sum(1 for r in rows if r.get('skipped'))} degenerate draws skipped")
    print("regimes:", dict(regimes))
    if tight:
        tight.sort()
        print(f"lower / bound: median {tight[len(tight) // 2]:.3f}, "
              f"{sum(t > 0.99 for t in tight)} draws above 0.99")
    for reason, count in refused.most_common():
        print(f"  refused {count}x: {reason}")
    for row in failures[:20]:
        print(f"  seed {row['seed']} ({row.get('regime')}; {row.get('model')}):",
              row["failures"][0].splitlines()[0])


def rerun(path: Path) -> None:
    """Replace the rows of this draw version's failed seeds by a new check of each."""
    rows = read_rows(path)
    revision = lipkit_revision()
    kept = []
    for row in rows:
        if row.get("failures") and row.get("version", 1) == layer_fuzz.DRAW_VERSION:
            started = time.perf_counter()
            record = layer_fuzz.check(row["seed"])
            record.update(seconds=round(time.perf_counter() - started, 3), lipkit=revision,
                          rerun_of=row.get("lipkit"))
            print(f"seed {row['seed']}: {'FAILED' if record['failures'] else 'passes'} on "
                  f"{revision}", flush=True)
            row = record
        kept.append(row)
    temporary = Path(str(path) + ".tmp")
    temporary.write_text("".join(json.dumps(row) + "\n" for row in kept))
    temporary.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=int, default=2000)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--summary", action="store_true")
    parser.add_argument("--rerun-failures", action="store_true",
                        help="check the draws of this version that failed again, on this "
                             "code, and replace their rows (a fix's evidence)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.summary:
        summary(args.results)
        return
    if args.seed is not None:
        print(json.dumps(layer_fuzz.check(args.seed), indent=1))
        return
    if args.rerun_failures:
        rerun(args.results)
        summary(args.results)
        return
    done = {r["seed"] for r in read_rows(args.results)
            if r.get("version", 1) == layer_fuzz.DRAW_VERSION}
    revision = lipkit_revision()
    for seed in range(args.start, args.start + args.networks):
        if seed in done:
            continue
        started = time.perf_counter()
        record = layer_fuzz.check(seed)
        record.update(seconds=round(time.perf_counter() - started, 3), lipkit=revision)
        append_row(args.results, record)
        if record["failures"]:
            print(f"seed {seed}: FAILED {record['failures'][0].splitlines()[0]}", flush=True)
    summary(args.results)


if __name__ == "__main__":
    main()
