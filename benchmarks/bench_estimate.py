"""Estimating ``||f||_L``: every lipkit estimation method next to eclipse-nn, side by side.

For each network of a suite, the script runs every lipkit method that fits (the lower bounds
``lower-jacobian``, ``lower-gradient``, ``lower-adversarial``; the compositional upper bounds
``naive``, ``autolip``, ``seqlip``; the SDPs ``lipsdp-layer``, ``lipsdp-neuron`` and, as an
unproven estimate, ``lipsdp-network-rand``) and the peer eclipse-nn (Xu & Sivaranjani,
"ECLipsE", NeurIPS 2024) on the same weight matrices: ``ECLipsE_Fast`` (closed-form stages)
and ``ECLipsE`` (one small SDP per stage, solved by SCS through cvxpy), in the same run, on
the same number of CPU threads (``torch.set_num_threads`` and ``threadpoolctl`` for every
BLAS / OpenMP pool, in this process and in the worker below).

Every row records the value, its kind, the wall-clock seconds, the status, and for every
upper bound (or estimate) its ratio to the best lower bound of that network (the tightest
interval a user gets: 1.00 would be exact). A method whose first run takes under a second is
run three more times and the median of those reported (the first counts as a warm-up; the
methods are deterministic: same value).

Kinds: lipkit's ``lower`` (a verified pair of inputs), ``upper`` (proven: LipSDP's
certificate is checked in float64), ``estimate`` (no proof). eclipse-nn's values are upper
bounds by the paper's theorem but computed in floating point without a check: their kind
reads ``upper (unverified)``. ``ECLipsE`` as shipped (``LipConstEstimator.estimate(
"ECLipsE")``) checks each stage's SDP solution (Schur matrix eigenvalues >= -1e-8, multipliers
>= 0) and, when a check fails, falls back to ECLipsE-Fast's value; the row says where. Its
stages run in a worker process that is stopped at the time limit, with the check recorded
but not enforced, so that the script can also show the value of all stages (the row
``ECLipsE (check relaxed)``, an estimate: SCS's stage solutions are only feasible to about
its tolerance).

The suite: the two LipSDP reference networks (``random_weights.mat``, ``mnist_weights.mat``,
with their published values); random 784-...-10 MLPs with LeCun-normal weights
(``N(0, 1/fan_in)``, no biases), the widths x depths grid below plus 784-100x4-10 (784-100x4-10
and 784-256x5-10 come from one torch generator seeded 0, the two networks eclipse-nn was
measured on before: naive 12.84 and 26.16); a 64-256-256-10 digits classifier with spectral
normalization and ReLU trained here (as in ``lipkit demo``); a small CNN on 1x8x8 digits
(eclipse-nn reads fully connected layers only).

Usage:
    python benchmarks/bench_estimate.py [--quick] [--json PATH] [--methods M ...]
        [--time-limit SECONDS] [--threads 2] [--networks NAME ...]
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import math
import multiprocessing
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from threadpoolctl import threadpool_info, threadpool_limits
from torch import nn

import lipkit.estimate as lipkit_estimate
from lipkit.data import load_digits
from lipkit.estimate import estimate, load_network
from lipkit.estimate.lipsdp import MAX_NEURONS, split_chain
from lipkit.estimate.network import Network
from lipkit.nn import export, make_lipschitz
from revision import lipkit_revision

try:  # the peer, benchmarked where it is installed (benchmarks/constraints-bench.txt)
    import eclipse_nn
    from eclipse_nn import ECLipsE_Fast
except ImportError:  # pragma: no cover - depends on the environment
    eclipse_nn = None

REFERENCE = Path(__file__).resolve().parents[1] / "tests" / "reference" / "lipsdp"
# the reference implementation's values (MATLAB + CVX + MOSEK), from its README
PUBLISHED = {
    "random_weights": {"lipsdp-layer": 39.839, "lipsdp-neuron": 36.482,
                       "lipsdp-network": 36.482},
    "mnist_weights": {"lipsdp-network-rand": 24.320},
}
LIPKIT_METHODS = ["lower-jacobian", "lower-gradient", "lower-adversarial", "naive", "autolip",
                  "seqlip", "compositional", "lipsdp-layer", "lipsdp-neuron",
                  "lipsdp-neuron@10x-fast", "lipsdp-network", "lipsdp-network-rand"]
PEER_METHODS = ["eclipse-fast", "eclipse"]
ALL_METHODS = LIPKIT_METHODS + PEER_METHODS
SCHUR_CHECK = -1e-8  # eclipse-nn's stage check: smallest eigenvalue of the Schur matrix
REPEAT_BELOW = 1.0  # seconds: a faster method is run three times, its median time reported


# -- the suite --------------------------------------------------------------------------
@dataclass
class Case:
    """One network, as lipkit sees it and as eclipse-nn sees it."""

    name: str
    description: str
    network: Network
    weights: list[np.ndarray] | None  # W_1 .. W_L (out, in), float64; None: not an MLP
    eclipse_missing: str | None = None  # why eclipse-nn does not apply
    data: torch.Tensor | None = None  # inputs for the data-based lower bounds
    width: int = 0  # the widest hidden layer
    sdp: dict = field(default_factory=dict)  # lipsdp-* method -> extra options or a reason
    notes: list[str] = field(default_factory=list)


def lecun_normal_mlp(widths: list[int], generator: torch.Generator) -> nn.Sequential:
    """``Linear -> ReLU -> ... -> Linear`` in float64 with ``W ~ N(0, 1/fan_in)``, zero bias."""
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        linear = nn.Linear(fan_in, fan_out, dtype=torch.float64)
        with torch.no_grad():
            linear.weight.copy_(torch.randn(fan_out, fan_in, generator=generator,
                                             dtype=torch.float64) / math.sqrt(fan_in))
            linear.bias.zero_()
        layers.append(linear)
        if index < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def linear_weights(model: nn.Module) -> list[np.ndarray]:
    return [m.weight.detach().double().numpy().copy() for m in model.modules()
            if isinstance(m, nn.Linear)]


def mlp_case(name: str, model: nn.Module, description: str, **kwargs) -> Case:
    weights = linear_weights(model)
    return Case(name, description, load_network(model), weights,
                width=max(w.shape[0] for w in weights[:-1]), **kwargs)


def mat_case(stem: str) -> Case:
    path = REFERENCE / f"{stem}.mat"
    network = load_network(path)
    weights = [layer.weight.numpy().copy() for layer in network.chain()]
    sizes = "-".join(str(n) for n in [weights[0].shape[1]] + [w.shape[0] for w in weights])
    return Case(stem, f"{path.name} ({sizes}, ReLU, no biases; LipSDP's reference network)",
                network, weights, width=max(w.shape[0] for w in weights[:-1]))


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int,
          temperature: float = 1.0) -> None:
    """Adam, batches of 64, cross-entropy on ``temperature x logits`` (as lipkit's demo)."""
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(epochs):
        order = torch.randperm(len(y))
        for start in range(0, len(y), 64):
            index = order[start:start + 64]
            loss = nn.functional.cross_entropy(temperature * model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def digits_mlp_case(seed: int, epochs: int) -> Case:
    """64-256-256-10, spectral normalization + ReLU, trained as in ``lipkit demo``."""
    data = load_digits(seed=seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                          nn.Linear(256, 10))
    make_lipschitz(model, method="spectral", lipschitz=1.0)
    train(model, data.x_train, data.y_train, epochs, seed, temperature=12.0)
    plain = export(model).double()  # the weights baked in: lipkit and eclipse see the same
    case = mlp_case("digits-mlp", plain,
                    "64-256-256-10 digits classifier, spectral normalization + ReLU, "
                    f"{epochs} epochs (test accuracy "
                    f"{accuracy(plain, data.x_test.double(), data.y_test):.3f}), exported",
                    data=data.x_test.double())
    return case


def digits_cnn_case(seed: int, epochs: int) -> Case:
    """Conv(1->8, 3, pad 1)-ReLU-Conv(8->8, 3, stride 2)-ReLU-Flatten-Linear(72->10)."""
    data = load_digits(seed=seed, flat=False)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, stride=2), nn.ReLU(), nn.Flatten(),
                          nn.Linear(72, 10))
    train(model, data.x_train, data.y_train, epochs, seed)
    model = model.double()
    network = load_network(model, input_shape=(1, 8, 8))
    return Case(
        "digits-cnn",
        "Conv2d(1,8,3,pad 1)-ReLU-Conv2d(8,8,3,stride 2)-ReLU-Flatten-Linear(72,10) on 1x8x8 "
        f"digits, {epochs} epochs (test accuracy "
        f"{accuracy(model, data.x_test.double(), data.y_test):.3f})",
        network, None,
        eclipse_missing="eclipse-nn takes fully connected weight matrices only (its "
        "extract_model_info reads nn.Linear layers; no convolutions)",
        data=data.x_test.double(), width=8 * 8 * 8)


GRID_WIDTHS = (64, 256, 1024)
GRID_DEPTHS = (2, 5, 10)  # hidden layers


def random_cases(quick: bool, seed: int) -> list[Case]:
    """784-100x4-10 and 784-256x5-10 from one generator (the networks measured before),
    then the widths x depths grid, each from its own generator."""
    shared = torch.Generator().manual_seed(seed)
    measured = {}
    for width, depth in ((100, 4), (256, 5)):
        model = lecun_normal_mlp([784] + [width] * depth + [10], shared)
        measured[(width, depth)] = model
    cases = []
    grid = [(100, 4)] if quick else [(100, 4)] + [(w, d) for w in GRID_WIDTHS
                                                   for d in GRID_DEPTHS]
    for width, depth in grid:
        name = f"784-{width}x{depth}-10"
        if (width, depth) in measured:
            model = measured[(width, depth)]
            source = f"generator seed {seed}, drawn after 784-100x4-10" if width == 256 else \
                f"generator seed {seed}, drawn first"
        else:
            model = lecun_normal_mlp([784] + [width] * depth + [10],
                                     torch.Generator().manual_seed(seed + 1000 * width + depth))
            source = f"generator seed {seed + 1000 * width + depth}"
        cases.append(mlp_case(name, model, f"random MLP {name}, LeCun-normal weights N(0, "
                              f"1/fan_in), zero biases ({source})"))
    return cases


def build_suite(args) -> list[Case]:
    cases = [mat_case("random_weights"), mat_case("mnist_weights")]
    cases += random_cases(args.quick, args.seed)
    cases.append(digits_mlp_case(args.seed, DIGITS_EPOCHS))
    cases.append(digits_cnn_case(args.seed, DIGITS_EPOCHS))
    if args.networks:
        cases = [c for c in cases if c.name in args.networks]
    for case in cases:
        plan_sdp(case)
    return cases


DIGITS_EPOCHS = 10
SDP_METHODS = ("lipsdp-layer", "lipsdp-neuron", "lipsdp-neuron@10x-fast", "lipsdp-network",
               "lipsdp-network-rand")
# splitting: sub-networks of at most MAX_PIECE_LAYERS hidden layers and about
# MAX_PIECE_NEURONS hidden neurons, solved without a time limit at SCS tolerance 1e-3
MAX_PIECE_LAYERS = 5
MAX_PIECE_NEURONS = 512
SPLIT_TOLERANCE = 1e-3


def plan_sdp(case: Case) -> None:
    """Which LipSDP runs fit the time budget, with which options (a dict), or why not (str).

    A chain of at most 5 hidden layers and 640 hidden neurons is one SDP, run with the time
    limit. A longer or wider chain is split (``LipSDPOptions.split``) into sub-networks of at most
    5 hidden layers and ~512 hidden neurons: as one SDP, 784-64x10-10's multipliers from SCS
    could not be certified (at tolerance 1e-5 after 91 s, 1e-3 after 21 s) and a 1,280-neuron
    chain is cut by lipkit into a 1,024-row SDP (~125 s). lipkit's time limit is one deadline
    for all sub-networks (one solved after it gets 0.05 s), so split chains run without a
    time limit at SCS tolerance 1e-3 instead (lipsdp-neuron only).
    """
    for method in SDP_METHODS:
        case.sdp[method] = {}
    if case.name not in ("random_weights", "mnist_weights"):
        reason = ("not run: an estimate only (unproven couplings) that costs as much as "
                  "lipsdp-neuron or more; run on the two reference networks")
        case.sdp["lipsdp-network"] = reason
        case.sdp["lipsdp-network-rand"] = reason
    if case.weights is None or case.width > ECLIPSE_MAX_WIDTH:
        case.sdp["lipsdp-neuron@10x-fast"] = (
            "not run: no ECLipsE-Fast time to match" if case.weights is None else
            "not run: the 10x-ECLipsE-Fast goal covers MLPs up to width 256")
    layers = case.network.chain()
    widths = [layer.weight.shape[0] for layer in layers[:-1]]
    if isinstance(case.sdp["lipsdp-neuron@10x-fast"], dict) and sum(widths) > 32:
        # with solver "auto", SCS stopped before it has an iterate ("infeasible_inaccurate",
        # no solution) hands over to Clarabel, which aborts the process on a large LMI
        # (digits-mlp: a 138 GB allocation); see BENCHMARKS.md
        case.sdp["lipsdp-neuron@10x-fast"] = {"solver": "scs"}
    if max(widths) > MAX_NEURONS["neuron"]:
        return  # lipkit says why it does not apply
    depth, hidden = len(widths), sum(widths)
    if depth <= MAX_PIECE_LAYERS and hidden <= 640:
        return
    per_piece = min(MAX_PIECE_LAYERS, max(1, MAX_PIECE_NEURONS // max(widths)))
    split = per_piece + 1  # weight matrices per sub-network
    pieces = len(split_chain(layers, split, MAX_NEURONS["neuron"]))
    case.notes.append(f"lipsdp-neuron: split={split} ({pieces} sub-networks of up to "
                      f"{per_piece} hidden layers), tolerance {SPLIT_TOLERANCE:g}, no time "
                      "limit")
    case.sdp["lipsdp-neuron"] = {"split": split, "tolerance": SPLIT_TOLERANCE}
    case.sdp["lipsdp-layer"] = (
        f"not run: split into {pieces} sub-networks like lipsdp-neuron, where lipkit's time "
        "limit is one deadline for all of them; lipsdp-layer is never tighter than "
        "lipsdp-neuron and converges slower in SCS (784-100x4-10: 284 s vs 52 s)")
    case.sdp["lipsdp-neuron@10x-fast"] = (
        f"not run: split into {pieces} sub-networks, and a time limit is one deadline for "
        "all of them (those solved after it get 0.05 s)")


# -- eclipse-nn -------------------------------------------------------------------------
def _limit_threads(threads: int):
    torch.set_num_threads(threads)
    return threadpool_limits(limits=threads)


def _eclipse_worker(connection, threads: int) -> None:
    """Run ``eclipse_nn.ECLipsE`` on request, recording each stage's numerical check.

    The stage SDP (``eclipse_nn.eclipsE.sdp``) is wrapped: its solution is checked as
    ``ECLipsE`` checks it (``s >= 1e-20``, ``L >= 0``, real parts of the Schur matrix's
    eigenvalues >= -1e-8), the result recorded with the time at which the stage ended, and
    the Schur matrix handed back shifted so that ECLipsE's own check passes and the later
    stages run (the multipliers it uses are the solver's, unchanged). The wrapper's own
    seconds are subtracted from the times.
    """
    module = importlib.import_module("eclipse_nn.eclipsE")  # the stage SDPs live here

    limits = _limit_threads(threads)
    original = module.sdp
    stages: list[dict] = []
    clock = {"start": 0.0, "overhead": 0.0}

    def checked(width, next_weight, k_matrix):
        s_value, multipliers, schur, status = original(width, next_weight, k_matrix)
        started = time.perf_counter()
        record = {"stage": len(stages) + 1, "width": int(width), "solver_status": str(status),
                  "s": s_value}
        passed = s_value is not None and s_value >= 1e-20
        if multipliers is not None:
            record["negative_multipliers"] = int((multipliers < 0).sum())
            passed = passed and record["negative_multipliers"] == 0
        if schur is not None:
            smallest = float(torch.linalg.eigvals(schur).real.min())
            record["schur_min_eigenvalue"] = smallest
            passed = passed and smallest >= SCHUR_CHECK
            if smallest < SCHUR_CHECK:
                schur = schur + (2 * abs(smallest)) * torch.eye(schur.shape[0],
                                                                dtype=schur.dtype)
        record["check_passed"] = bool(passed)
        clock["overhead"] += time.perf_counter() - started
        record["ended_at"] = time.perf_counter() - clock["start"] - clock["overhead"]
        stages.append(record)
        connection.send(("stage", record))
        return s_value, multipliers, schur, status

    with limits:
        tiny = [torch.randn(4, 3, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)]
        module.ECLipsE(tiny, [0.0], [1.0])  # warm-up: imports, solver set-up
        module.sdp = checked
        connection.send(("ready", None))
        while True:
            message = connection.recv()
            if message is None:
                break
            weights = [torch.from_numpy(w) for w in message]
            stages.clear()
            clock["overhead"] = 0.0
            result: dict = {}
            clock["start"] = time.perf_counter()
            try:
                value, exit_code = module.ECLipsE(weights, [0.0] * (len(weights) - 1),
                                                  [1.0] * (len(weights) - 1))
                result["value"] = math.nan if value is None else float(value)
                result["exit_code"] = int(exit_code)
            except Exception as error:  # the peer's failure is a result to report
                result["error"] = f"{type(error).__name__}: {str(error).splitlines()[0]}"
            result["seconds"] = time.perf_counter() - clock["start"] - clock["overhead"]
            result["stages"] = list(stages)
            connection.send(("result", result))


class EclipseRunner:
    """A worker process for ``ECLipsE`` that is stopped (and restarted) at the time limit."""

    def __init__(self, threads: int):
        self.threads = threads
        self.process = None
        self.connection = None

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_eclipse_worker, args=(child, self.threads),
                                       daemon=True)
        self.process.start()
        if not self.connection.poll(300) or self.connection.recv()[0] != "ready":
            raise RuntimeError("the ECLipsE worker did not start")

    def run(self, weights: list[np.ndarray], limit: float) -> dict:
        """The worker's result, or ``{"timeout": limit, "stages": [those that ended]}``."""
        if self.process is None or not self.process.is_alive():
            self._start()
        self.connection.send(weights)
        deadline = time.perf_counter() + limit
        stages = []
        while self.connection.poll(max(deadline - time.perf_counter(), 0.0)):
            kind, message = self.connection.recv()
            if kind == "result":
                return message
            stages.append(message)
        self.close(kill=True)
        return {"timeout": limit, "stages": stages}

    def close(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.terminate()
        else:
            self.connection.send(None)
        self.process.join(10)
        self.process = None


def eclipse_fast(weights: list[torch.Tensor]) -> float:
    count = len(weights) - 1
    return float(ECLipsE_Fast(weights, [0.0] * count, [1.0] * count))


# -- running the methods --------------------------------------------------------------------
@dataclass
class Row:
    method: str
    library: str
    kind: str
    value: float = math.nan
    seconds: float = math.nan
    status: str = "ok"
    note: str = ""
    details: dict = field(default_factory=dict)
    ratio: float = math.nan  # value / best lower bound (upper bounds and estimates)

    @property
    def usable_upper(self) -> bool:
        return self.kind == "upper" and self.status == "ok" and math.isfinite(self.value)

    @property
    def usable_lower(self) -> bool:
        return self.kind == "lower" and self.status == "ok" and math.isfinite(self.value)


def timed(function: Callable[[], object]) -> tuple[object, float, int]:
    """Run ``function`` once; if that took under REPEAT_BELOW s, count it as a warm-up and
    time three more runs: (result, the median seconds, the runs timed)."""
    started = time.perf_counter()
    result = function()
    first = time.perf_counter() - started
    if first >= REPEAT_BELOW:
        return result, first, 1
    times = []
    for _ in range(3):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return result, statistics.median(times), len(times)


def run_lipkit(case: Case, method: str, time_limit: float | None, extra: dict,
               note: str = "", label: str | None = None) -> Row:
    def call():
        return estimate(case.network, methods=[method], time_limit=time_limit,
                        data=case.data, seed=0, **extra).bounds[0]

    bound, seconds, runs = timed(call)
    details = _compact(bound.details)
    if runs > 1:
        details["runs"] = runs
    return Row(label or method, "lipkit", bound.kind, bound.value, seconds, bound.status,
               note, details)


def _compact(details: dict) -> dict:
    """The details worth keeping in the JSON (no witnesses: they are input-sized)."""
    keep = {}
    for key, value in details.items():
        if key in ("witness", "first", "second", "x", "y"):
            continue
        if key == "pieces":
            value = [_compact(piece) for piece in value]
        if isinstance(value, torch.Tensor):
            continue
        keep[key] = value
    return keep


def eclipse_rows(case: Case, runner: EclipseRunner | None, fast: Row | None, limit: float,
                 skip: str | None) -> list[Row]:
    """``ECLipsE`` as shipped (with its fallback to ECLipsE-Fast) and with the check relaxed."""
    if skip is not None:
        return [Row("ECLipsE", "eclipse-nn", "upper (unverified)", status=skip)]
    result = runner.run(case.weights, limit)
    stages = result.get("stages", [])
    total = len(case.weights) - 1
    failed = next((s for s in stages if not s["check_passed"]), None)
    details = {"stages": stages}
    shipped = Row("ECLipsE", "eclipse-nn", "upper (unverified)", details=details)
    relaxed = None
    if failed is not None:
        reason = _failed_check(failed)
        fallback = fast.value if fast is not None else math.nan
        shipped.value = fallback
        shipped.seconds = failed["ended_at"] + (fast.seconds if fast is not None else 0.0)
        shipped.status = (f"fell back to ECLipsE-Fast: stage {failed['stage']}/{total}'s "
                          f"check failed ({reason})")
        shipped.note = "LipConstEstimator.estimate('ECLipsE') returns ECLipsE-Fast's value"
    if "timeout" in result:
        done = f"{len(stages)}/{total} stages ended"
        if failed is None:
            shipped.status = f"time limit: stopped at {limit:.0f} s ({done})"
        relaxed = Row("ECLipsE (check relaxed)", "eclipse-nn", "estimate",
                      status=f"time limit: stopped at {limit:.0f} s ({done})",
                      details={"stages": stages})
    elif "error" in result:
        shipped.status = shipped.status if failed else f"failed: {result['error']}"
        relaxed = Row("ECLipsE (check relaxed)", "eclipse-nn", "estimate",
                      status=f"failed: {result['error']}", details={"stages": stages})
    else:
        if failed is None:
            shipped.value, shipped.seconds = result["value"], result["seconds"]
            if result.get("exit_code", 0) != 0:
                shipped.status = f"exit code {result['exit_code']}"
        else:
            status = "ok" if math.isfinite(result["value"]) else \
                f"failed (exit code {result.get('exit_code')})"
            relaxed = Row("ECLipsE (check relaxed)", "eclipse-nn", "estimate",
                          result["value"], result["seconds"], status,
                          "every stage run; the failed Schur checks recorded, not enforced",
                          {"stages": stages})
    return [shipped] + ([relaxed] if relaxed is not None else [])


def _failed_check(stage: dict) -> str:
    parts = []
    if stage.get("s") is None or stage["s"] < 1e-20:
        parts.append(f"s = {stage.get('s')}")
    if stage.get("negative_multipliers"):
        parts.append(f"{stage['negative_multipliers']} negative multipliers")
    if stage.get("schur_min_eigenvalue", 0.0) < SCHUR_CHECK:
        parts.append(f"Schur matrix min eigenvalue {stage['schur_min_eigenvalue']:.1e} < "
                     f"{SCHUR_CHECK:g}")
    return "; ".join(parts) + f"; SCS status {stage.get('solver_status')}"


def run_case(case: Case, methods: list[str], time_limit: float, runner: EclipseRunner | None,
             console: Console) -> list[Row]:
    rows: list[Row] = []
    fits = {name: method.fits(case.network) for name, method in
            lipkit_estimate.METHODS.items()}

    def lipkit_row(method: str, limit: float | None, label: str | None = None) -> None:
        plan = case.sdp.get(label or method, {})
        if isinstance(plan, str):
            rows.append(Row(label or method, "lipkit", _kind(method), status=plan))
            return
        if "split" in plan:
            limit = None  # one deadline for every sub-network: see plan_sdp
        console.print(f"  {case.name}: {label or method} {plan or ''}", style="dim")
        note = ", ".join(f"{k}={v}" for k, v in plan.items())
        if limit is not None and (method.startswith("lipsdp") or method.startswith("lower")):
            note = ", ".join(filter(None, [note, f"time limit {limit:.3g} s"]))
        row = run_lipkit(case, method, limit, plan, note, label)
        if row.status.startswith("not applicable"):
            row.note = ""
        rows.append(row)

    for method in ("lower-jacobian", "lower-gradient", "lower-adversarial", "naive",
                   "autolip", "seqlip", "compositional"):
        if method in methods:
            lipkit_row(method, time_limit)
    fast = None
    if "eclipse-fast" in methods or "eclipse" in methods or \
            "lipsdp-neuron@10x-fast" in methods:
        if eclipse_nn is None:
            fast = Row("ECLipsE-Fast", "eclipse-nn", "upper (unverified)",
                       status="not installed (see benchmarks/constraints-bench.txt)")
        elif case.weights is None:
            fast = Row("ECLipsE-Fast", "eclipse-nn", "upper (unverified)",
                       status=f"not applicable: {case.eclipse_missing}")
        else:
            weights = [torch.from_numpy(w) for w in case.weights]
            value, seconds, runs = timed(lambda: eclipse_fast(weights))
            fast = Row("ECLipsE-Fast", "eclipse-nn", "upper (unverified)", value, seconds,
                       details={"runs": runs})
        if "eclipse-fast" in methods:
            rows.append(fast)
    for method in ("lipsdp-layer", "lipsdp-neuron"):
        if method in methods:
            lipkit_row(method, time_limit)
    if "lipsdp-neuron@10x-fast" in methods and fast is not None and fast.status == "ok" \
            and isinstance(case.sdp.get("lipsdp-neuron@10x-fast"), dict) \
            and fits.get("lipsdp-neuron") is None:
        lipkit_row("lipsdp-neuron", 10 * fast.seconds, "lipsdp-neuron@10x-fast")
    for method in ("lipsdp-network", "lipsdp-network-rand"):
        if method in methods:
            lipkit_row(method, time_limit)
    if "eclipse" in methods:
        skip = None
        if eclipse_nn is None:
            skip = "not installed (see benchmarks/constraints-bench.txt)"
        elif case.weights is None:
            skip = f"not applicable: {case.eclipse_missing}"
        elif case.width > ECLIPSE_MAX_WIDTH:
            skip = (f"not run: each stage is an SDP with a {2 * case.width}-row PSD cone "
                    f"solved by SCS to 1e-6 (one 512-row stage took ~100 s at width 256)")
        console.print(f"  {case.name}: ECLipsE", style="dim")
        rows += eclipse_rows(case, runner, fast, time_limit, skip)
    finish(case, rows)
    return rows


ECLIPSE_MAX_WIDTH = 256


def _kind(method: str) -> str:
    if method.startswith("lower"):
        return "lower"
    return "estimate" if method.startswith("lipsdp-network") else "upper"


def finish(case: Case, rows: list[Row]) -> None:
    """Ratios to the best lower bound; flag any upper bound below a lower bound."""
    lower = max((r.value for r in rows if r.usable_lower), default=math.nan)
    for row in rows:
        if row.kind != "lower" and math.isfinite(row.value) and lower > 0:
            row.ratio = row.value / lower
        proven = row.usable_upper or (row.kind == "upper (unverified)" and row.status == "ok")
        if proven and math.isfinite(lower) and row.value < lower * (1 - 1e-9):
            row.note = (f"BELOW THE BEST LOWER BOUND {lower:.6g}: unsound; " + row.note)
            row.details["unsound"] = True


# -- goals ----------------------------------------------------------------------------------
def _row(rows: list[Row], method: str) -> Row | None:
    return next((r for r in rows if r.method == method), None)


def goals(results: dict[str, list[Row]], widths: dict[str, int]) -> dict:
    out: dict = {"reference": {}, "mnist_neuron_seconds": None, "versus_eclipse": {},
                 "cheap_versus_eclipse_fast": {}}
    for stem, published in PUBLISHED.items():
        rows = results.get(stem)
        if rows is None:
            continue
        for method, value in published.items():
            row = _row(rows, method)
            if row is None or not math.isfinite(row.value):
                continue
            error = row.value / value - 1
            out["reference"][f"{stem} {method}"] = {
                "published": value, "lipkit": row.value, "relative_error": error,
                "kind": row.kind, "seconds": row.seconds,
                "met": abs(error) <= 0.002 if method in ("lipsdp-layer", "lipsdp-neuron")
                else None}
    mnist = results.get("mnist_weights")
    if mnist is not None and _row(mnist, "lipsdp-neuron") is not None:
        row = _row(mnist, "lipsdp-neuron")
        out["mnist_neuron_seconds"] = {"value": row.value, "seconds": row.seconds,
                                       "met": row.usable_upper and row.seconds < 2.0}
    for name, rows in results.items():
        fast, eclipse = _row(rows, "ECLipsE-Fast"), _row(rows, "ECLipsE")
        if fast is None or fast.status != "ok":
            continue
        relaxed = _row(rows, "ECLipsE (check relaxed)")
        shipped = eclipse.value if eclipse is not None and math.isfinite(eclipse.value) \
            else None
        relaxed_value = relaxed.value if relaxed is not None and \
            math.isfinite(relaxed.value) else None
        # what a user of eclipse-nn gets from ECLipsE (its own value or, when a stage check
        # fails, ECLipsE-Fast's); where it did not finish, ECLipsE-Fast's value
        reference = shipped if shipped is not None else fast.value
        entry = {"width": widths[name], "in_scope": widths[name] <= ECLIPSE_MAX_WIDTH,
                 "eclipse_fast": fast.value, "eclipse_fast_seconds": fast.seconds,
                 "eclipse": shipped, "eclipse_status": eclipse.status if eclipse else None,
                 "eclipse_relaxed": relaxed_value, "compared_with": reference, "rows": {}}
        for label in ("lipsdp-neuron", "lipsdp-neuron@10x-fast"):
            row = _row(rows, label)
            if row is None or not row.usable_upper:
                continue
            entry["rows"][label] = {
                "value": row.value, "seconds": row.seconds, "tighter": row.value < reference,
                "tighter_than_relaxed": None if relaxed_value is None else
                row.value < relaxed_value,
                "time_ratio_to_fast": row.seconds / fast.seconds,
                "within_10x_fast": row.seconds <= 10 * fast.seconds}
        entry["met"] = any(r["tighter"] and r["within_10x_fast"]
                           for r in entry["rows"].values())
        entry["tighter_at_any_time"] = any(r["tighter"] for r in entry["rows"].values())
        out["versus_eclipse"][name] = entry
        cheap = {}
        for label in ("seqlip", "autolip", "naive"):
            row = _row(rows, label)
            if row is not None and row.usable_upper:
                cheap[label] = {"value": row.value, "seconds": row.seconds,
                                "ratio_to_eclipse_fast": row.value / fast.value}
        out["cheap_versus_eclipse_fast"][name] = cheap
    return out


# -- report ---------------------------------------------------------------------------------
def _format(value: float, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}g}" if abs(value) >= 1e4 or abs(value) < 1e-3 else \
        f"{value:.{digits}f}"


def print_case(console: Console, case: Case, rows: list[Row]) -> None:
    table = Table(title=f"{case.name}: {case.description}", title_justify="left")
    for column, justify in (("method", "left"), ("library", "left"), ("kind", "left"),
                            ("value", "right"), ("seconds", "right"), ("upper/lower", "right"),
                            ("status / note", "left")):
        table.add_column(column, justify=justify)
    for row in rows:
        text = "; ".join(filter(None, [row.status if row.status != "ok" else "", row.note]))
        table.add_row(row.method, row.library, row.kind, _format(row.value),
                      _format(row.seconds, 3) if math.isfinite(row.seconds) else "-",
                      f"{row.ratio:.2f}" if math.isfinite(row.ratio) else "-", text or "ok")
    console.print(table)


def print_goals(console: Console, summary: dict) -> None:
    table = Table(title="Goals", title_justify="left")
    for column in ("goal", "figures", "met"):
        table.add_column(column)
    for key, entry in summary["reference"].items():
        table.add_row(f"{key} = published {entry['published']} (0.2 %)",
                      f"{entry['lipkit']:.4f} ({100 * entry['relative_error']:+.3f} %), "
                      f"{entry['seconds']:.2f} s, {entry['kind']}",
                      {True: "met", False: "MISSED", None: "-"}[entry["met"]])
    mnist = summary["mnist_neuron_seconds"]
    if mnist:
        table.add_row("mnist_weights lipsdp-neuron < 2 s",
                      f"{mnist['value']:.4f} in {mnist['seconds']:.2f} s",
                      "met" if mnist["met"] else "MISSED")
    for name, entry in summary["versus_eclipse"].items():
        eclipse = "not finished" if entry["eclipse"] is None else _format(entry["eclipse"])
        if entry["eclipse"] is not None and entry["eclipse_status"] != "ok":
            eclipse += " (fallback)"
        relaxed = "" if entry["eclipse_relaxed"] is None else \
            f", relaxed {_format(entry['eclipse_relaxed'])}"
        parts = [f"ECLipsE {eclipse}{relaxed}, Fast {_format(entry['eclipse_fast'])} in "
                 f"{entry['eclipse_fast_seconds']:.3f} s"]
        for label, row in entry["rows"].items():
            parts.append(f"{label} {row['value']:.4f} in {row['seconds']:.2f} s "
                         f"({row['time_ratio_to_fast']:.0f}x Fast)")
        if not entry["in_scope"]:
            verdict = f"- (width {entry['width']}: out of the goal's scope)"
        elif not entry["rows"]:
            verdict = "MISSED (no lipsdp-neuron bound)"
        elif entry["met"]:
            verdict = "met"
        else:
            verdict = "MISSED (tighter, slower)" if entry["tighter_at_any_time"] else "MISSED"
        table.add_row(f"{name}: lipsdp-neuron < ECLipsE within 10x Fast's time",
                      "; ".join(parts), verdict)
    console.print(table)


def print_summary(console: Console, results: dict[str, list[Row]]) -> None:
    table = Table(title="Summary: best lower bound, upper bounds (seconds), ratio to ECLipsE-Fast",
                  title_justify="left")
    columns = ("network", "best lower", "naive", "autolip", "seqlip", "ECLipsE-Fast",
               "ECLipsE", "lipsdp-layer", "lipsdp-neuron", "neuron / Fast", "seqlip / Fast")
    for column in columns:
        table.add_column(column, justify="left" if column == "network" else "right")
    for name, rows in results.items():
        lower = max((r.value for r in rows if r.usable_lower), default=math.nan)

        def cell(method: str, rows=rows) -> str:
            row = _row(rows, method)
            if row is None or not math.isfinite(row.value):
                return "-"
            mark = "" if row.status == "ok" else "*"
            return f"{_format(row.value)}{mark} ({row.seconds:.2g} s)"

        def ratio(method: str, rows=rows) -> str:
            row, fast = _row(rows, method), _row(rows, "ECLipsE-Fast")
            if row is None or fast is None or not (row.usable_upper and fast.status == "ok"):
                return "-"
            return f"{row.value / fast.value:.2f}"

        table.add_row(name, _format(lower), cell("naive"), cell("autolip"), cell("seqlip"),
                      cell("ECLipsE-Fast"), cell("ECLipsE"), cell("lipsdp-layer"),
                      cell("lipsdp-neuron"), ratio("lipsdp-neuron"), ratio("seqlip"))
    console.print(table)
    console.print("* status not ok (ECLipsE: the fallback to ECLipsE-Fast's value, or a time "
                  "limit; LipSDP: uncertified)")



def machine(threads: int) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {}
    for package in ("torch", "numpy", "scipy", "cvxpy", "scs", "clarabel", "eclipse-nn"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads,
            "python": platform.python_version(), "lipkit": lipkit_revision(),
            **versions,
            "thread_pools": [{k: pool.get(k) for k in ("internal_api", "num_threads",
                                                        "filepath")}
                             for pool in threadpool_info()]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smaller suite and time limit (under 5 minutes)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--methods", nargs="+", choices=ALL_METHODS, default=ALL_METHODS,
                        metavar="METHOD", help=f"a subset of: {', '.join(ALL_METHODS)}")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds per method (SDP solvers, ascent loops, ECLipsE's "
                        "worker); default 40, or 10 with --quick")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--networks", nargs="+", metavar="NAME",
                        help="only these networks (names as printed)")
    args = parser.parse_args(argv)
    time_limit = args.time_limit or (10.0 if args.quick else 40.0)

    import clarabel  # noqa: F401 - load every solver's thread pool before limiting them
    import cvxpy  # noqa: F401
    import scs  # noqa: F401

    started = time.perf_counter()
    load_before = os.getloadavg()
    console = Console(width=max(Console().width, 200))
    with _limit_threads(args.threads):
        info = machine(args.threads)
        console.print(f"CPU {info['cpu']}, {args.threads} threads; torch {info['torch']}; "
                      f"lipkit {info['lipkit']}; eclipse-nn {info['eclipse-nn']}; "
                      f"time limit {time_limit:g} s; load average {load_before[0]:.2f}")
        warm_up()
        cases = build_suite(args)
        runner = EclipseRunner(args.threads) if eclipse_nn is not None and \
            "eclipse" in args.methods else None
        results: dict[str, list[Row]] = {}
        try:
            for _ in range(3):
                probe()
            for case in cases:
                console.print(f"[bold]{case.name}[/bold]: {case.description}")
                case_started, load, before = time.perf_counter(), os.getloadavg()[0], probe()
                results[case.name] = run_case(case, args.methods, time_limit, runner, console)
                after = probe()
                if after > PROBE_SLOWDOWN * probe.best:  # a pool still spinning, or another
                    time.sleep(1.0)  # process: look again once the pools have gone to sleep
                    after = min(probe() for _ in range(3))
                slowest = max(before, after) / probe.best
                case.notes.append(f"{time.perf_counter() - case_started:.0f} s; load average "
                                  f"{load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end; "
                                  f"probe {slowest:.1f}x its best before/after")
                if slowest > PROBE_SLOWDOWN:
                    case.notes.append("MACHINE BUSY: the timings of this network are suspect")
                print_case(console, case, results[case.name])
                console.print(" ".join(case.notes[-2:]))
        finally:
            if runner is not None:
                runner.close()
        summary = goals(results, {c.name: c.width for c in cases})
        print_summary(console, results)
        print_goals(console, summary)
    seconds = time.perf_counter() - started
    load_after = os.getloadavg()
    console.print(f"{seconds:.0f} s in all; load average {load_before[0]:.2f} before, "
                  f"{load_after[0]:.2f} after")
    if args.json:
        payload = {
            "machine": info, "args": vars(args), "time_limit": time_limit,
            "seconds": seconds, "load_average": {"before": load_before, "after": load_after},
            "networks": [{"name": c.name, "description": c.description, "notes": c.notes,
                          "sdp_plan": c.sdp,
                          "rows": [_plain(row.__dict__) for row in results[c.name]]}
                         for c in cases],
            "goals": _plain(summary),
        }
        Path(args.json).write_text(json.dumps(payload, indent=2))


PROBE_SLOWDOWN = 1.5


class Probe:
    """A fixed workload timed before and after each network: many small torch operations
    (OpenMP parallel regions, which a busy machine slows most) and a few matrix products."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(1)
        self.a = torch.randn(256, 256, generator=generator, dtype=torch.float64)
        self.x = torch.randn(64, 256, generator=generator, dtype=torch.float64)
        self.best = math.inf

    def __call__(self) -> float:
        """The best of three timings of the workload."""
        return min(self._once() for _ in range(3))

    def _once(self) -> float:
        started = time.perf_counter()
        x = self.x
        for _ in range(200):
            x = torch.relu(x @ self.a) / 16.0
        for _ in range(3):
            self.a @ self.a
        seconds = time.perf_counter() - started
        self.best = min(self.best, seconds)
        return seconds


probe = Probe()


def warm_up() -> None:
    """One call of every method on a tiny network: imports, solver set-up, LAPACK."""
    generator = torch.Generator().manual_seed(0)
    model = lecun_normal_mlp([4, 6, 6, 2], generator)
    network = load_network(model)
    methods = [m for m in lipkit_estimate.METHODS if m in LIPKIT_METHODS]
    estimate(network, methods=methods, time_limit=5.0)
    if eclipse_nn is not None:
        eclipse_fast(linear_weights(model) and [torch.from_numpy(w)
                                                for w in linear_weights(model)])


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, torch.Tensor | np.ndarray):
        return None
    return value


if __name__ == "__main__":
    main()
